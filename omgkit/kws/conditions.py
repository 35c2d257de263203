"""`omg evaluate --conditions`: accuracy when the room, the microphone and the level change.

A classroom demo is a room with a laptop microphone: reverberant, noisy,
band-limited and often quiet. Each condition below turns the evaluation
clips (the test split and the held-out engine's speech) into what such a
room would deliver, and both converted models (int8 and float32) classify
them through the runtime the TA uses. Everything is seeded (``EVAL_SEED``)
and kept apart from training: the rooms are evaluation's own draw (the hall
is larger and more reverberant than any room trained on), and the noise
(babble, music, keyboard, traffic) is made here from generators training
never calls. Training mixes the corpus's ``_background_noise_`` files
(white, pink and brown noise, hum, fan, running tap) and, since issue 15,
babble from its own clips and random harmonic tones: kin to evaluation's
babble and music, though made differently; keyboard clicks and traffic have
no training analogue.

The conditions:

- ``clean``: as recorded;
- ``reverb``: through one of twelve simulated rooms (small offices,
  classrooms, halls; rt60 0.2-1.1 s, talker 0.5-3.5 m from the microphone),
  the peak level kept;
- ``telephone``: 300-3400 Hz (8th-order Butterworth band-pass) and G.711
  mu-law companding;
- ``laptop_mic``: a cheap built-in microphone's response: 2nd-order
  high-pass at 250 Hz, +6 dB presence peak at 3.5 kHz, 4th-order low-pass at
  6.5 kHz;
- ``noise_20db`` ... ``noise_0db``: evaluation noise added at that
  signal-to-noise ratio (powers over the whole one-second clip, as in
  training);
- ``gain_-30db`` ... ``gain_+6db``: the level changed (+6 dB clips at full
  scale, as a converter would);
- ``shift``: the clip moved by 50-150 ms either way (what falls off the edge
  is lost);
- ``dither_1lsb``: -1, 0 or +1 added to every 16-bit sample: inaudible. Its
  ``label_stability`` is the fraction of int8 labels that stay what they
  were on the clean clip; ``evaluation.json`` reports it as
  ``label_stability_lsb``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import UnknownNameError
from .audio import SAMPLE_RATE

EVAL_SEED = 0x0E7A1
"""Evaluation's seed: its rooms, its noise and where each condition cuts are drawn from it.
Each stream has its own key, so that no two coincide (numpy pads a shorter key with zeros):
``[EVAL_SEED, 0x500, room set]``, ``[EVAL_SEED, 0x601, noise kind]`` and, for a condition's
draws on a split, ``[EVAL_SEED, condition index, split index]``."""

NOISE_KINDS = ("babble", "music", "keyboard", "traffic")
"""Evaluation's noise; none of these is in any training corpus's ``_background_noise_``."""

TARGETS = {
    "clean": 0.99, "reverb": 0.92, "telephone": 0.90, "noise_0db": 0.85, "noise_5db": 0.92,
    "gain_-20db": 0.97,
}  # fmt: skip
"""Issue 15's targets for the quick-profile DS-CNN-S int8 on the test split (the held-out
engine's clean speech: ``HELDOUT_TARGET``; label stability: ``STABILITY_TARGET``)."""
HELDOUT_TARGET = 0.85
STABILITY_TARGET = 0.995


@dataclasses.dataclass(frozen=True)
class Condition:
    name: str
    describe: str
    apply: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray | None]]
    """int16 (N, samples) and a generator -> int16 audio and, per clip, what varied (or None)."""
    variants: tuple[str, ...] = ()
    """Names of what varied (rooms, noise kinds), indexed by the second return value."""


def _to_int16(x: np.ndarray) -> np.ndarray:
    """The exact inverse of ``_float`` (scale 32768, unlike ``audio.to_int16``'s 32767), so
    that ``clean`` and a 0 dB gain give back the very samples they were given."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _float(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / 32768.0


# --- reverberation -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def evaluation_rooms():
    """Evaluation's rooms: (kind, Room) pairs, four of each kind in ``rooms.EVALUATION_ROOMS``."""
    from .rooms import EVALUATION_ROOMS, draw_rooms

    out = []
    for k, (kind, (rng_range, n)) in enumerate(EVALUATION_ROOMS.items()):
        rooms = draw_rooms(rng_range, n, np.random.default_rng([EVAL_SEED, 0x500, k]))
        out += [(kind, r) for r in rooms]
    return tuple(out)


def _reverb(a: np.ndarray, rng: np.random.Generator):
    from .rooms import impulse_responses, reverberate

    rooms = evaluation_rooms()
    irs = impulse_responses(tuple(r for _, r in rooms))
    which = rng.integers(0, len(rooms), a.shape[0])
    kinds = [k for k, _ in rooms]
    names = sorted(set(kinds))
    return _to_int16(reverberate(_float(a), irs, which)), np.asarray(
        [names.index(kinds[w]) for w in which]
    )


# --- microphones and channels ------------------------------------------------------------


def _sos_filter(a: np.ndarray, sos: np.ndarray) -> np.ndarray:
    from scipy.signal import sosfilt

    return sosfilt(sos, a.astype(np.float64), axis=1)


def _telephone(a: np.ndarray, rng: np.random.Generator):
    from scipy.signal import butter

    sos = butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")  # order 8 overall
    y = _sos_filter(_float(a), sos)
    mu = 255.0  # G.711 mu-law: compress, quantise to 8 bits, expand
    c = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1.0)) / np.log1p(mu)
    c = np.round(c * 127.0) / 127.0
    y = np.sign(c) * ((1.0 + mu) ** np.abs(c) - 1.0) / mu
    return _to_int16(y), None


def peaking_eq(f0: float, gain_db: float, q: float) -> np.ndarray:
    """A peaking equaliser biquad as second-order sections (Audio EQ Cookbook, R. Bristow-Johnson)."""
    amp = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * amp, -2 * np.cos(w0), 1 - alpha * amp])
    a = np.array([1 + alpha / amp, -2 * np.cos(w0), 1 - alpha / amp])
    return np.concatenate([b / a[0], a / a[0]])[None, :]


def _laptop(a: np.ndarray, rng: np.random.Generator):
    from scipy.signal import butter

    sos = np.vstack([butter(2, 250, btype="highpass", fs=SAMPLE_RATE, output="sos"),
                     peaking_eq(3500, 6.0, 1.5),
                     butter(4, 6500, btype="lowpass", fs=SAMPLE_RATE, output="sos")])  # fmt: skip
    return _to_int16(_sos_filter(_float(a), sos)), None


# --- noise -------------------------------------------------------------------------------


def _shaped(rng: np.random.Generator, n: int, power: float, lo: float = 0.0, hi: float = 8000.0):
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    s = np.fft.rfft(rng.standard_normal(n)) / np.maximum(f, 20.0) ** (power / 2)
    s[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(s, n)


def _envelope(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """A smooth positive envelope that changes about ``rate_hz`` times a second."""
    k = max(2, int(n / SAMPLE_RATE * rate_hz) + 2)
    pts = rng.random(k)
    return np.interp(np.arange(n), np.linspace(0, n, k), pts)


@lru_cache(maxsize=len(NOISE_KINDS))
def evaluation_noise(kind: str, seconds: int = 30) -> np.ndarray:
    """``seconds`` of one kind of evaluation noise (float64, unit RMS), made from ``EVAL_SEED``."""
    n = seconds * SAMPLE_RATE
    rng = np.random.default_rng([EVAL_SEED, 0x601, NOISE_KINDS.index(kind)])
    t = np.arange(n) / SAMPLE_RATE
    if kind == "babble":  # six talkers: speech-shaped noise, syllable-rate envelopes, pauses
        x = np.zeros(n)
        for _ in range(6):
            voice = _shaped(rng, n, 1.0, 100, 4000)
            syll = np.maximum(0, np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3)))
            x += voice * syll * (_envelope(rng, n, 0.7) > 0.3)
    elif kind == "music":  # chords of harmonic notes changing every 0.25-0.6 s, a soft beat
        x = np.zeros(n)
        i = 0
        while i < n:
            d = int(rng.uniform(0.25, 0.6) * SAMPLE_RATE)
            seg = np.arange(min(d, n - i)) / SAMPLE_RATE
            for midi in rng.choice(np.arange(48, 80), 3, replace=False):
                f0 = 440 * 2 ** ((midi - 69) / 12)
                x[i : i + seg.size] += sum(np.sin(2 * np.pi * f0 * h * seg) / h**1.5 for h in range(1, 6)
                                           ) * np.exp(-seg * 3)  # fmt: skip
            i += d
        beat = np.zeros(n)
        beat[:: SAMPLE_RATE // 2] = 1
        x += 0.3 * np.convolve(beat, rng.standard_normal(400) * np.exp(-np.arange(400) / 60))[:n]
    elif kind == "keyboard":  # key clicks about 7 a second over a quiet room
        x = 0.02 * _shaped(rng, n, 1.0)
        x /= np.std(x) / 0.02
        for at in np.flatnonzero(rng.random(n) < 7 / SAMPLE_RATE):
            m = min(240, n - at)
            x[at : at + m] += (
                rng.uniform(0.3, 1.0) * rng.standard_normal(m) * np.exp(-np.arange(m) / 40)
            )
    elif kind == "traffic":  # low rumble with passing vehicles
        x = _shaped(rng, n, 2.0, 20, 2000) * (0.4 + _envelope(rng, n, 0.2))
        x /= np.std(x)
        for _ in range(seconds // 6):
            c, w = rng.uniform(0, seconds), rng.uniform(1.5, 4.0)
            x += 2 * _shaped(rng, n, 1.0, 80, 3000) * np.exp(-(((t - c) / w) ** 2))
    else:
        raise UnknownNameError("noise kind", kind, list(NOISE_KINDS))
    return x / np.sqrt(np.mean(x**2))


def add_noise(a: np.ndarray, rng: np.random.Generator, snr_db: float):
    x = _float(a).astype(np.float64)
    which = rng.integers(0, len(NOISE_KINDS), a.shape[0])
    for i in range(a.shape[0]):
        src = evaluation_noise(NOISE_KINDS[which[i]])
        off = int(rng.integers(0, src.size - a.shape[1]))
        seg = src[off : off + a.shape[1]]
        p_sig = float(np.mean(x[i] ** 2))
        x[i] += seg * np.sqrt(p_sig / (np.mean(seg**2) * 10 ** (snr_db / 10)))
    return _to_int16(x), which


# --- level, position, dither -------------------------------------------------------------


def _gain(db: float):
    def f(a, rng):
        return _to_int16(_float(a) * 10 ** (db / 20)), None

    return f


def _shift(a: np.ndarray, rng: np.random.Generator):
    n = a.shape[1]
    out = np.zeros_like(a)
    for i, s in enumerate(rng.integers(int(0.05 * SAMPLE_RATE), int(0.15 * SAMPLE_RATE) + 1, a.shape[0])
                          * rng.choice([-1, 1], a.shape[0])):  # fmt: skip
        if s > 0:
            out[i, s:] = a[i, : n - s]
        else:
            out[i, : n + s] = a[i, -s:]
    return out, None


def dither_1lsb(a: np.ndarray, rng: np.random.Generator):
    d = rng.integers(-1, 2, a.shape, dtype=np.int32)
    return np.clip(a.astype(np.int32) + d, -32768, 32767).astype(np.int16), None


def _noise(db: float):
    return lambda a, rng: add_noise(a, rng, db)


CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", "as recorded", lambda a, rng: (a, None)),
    Condition("reverb", "one of 12 simulated rooms (small, classroom, hall)", _reverb,
              tuple(sorted({"small", "classroom", "hall"}))),
    Condition("telephone", "300-3400 Hz band-pass, G.711 mu-law", _telephone),
    Condition("laptop_mic", "high-pass 250 Hz, +6 dB at 3.5 kHz, low-pass 6.5 kHz", _laptop),
    *(Condition(f"noise_{db}db", f"evaluation noise at {db} dB SNR", _noise(db), NOISE_KINDS)
      for db in (20, 10, 5, 0)),
    *(Condition(f"gain_{db:+d}db".replace("+-", "-"), f"gain {db:+d} dB", _gain(db))
      for db in (-30, -20, -10, 6)),
    Condition("shift", "moved 50-150 ms either way", _shift),
    Condition("dither_1lsb", "-1, 0 or +1 added to each 16-bit sample", dither_1lsb),
)  # fmt: skip
NAMES = tuple(c.name for c in CONDITIONS)


def select(names: Iterable[str] | None) -> list[Condition]:
    if names is None:
        return list(CONDITIONS)
    by = {c.name: c for c in CONDITIONS}
    out = []
    for n in names:
        if n not in by:
            raise UnknownNameError("condition", n, list(NAMES))
        out.append(by[n])
    if "clean" not in [c.name for c in out]:
        out.insert(0, by["clean"])  # stability and the plot compare against clean
    return out


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """The fraction of predictions ``p`` equal to labels ``y`` (NaN for no clips); here, not
    in ``evaluate`` (which uses it too), because ``evaluate`` imports this module."""
    return float(np.mean(y == p)) if len(y) else float("nan")


def _acc(y: np.ndarray, p: np.ndarray) -> float:
    return round(accuracy(y, p), 4)


def worst_words(y: np.ndarray, p: np.ndarray, labels, k: int = 3) -> list[dict[str, Any]]:
    """The ``k`` labels with the lowest recall (ties: the more frequent first)."""
    rows = []
    for i, w in enumerate(labels):
        m = y == i
        if m.any():
            rows.append(
                {"word": w, "accuracy": round(float(np.mean(p[m] == i)), 4), "n": int(m.sum())}
            )
    return sorted(rows, key=lambda r: (r["accuracy"], -r["n"]))[:k]


def evaluate_conditions(models: dict[str, bytes], frontend, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                        labels, names: Iterable[str] | None = None,
                        show_progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Accuracy of each model under each condition, per split.

    ``splits``: ``{"testing": (audio, y), "heldout": (audio, y)}`` (the held-out
    engine's speech may be absent). Returns ``{"conditions": {...},
    "label_stability_lsb": ...}``; a condition's top level is the test split,
    as the issue's table, and ``heldout`` holds the held-out engine's numbers.
    """
    from omg_ta.runtime import load_runtime

    from ..util import progress
    from .features import featurize

    rts = {q: load_runtime("litert", b) for q, b in models.items()}
    conds = select(names)
    out: dict[str, Any] = {}
    clean_int8: dict[str, np.ndarray] = {}
    stability = None
    with progress(total=len(conds) * len(splits), desc="conditions", unit="split",
                  disable=not show_progress) as bar:  # fmt: skip
        for c in conds:
            entry: dict[str, Any] = {"describe": c.describe}
            for si, (split, (audio, y)) in enumerate(splits.items()):
                rng = np.random.default_rng([EVAL_SEED, NAMES.index(c.name), si])
                a, varied = c.apply(audio, rng)
                x = featurize(frontend, a)
                p = {q: rt.classify(x) for q, rt in rts.items()}
                res: dict[str, Any] = {q: _acc(y, p[q]) for q in p}
                res["n"] = int(len(y))
                if "int8" in p:
                    res["worst_words_int8"] = worst_words(y, p["int8"], labels)
                    if c.name == "clean":
                        clean_int8[split] = p["int8"]
                    elif split in clean_int8:
                        res["labels_unchanged_int8"] = round(
                            float(np.mean(p["int8"] == clean_int8[split])), 4
                        )
                if varied is not None and "int8" in p:
                    res["by_" + ("room" if c.name == "reverb" else "noise")] = {
                        v: _acc(y[varied == k], p["int8"][varied == k]) for k, v in enumerate(c.variants)
                    }  # fmt: skip
                if si == 0:
                    entry.update(res)
                else:
                    entry[split] = res
                bar.update(1)
            out[c.name] = entry
    if "dither_1lsb" in out:
        ch = [out["dither_1lsb"].get("labels_unchanged_int8")] + [
            out["dither_1lsb"][s].get("labels_unchanged_int8") for s in list(splits)[1:]
        ]
        ns = [len(splits[s][1]) for s in splits]
        if all(v is not None for v in ch):
            stability = round(sum(v * n for v, n in zip(ch, ns, strict=True)) / sum(ns), 4)
    return {"conditions": out, "label_stability_lsb": stability}
