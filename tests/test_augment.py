"""Augmentation: deterministic, bounded, and VTLP / time masks do what they say."""

from __future__ import annotations

import dataclasses

import numpy as np

from omg_ta.frontend import Frontend, FrontendSettings
from omgkit.kws.augment import AugmentSettings, augment, featurize_augmented
from omgkit.kws.features import featurize
from omgkit.kws.train import AUGMENT_OFF_WHEN_ABSENT, TrainSettings


def _speech(n: int = 6) -> np.ndarray:
    t = np.arange(16000) / 16000
    env = np.exp(-(((t - 0.5) / 0.12) ** 2))
    rows = [np.sin(2 * np.pi * (200 + 40 * i) * t) * env * 12000 for i in range(n)]
    return np.asarray(rows, dtype=np.int16)


def test_augment_is_seeded_and_stays_in_range():
    x = _speech()
    noise = [np.random.default_rng(1).standard_normal(16000 * 20).astype(np.float32) * 0.1]
    a = augment(x, noise, np.random.default_rng(5))
    b = augment(x, noise, np.random.default_rng(5))
    c = augment(x, noise, np.random.default_rng(6))
    assert a.shape == x.shape and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0


def test_noise_lands_near_the_requested_snr():
    x = _speech(40)
    noise = [np.random.default_rng(1).standard_normal(16000 * 20).astype(np.float32) * 0.1]
    s = AugmentSettings(
        shift_ms=0,
        speed_prob=0,
        reverb_prob=0,
        gain_db=(0, 0),
        noise_prob=1.0,
        snr_db=(20, 20),
        bandlimit_prob=0,
        floor_dbfs=None,
    )
    y = augment(x, noise, np.random.default_rng(0), s)
    clean = x.astype(np.float32) / 32768
    snr = 10 * np.log10(np.mean(clean**2, axis=1) / np.mean((y - clean) ** 2, axis=1))
    assert np.allclose(snr, 20, atol=0.5)


def test_silence_rows_get_no_shift_speed_or_reverb():
    x = _speech(4)
    s = AugmentSettings(noise_prob=0, gain_db=(0, 0), speed_prob=1, reverb_prob=1, bandlimit_prob=1,
                        floor_dbfs=None)  # fmt: skip
    y = augment(x, [], np.random.default_rng(0), s, is_speech=np.array([False, True, False, True]))
    assert np.allclose(y[[0, 2]], x[[0, 2]] / 32768, atol=1e-6)
    assert not np.allclose(y[[1, 3]], x[[1, 3]] / 32768, atol=1e-3)


def test_vtlp_warps_the_filterbank_and_masks_cover_frames():
    settings = FrontendSettings()
    x = _speech(8).astype(np.float32) / 32768
    speech = np.ones(8, bool)
    plain = featurize(Frontend(settings), x)
    same = featurize_augmented(settings, x, np.random.default_rng(0), AugmentSettings(), speech)
    assert np.array_equal(same, plain)  # defaults: no warp, no masks
    warped = featurize_augmented(
        settings, x, np.random.default_rng(0), AugmentSettings(vtlp=(0.9, 1.1)), speech
    )
    lo = featurize(Frontend(dataclasses.replace(settings, lower_hz=18.0, upper_hz=3600.0)), x)
    assert any(np.allclose(warped[i], lo[i]) for i in range(8))  # some rows used the 0.9 frontend
    assert not np.allclose(warped, plain)
    masked = featurize_augmented(settings, x, np.random.default_rng(0),
                                 AugmentSettings(time_masks=2, time_mask_frames=4), speech)  # fmt: skip
    flat = [(masked[i, :, :, 0] == masked[i].min()).all(axis=1).sum() for i in range(8)]
    assert max(flat) >= 1 and max(flat) <= 8
    kept = featurize_augmented(settings, x, np.random.default_rng(0), AugmentSettings(vtlp=(0.9, 1.1), time_masks=2),
                               np.zeros(8, bool))  # fmt: skip
    assert np.array_equal(kept, plain)  # silence rows: neither


def _centroid(x: np.ndarray) -> np.ndarray:
    spec = np.abs(np.fft.rfft(x, axis=1)) ** 2
    f = np.fft.rfftfreq(x.shape[1], 1 / 16000)
    return (spec * f).sum(axis=1) / spec.sum(axis=1)


def test_spectral_tilt_darkens_or_brightens_and_keeps_loudness():
    from omgkit.kws.augment import _tilt

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 16000)) * 0.1).astype(np.float32)  # white: centroid ~4 kHz
    y = _tilt(x, np.array([-6.0, 0.0, 6.0]), np.array([True, True, True]))
    c_in, c_out = _centroid(x), _centroid(y)
    assert c_out[0] < 0.8 * c_in[0] and c_out[2] > 1.05 * c_in[2]
    assert abs(c_out[1] - c_in[1]) < 1.0
    assert np.allclose(np.sqrt((y**2).mean(1)), np.sqrt((x**2).mean(1)), rtol=1e-4)
    assert np.array_equal(_tilt(x, np.array([6.0] * 3), np.zeros(3, bool)), x)


def test_tilt_off_by_default_leaves_augmentation_unchanged():
    """tilt_prob=0 draws nothing: runs made before the option exist stay bit-identical."""
    x = _speech()
    a = augment(x, [], np.random.default_rng(3), AugmentSettings())
    b = augment(
        x, [], np.random.default_rng(3), AugmentSettings(tilt_prob=0.0, tilt_db_per_octave=(-1, 1))
    )
    c = augment(x, [], np.random.default_rng(3), AugmentSettings(tilt_prob=1.0))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_fluctuating_and_impulsive_noise_are_what_they_say():
    """The two non-stationary training noises: the fluctuating one's level wanders (frame
    levels spread over more than 10 dB), the impulsive one is peaky (kurtosis far above
    Gaussian noise's 3); turning them off changes the augmentation, and a manifest without
    them (written before they existed) reads as both off."""
    from omgkit.kws.augment import _fluctuating, _impulses

    def frame_db(x):
        return 10 * np.log10((x[: 16000 // 320 * 320].reshape(-1, 320) ** 2).mean(1) + 1e-12)

    spreads, kurt = [], []
    for seed in range(20):
        f = _fluctuating(np.random.default_rng(seed))
        i = _impulses(np.random.default_rng(seed)).astype(np.float64)
        assert f.shape == i.shape == (16000,) and np.isfinite(f).all() and np.isfinite(i).all()
        spreads.append(np.percentile(frame_db(f), 90) - np.percentile(frame_db(f), 10))
        kurt.append(np.mean(i**4) / np.mean(i**2) ** 2)
    assert sum(v > 6 for v in spreads) >= 15 and sum(k > 6 for k in kurt) >= 15
    noise = [np.random.default_rng(1).standard_normal(16000 * 20).astype(np.float32) * 0.1]
    # and augment sends each share to its own generator: impulses-only noise is peaky,
    # fluctuating-only noise is not
    x0 = np.zeros((40, 16000), np.int16)
    x0[:, 4000:12000] = _speech(40)[:, 4000:12000]
    only = AugmentSettings(shift_ms=0, speed_prob=0, reverb_prob=0, gain_db=(0, 0), noise_prob=1.0,
                           bandlimit_prob=0, floor_dbfs=None, babble_prob=0.0, tones_prob=0.0)  # fmt: skip

    def residual_kurtosis(**shares):
        r = augment(x0, noise, np.random.default_rng(0), dataclasses.replace(only, **shares))
        r = (r - x0 / 32768.0)[:, :4000].astype(np.float64)  # the noise before the word
        return np.median(np.mean(r**4, 1) / np.mean(r**2, 1) ** 2)

    assert residual_kurtosis(impulses_prob=1.0, fluctuating_prob=0.0) > 10
    assert residual_kurtosis(impulses_prob=0.0, fluctuating_prob=1.0) < 6
    x = _speech(40)
    off = AugmentSettings(fluctuating_prob=0.0, impulses_prob=0.0)
    a = augment(x, noise, np.random.default_rng(3), off)
    c = augment(x, noise, np.random.default_rng(3), AugmentSettings())
    assert not np.array_equal(a, c)
    old = TrainSettings().to_dict()
    for k in AUGMENT_OFF_WHEN_ABSENT:
        del old["augment"][k]
    s = TrainSettings.from_dict(old).augment
    assert (s.fluctuating_prob, s.impulses_prob, s.babble_prob, s.rooms, s.floor_dbfs) == (
        0.0,
        0.0,
        0.0,
        0,
        None,
    )
    assert TrainSettings.from_dict(TrainSettings().to_dict()) == TrainSettings()


def test_noise_shares_must_fit_in_one():
    import pytest

    from omgkit.errors import ConfigError

    with pytest.raises(ConfigError, match="together <= 1"):
        AugmentSettings(babble_prob=0.5, tones_prob=0.3, fluctuating_prob=0.3)
    with pytest.raises(ConfigError):
        AugmentSettings(impulses_prob=-0.1)


def test_balanced_class_weights():
    from omgkit.kws.train import balanced_class_weights

    y = np.array([0] * 10 + [1] * 30 + [2] * 10)
    w = balanced_class_weights(y, 4)
    assert w[3] == 0.0
    totals = [w[c] * np.sum(y == c) for c in range(3)]
    assert np.allclose(totals, totals[0]) and np.isclose(sum(totals), len(y))
