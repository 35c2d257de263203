"""Plain against guarded inference measured on an OP-TEE board, inside its normal world.

Runs on the board (``python -m omgkit.board.agent bench``, one request on
stdin, one reply on stdout: nothing is written to the board's disk). The
host (``omgkit.bench.optee_board_bench``) sends the release's plaintext
model, its frontend settings and test clips; both sides run here, side by
side in one process, interleaved so that drift hits both alike:

- **plain**: the C core (``libomgcore.so`` built for aarch64, shipped with
  the workbench's code) in this normal-world process: the C frontend, int8
  quantization, the C engine, one clip per invoke, as the TA does;
- **guarded**: the deployed TA through libteec (``GuardedModel``): the
  package is decrypted in the secure world, audio goes through registered
  shared memory, labels come back.

The SSH channel is the workbench's remote control, not part of OMG: it is
outside both sides (its round trip is ``omg bench --board``'s ``rtt``).
Memory: the TA's figures are the TEE core's own (OP-TEE's statistics
pseudo-TA: the TA's heap peak, the secure pages held by TAs); plain's are
the bytes the C core is given (model, arena, frontend state).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from omg_ta import commands as C

from ..stats import paired_ratio, run_pairs
from ..util import timing_summary as _summary


class _Plain:
    """The plain pipeline on the C core: what a normal-world app without OMG would run."""

    def __init__(self, model: bytes, frontend: dict):
        from omg_ta import ccore
        from omg_ta.frontend import FrontendSettings

        self.engine = ccore.CEngine(model)
        self.frontend = ccore.CFrontend(FrontendSettings.from_dict(frontend))
        self._q = ccore.quantize
        io = self.engine.io
        self._scale, self._zp = io.input_scale, io.input_zero_point

    def classify(self, clips: np.ndarray) -> list[int]:
        out = []
        for clip in clips:
            q = self._q(self.frontend(clip[None, :])[0], self._scale, self._zp)
            out.append(int(np.argmax(self.engine.invoke(q))))
        return out

    def memory_bytes(self) -> dict[str, int]:
        e, f = self.engine, self.frontend
        return {"model": len(e._model) - 1, "arena": e.plan.arena_bytes,
                "frontend_state": int(f.plan.state_bytes)}  # fmt: skip


def _paired(b: dict) -> dict:
    """Paired blocks' wall and CPU ratios with their 95 % intervals (``omgkit.stats``)."""
    w = paired_ratio(b["guarded"]["wall"], b["plain"]["wall"])
    c = paired_ratio(b["guarded"]["cpu"], b["plain"]["cpu"])
    return {"guarded": _summary(b["guarded"]["wall"]), "plain": _summary(b["plain"]["wall"]),
            "ratio": w["ratio"], "ratio_ci95": w["ci95"], "half_width": w["half_width"], "pairs": w["pairs"],
            "per_clip_guarded_ms": float(np.median(b["guarded"]["wall"])) * 1000,
            "per_clip_plain_ms": float(np.median(b["plain"]["wall"])) * 1000,
            "cpu_guarded_ms": float(np.median(b["guarded"]["cpu"])) * 1000,
            "cpu_plain_ms": float(np.median(b["plain"]["cpu"])) * 1000,
            "cpu_ratio": c["ratio"], "cpu_ratio_ci95": c["ci95"]}  # fmt: skip


def run(*, model: bytes, frontend: dict, audio: bytes, n: int = 30, warmup: int = 3,
        init_reps: int = 5, batch_reps: int = 4, batch_clips: int = 16, root: str) -> dict[str, Any]:  # fmt: skip
    """Both sides on the board whose directory is ``root``; see the module's docstring.

    ``n`` pairs of single-clip blocks, ``batch_reps`` pairs of ``batch_clips``-clip batches."""
    from ..guard.host import GuardedModel
    from ..tee.optee import OpteeContext, pta_device_info, ta_memory_stats

    dev, normal = Path(root) / "device", Path(root) / "normal"
    clips = np.frombuffer(audio, "<i2").reshape(-1, C.CLIP_SAMPLES)
    one = clips[:1]
    t0 = time.perf_counter()
    with OpteeContext() as ctx:
        tee = pta_device_info(ctx)[2]
        before = ta_memory_stats(ctx)  # no OMG TA loaded yet: the baseline

    # initialization, cold: guarded = load the TA (OP-TEE verifies its signature) and
    # initialize (unseal, license, decrypt, plan); plain = the engine and frontend on the model
    init_g, load_g, init_p = [], [], []
    for _ in range(init_reps):
        t = time.perf_counter()
        g = GuardedModel(dev, normal)
        info = g.initialize()
        init_g.append(time.perf_counter() - t)
        load_g.append(g.timings["ta_load"])
        g.close()
        t = time.perf_counter()
        plain = _Plain(model, frontend)
        init_p.append(time.perf_counter() - t)

    g = GuardedModel(dev, normal)
    g.initialize()
    try:
        for _ in range(warmup):
            g.classify_batch(one)
            plain.classify(one)
        # paired blocks (omgkit.stats): the order within a pair drawn at random; wall and
        # CPU time of this thread (under OP-TEE the secure world runs on the calling
        # thread's CPU, so its CPU time holds both worlds' work)
        pos = [0]

        def block(fn, k: int):
            def measure():
                idx = (np.arange(k) + pos[0]) % len(clips)
                pos[0] += k
                x = clips[idx]
                c, t = time.thread_time(), time.perf_counter()
                fn(x)
                return (time.perf_counter() - t) / k, (time.thread_time() - c) / k

            return measure

        batch_block = max(1, min(batch_clips, len(clips)))
        single_b = run_pairs(n, block(g.classify_batch, 1), block(plain.classify, 1), seed=1)
        batch_b = run_pairs(max(2, batch_reps), block(g.classify_batch, batch_block),
                            block(plain.classify, batch_block), seed=2)  # fmt: skip
        guarded_labels = g.classify_batch(clips).labels  # the whole set, once: labels of both sides
        plain_labels = plain.classify(clips)
        with OpteeContext() as ctx:
            during = ta_memory_stats(ctx)
    finally:
        g.close()
    ours = [t for t in during["tas"] if t["uuid"] == str(C.TA_UUID)]
    med = statistics.median
    return {
        "tee": tee,
        "runtime": info.get("runtime"),
        "clips": int(len(clips)),
        "initialization": {"guarded": _summary(init_g), "ta_load": _summary(load_g),
                           "plain": _summary(init_p), "overhead_ms": (med(init_g) - med(init_p)) * 1000,
                           "ratio": med(init_g) / med(init_p)},
        "single": _paired(single_b),
        "batch": {**_paired(batch_b), "clips_per_block": batch_block, "window_clips": GuardedModel.SHARED_CLIPS},
        "labels_equal": guarded_labels == plain_labels,
        "labels": guarded_labels,
        "memory": {
            "ta_heap": ours[0]["heap"] if ours else None,
            "ta_ram_held_bytes": during["ta_ram"]["allocated"] - before["ta_ram"]["allocated"],
            "plain_bytes": plain.memory_bytes(),
        },
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
