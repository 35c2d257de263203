"""WAV reading: conversions warn, impossible input is refused clearly."""

from __future__ import annotations

import os
import wave

import numpy as np
import pytest

from omgkit.errors import AudioFormatError, OmgWarning
from omgkit.kws.audio import read_clip, write_wav


def _wav(path, data: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


def _tone(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")


def test_corpus_format_reads_silently(tmp_path, recwarn):
    p = tmp_path / "ok.wav"
    write_wav(p, _tone(16000, 16000))
    x = read_clip(p)
    assert x.dtype == np.int16 and x.shape == (16000,)
    assert not [w for w in recwarn if issubclass(w.category, OmgWarning)]


def test_wrong_rate_is_resampled_with_warning(tmp_path):
    p = tmp_path / "44k.wav"
    _wav(p, _tone(44100, 44100), 44100)
    with pytest.warns(OmgWarning, match="resampled from 44100 Hz"):
        x = read_clip(p)
    assert x.shape == (16000,)
    # the tone survives: its energy sits at 440 Hz
    spec = np.abs(np.fft.rfft(x.astype(np.float32)))
    assert abs(np.argmax(spec) - 440) <= 2


def test_a_conversion_notice_is_one_plain_line(tmp_path):
    """Not Python's warning format with a line of our source (issue 14's newcomer)."""
    import subprocess
    import sys

    p = tmp_path / "44k.wav"
    _wav(p, _tone(44100, 44100), 44100)
    code = "import sys, warnings; from omgkit.kws.audio import read_clip; read_clip(sys.argv[1])"
    r = subprocess.run(
        [sys.executable, "-W", "default", "-c", code, str(p)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("omgkit: ")
        and "resampled from 44100 Hz" in lines[0]
    )
    assert "OmgWarning" not in r.stderr and "warn(" not in r.stderr


def test_stereo_is_mixed_with_warning(tmp_path):
    p = tmp_path / "stereo.wav"
    _wav(p, np.repeat(_tone(16000, 16000), 2), 16000, channels=2)
    with pytest.warns(OmgWarning, match="2 channels mixed to mono"):
        x = read_clip(p)
    assert np.max(np.abs(x)) > 7000


def test_short_clip_is_padded(tmp_path):
    p = tmp_path / "short.wav"
    _wav(p, _tone(8000, 16000), 16000)
    x = read_clip(p)
    assert x.shape == (16000,) and not x[8000:].any()


def test_long_clip_is_refused_unless_trim(tmp_path):
    p = tmp_path / "long.wav"
    _wav(p, _tone(32000, 16000), 16000)
    with pytest.raises(AudioFormatError, match=r"clip is 2\.000 s; keyword clips are 1\.000 s"):
        read_clip(p)
    with pytest.warns(OmgWarning, match="trimmed"):
        assert read_clip(p, trim=True).shape == (16000,)


def test_not_a_wav_and_missing_file(tmp_path):
    p = tmp_path / "x.wav"
    p.write_bytes(b"ID3 this is an mp3")
    with pytest.raises(AudioFormatError, match="not a PCM WAV file.*sox"):
        read_clip(p)
    with pytest.raises(AudioFormatError, match="file not found"):
        read_clip(tmp_path / "nope.wav")


def test_too_low_rate_is_refused(tmp_path):
    p = tmp_path / "2k.wav"
    _wav(p, _tone(2000, 2000), 2000)
    with pytest.raises(AudioFormatError, match="too low"):
        read_clip(p)


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "b.wav"
    write_wav(p, _tone(16000, 16000))
    write_wav(p, np.zeros(16000, np.int16))
    assert [f.name for f in p.parent.iterdir()] == ["b.wav"]
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    assert not read_clip(p).any()
