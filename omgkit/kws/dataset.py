"""One loader for Speech Commands v2 and the synthetic corpus (same layout).

Items are ``<word>/<speaker>_nohash_<n>.wav``; the split of an item comes
from ``validation_list.txt`` / ``testing_list.txt`` when present, else from
the same hash of the speaker id that Speech Commands uses, so splits are
speaker-disjoint and stable. The 12 classes are silence, unknown and the ten
keywords. Silence clips are cut from ``_background_noise_``: each noise file
is divided in time into train (80 %), validation and test (10 % each)
regions, so no noise sample is shared across splits.

The engine of each speaker (``speakers.tsv`` in a synthetic corpus;
``human`` for real recordings) lets evaluation hold one engine out.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DatasetError, DatasetNotFoundError, OmgWarning
from .audio import CLIP_SAMPLES, SAMPLE_RATE, read_clip, read_pcm, resample
from .labels import BACKGROUND_DIR, KEYWORDS, LABELS, SILENCE, UNKNOWN, UNKNOWN_WORDS

SPLITS = ("training", "validation", "testing")
_MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # as in TensorFlow's speech_commands


def which_set(
    filename: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0
) -> str:
    """Speech Commands' deterministic split of a file by its speaker id."""
    base = os.path.basename(filename)
    hash_name = re.sub(r"_nohash_.*$", "", base)
    h = int(hashlib.sha1(hash_name.encode()).hexdigest(), 16)
    pct = (h % (_MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / _MAX_NUM_WAVS_PER_CLASS)
    if pct < validation_percentage:
        return "validation"
    if pct < validation_percentage + testing_percentage:
        return "testing"
    return "training"


@dataclasses.dataclass(frozen=True)
class Item:
    """One clip: a file, or a slice of a background-noise file (silence)."""

    path: str  # relative to the dataset root
    label: int
    split: str
    speaker: str
    engine: str
    offset: int = 0  # silence only: start sample in the noise file
    gain: float = 1.0  # silence only


@dataclasses.dataclass
class Dataset:
    root: Path
    items: list[Item]
    engines: list[str]
    speakers: dict[str, str]  # speaker id -> engine
    noise_files: list[str]

    @property
    def labels(self) -> tuple[str, ...]:
        return LABELS

    def select(
        self,
        split: str | None = None,
        *,
        engines: list[str] | None = None,
        exclude_engines: list[str] | None = None,
    ) -> list[Item]:
        """Items of a split, optionally only (or without) some engines.

        Silence items (engine ``noise``) belong to no speaker and pass every
        engine filter, so every class is present in every evaluation.
        """
        out = []
        for it in self.items:
            if split is not None and it.split != split:
                continue
            if it.engine != "noise":
                if engines is not None and it.engine not in engines:
                    continue
                if exclude_engines and it.engine in exclude_engines:
                    continue
            out.append(it)
        return out

    def evaluation_items(self, split: str, holdout: str | None) -> list[Item]:
        """A split without the held-out engine's speech (silence stays): what a run is scored on."""
        return self.select(split, exclude_engines=[holdout] if holdout else None)

    def split_audio(self, holdout: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Audio and labels per split without the held-out engine, plus ``heldout`` (its speech)."""
        out = {s: self.load(self.evaluation_items(s, holdout)) for s in SPLITS}
        if holdout:
            out["heldout"] = self.load([it for it in self.items if it.engine == holdout])
        return out

    def load(self, items: list[Item], workers: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Audio ``int16 (N, CLIP_SAMPLES)`` and labels ``int64 (N,)`` of items."""
        noise_cache: dict[str, np.ndarray] = {}

        def one(it: Item) -> np.ndarray:
            if it.label == 0:
                if it.path not in noise_cache:
                    noise_cache[it.path] = load_noise(self.root / it.path)
                n = noise_cache[it.path][it.offset : it.offset + CLIP_SAMPLES] * it.gain
                return np.clip(np.round(n * 32767), -32768, 32767).astype(np.int16)
            return read_clip(self.root / it.path, trim=True, quiet=True)

        for it in items:  # load noise files once, before the threads race for them
            if it.label == 0 and it.path not in noise_cache:
                noise_cache[it.path] = load_noise(self.root / it.path)
        x = np.zeros((len(items), CLIP_SAMPLES), np.int16)
        with ThreadPoolExecutor(workers) as pool:
            for i, a in enumerate(pool.map(one, items)):
                x[i] = a
        y = np.asarray([it.label for it in items], np.int64)
        return x, y

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
        for it in self.items:
            out[it.split][LABELS[it.label]] += 1
        return {s: dict(c) for s, c in out.items()}

    def fingerprint(self) -> str:
        """Hash of what the model sees: the item list and every clip's bytes."""
        h = hashlib.sha256()
        for it in sorted(self.items, key=lambda i: (i.path, i.offset)):
            h.update(f"{it.path}|{it.label}|{it.split}|{it.offset}|{it.gain:.6f}\n".encode())
        for p in sorted({it.path for it in self.items}):
            h.update(p.encode())
            h.update((self.root / p).read_bytes())
        return h.hexdigest()


def load_noise(path: Path) -> np.ndarray:
    a, rate = read_pcm(path)
    a = a.mean(axis=0)
    return resample(a, rate) if rate != SAMPLE_RATE else a


def _read_speakers(root: Path) -> dict[str, str]:
    f = root / "speakers.tsv"
    if not f.is_file():
        return {}
    with f.open() as fh:
        return {row["id"]: row["engine"] for row in csv.DictReader(fh, delimiter="\t")}


def _read_list(root: Path, name: str) -> set[str] | None:
    f = root / name
    if not f.is_file():
        return None
    return {line.strip() for line in f.read_text().splitlines() if line.strip()}


def load_dataset(
    path: str | os.PathLike, *, silence_per_split: dict[str, int] | None = None, seed: int = 0
) -> Dataset:
    """Index a Speech Commands-layout tree (nothing is decoded yet)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetNotFoundError(root)
    known_words = set(KEYWORDS) | set(UNKNOWN_WORDS)
    word_dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name in known_words)
    if not any(d.name in KEYWORDS for d in word_dirs):
        raise DatasetError(
            f"{root} is not in Speech Commands layout: no keyword directories "
            f"({', '.join(KEYWORDS[:3])}, ...) found. Make one with `omg data synth --out {root}`."
        )
    val = _read_list(root, "validation_list.txt")
    test = _read_list(root, "testing_list.txt")
    speakers = _read_speakers(root)
    items: list[Item] = []
    for d in word_dirs:
        label = LABELS.index(d.name) if d.name in KEYWORDS else LABELS.index(UNKNOWN)
        for wav in sorted(d.glob("*.wav")):
            rel = f"{d.name}/{wav.name}"
            if val is not None and test is not None:
                split = "validation" if rel in val else "testing" if rel in test else "training"
            else:
                split = which_set(wav.name)
            spk = wav.name.split("_nohash_")[0]
            items.append(Item(rel, label, split, spk, speakers.get(spk, "human")))
    if not items:
        raise DatasetError(f"{root}: keyword directories hold no .wav files")
    noise = (
        sorted((root / BACKGROUND_DIR).glob("*.wav")) if (root / BACKGROUND_DIR).is_dir() else []
    )
    if not noise:
        warnings.warn(
            f"{root}: no {BACKGROUND_DIR}/ files; the silence class will be empty",
            OmgWarning,
            stacklevel=2,
        )
    per_split = Counter(it.split for it in items if it.label >= 2)
    n_kw = len(KEYWORDS)
    want = silence_per_split or {s: max(1, per_split[s] // n_kw) for s in SPLITS}
    items += _silence_items(root, noise, want, seed)
    engines = sorted({it.engine for it in items if it.engine != "noise"})
    return Dataset(root, items, engines, speakers, [f"{BACKGROUND_DIR}/{p.name}" for p in noise])


_REGIONS = {"training": (0.0, 0.8), "validation": (0.8, 0.9), "testing": (0.9, 1.0)}


def noise_region(n_samples: int, split: str) -> tuple[int, int]:
    """Sample range of a noise file that belongs to a split."""
    a, b = _REGIONS[split]
    return int(a * n_samples), int(b * n_samples)


def _silence_items(root: Path, noise: list[Path], want: dict[str, int], seed: int) -> list[Item]:
    if not noise:
        return []
    lengths = {}
    for p in noise:
        a, rate = read_pcm(p)
        lengths[p] = int(a.shape[1] * SAMPLE_RATE / rate)
    out = []
    for split, n in want.items():
        rng = np.random.default_rng([seed, SPLITS.index(split), 7])
        for i in range(n):
            p = noise[i % len(noise)]
            lo, hi = noise_region(lengths[p], split)
            if hi - lo <= CLIP_SAMPLES:
                continue
            off = int(rng.integers(lo, hi - CLIP_SAMPLES))
            # a tenth is digital silence; the rest spans quiet rooms to loud ones
            gain = (
                0.0 if rng.random() < 0.1 else float(np.exp(rng.uniform(np.log(0.02), np.log(1.0))))
            )
            out.append(
                Item(
                    f"{BACKGROUND_DIR}/{p.name}",
                    LABELS.index(SILENCE),
                    split,
                    "noise",
                    "noise",
                    off,
                    gain,
                )
            )
    return out
