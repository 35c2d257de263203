"""The evaluation conditions (omg evaluate --conditions) do what they say, seeded and apart
from training; the training rooms and band-limits change the audio as intended."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_omg

from omgkit.errors import UnknownNameError
from omgkit.kws import conditions as C
from omgkit.kws import rooms as R


def _words(n: int = 8) -> np.ndarray:
    """Speech-like rows: a voiced tone burst in the middle of each second, digital silence around."""
    t = np.arange(16000) / 16000
    env = np.exp(-(((t - 0.5) / 0.1) ** 2)) * (np.abs(t - 0.5) < 0.3)
    return np.asarray([np.sin(2 * np.pi * (180 + 30 * i) * t) * env * 20000 for i in range(n)],
                      np.int16)  # fmt: skip


def _apply(name: str, a: np.ndarray, seed: int = 0):
    (c,) = [c for c in C.CONDITIONS if c.name == name]
    return c.apply(a, np.random.default_rng(seed))


def _band_gain_db(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    f = np.fft.rfftfreq(x.shape[-1], 1 / 16000)
    m = (f >= lo) & (f < hi)
    px = np.mean(np.abs(np.fft.rfft(x.astype(np.float64)))[..., m] ** 2)
    py = np.mean(np.abs(np.fft.rfft(y.astype(np.float64)))[..., m] ** 2)
    return 10 * np.log10(py / px)


def test_conditions_are_seeded_and_named_once():
    assert len(set(C.NAMES)) == len(C.NAMES)
    assert {"clean", "reverb", "telephone", "noise_0db", "gain_-20db", "dither_1lsb"} <= set(
        C.NAMES
    )
    a = _words()
    for name in ("noise_5db", "shift", "dither_1lsb"):
        x1, _ = _apply(name, a, 1)
        x2, _ = _apply(name, a, 1)
        x3, _ = _apply(name, a, 2)
        assert x1.dtype == np.int16 and np.array_equal(x1, x2) and not np.array_equal(x1, x3), name
    with pytest.raises(UnknownNameError, match="condition"):
        C.select(["clean", "underwater"])
    assert [c.name for c in C.select(["telephone"])] == ["clean", "telephone"]


def test_telephone_and_laptop_shape_the_spectrum():
    white = np.clip(
        np.random.default_rng(0).standard_normal((4, 16000)) * 3000, -32768, 32767
    ).astype(np.int16)
    tel, _ = _apply("telephone", white)
    assert _band_gain_db(white, tel, 1000, 2500) > -2
    assert _band_gain_db(white, tel, 20, 150) < -20
    assert _band_gain_db(white, tel, 5000, 8000) < -25
    lap, _ = _apply("laptop_mic", white)
    assert _band_gain_db(white, lap, 20, 80) < -15
    assert (
        _band_gain_db(white, lap, 3200, 3800) > _band_gain_db(white, lap, 1000, 1500) + 3
    )  # the peak
    assert _band_gain_db(white, lap, 7500, 8000) < -15


def test_gain_dither_and_shift():
    a = _words()
    for db in (-30, -20, -10, 6):
        y, _ = _apply(f"gain_{db:+d}db".replace("+-", "-"), a)
        if db < 0:
            assert (
                abs(
                    10 * np.log10(np.mean(y.astype(float) ** 2) / np.mean(a.astype(float) ** 2))
                    - db
                )
                < 0.1
            )
    loud, _ = _apply("gain_+6db", a)
    assert loud.max() == 32767  # clipped at full scale, as a converter would
    d, _ = _apply("dither_1lsb", a)
    diff = d.astype(int) - a.astype(int)
    assert np.abs(diff).max() == 1 and 0.5 < np.mean(diff != 0) < 0.8  # 2 in 3 samples move
    s, _ = _apply("shift", a)
    lag = [
        int(np.argmax(np.correlate(s[i].astype(float), a[i].astype(float), "full"))) - 15999
        for i in range(len(a))
    ]
    assert all(800 <= abs(v) <= 2400 for v in lag), lag


def test_noise_is_at_its_snr_and_not_training_noise(tiny_corpus):
    from omgkit.kws.dataset import load_dataset, load_noise

    a = _words(40) // 8  # quiet enough that no sum clips at full scale
    for db in (0, 10):
        y, which = _apply(f"noise_{db}db", a)
        clean = a.astype(np.float64)
        snr = 10 * np.log10(np.mean(clean**2, axis=1) / np.mean((y - clean) ** 2, axis=1))
        assert np.allclose(snr, db, atol=0.2)
        assert set(which) == set(range(len(C.NOISE_KINDS)))  # every kind is used
    # none of evaluation's noise is any of training's: no shared segment correlates
    ds = load_dataset(tiny_corpus)
    train = [load_noise(ds.root / p) for p in ds.noise_files]
    assert {p.split("/")[-1][:-4] for p in ds.noise_files}.isdisjoint(C.NOISE_KINDS)
    # (first differences: brown-ish noises correlate by chance over so few effective samples)
    for kind in C.NOISE_KINDS:
        ev = np.diff(C.evaluation_noise(kind)[:16001])
        for tr in train:
            d = np.diff(tr[:48001])
            c = np.correlate(d / np.std(d), ev / np.std(ev), "valid") / 16000
            assert np.abs(c).max() < 0.1, kind


def test_rooms_reverberate_and_evaluation_rooms_are_not_training_rooms():
    ev = C.evaluation_rooms()
    assert len(ev) == 12 and {k for k, _ in ev} == {"small", "classroom", "hall"}
    train = R.training_rooms(48, 0)
    # the evaluation draw is not the training draw: no evaluation room lies near a training one
    near = [(e, t) for _, e in ev for t in train
            if np.allclose(e.size, t.size, atol=0.3) and abs(e.rt60 - t.rt60) < 0.05]  # fmt: skip
    assert len(near) <= 1, near
    assert max(r.rt60 for _, r in ev) > R.TRAINING_ROOMS.rt60[1]  # the hall is beyond training
    irs = R.impulse_responses(tuple(r for _, r in ev))
    assert all(h.dtype == np.float32 and np.abs(h).max() == 1 for h in irs)
    x = _words(12)
    y, which = _apply("reverb", x)
    assert set(which) == {0, 1, 2}
    # energy after the word: the reverberant tail; the peak level kept
    tail = slice(int(0.805 * 16000), int(0.85 * 16000))  # the word ends at 0.8 s
    assert np.all(np.abs(x[:, tail]) == 0)
    assert np.all(np.sqrt(np.mean(y[:, tail].astype(float) ** 2, axis=1)) > 20)
    assert np.allclose(np.abs(y).max(axis=1), np.abs(x).max(axis=1), rtol=0.01)
    # longer rooms ring longer: the hall's tail carries more energy than the small rooms'
    e = np.mean(y[:, tail].astype(float) ** 2, axis=1)
    kinds = sorted({"small", "classroom", "hall"})
    assert e[which == kinds.index("hall")].mean() > 3 * e[which == kinds.index("small")].mean()


def test_training_augmentation_uses_rooms_bandlimits_and_a_floor():
    from omgkit.kws.augment import AugmentSettings, augment

    x = _words(6)
    base = dict(shift_ms=0, speed_prob=0, gain_db=(0, 0), noise_prob=0, reverb_prob=0,
                bandlimit_prob=0, floor_dbfs=None)  # fmt: skip
    dry = augment(x, [], np.random.default_rng(0), AugmentSettings(**base))
    wet = augment(
        x, [], np.random.default_rng(0), AugmentSettings(**{**base, "reverb_prob": 1.0}, rooms=8)
    )
    tail = slice(int(0.805 * 16000), int(0.85 * 16000))
    assert np.all(dry[:, tail] == 0) and np.all(np.abs(wet[:, tail]).max(axis=1) > 1e-4)
    t = np.arange(16000) / 16000
    two = (
        (x.astype(np.float64) + 8000 * np.sin(2 * np.pi * 1500 * t) * (x != 0))
        .clip(-32768, 32767)
        .astype(np.int16)
    )
    dry2 = augment(two, [], np.random.default_rng(0), AugmentSettings(**base))
    bl = augment(two, [], np.random.default_rng(0),
                 AugmentSettings(**{**base, "bandlimit_prob": 1.0}, bandlimit_low_hz=(400, 400)))  # fmt: skip
    # the 180-330 Hz tones are cut against the 1.5 kHz one
    assert _band_gain_db(dry2, bl, 100, 350) < _band_gain_db(dry2, bl, 1400, 1600) - 10
    fl = augment(x, [], np.random.default_rng(0), AugmentSettings(**{**base, "floor_dbfs": (-70.0, -70.0)}),
                 is_speech=np.zeros(6, bool))  # fmt: skip
    silent = fl[:, :2000]  # before the word: digital silence with a -70 dBFS floor under it
    assert np.allclose(20 * np.log10(np.sqrt(np.mean(silent**2, axis=1))), -70, atol=0.5)


def test_evaluate_conditions_on_a_run(tiny_run, tmp_path):
    out = tmp_path / "ev.json"
    r = run_omg("evaluate", "--run", str(tiny_run), "--json", str(out), "--quiet",
                "--conditions", "telephone,noise_0db,dither_1lsb")  # fmt: skip
    ev = json.loads(out.read_text())
    assert list(ev["conditions"]) == ["clean", "telephone", "noise_0db", "dither_1lsb"]
    for name, c in ev["conditions"].items():
        assert 0 <= c["int8"] <= 1 and 0 <= c["float32"] <= 1 and c["n"] > 30, name
        assert c["heldout"]["n"] > 30 and 0 <= c["heldout"]["int8"] <= 1
        assert len(c["worst_words_int8"]) == 3
    assert ev["conditions"]["clean"]["int8"] == pytest.approx(ev["test_accuracy_int8"], abs=1e-4)
    assert set(ev["conditions"]["noise_0db"]["by_noise"]) == set(C.NOISE_KINDS)
    assert 0.5 < ev["label_stability_lsb"] <= 1
    assert (tiny_run / "conditions.png").stat().st_size > 5000
    assert "labels unchanged under ±1 LSB dither" in r.stdout and "telephone" in r.stdout
    bad = run_omg("evaluate", "--run", str(tiny_run), "--conditions", "underwater", check=False)
    assert bad.returncode != 0 and "underwater" in bad.stderr and "Traceback" not in bad.stderr


def test_training_babble_is_other_clips_and_tones_are_tonal():
    from omgkit.kws.augment import AugmentSettings, augment

    t = np.arange(16000) / 16000
    x = np.asarray([np.sin(2 * np.pi * (300 + 100 * i) * t) * 8000 for i in range(10)], np.int16)
    base = dict(shift_ms=0, speed_prob=0, gain_db=(0, 0), reverb_prob=0, bandlimit_prob=0,
                floor_dbfs=None, noise_prob=1.0, snr_db=(0, 0), fluctuating_prob=0.0,
                impulses_prob=0.0)  # fmt: skip
    flat = [np.zeros(16000 * 5, np.float32) + 1e-3]
    b = augment(x, flat, np.random.default_rng(0),
                AugmentSettings(**base, babble_prob=1.0, tones_prob=0.0))  # fmt: skip
    spec = np.abs(np.fft.rfft(b[0]))  # row 0 is 300 Hz; the crowd brings others' tones
    others = [spec[f - 2 : f + 3].max() for f in range(400, 1300, 100)]
    assert sum(v > 0.05 * spec[298:303].max() for v in others) >= 4
    tn = augment(
        x, flat, np.random.default_rng(0), AugmentSettings(**base, babble_prob=0.0, tones_prob=1.0)
    )
    noise = np.abs(np.fft.rfft(tn[0] - x[0] / 32768.0))
    assert noise.max() > 20 * np.median(noise)  # peaks, not a flat spectrum


def test_rooms_are_simulated_once_and_kept_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("OMG_CACHE", str(tmp_path))
    rooms = tuple(R.draw_rooms(R.TRAINING_ROOMS, 1, np.random.default_rng(123)))  # one: no pool
    R.impulse_responses.cache_clear()
    first = R.impulse_responses(rooms)
    (kept,) = (tmp_path / "rooms").glob("*.npz")
    R.impulse_responses.cache_clear()

    def no_simulation(room):
        raise AssertionError("simulated again")

    monkeypatch.setattr(R, "_simulate", no_simulation)
    again = R.impulse_responses(rooms)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    kept.write_bytes(b"damaged")  # a damaged file is simulated again, not trusted
    R.impulse_responses.cache_clear()
    with pytest.raises(AssertionError, match="simulated again"):
        R.impulse_responses(rooms)
    R.impulse_responses.cache_clear()
