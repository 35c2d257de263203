"""Simulated rooms: impulse responses by the image method (``rir-generator``).

Reverberation is the first thing a classroom does to speech. Training and
evaluation each draw their own set of shoebox rooms (size, reverberation
time, where the talker and the microphone stand) from their own seed, so no
evaluated room is ever trained on. The impulse responses come from
``rir-generator`` (audiolabs; Habets' image-method generator in C), not from
a hand-made decay.

Simulating a room with a long reverberation time takes about a second here,
so a set of rooms is computed once and kept in the cache directory
(``$OMG_CACHE``, else ``$XDG_CACHE_HOME/omgkit``, else ``~/.cache/omgkit``),
named by a hash of everything that made it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..util import atomic_write_bytes
from .audio import SAMPLE_RATE

ROOMS_FORMAT = 1
"""Bump when ``_simulate`` changes how a response is made (length, normalisation): cached
sets are keyed by it."""
SPEED_OF_SOUND = 343.0
"""Metres per second (air at 20 °C)."""


@dataclasses.dataclass(frozen=True)
class Room:
    """One shoebox room with a talker and a microphone in it (metres, seconds)."""

    size: tuple[float, float, float]
    rt60: float
    talker: tuple[float, float, float]
    mic: tuple[float, float, float]

    @property
    def distance(self) -> float:
        return float(np.linalg.norm(np.subtract(self.talker, self.mic)))


@dataclasses.dataclass(frozen=True)
class RoomRange:
    """Where a set of rooms is drawn from."""

    length: tuple[float, float]
    width: tuple[float, float]
    height: tuple[float, float]
    rt60: tuple[float, float]
    distance: tuple[float, float]
    """Talker to microphone, horizontally (their heights differ too: mic 0.7-1.3 m, talker
    1.2-1.8 m)."""


TRAINING_ROOMS = RoomRange(length=(3.0, 10.0), width=(2.5, 8.0), height=(2.4, 4.0),
                           rt60=(0.15, 0.9), distance=(0.3, 3.0))  # fmt: skip
"""Training's rooms: from a small office to a large classroom."""

EVALUATION_ROOMS = {
    # name: (range, rooms); evaluation draws with its own seed (conditions.EVAL_SEED)
    "small": (RoomRange(length=(3.0, 4.5), width=(2.5, 3.5), height=(2.4, 2.8),
                        rt60=(0.2, 0.4), distance=(0.5, 1.5)), 4),
    "classroom": (RoomRange(length=(7.0, 10.0), width=(6.0, 8.0), height=(3.0, 3.5),
                            rt60=(0.5, 0.8), distance=(1.0, 3.0)), 4),
    "hall": (RoomRange(length=(12.0, 16.0), width=(9.0, 12.0), height=(4.0, 6.0),
                       rt60=(0.8, 1.1), distance=(1.5, 3.5)), 4),
}  # fmt: skip
"""Evaluation's rooms: three kinds, the hall larger and more reverberant than any trained on."""


def draw_rooms(r: RoomRange, n: int, rng: np.random.Generator) -> list[Room]:
    """``n`` rooms from a range: talker and microphone at least 0.5 m from every wall."""
    out = []
    while len(out) < n:
        size = (rng.uniform(*r.length), rng.uniform(*r.width), rng.uniform(*r.height))
        mic = tuple(float(rng.uniform(0.5, s - 0.5)) for s in size[:2]) + (
            float(rng.uniform(0.7, 1.3)),
        )
        d = rng.uniform(*r.distance)
        angle = rng.uniform(0, 2 * np.pi)
        talker = (
            mic[0] + d * np.cos(angle),
            mic[1] + d * np.sin(angle),
            float(rng.uniform(1.2, 1.8)),
        )
        if not all(0.5 <= talker[i] <= size[i] - 0.5 for i in range(3)):
            continue  # a talker outside the room (or against a wall): draw again
        out.append(
            Room(
                tuple(round(float(v), 3) for v in size),
                round(float(rng.uniform(*r.rt60)), 3),
                tuple(round(float(v), 3) for v in talker),
                tuple(round(float(v), 3) for v in mic),
            )
        )
    return out


def _simulate(room: Room) -> np.ndarray:
    import rir_generator

    n = int(room.rt60 * SAMPLE_RATE)  # the response has decayed by 60 dB at rt60
    h = rir_generator.generate(c=SPEED_OF_SOUND, fs=SAMPLE_RATE, r=[list(room.mic)],
                               s=list(room.talker), L=list(room.size),
                               reverberation_time=room.rt60, nsample=n)  # fmt: skip
    h = np.asarray(h, np.float64)[:, 0]
    return (h / np.max(np.abs(h))).astype(np.float32)  # the direct path's peak is 1


def cache_dir() -> Path:
    if os.environ.get("OMG_CACHE"):
        return Path(os.environ["OMG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omgkit"


def _key(rooms: tuple[Room, ...]) -> str:
    from importlib.metadata import version

    desc = json.dumps([ROOMS_FORMAT, version("rir-generator"), SAMPLE_RATE, SPEED_OF_SOUND,
                       [dataclasses.astuple(r) for r in rooms]])  # fmt: skip
    return hashlib.sha256(desc.encode()).hexdigest()[:20]


@lru_cache(maxsize=8)
def impulse_responses(rooms: tuple[Room, ...]) -> tuple[np.ndarray, ...]:
    """The rooms' impulse responses (float32, direct-path peak 1), simulated once per machine."""
    path = cache_dir() / "rooms" / f"{_key(rooms)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                got = tuple(z[f"r{i}"] for i in range(len(rooms)))
            return got
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache file: simulate again
    workers = min(len(rooms), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            irs = tuple(pool.map(_simulate, rooms))
    else:
        irs = tuple(_simulate(r) for r in rooms)
    buf = io.BytesIO()
    np.savez(buf, **{f"r{i}": h for i, h in enumerate(irs)})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return irs


def training_rooms(n: int, seed: int) -> tuple[Room, ...]:
    return tuple(draw_rooms(TRAINING_ROOMS, n, np.random.default_rng([seed, 0x700])))


def reverberate(x: np.ndarray, irs: list[np.ndarray] | tuple[np.ndarray, ...],
                which: np.ndarray) -> np.ndarray:  # fmt: skip
    """Rows of float audio ``x`` through the impulse response ``irs[which[i]]``, each row's
    peak level kept (a reverberant copy as loud as the dry one; gain is its own condition)."""
    n = x.shape[1]
    out = np.empty_like(x, dtype=np.float32)
    for k in np.unique(which):
        idx = np.flatnonzero(which == k)
        h = irs[int(k)]
        nfft = 1 << (n + h.size - 1).bit_length()
        y = np.fft.irfft(np.fft.rfft(x[idx], nfft, axis=1) * np.fft.rfft(h, nfft)[None, :], nfft,
                         axis=1)[:, :n]  # fmt: skip
        peak_in = np.abs(x[idx]).max(axis=1, keepdims=True)
        peak_out = np.abs(y).max(axis=1, keepdims=True) + 1e-12
        out[idx] = (y * peak_in / peak_out).astype(np.float32)
    return out
