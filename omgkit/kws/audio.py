"""WAV input and output at the corpus format: 16 kHz, mono, 16-bit, 1.000 s.

Reading is forgiving where the fix is unambiguous and says so: another
sample rate is resampled, several channels are averaged, a short clip is
zero-padded (as Speech Commands' own loader does), each with an
:class:`~omgkit.errors.OmgWarning`. A clip longer than a second is trimmed
only when asked (``trim=True``); otherwise it is refused, since which second
to keep is not obvious. Writing is atomic (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import warnings
import wave
from fractions import Fraction
from math import gcd
from pathlib import Path
from typing import BinaryIO

import numpy as np

from omg_ta.commands import CLIP_SAMPLES, SAMPLE_RATE

from ..errors import AudioFormatError, OmgWarning
from ..util import atomic_write_bytes

__all__ = ["CLIP_SAMPLES", "SAMPLE_RATE", "WavInfo", "fit_clip", "is_silent", "read_clip", "read_pcm",
           "resample", "to_int16", "wav_info", "write_wav"]  # fmt: skip


MIN_RATE, MAX_RATE = 4_000, 192_000
"""Sample rates a WAV may have: telephone speech and below to studio audio."""
MAX_CHANNELS = 8
MAX_RATIO_TERM = 1000
"""Resampling approximates the rate ratio by a fraction with terms at most this
(exact for every common rate: 44.1 kHz is 160/441): the filter has at most
20 × this + 1 taps, and the rate is off by less than 0.1 %."""
_EXTENSIBLE, _PCM = 0xFFFE, 0x0001
_MAX_CHUNKS = 64


def _ratio(src_rate: int, dst_rate: int, max_term: int | None) -> tuple[int, int]:
    """(up, down) for ``dst_rate / src_rate``, with terms at most ``max_term`` (None: exact)."""
    g = gcd(int(src_rate), int(dst_rate))
    up, down = int(dst_rate) // g, int(src_rate) // g
    if max_term is None or max(up, down) <= max_term:
        return up, down
    if up <= down:
        f = Fraction(up, down).limit_denominator(max_term)
        return max(f.numerator, 1), f.denominator
    f = Fraction(down, up).limit_denominator(max_term)
    return f.denominator, max(f.numerator, 1)


def resample(x: np.ndarray, src_rate: int, dst_rate: int = SAMPLE_RATE, *,
             max_term: int | None = MAX_RATIO_TERM) -> np.ndarray:  # fmt: skip
    """Polyphase resampling of float audio (scipy's anti-aliased filter).

    The ratio is reduced, then approximated so that neither term exceeds
    ``max_term`` (:data:`MAX_RATIO_TERM`; ``None``: exact): a rate such as
    191,999 Hz would otherwise need a filter of millions of taps.
    """
    up, down = _ratio(src_rate, dst_rate, max_term)
    if up == down:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    return resample_poly(x, up, down, axis=-1).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16, clipped."""
    return np.clip(np.round(np.asarray(x) * 32767.0), -32768, 32767).astype(np.int16)


@dataclasses.dataclass(frozen=True)
class WavInfo:
    """A WAV's header, checked: integer PCM, sane rate, channels and width, data in the file."""

    channels: int
    width: int  # bytes per sample
    rate: int
    frames: int
    data_offset: int


def _bad(p, problem: str) -> AudioFormatError:
    return AudioFormatError(p, f"{problem}; convert it with e.g. `sox in.x -b 16 -r 16000 out.wav`")


def wav_info(f: BinaryIO, p: object = "<wav>") -> WavInfo:
    """Parse and check a WAV header from an open binary file, reading only the header.

    Refuses (:class:`~omgkit.errors.AudioFormatError`, saying what is wrong)
    anything but integer PCM (``WAVE_FORMAT_PCM``, or ``EXTENSIBLE`` with
    the PCM sub-format) of 1 to 8 channels, 1 to 4 bytes a sample, at
    4 to 192 kHz, with at least one frame, whose data chunk lies within the
    file. Nothing is allocated from a header field before it is checked.
    """
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise _bad(p, "not a PCM WAV file (no RIFF/WAVE header)")
    fmt = None
    for _ in range(_MAX_CHUNKS):
        ch = f.read(8)
        if len(ch) < 8:
            raise _bad(p, "not a PCM WAV file (no data chunk)")
        cid, n = ch[:4], struct.unpack("<I", ch[4:])[0]
        start = f.tell()
        if cid == b"fmt ":
            if not 16 <= n <= 1024:
                raise _bad(p, f"corrupt WAV: a format chunk of {n} bytes")
            fmt = f.read(n)
            if len(fmt) < n:
                raise _bad(p, "corrupt WAV: the file ends inside its format chunk")
        elif cid == b"data":
            if fmt is None:
                raise _bad(p, "corrupt WAV: audio before its format chunk")
            break
        if start + n > size:
            raise _bad(p, f"corrupt WAV: a {cid!r} chunk of {n} bytes is truncated")
        f.seek(start + n + (n & 1))
    else:
        raise _bad(p, f"not a PCM WAV file (no data chunk in its first {_MAX_CHUNKS} chunks)")
    tag, channels, rate, _byte_rate, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID's first two bytes
    if tag != _PCM:
        raise _bad(p, f"not integer PCM (format tag {tag:#06x}: float, compressed or other)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise _bad(p, f"{channels} channels; 1 to {MAX_CHANNELS} are supported")
    width = (bits + 7) // 8
    if not 1 <= width <= 4:
        raise _bad(p, f"unsupported sample width {bits} bits; 8, 16, 24 or 32 are supported")
    if align != channels * width:
        raise _bad(p, f"corrupt WAV: block align {align} for {channels} channels of {width} bytes")
    if not MIN_RATE <= rate <= MAX_RATE:
        low = "too low" if rate < MIN_RATE else "too high"
        raise AudioFormatError(
            p,
            f"sample rate {rate} Hz is {low}: {MIN_RATE} to {MAX_RATE} Hz are read "
            f"(keyword clips are {SAMPLE_RATE} Hz)",
        )
    offset = f.tell()
    if offset + n > size:
        raise _bad(p, f"truncated WAV: its data chunk claims {n} bytes, the file holds "
                      f"{size - offset} after the header")  # fmt: skip
    frames = n // align
    if frames == 0:
        raise AudioFormatError(p, "no audio: the WAV has a header and no frames")
    return WavInfo(channels, width, rate, frames, offset)


def _frames(f: BinaryIO, info: WavInfo, frames: int) -> np.ndarray:
    """``frames`` frames from the data chunk as float32 ``(channels, frames)`` (a view).

    Peak memory: the bytes read plus the float32 samples, at most 5 × the
    bytes (8-bit audio: 1 byte becomes 4); 24-bit goes through one int32 copy.
    """
    f.seek(info.data_offset)
    raw = f.read(frames * info.channels * info.width)
    w = info.width
    if w == 1:
        a = np.frombuffer(raw, np.uint8).astype(np.float32)
        del raw
        a -= 128.0
        a /= 128.0
    elif w == 2:
        a = np.frombuffer(raw, "<i2").astype(np.float32)
        a /= 32768.0
    elif w == 3:
        v = np.zeros((len(raw) // 3, 4), np.uint8)
        v[:, 1:] = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        del raw
        v = v.view("<i4")[:, 0]
        v >>= 8  # arithmetic: the sign of the top byte
        a = v.astype(np.float32)
        del v
        a /= float(1 << 23)
    else:
        a = np.frombuffer(raw, "<i4").astype(np.float32)
        a /= float(1 << 31)
    return a.reshape(-1, info.channels).T


def _open(p: Path) -> BinaryIO:
    try:
        return open(p, "rb")
    except FileNotFoundError:
        raise AudioFormatError(p, "file not found") from None
    except OSError as e:
        raise AudioFormatError(p, f"cannot be read ({e.strerror or e})") from None


def read_pcm(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Any integer PCM WAV as float32 ``(channels, samples)`` and its rate.

    The header is checked first (:func:`wav_info`), so nothing is allocated
    or resampled for a file that would be refused. Memory: at most 5 × the
    file's size (8-bit audio; 3 × for 16-bit) plus a few kB. Several
    channels come as a view of the interleaved samples (not contiguous).
    """
    p = Path(path)
    with _open(p) as f:
        info = wav_info(f, p)
        return _frames(f, info, info.frames), info.rate


def read_clip(path: str | os.PathLike, *, trim: bool = False, quiet: bool = False) -> np.ndarray:
    """One clip as int16 ``(CLIP_SAMPLES,)``: converted with a warning where needed.

    A clip that would be longer than a second is refused from its header,
    before its audio is read; with ``trim`` only its first second is read
    (and what the resampling filter reaches beyond it), so the result is the
    same as resampling all of it and keeping the first second. Peak memory
    is at most 10 × the bytes read (the whole file, or its first second and
    the filter's reach; 8-bit stereo is the worst case) plus ~0.3 MB for the
    clip and the filter, whatever the file's length: 1.1 MB for 48 kHz
    stereo 16-bit, 13 MB for 192 kHz with 8 channels of 32 bits (measured
    with tracemalloc).
    """
    p = Path(path)
    with _open(p) as f:
        info = wav_info(f, p)
        up, down = _ratio(info.rate, SAMPLE_RATE, MAX_RATIO_TERM)
        n_out = -(-info.frames * SAMPLE_RATE // info.rate)  # samples at 16 kHz (exactly)
        if n_out > CLIP_SAMPLES and not trim:
            raise AudioFormatError(
                p,
                f"clip is {n_out / SAMPLE_RATE:.3f} s; keyword clips are 1.000 s "
                "(cut it, or pass trim=True to keep the first second)",
            )
        # the first second and the filter's reach (10 × max(up, down) taps either side)
        reach = -(-(CLIP_SAMPLES * down + 20 * max(up, down) + 4 * down) // up) + 4
        a = _frames(f, info, min(info.frames, reach))
    notes = []
    if info.channels != 1:
        notes.append(f"{info.channels} channels mixed to mono")
        a = np.ascontiguousarray(a).mean(axis=0, keepdims=True)  # summed as it always was
    a = a[0]
    if info.rate != SAMPLE_RATE:
        notes.append(f"resampled from {info.rate} Hz to {SAMPLE_RATE} Hz")
        a = resample(a, info.rate)
    if n_out > CLIP_SAMPLES:
        notes.append(f"trimmed from {n_out / SAMPLE_RATE:.3f} s to 1.000 s")
    a = a[:CLIP_SAMPLES]  # (an approximated ratio may give a sample or two more)
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
        x = resample(x, x.size, limit, max_term=None)  # exact, as the corpus was made
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
