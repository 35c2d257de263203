"""The TA's numpy frontend against tf.signal, its settings and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from omg_ta.errors import ConfigError
from omg_ta.frontend import Frontend, FrontendSettings


def _tf_reference(audio: np.ndarray, s: FrontendSettings) -> np.ndarray:
    import tensorflow as tf

    # float64 throughout: the reference is the exact maths, not one rounding of it
    x = tf.constant(audio.astype(np.float64) / 32768.0)
    stft = tf.signal.stft(
        x,
        s.window_samples,
        s.hop_samples,
        s.fft_length,
        window_fn=lambda n, dtype: tf.signal.hann_window(n, dtype=tf.float64),
        pad_end=False,
    )
    mag = tf.abs(stft)
    w = tf.signal.linear_to_mel_weight_matrix(
        s.num_mel_bins,
        s.fft_length // 2 + 1,
        s.sample_rate,
        s.lower_hz,
        s.upper_hz,
        dtype=tf.float64,
    )
    logmel = tf.math.log(tf.math.maximum(tf.tensordot(mag, w, 1) + s.log_offset, s.log_floor))
    if s.kind == "logmel":
        return logmel.numpy()
    return tf.signal.mfccs_from_log_mel_spectrograms(logmel)[..., : s.num_coefficients].numpy()


@pytest.fixture(scope="module")
def clips(tiny_corpus) -> np.ndarray:
    from omgkit.kws.audio import read_clip

    paths = sorted(tiny_corpus.glob("*/*_nohash_0.wav"))[:16]
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((2, 16000)) * 3000).astype(np.int16)
    return np.vstack(
        [np.stack([read_clip(p) for p in paths]), noise, np.zeros((1, 16000), np.int16)]
    )


@pytest.mark.parametrize(
    "settings", [FrontendSettings(), FrontendSettings.micro_speech()], ids=["mfcc", "logmel"]
)
def test_matches_tf_signal(clips, settings):
    ours = Frontend(settings)(clips)
    ref = _tf_reference(clips, settings)
    assert ours.shape == ref.shape == (len(clips), *settings.shape)
    assert np.max(np.abs(ours - ref)) <= 1e-4


def test_hello_edge_and_micro_speech_shapes():
    assert FrontendSettings().shape == (49, 10)
    assert FrontendSettings.micro_speech().shape == (49, 40)
    s = FrontendSettings()
    assert (s.window_samples, s.hop_samples, s.fft_length) == (640, 320, 1024)


def test_settings_are_frozen_and_keyword_only():
    s = FrontendSettings()
    with pytest.raises(AttributeError):
        s.kind = "logmel"  # type: ignore[misc]
    with pytest.raises(TypeError):
        FrontendSettings("mfcc")  # type: ignore[misc]
    assert FrontendSettings.from_dict(s.to_dict()) == s


def test_settings_without_the_newer_keys_read_as_they_were_made():
    """Runs and packages made before the log clamp had none and, unless they say otherwise,
    an offset of 1e-2: an absent key must not take today's default, in a run's manifest
    (through TrainSettings) or in a package's frontend map."""
    from omgkit.kws.train import TrainSettings

    old = {k: v for k, v in FrontendSettings().to_dict().items() if k != "log_floor"}
    assert FrontendSettings.from_dict({**old, "log_offset": 1e-6}).log_floor == 0.0
    manifest = {**TrainSettings().to_dict(), "frontend": {**old, "log_offset": 1e-2}}
    assert TrainSettings.from_dict(manifest).frontend == FrontendSettings(
        log_offset=1e-2, log_floor=0
    )
    with pytest.raises(ConfigError, match="log of digital silence"):
        FrontendSettings.from_dict({"kind": "mfcc", "log_offset": 0})
    absent = FrontendSettings.from_dict({"kind": "mfcc"})
    assert (absent.log_offset, absent.log_floor) == (1e-2, 0.0)
    assert (FrontendSettings().log_offset, FrontendSettings().log_floor) == (0.0, 5e-3)
    silence = np.zeros(16000, np.int16)
    assert not np.array_equal(Frontend(absent)(silence), Frontend()(silence))


def test_bad_settings_and_input_are_refused():
    with pytest.raises(ConfigError, match="feature kind"):
        FrontendSettings(kind="spectrogram")
    with pytest.raises(ConfigError, match="lower_hz"):
        FrontendSettings(lower_hz=5000.0, upper_hz=4000.0)
    with pytest.raises(ConfigError, match="unknown frontend settings"):
        FrontendSettings.from_dict({"kind": "mfcc", "hop": 3})
    fe = Frontend()
    with pytest.raises(ConfigError, match="at most 16000"):
        fe(np.zeros(16001, np.int16))
    with pytest.raises(ConfigError, match="int16 or float"):
        fe(np.zeros(16000, np.int32))


def test_short_clip_is_zero_padded_and_float_equals_int16():
    fe = Frontend()
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(12000) * 2000).astype(np.int16)
    padded = np.pad(a, (0, 4000))
    assert np.array_equal(fe(a), fe(padded))
    assert np.allclose(fe(a), fe(a.astype(np.float32) / 32768.0), atol=1e-5)


def test_large_batches_go_in_chunks_with_identical_results():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((Frontend.CHUNK * 3 + 5, 16000)) * 3000).astype(np.int16)
    fe = Frontend()
    whole = fe(x)
    one_by_one = np.concatenate([fe(x[i : i + 1]) for i in range(len(x))])
    assert whole.shape == (len(x), 49, 10) and np.array_equal(whole, one_by_one)
