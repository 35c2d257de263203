"""Offline text-to-speech engines, one class each, behind one interface.

A *speaker* is one (engine, voice, variant, pitch, rate) identity. Each
engine knows its voices and the meaning of pitch and rate for itself, and
renders a list of words for one speaker to 16 kHz float audio. Engines
differ (measured on Debian 12):

- ``espeak``: espeak-ng through its C library (from the system, or the
  ``espeakng-loader`` wheel, so it works with pip alone). 22.05 kHz, pads
  silence. Variants (m1..m7, f1..f5, klatt, ...) change the voice a lot.
- ``mbrola``: espeak-ng's ``mb-*`` English voices over MBROLA diphones
  (needs the ``espeak-ng`` and ``mbrola`` packages). mb-us3 says almost
  nothing for some words: empty clips are dropped by the generator.
- ``flite``: CMU Flite; pitch via ``int_f0_target_mean``, rate via
  ``duration_stretch``. ``awb_time`` speaks only times and is left out.
- ``festival``: the kal, ked, rab and don diphones, the slt HTS voice
  (32 kHz) and festival's own MBROLA voices us1-us3 and en1 (other
  prosody than espeak-ng's) — those installed. One batch process renders
  many clips (a start costs ~0.4 s); pitch is a resampling shift applied
  afterwards.
- ``pico``: SVOX pico (``pico2wave``); pitch and speed through its markup.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ...errors import EngineError, UnknownNameError
from ..audio import SAMPLE_RATE, read_pcm, resample


@dataclasses.dataclass(frozen=True, order=True)
class Speaker:
    """One synthetic voice identity."""

    engine: str
    voice: str
    variant: str
    pitch: int
    rate: int

    @property
    def id(self) -> str:
        """8 hex digits, as Speech Commands' speaker ids (no underscores)."""
        key = f"{self.engine}|{self.voice}|{self.variant}|{self.pitch}|{self.rate}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]

    def to_row(self) -> list[str]:
        return [self.id, self.engine, self.voice, self.variant, str(self.pitch), str(self.rate)]


class Engine:
    """An offline TTS engine. Subclasses set the parameter grids."""

    name = ""
    voices: tuple[str, ...] = ()
    variants: tuple[str, ...] = ("",)
    pitches: tuple[int, ...] = (0,)
    rates: tuple[int, ...] = (0,)

    def available(self) -> bool:
        raise NotImplementedError

    def grid(self) -> list[Speaker]:
        """Every speaker this engine can be, in a fixed order."""
        return [
            Speaker(self.name, v, var, p, r)
            for v in self.voices
            for var in self.variants
            for p in self.pitches
            for r in self.rates
        ]

    def render(self, speaker: Speaker, words: list[str]) -> list[np.ndarray]:
        """16 kHz float32 audio for each word, in order (possibly empty arrays)."""
        raise NotImplementedError

    @staticmethod
    def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, capture_output=True, check=True, timeout=120, **kw)
        except FileNotFoundError:
            raise EngineError(f"{cmd[0]} is not installed") from None
        except subprocess.CalledProcessError as e:
            raise EngineError(
                f"{cmd[0]} failed: {e.stderr.decode(errors='replace')[-300:]}"
            ) from None
        except subprocess.TimeoutExpired:
            raise EngineError(f"{cmd[0]} timed out") from None

    @staticmethod
    def _read16k(path: str | Path) -> np.ndarray:
        a, rate = read_pcm(path)
        return resample(a.mean(axis=0), rate, SAMPLE_RATE)


def _shift(x: np.ndarray, semitones: int) -> np.ndarray:
    """Pitch (and tempo) shift by resampling: the classic tape-speed change."""
    if not semitones or x.size == 0:
        return x
    factor = 2.0 ** (semitones / 12.0)
    n = max(1, int(round(x.size / factor)))
    from scipy.signal import resample as fft_resample

    return fft_resample(x, n).astype(np.float32)


class _EspeakLib:
    """espeak-ng's C API in synchronous mode, one instance per process."""

    _instance: _EspeakLib | None = None
    CALLBACK = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self.rate = self.lib.espeak_Initialize(2, 0, data, 0)  # AUDIO_OUTPUT_SYNCHRONOUS
        if self.rate <= 0:
            raise EngineError("libespeak-ng failed to initialise")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):  # ctypes callback
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = self.CALLBACK(collect)
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]

    @classmethod
    def get(cls) -> _EspeakLib:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @classmethod
    def fresh(cls) -> _EspeakLib:
        """A freshly loaded library: same text and voice give the same samples.

        libespeak-ng keeps state across calls (measured: the same word in the
        same voice came out 7211, 7204, then 7222 samples long), which
        neither ``espeak_Terminate`` nor ``espeak_ng_SetRandSeed`` resets.
        Unloading and reloading the library does (0.3 ms), with libc's and
        espeak's random seeds reset.
        """
        if cls._instance is not None:
            import _ctypes

            cls._instance.lib.espeak_Terminate()
            _ctypes.dlclose(cls._instance.lib._handle)
            cls._instance = None
        inst = cls.get()
        # Klatt voices draw noise from libc's rand(): seed it too.
        ctypes.CDLL(None).srand(0)
        inst.lib.espeak_ng_SetRandSeed(ctypes.c_long(0))
        return inst

    def say(self, voice: str, pitch: int, rate: int, text: str) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EngineError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(1, rate, 0)  # espeakRATE
        self.lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
        self._chunks = []
        t = text.encode() + b"\0"
        self.lib.espeak_Synth(t, len(t), 0, 1, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return resample(pcm.astype(np.float32) / 32768.0, self.rate, SAMPLE_RATE)


class EspeakEngine(Engine):
    name = "espeak"
    voices = (
        "en-us",
        "en",
        "en-gb-scotland",
        "en-029",
        "en-gb-x-rp",
        "en-gb-x-gbclan",
        "en-gb-x-gbcwmd",
        "en-us-nyc",
    )
    variants = (
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
        "m6",
        "m7",
        "f1",
        "f2",
        "f3",
        "f4",
        "f5",
        "klatt",
        "klatt2",
        "klatt3",
        "klatt4",
        "croak",
        "Andy",
        "annie",
        "Denis",
        "edward",
        "Gene",
        "iven",
        "john",
        "linda",
        "Mike",
        "quincy",
        "steph",
    )
    pitches = (25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75)
    rates = (120, 135, 150, 165, 180, 195)

    def available(self) -> bool:
        try:
            import espeakng_loader  # noqa: F401
        except ImportError:
            return False
        return True

    def render(self, speaker: Speaker, words: list[str]) -> list[np.ndarray]:
        voice = f"{speaker.voice}+{speaker.variant}"
        return [_EspeakLib.fresh().say(voice, speaker.pitch, speaker.rate, w) for w in words]


class MbrolaEngine(Engine):
    name = "mbrola"
    voices = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")
    pitches = (25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75)
    rates = (110, 125, 140, 155, 170, 185)

    def available(self) -> bool:
        if not (shutil.which("espeak-ng") and shutil.which("mbrola")):
            return False
        return any(Path(p).exists() for p in ("/usr/share/mbrola/us1", "/usr/share/mbrola/us1/us1"))

    def render(self, speaker: Speaker, words: list[str]) -> list[np.ndarray]:
        out = []
        with tempfile.TemporaryDirectory(prefix="omg-mb-") as d:
            for i, w in enumerate(words):
                f = os.path.join(d, f"{i}.wav")
                self._run(
                    [
                        "espeak-ng",
                        "-v",
                        speaker.voice,
                        "-p",
                        str(speaker.pitch),
                        "-s",
                        str(speaker.rate),
                        "-w",
                        f,
                        w,
                    ]
                )
                out.append(self._read16k(f) if os.path.getsize(f) > 44 else np.zeros(0, np.float32))
        return out


class FliteEngine(Engine):
    name = "flite"
    voices = ("kal", "kal16", "awb", "rms", "slt")
    pitches = (80, 95, 110, 125, 140, 155, 170, 185, 200)  # int_f0_target_mean, Hz
    rates = (80, 90, 100, 110, 120, 130, 140)  # duration_stretch x100

    def available(self) -> bool:
        return shutil.which("flite") is not None

    def render(self, speaker: Speaker, words: list[str]) -> list[np.ndarray]:
        out = []
        with tempfile.TemporaryDirectory(prefix="omg-flite-") as d:
            for i, w in enumerate(words):
                f = os.path.join(d, f"{i}.wav")
                self._run(
                    [
                        "flite",
                        "-voice",
                        speaker.voice,
                        "--setf",
                        f"int_f0_target_mean={speaker.pitch}",
                        "--setf",
                        f"duration_stretch={speaker.rate / 100:.2f}",
                        "-t",
                        w,
                        "-o",
                        f,
                    ]
                )
                out.append(self._read16k(f))
        return out


FESTIVAL_VOICES = Path("/usr/share/festival/voices")


class FestivalEngine(Engine):
    name = "festival"
    all_voices = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts", "rab_diphone", "don_diphone",
                  "us1_mbrola", "us2_mbrola", "us3_mbrola", "en1_mbrola")  # fmt: skip
    pitches = (-4, -3, -2, -1, 0, 1, 2, 3, 4)  # semitones, applied by resampling
    rates = (80, 90, 100, 110, 120, 130)  # Duration_Stretch x100

    @property
    def voices(self) -> tuple[str, ...]:  # type: ignore[override]
        """The voices installed here (Debian: festvox-* packages), in a fixed order."""
        have = {p.name for p in FESTIVAL_VOICES.glob("*/*") if p.is_dir()}
        return tuple(v for v in self.all_voices if v in have)

    def available(self) -> bool:
        return shutil.which("festival") is not None and bool(self.voices)

    def render(self, speaker: Speaker, words: list[str]) -> list[np.ndarray]:
        return self.render_many([(speaker, words)])[0]

    def render_many(self, jobs: list[tuple[Speaker, list[str]]]) -> list[list[np.ndarray]]:
        """Many speakers in one festival process (its start-up is ~0.4 s)."""
        with tempfile.TemporaryDirectory(prefix="omg-fest-") as d:
            lines, files = [], []
            for j, (spk, words) in enumerate(jobs):
                lines.append(f"(voice_{spk.voice})")
                lines.append(f"(Parameter.set 'Duration_Stretch {spk.rate / 100:.2f})")
                fs = []
                for i, w in enumerate(words):
                    f = os.path.join(d, f"{j}_{i}.wav")
                    safe = "".join(c for c in w if c.isalnum() or c in " '-")
                    lines.append(
                        f'(utt.save.wave (utt.synth (Utterance Text "{safe}")) "{f}" \'riff)'
                    )
                    fs.append(f)
                files.append(fs)
            script = os.path.join(d, "batch.scm")
            Path(script).write_text("\n".join(lines) + "\n")
            self._run(["festival", "-b", script])
            return [
                [
                    _shift(self._read16k(f), spk.pitch)
                    if os.path.exists(f)
                    else np.zeros(0, np.float32)
                    for f in fs
                ]
                for (spk, _), fs in zip(jobs, files, strict=True)
            ]


class PicoEngine(Engine):
    name = "pico"
    voices = ("en-US", "en-GB")
    pitches = (60, 70, 80, 90, 100, 110, 120, 130, 140)  # markup pitch level, %
    rates = (70, 80, 90, 100, 110, 120, 130)  # markup speed level, %

    def available(self) -> bool:
        return shutil.which("pico2wave") is not None

    def render(self, speaker: Speaker, words: list[str]) -> list[np.ndarray]:
        out = []
        with tempfile.TemporaryDirectory(prefix="omg-pico-") as d:
            for i, w in enumerate(words):
                f = os.path.join(d, f"{i}.wav")
                text = f"<pitch level='{speaker.pitch}'><speed level='{speaker.rate}'>{w}</speed></pitch>"
                self._run(["pico2wave", "-l", speaker.voice, "-w", f, text])
                out.append(self._read16k(f))
        return out


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (EspeakEngine(), MbrolaEngine(), FliteEngine(), FestivalEngine(), PicoEngine())
}


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise UnknownNameError("engine", name, list(ENGINES))
    return ENGINES[name]


def available_engines() -> list[str]:
    """Engines that can run on this machine, in a fixed order."""
    return [n for n, e in ENGINES.items() if e.available()]
