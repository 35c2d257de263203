"""`omg data synth`: the offline synthetic corpus in Speech Commands v2 layout.

Layout: ``<word>/<speaker>_nohash_0.wav`` (16 kHz mono 16-bit, exactly one
second), ``validation_list.txt``, ``testing_list.txt``,
``_background_noise_/*.wav``, plus ``speakers.tsv`` (which engine and voice
each speaker id is) and ``corpus.json`` (how it was made).

Deterministic for a seed (the speaker plan, the unknown words each speaker
says and where each word sits in its second all derive from it), parallel
over all cores, and resumable: a clip already on disk is not made again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from ...errors import EngineError, UnknownNameError
from ...util import atomic_write_text, progress
from ..audio import SAMPLE_RATE, fit_clip, write_wav
from ..dataset import which_set
from ..labels import BACKGROUND_DIR, KEYWORDS, UNKNOWN_WORDS
from .tts import ENGINES, FestivalEngine, Speaker, available_engines

CORPUS_VERSION = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Profile:
    """How big a corpus to make."""

    name: str
    speakers: dict[str, int]
    """Speakers per engine (capped at the size of the engine's grid)."""
    unknown_per_speaker: int = 2
    """Unknown-class words each speaker says, besides the ten keywords."""
    noise_seconds: int = 60
    """Length of each background-noise file."""


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        speakers={"espeak": 40, "mbrola": 10, "flite": 14, "festival": 8, "pico": 8},
        unknown_per_speaker=2,
        noise_seconds=20,
    ),
    "quick": Profile(
        name="quick",
        speakers={"espeak": 360, "mbrola": 80, "flite": 140, "festival": 120, "pico": 100},
    ),
    "paper": Profile(
        name="paper",
        speakers={"espeak": 1100, "mbrola": 240, "flite": 300, "festival": 400, "pico": 126},
        unknown_per_speaker=3,
    ),
}


@dataclasses.dataclass
class SynthReport:
    out: Path
    engines: list[str]
    missing_engines: list[str]
    speakers: int
    made: int
    skipped: int
    dropped: int
    removed: int
    per_engine: dict[str, int]
    seconds: float

    def summary(self) -> str:
        eng = ", ".join(f"{k} {v}" for k, v in self.per_engine.items())
        s = (
            f"corpus at {self.out}: {self.speakers} speakers, {self.made} clips made, "
            f"{self.skipped} already there, {self.dropped} empty dropped ({self.seconds:.0f} s)\n"
        )
        if self.removed:
            s += f"  removed {self.removed} clips of speakers no longer planned (engines or voices changed)\n"
        s += f"  clips per engine: {eng}"
        if self.missing_engines:
            s += (
                f"\n  engines not found here: {', '.join(self.missing_engines)} "
                "(as root, `python3 tools/sysdeps.py tts tts-nonfree` installs them)"
            )
        return s


def _seed_for(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def plan_speakers(profile: Profile, engines: list[str], seed: int) -> list[Speaker]:
    """The speakers of a profile: a seeded sample of each engine's grid."""
    out: list[Speaker] = []
    for name in engines:
        grid = ENGINES[name].grid()
        n = min(profile.speakers.get(name, 0), len(grid))
        rng = np.random.default_rng(_seed_for(seed, "plan", name))
        idx = rng.choice(len(grid), size=n, replace=False)
        out += [grid[i] for i in sorted(idx)]
    return out


def words_for(speaker: Speaker, profile: Profile, seed: int) -> list[str]:
    rng = np.random.default_rng(_seed_for(seed, "words", speaker.id))
    unk = rng.choice(len(UNKNOWN_WORDS), size=profile.unknown_per_speaker, replace=False)
    return [*KEYWORDS, *(UNKNOWN_WORDS[i] for i in sorted(unk))]


def clip_path(root: Path, word: str, speaker: Speaker) -> Path:
    return root / word / f"{speaker.id}_nohash_0.wav"


def _render_chunk(
    root: str, seed: int, jobs: list[tuple[Speaker, list[str]]]
) -> tuple[int, int, str]:
    """Worker: render, fit to one second, drop empties, write. Returns (made, dropped, engine)."""
    eng = ENGINES[jobs[0][0].engine]
    if isinstance(eng, FestivalEngine):
        audios = eng.render_many(jobs)
    else:
        audios = [eng.render(spk, words) for spk, words in jobs]
    made = dropped = 0
    for (spk, words), clips in zip(jobs, audios, strict=True):
        for word, audio in zip(words, clips, strict=True):
            rng = np.random.default_rng(_seed_for(seed, "place", spk.id, word))
            clip = fit_clip(audio, rng)
            voiced = int(np.sum(np.abs(clip) > 0.02 * max(1e-6, float(np.max(np.abs(clip))))))
            if float(np.max(np.abs(clip))) < 0.01 or voiced < 0.08 * SAMPLE_RATE:
                dropped += 1
                continue
            clip = clip * (0.7 / float(np.max(np.abs(clip))))  # engines differ wildly in level
            write_wav(clip_path(Path(root), word, spk), clip)
            made += 1
    return made, dropped, jobs[0][0].engine


def make_background_noise(root: Path, seconds: int, seed: int) -> list[Path]:
    """Noise files for silence clips and augmentation (white, pink, brown, hum, fan, tap)."""
    d = root / BACKGROUND_DIR
    n = seconds * SAMPLE_RATE
    rng = np.random.default_rng(_seed_for(seed, "noise"))
    spec_f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec_f[0] = 1.0

    def colored(power: float) -> np.ndarray:
        s = np.fft.rfft(rng.standard_normal(n)) / spec_f ** (power / 2)
        return np.fft.irfft(s, n)

    t = np.arange(n) / SAMPLE_RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 8))
    hum = hum + 0.05 * rng.standard_normal(n)
    fan = colored(1.5) * (1 + 0.3 * np.sin(2 * np.pi * 11 * t))
    tap = colored(0.3) * (
        0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3.1 * t + np.sin(2 * np.pi * 0.7 * t)))
    )
    sounds = {
        "white_noise": rng.standard_normal(n),
        "pink_noise": colored(1.0),
        "brown_noise": colored(2.0),
        "hum": hum,
        "fan": fan,
        "running_tap": tap,
    }
    paths = []
    for name, x in sounds.items():
        p = d / f"{name}.wav"
        if not p.exists():
            x = np.asarray(x, np.float64)
            write_wav(p, (x / np.max(np.abs(x)) * 0.5).astype(np.float32))
        paths.append(p)
    return paths


def write_split_lists(root: Path) -> dict[str, int]:
    """validation_list.txt and testing_list.txt from the speaker-id hash."""
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    counts: Counter[str] = Counter()
    for wav in sorted(root.glob("*/*.wav")):
        if wav.parent.name == BACKGROUND_DIR:
            continue
        rel = f"{wav.parent.name}/{wav.name}"
        s = which_set(wav.name)
        counts[s] += 1
        if s in lists:
            lists[s].append(rel)
    for s, items in lists.items():
        atomic_write_text(root / f"{s}_list.txt", "".join(i + "\n" for i in items))
    return dict(counts)


def _prune_stale(root: Path, planned: set[str]) -> int:
    """Remove clips of speakers an earlier run planned and this one does not.

    The plan changes when the machine gains or loses engines or voices; a
    resumed corpus must not keep the old speakers' clips. Only ids listed in
    the earlier ``speakers.tsv`` are touched: clips put there by hand stay.
    """
    tsv = root / "speakers.tsv"
    if not tsv.is_file():
        return 0
    earlier = {line.split("\t", 1)[0] for line in tsv.read_text().splitlines()[1:] if line}
    gone = earlier - planned
    n = 0
    for wav in root.glob("*/*_nohash_*.wav"):
        if wav.name.split("_", 1)[0] in gone:
            wav.unlink()
            n += 1
    return n


def synthesize(
    out: str | os.PathLike,
    profile: str = "quick",
    *,
    engines: list[str] | None = None,
    seed: int = 0,
    workers: int | None = None,
    show_progress: bool = True,
) -> SynthReport:
    """Make (or complete) a synthetic corpus at ``out``."""
    t0 = time.perf_counter()
    if profile not in PROFILES:
        raise UnknownNameError("profile", profile, list(PROFILES))
    prof = PROFILES[profile]
    root = Path(out)
    have = available_engines()
    if engines is None:
        use = have
    else:
        for e in engines:
            if e not in ENGINES:
                raise UnknownNameError("engine", e, list(ENGINES))
        absent = [e for e in engines if e not in have]
        if absent:
            raise EngineError(
                f"engine(s) not available here: {', '.join(absent)}; available: {', '.join(have) or 'none'}"
            )
        use = list(engines)
    if not use:
        raise EngineError(
            "no text-to-speech engine found: `pip install espeakng-loader` gives espeak-ng"
        )
    root.mkdir(parents=True, exist_ok=True)
    speakers = plan_speakers(prof, use, seed)
    removed = _prune_stale(root, {s.id for s in speakers})
    atomic_write_text(
        root / "speakers.tsv",
        "id\tengine\tvoice\tvariant\tpitch\trate\n"
        + "".join("\t".join(s.to_row()) + "\n" for s in speakers),
    )
    todo: dict[str, list[tuple[Speaker, list[str]]]] = {}
    skipped = 0
    for spk in speakers:
        words = words_for(spk, prof, seed)
        missing = [w for w in words if not clip_path(root, w, spk).exists()]
        skipped += len(words) - len(missing)
        if missing:
            todo.setdefault(spk.engine, []).append((spk, missing))
    chunks = []
    for eng, jobs in todo.items():
        size = 16 if eng == "festival" else 4
        chunks += [jobs[i : i + size] for i in range(0, len(jobs), size)]
    # Slow engines first so the pool does not end on a long straggler.
    chunks.sort(key=lambda c: c[0][0].engine != "festival")
    made = dropped = 0
    per_engine: Counter[str] = Counter()
    workers = workers or os.cpu_count() or 1
    total = sum(len(w) for c in chunks for _, w in c)
    make_background_noise(root, prof.noise_seconds, seed)
    with progress(total=total, desc="synth", unit="clip", disable=not show_progress) as bar:
        if workers == 1:
            results = (_render_chunk(str(root), seed, c) for c in chunks)
            for m, d, eng in results:
                made, dropped = made + m, dropped + d
                per_engine[eng] += m
                bar.update(m + d)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futs = [pool.submit(_render_chunk, str(root), seed, c) for c in chunks]
                for f in as_completed(futs):
                    m, d, eng = f.result()
                    made, dropped = made + m, dropped + d
                    per_engine[eng] += m
                    bar.update(m + d)
    split_counts = write_split_lists(root)
    clips_per_engine: Counter[str] = Counter()
    by_id = {s.id: s.engine for s in speakers}
    for wav in root.glob("*/*_nohash_*.wav"):
        clips_per_engine[by_id.get(wav.name.split("_")[0], "?")] += 1
    manifest = {
        "format": "speech-commands-v2",
        "corpus_version": CORPUS_VERSION,
        "profile": dataclasses.asdict(prof),
        "seed": seed,
        "engines": use,
        "clips_per_engine": dict(sorted(clips_per_engine.items())),
        "splits": split_counts,
        "speakers": len(speakers),
        "id": hashlib.sha256(json.dumps([seed, profile, use, CORPUS_VERSION]).encode()).hexdigest()[
            :12
        ],
    }
    atomic_write_text(root / "corpus.json", json.dumps(manifest, indent=2) + "\n")
    return SynthReport(
        out=root,
        engines=use,
        missing_engines=[e for e in ENGINES if e not in have],
        speakers=len(speakers),
        made=made,
        skipped=skipped,
        dropped=dropped,
        removed=removed,
        per_engine=dict(sorted(clips_per_engine.items())),
        seconds=time.perf_counter() - t0,
    )


def corpus_made_as(path: str | os.PathLike, profile: str, seed: int) -> bool:
    """Whether ``path`` holds a finished corpus that ``synthesize(path, profile, seed=seed)`` made:
    one to use as it is (synthesizing again with other parameters would prune and remake it)."""
    root = Path(path)
    try:
        m = json.loads((root / "corpus.json").read_text())
    except (OSError, ValueError):
        return False
    made = m.get("profile", {}).get("name") if isinstance(m.get("profile"), dict) else None
    return made == profile and m.get("seed") == seed and (root / "testing_list.txt").is_file()
