"""`omg bench`: measurements reported side by side, never asserted in tests.

So far it measures a board: the round-trip time of a classify request
over the open channel to the board agent (one clip, handed in through the
TEE's shared memory on the board) and of an empty request (ping), with
medians and spread. The paper-reproduction benchmark (plain against
guarded, per phase) is issue 6.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def _summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median_ms": statistics.median(xs) * 1000, "p10_ms": xs[len(xs) // 10] * 1000,
            "p90_ms": xs[(len(xs) * 9) // 10] * 1000, "n": len(xs)}  # fmt: skip


def board_rtt(url: str, n: int = 50, warmup: int = 5) -> dict:
    from .board import Board, RemoteEnclave

    clip = (np.random.default_rng(0).standard_normal((1, 16000)) * 1000).astype(np.int16)
    with Board(url) as b, RemoteEnclave(b) as r:
        r.initialize()
        for _ in range(warmup):
            r.classify_batch(clip)
            r.ping()
        ping, classify = [], []
        for _ in range(n):  # interleaved, so drift affects both alike
            t = time.perf_counter()
            r.ping()
            ping.append(time.perf_counter() - t)
            t = time.perf_counter()
            r.classify_batch(clip)
            classify.append(time.perf_counter() - t)
    return {"board": url, "ping": _summary(ping), "classify_one_clip": _summary(classify)}
