"""The feature frontend: one implementation, in numpy.

It runs inside the enclave (so it is part of the measured TA) and the
workbench imports it for training, so the model sees exactly the features at
training time that it sees under guard. Two feature kinds:

- ``mfcc``: 49x10 MFCC as in Hello Edge (40 ms window, 20 ms hop, 40 mel
  bands between 20 Hz and 4 kHz, first 10 DCT-II coefficients);
- ``logmel``: the 49x40 log filterbank of micro_speech (30 ms window, 20 ms
  hop, 40 bands). micro_speech's fixed-point noise reduction and PCAN gain
  control are not reproduced: this is the plain log-mel energy.

The maths follows ``tf.signal`` (periodic Hann window, magnitude STFT, HTK
mel scale, DCT-II scaled as in ``mfccs_from_log_mel_spectrograms``) so the
test suite can check it against TensorFlow to 1e-4. It computes in float64
and returns float32.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property

import numpy as np

from .commands import SAMPLE_RATE
from .errors import ConfigError

FEATURE_KINDS = ("mfcc", "logmel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrontendSettings:
    """Every number the frontend uses. Derived sizes are properties."""

    kind: str = "mfcc"
    """``mfcc`` (Hello Edge) or ``logmel`` (micro_speech filterbank)."""
    sample_rate: int = SAMPLE_RATE
    """Samples per second of the input audio."""
    clip_ms: int = 1000
    """Length of one clip; shorter input is zero-padded, longer is refused."""
    window_ms: float = 40.0
    """Analysis window length."""
    hop_ms: float = 20.0
    """Step between windows."""
    num_mel_bins: int = 40
    """Mel filterbank channels."""
    num_coefficients: int = 10
    """DCT coefficients kept (``mfcc`` only)."""
    lower_hz: float = 20.0
    """Lower edge of the lowest mel band."""
    upper_hz: float = 4000.0
    """Upper edge of the highest mel band."""
    log_offset: float = 0.0
    """Added to mel energies before the logarithm: ``log(max(E + log_offset, log_floor))``.

    0 by default: the floor below does the work. Runs trained before ``log_floor`` existed
    used 1e-2, just above what ±1 LSB of 16-bit noise puts in a band (7e-4 to 4.5e-3 on
    average for the MFCC frontend; single frames reach about 8e-3), and before that
    tf.signal's 1e-6, which turned digital silence — most of every synthetic clip — into
    log(1e-6) = -13.8 and one LSB of noise into about -7, moving more than half the input
    and 4.2 % of the quick model's int8 labels (issue 15). An offset still lets ±1 LSB
    move a silent band (by up to 0.6)."""
    log_floor: float = 5e-3
    """Mel energies (after ``log_offset``) below this are raised to it before the logarithm.

    A clamp rather than an offset: digital silence and ±1 LSB of noise give the same
    features in every band whose energy stays under it (with 1e-2, every band; with 5e-3,
    all but 2 % of band-frames, which move by up to 0.46, the MFCCs by up to 0.18). 5e-3
    held labels under ±1 LSB and 0 dB noise best in training (docs/pipeline.md, section
    7). 0 turns it off, which needs ``log_offset`` > 0."""

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ConfigError(f"feature kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if not 0 < self.lower_hz < self.upper_hz <= self.sample_rate / 2:
            raise ConfigError("need 0 < lower_hz < upper_hz <= sample_rate/2")
        if self.window_samples > self.clip_samples or self.hop_samples <= 0:
            raise ConfigError("window must fit in a clip and hop must be positive")
        if self.kind == "mfcc" and not 0 < self.num_coefficients <= self.num_mel_bins:
            raise ConfigError("need 0 < num_coefficients <= num_mel_bins")
        if not (self.log_offset > 0 or self.log_floor > 0):
            raise ConfigError("need log_offset > 0 or log_floor > 0: the log of digital silence")

    @classmethod
    def micro_speech(cls) -> FrontendSettings:
        """The micro_speech filterbank: 30 ms window, 40 log-mel bands."""
        return cls(kind="logmel", window_ms=30.0, lower_hz=125.0, upper_hz=7500.0)

    @property
    def clip_samples(self) -> int:
        return int(self.sample_rate * self.clip_ms // 1000)

    @property
    def window_samples(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def fft_length(self) -> int:
        return 1 << (self.window_samples - 1).bit_length()

    @property
    def num_frames(self) -> int:
        return 1 + (self.clip_samples - self.window_samples) // self.hop_samples

    @property
    def num_features(self) -> int:
        return self.num_coefficients if self.kind == "mfcc" else self.num_mel_bins

    @property
    def shape(self) -> tuple[int, int]:
        """Feature map of one clip: (frames, features)."""
        return (self.num_frames, self.num_features)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FrontendSettings:
        """Settings from a manifest or a package header. A key it lacks takes the value it
        had before the log clamp became the default (``WHEN_ABSENT``), not today's default,
        so older runs and packages read as they were made; the C core's package parser does
        the same."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown frontend settings: {sorted(unknown)}")
        return cls(**{**WHEN_ABSENT, **d})


WHEN_ABSENT: dict[str, float] = {"log_offset": 1e-2, "log_floor": 0.0}
"""What a manifest or package without these keys means: the offset of issue 15's first
round and no floor (``log_floor`` did not exist; every manifest names ``log_offset``, but a
package header may leave any key out)."""


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(s: FrontendSettings) -> np.ndarray:
    """Triangular mel weights, shape (fft_length//2+1, num_mel_bins), as tf.signal."""
    n_bins = s.fft_length // 2 + 1
    freqs = np.linspace(0.0, s.sample_rate / 2.0, n_bins)[1:]  # DC band gets no weight
    spec_mel = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(s.lower_hz), _hz_to_mel(s.upper_hz), s.num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (spec_mel - lower) / (center - lower)
    down = (upper - spec_mel) / (upper - center)
    w = np.maximum(0.0, np.minimum(up, down))
    return np.vstack([np.zeros((1, s.num_mel_bins)), w])


def dct_matrix(s: FrontendSettings) -> np.ndarray:
    """DCT-II as a matrix (num_mel_bins, num_coefficients), scaled as tf.signal's MFCC."""
    n = s.num_mel_bins
    k = np.arange(s.num_coefficients)[None, :]
    i = np.arange(n)[:, None]
    # tf: dct(type=2, norm=None) * rsqrt(2n); dct2 unnormalised = 2*sum x cos(...)
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2.0 * n)) / np.sqrt(2.0 * n)


class Frontend:
    """Turns batches of 16-bit or float audio into feature maps."""

    CHUNK = 8
    """Clips featurised at once; larger batches go in chunks of this size.

    Measured on 64 clips (2 cores): chunks of 8 take 34 ms and 8 MB of
    working memory, chunks of 32 take 57 ms and 32 MB (cache misses)."""

    def __init__(self, settings: FrontendSettings | None = None):
        self.settings = settings or FrontendSettings()
        s = self.settings
        n = np.arange(s.window_samples)
        self._window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / s.window_samples)
        self._mel = mel_matrix(s)
        self._dct = dct_matrix(s) if s.kind == "mfcc" else None

    @cached_property
    def shape(self) -> tuple[int, int]:
        return self.settings.shape

    def _as_float(self, audio: np.ndarray) -> np.ndarray:
        a = np.asarray(audio)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise ConfigError(f"audio must be (samples,) or (batch, samples), got shape {a.shape}")
        if a.dtype == np.int16:
            a = a.astype(np.float32) / 32768.0
        elif np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float32, copy=False)
        else:
            raise ConfigError(f"audio must be int16 or float, got {a.dtype}")
        n = self.settings.clip_samples
        if a.shape[1] > n:
            raise ConfigError(f"clip has {a.shape[1]} samples; at most {n} expected")
        if a.shape[1] < n:
            a = np.pad(a, ((0, 0), (0, n - a.shape[1])))
        return a

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Features of a clip ``(samples,)`` or batch ``(batch, samples)``.

        Returns float32 of shape ``(batch, frames, features)``.
        """
        a = np.asarray(audio)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise ConfigError(f"audio must be (samples,) or (batch, samples), got shape {a.shape}")
        # bounded working memory, as a TA needs: one chunk at a time is converted
        # and turned into float64 spectra (~8 MB), never the whole batch
        out = np.empty((a.shape[0], *self.settings.shape), np.float32)
        for i in range(0, a.shape[0], self.CHUNK):
            out[i : i + self.CHUNK] = self._features(self._as_float(a[i : i + self.CHUNK]))
        return out

    def _features(self, a: np.ndarray) -> np.ndarray:
        s = self.settings
        # float64 inside: the log of a quiet band's energy amplifies rounding
        # (float32 throughout differed from TensorFlow's float64 by 6e-4)
        a = a.astype(np.float64)
        frames = np.lib.stride_tricks.sliding_window_view(a, s.window_samples, axis=1)
        frames = frames[:, :: s.hop_samples][:, : s.num_frames] * self._window
        mag = np.abs(np.fft.rfft(frames, n=s.fft_length, axis=-1))
        logmel = np.log(np.maximum(mag @ self._mel + s.log_offset, s.log_floor))
        if self._dct is None:
            return logmel.astype(np.float32)
        return (logmel @ self._dct).astype(np.float32)
