"""WAV input and output at the corpus format: 16 kHz, mono, 16-bit, 1.000 s.

Reading is forgiving where the fix is unambiguous and says so: another
sample rate is resampled, several channels are averaged, a short clip is
zero-padded (as Speech Commands' own loader does), each with an
:class:`~omgkit.errors.OmgWarning`. A clip longer than a second is trimmed
only when asked (``trim=True``); otherwise it is refused, since which second
to keep is not obvious. Writing is atomic (temporary file, then rename).
"""

from __future__ import annotations

import io
import os
import warnings
import wave
from math import gcd
from pathlib import Path

import numpy as np

from omg_ta.commands import CLIP_SAMPLES, SAMPLE_RATE

from ..errors import AudioFormatError, OmgWarning
from ..util import atomic_write_bytes

__all__ = ["CLIP_SAMPLES", "SAMPLE_RATE", "fit_clip", "is_silent", "read_clip", "read_pcm",
           "resample", "to_int16", "write_wav"]  # fmt: skip


def resample(x: np.ndarray, src_rate: int, dst_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of float audio (scipy's anti-aliased filter)."""
    if src_rate == dst_rate:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(src_rate), int(dst_rate))
    return resample_poly(x, dst_rate // g, src_rate // g, axis=-1).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16, clipped."""
    return np.clip(np.round(np.asarray(x) * 32767.0), -32768, 32767).astype(np.int16)


def read_pcm(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Any integer PCM WAV as float32 ``(channels, samples)`` and its rate."""
    p = Path(path)
    try:
        with wave.open(str(p), "rb") as w:
            ch, width, rate, n = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            raw = w.readframes(n)
    except FileNotFoundError:
        raise AudioFormatError(p, "file not found") from None
    except (wave.Error, EOFError) as e:
        raise AudioFormatError(
            p, f"not a PCM WAV file ({e}); convert it with e.g. `sox in.x -b 16 out.wav`"
        ) from None
    if width == 1:
        a = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        a = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        v = (
            b[:, 0].astype(np.int32)
            | (b[:, 1].astype(np.int32) << 8)
            | (b[:, 2].astype(np.int32) << 16)
        )
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        a = v.astype(np.float32) / float(1 << 23)
    elif width == 4:
        a = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioFormatError(p, f"unsupported sample width {width} bytes")
    if ch < 1 or a.size % ch:
        raise AudioFormatError(p, f"corrupt WAV: {a.size} samples for {ch} channels")
    return a.reshape(-1, ch).T.copy(), rate


def read_clip(path: str | os.PathLike, *, trim: bool = False, quiet: bool = False) -> np.ndarray:
    """One clip as int16 ``(CLIP_SAMPLES,)``: converted with a warning where needed."""
    p = Path(path)
    a, rate = read_pcm(p)
    notes = []
    if a.shape[0] != 1:
        notes.append(f"{a.shape[0]} channels mixed to mono")
        a = a.mean(axis=0, keepdims=True)
    a = a[0]
    if rate != SAMPLE_RATE:
        if rate < 4000:
            raise AudioFormatError(p, f"sample rate {rate} Hz is too low; need 16000 Hz")
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
        a = resample(a, rate)
    if a.size > CLIP_SAMPLES:
        if not trim:
            raise AudioFormatError(
                p,
                f"clip is {a.size / SAMPLE_RATE:.3f} s; keyword clips are 1.000 s "
                "(cut it, or pass trim=True to keep the first second)",
            )
        notes.append(f"trimmed from {a.size / SAMPLE_RATE:.3f} s to 1.000 s")
        a = a[:CLIP_SAMPLES]
    if a.size < CLIP_SAMPLES:
        a = np.pad(a, (0, CLIP_SAMPLES - a.size))
    if notes and not quiet:
        warnings.warn(f"{p}: " + "; ".join(notes), OmgWarning, stacklevel=2)
    return to_int16(a)


def write_wav(path: str | os.PathLike, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono 16-bit PCM atomically."""
    a = np.asarray(audio)
    if a.dtype != np.int16:
        a = to_int16(a)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(a.astype("<i2").tobytes())
    atomic_write_bytes(path, buf.getvalue())


def fit_clip(
    x: np.ndarray, rng: np.random.Generator | None = None, n: int = CLIP_SAMPLES
) -> np.ndarray:
    """Trim leading/trailing near-silence and place speech in an ``n``-sample clip.

    Speech longer than the clip is sped up to fit (by resampling) rather
    than cut, so no word loses its end. With ``rng`` the position is random,
    otherwise centred.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return np.zeros(n, np.float32)
    thr = max(1e-4, 0.02 * float(np.max(np.abs(x))))
    idx = np.flatnonzero(np.abs(x) > thr)
    if idx.size == 0:
        return np.zeros(n, np.float32)
    x = x[max(0, idx[0] - 160) : idx[-1] + 160]
    limit = int(n * 0.95)
    if x.size > limit:
        x = resample(x, x.size, limit)
    slack = n - x.size
    off = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    out = np.zeros(n, np.float32)
    out[off : off + x.size] = x
    return out


def is_silent(x: np.ndarray, threshold: float = 0.01) -> bool:
    """True when a clip has no sample above ``threshold`` (of full scale)."""
    a = np.asarray(x)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    return a.size == 0 or float(np.max(np.abs(a))) < threshold
