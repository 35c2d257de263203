"""Paired measurements and their uncertainty: what `omg bench` reports a ratio with.

A guarded/plain ratio of a few per cent is smaller than the noise of wall
time on a shared machine, so the two sides are measured in **paired
blocks**: plain and guarded alternate in many short blocks, in an order
drawn at random within each pair, so that drift (a neighbour's load, the
CPU's clock, the caches) hits both sides of a pair alike. Each block's
figure is the median of its clips (a preempted clip does not move it).
The ratio is the geometric mean of the pairs' ratios, and its 95 %
confidence interval a percentile bootstrap over the pairs (the pair is the
unit that is resampled, so what the pairing cancels stays cancelled).

numpy only: this runs on a board too (``omgkit.board.board_bench``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

BOOTSTRAP = 4000
"""Bootstrap resamples: the interval's ends move by < 0.05 % between seeds at this count."""


def paired_ratio(guarded: Sequence[float], plain: Sequence[float], *, boot: int = BOOTSTRAP,
                 seed: int = 0) -> dict:  # fmt: skip
    """The ratio guarded/plain over paired blocks, with a 95 % bootstrap interval.

    ``guarded[i]`` and ``plain[i]`` are pair i's figures (same units). The
    estimate is the geometric mean of the pairs' ratios (a ratio's natural
    mean: 1.1 and 1/1.1 average to 1); the interval is the 2.5th and 97.5th
    percentiles of that mean over ``boot`` resamples of the pairs.
    """
    g, p = np.asarray(guarded, float), np.asarray(plain, float)
    if g.shape != p.shape or g.ndim != 1 or len(g) < 2:
        raise ValueError("paired_ratio needs two equal sequences of at least 2 pairs")
    if not (np.all(g > 0) and np.all(p > 0)):
        raise ValueError("paired_ratio needs positive figures")
    logs = np.log(g / p)
    est = math.exp(float(logs.mean()))
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, len(logs), size=(boot, len(logs)))].mean(axis=1)
    lo, hi = (math.exp(float(v)) for v in np.percentile(means, [2.5, 97.5]))
    return {"ratio": est, "ci95": [lo, hi], "half_width": (hi - lo) / 2 / est, "pairs": len(g)}


def spread(values: Sequence[float]) -> float:
    """How far repeats of one estimate lie apart: (max − min) / median."""
    v = sorted(values)
    return (v[-1] - v[0]) / float(np.median(v)) if v else float("nan")


def run_pairs(pairs: int, guarded: Callable[[], tuple[float, float]],
              plain: Callable[[], tuple[float, float]], *, seed: int = 0) -> dict:  # fmt: skip
    """Measure ``pairs`` pairs of blocks, the order within each pair drawn at random.

    ``guarded()`` and ``plain()`` each measure one block and return its
    (wall seconds, CPU seconds) per clip. Returns the blocks' figures,
    index-aligned: ``{"guarded": {"wall": [...], "cpu": [...]}, "plain": {...},
    "guarded_first": [...]}``.
    """
    rng = np.random.default_rng(seed)
    out: dict = {"guarded": {"wall": [], "cpu": []}, "plain": {"wall": [], "cpu": []},
                 "guarded_first": []}  # fmt: skip
    for _ in range(pairs):
        first = bool(rng.integers(2))
        order = (("guarded", guarded), ("plain", plain))
        for side, fn in order if first else order[::-1]:
            wall, cpu = fn()
            out[side]["wall"].append(wall)
            out[side]["cpu"].append(cpu)
        out["guarded_first"].append(first)
    return out


def block_report(blocks: dict, repeat_of: Sequence[int]) -> dict:
    """Wall and CPU ratios of paired blocks (:func:`run_pairs`), pooled and per repeat.

    ``repeat_of[i]`` names the repeat pair i belongs to; each repeat's
    estimate is reported, and their :func:`spread`.
    """
    g, p = blocks["guarded"], blocks["plain"]
    rep = np.asarray(repeat_of)
    out = {}
    for kind in ("wall", "cpu"):
        r = paired_ratio(g[kind], p[kind])
        per = [paired_ratio(np.asarray(g[kind])[rep == k], np.asarray(p[kind])[rep == k])["ratio"]
               for k in sorted(set(repeat_of))]  # fmt: skip
        r.update({
            "guarded_ms": float(np.median(g[kind])) * 1000,
            "plain_ms": float(np.median(p[kind])) * 1000,
            "repeats": per,
            "repeat_spread": spread(per),
        })  # fmt: skip
        out[kind] = r
    return out
