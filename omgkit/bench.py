"""`omg bench`: measurements reported side by side, never asserted in tests.

- ``guard_bench``: plain against guarded inference on a local emulated
  TEE, interleaved in one run, per phase (initialization against plain
  model loading; single clip, batch and streaming operation) and per
  runtime; the TA process's peak RSS against a plain process's.
- ``board_rtt``: the round-trip time of a classify request over the open
  channel to a board's agent, and of an empty request.
- ``optee_board_bench``: plain against guarded inside an OP-TEE board's
  normal world (``omgkit.board.board_bench``): the same C core in a normal
  process against the TA, per phase, with the TA's memory as OP-TEE counts it.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any

import numpy as np

from omg_ta import commands as C

from .errors import BenchError
from .util import timing_summary as summary


def board_rtt(url: str, n: int = 50, warmup: int = 5) -> dict:
    from .board import Board, RemoteEnclave

    clip = (np.random.default_rng(0).standard_normal((1, C.CLIP_SAMPLES)) * 1000).astype(np.int16)
    with Board(url) as b, RemoteEnclave(b) as r:
        runtime = r.initialize().get("runtime")  # the one the deployed package was sealed for
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
    return {
        "board": url,
        "runtime": runtime,
        "ping": summary(ping),
        "classify_one_clip": summary(classify),
    }


def board_tee(url: str) -> str:
    """The TEE a board reports (``device-info``), e.g. "OP-TEE 4.10.0 (QEMU)"."""
    from .board import Board
    from .board.deployment import _agent

    with Board(url) as b:
        return str(_agent(b, "device-info").get("tee", ""))


def optee_board_bench(url: str, run_dir, *, data=None, clips: int = 64, n: int = 30,
                      say=print) -> dict:  # fmt: skip
    """Plain against guarded on an OP-TEE board, measured in its normal world.

    The run must be the one deployed there (``omg deploy``): the TA's model
    and the plain side's must be the same. The plaintext model and
    ``clips`` test clips travel in one request to a one-shot process on the
    board (``python -m omgkit.board.agent bench``) and stay in its memory.
    Figures are the board's: under QEMU, an emulated Arm CPU's, not a HiKey's.
    """
    from omg_ta.errors import BadStateError

    from .board import Board, RemoteEnclave
    from .kws.dataset import load_dataset
    from .kws.release import Release
    from .kws.run import RunDir
    from .tee import wire

    run = RunDir(run_dir)
    man = run.manifest()
    release = Release.from_run(run.path)
    release.check()
    ds = load_dataset(data or man.data_path)
    x, _ = ds.load(ds.evaluation_items("testing", man.holdout_engine)[:clips])
    with Board(url) as b:
        with RemoteEnclave(b) as r:
            deployed = r.initialize().get("model_id")
        if deployed != release.model_id:
            raise BadStateError(f"{url} runs model {deployed!r}, not this run's {release.model_id!r}: "
                                f"deploy it first (omg deploy --board {url} --run {run.path})")  # fmt: skip
        say(f"measuring on {url}: {len(x)} clips, {n} single-clip rounds (both sides on the board)")
        chan = b.exec_channel(f"{b.addr.python} -m omgkit.board.agent bench")
        chan.settimeout(3600)
        chan.sendall(wire.frame({"model": release.model, "frontend": release.frontend.to_dict(),
                                 "audio": np.ascontiguousarray(x, "<i2").tobytes(), "n": n}))  # fmt: skip
        chan.shutdown_write()

        def read_exact(k: int) -> bytes:
            buf = bytearray()
            while len(buf) < k:
                chunk = chan.recv(k - len(buf))
                if not chunk:
                    err = chan.recv_stderr(65536).decode(errors="replace")
                    raise BenchError(
                        f"the bench on {url} stopped: {err[-500:] or 'channel closed'}"
                    )
                buf += chunk
            return bytes(buf)

        reply, _ = wire.read_frame(read_exact)
        chan.close()
    wire.raise_for(reply)
    res = reply["result"]
    res.update({"board": url, "model": man.model, "frontend": release.frontend.kind})
    return res


def _rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_PLAIN_RSS = r"""
import json, sys, numpy as np
from omg_ta.commands import CLIP_SAMPLES
from omg_ta.frontend import Frontend, FrontendSettings
from omg_ta.runtime import load_runtime
rt = load_runtime(sys.argv[2], open(sys.argv[1], "rb").read())
fe = Frontend(FrontendSettings.from_dict(json.loads(sys.argv[3])))
x = (np.random.default_rng(0).standard_normal((8, CLIP_SAMPLES)) * 1000).astype(np.int16)
rt.classify(fe(x)[..., None])
print([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
"""


def plain_peak_rss_mb(model_path, runtime: str, frontend) -> float:
    """Peak RSS of a plain process that loads ``runtime`` and classifies a few clips, MB.

    A failed process is an error, never a figure (it used to be recorded as 0 MB).
    """
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _PLAIN_RSS, str(model_path), runtime,
                        json.dumps(frontend.to_dict())], capture_output=True, text=True, timeout=300)  # fmt: skip
    out = p.stdout.strip()
    if p.returncode != 0 or not out.isdigit():
        raise BenchError(
            f"the plain {runtime} process for the memory figure failed (status {p.returncode}): "
            + (" ".join(p.stderr.split())[-400:] or "no output")
        )
    return int(out) / 1024


def _pin_tree(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` and of its descendants (the TEE core and its TA processes,
    started or waiting warm) to ``cpus``; what is started later inherits it."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
            children = open(f"/proc/{pid}/task/{tid}/children").read().split()
        except OSError:  # the thread ended meanwhile
            continue
        for child in children:
            _pin_tree(int(child), cpus)


PLACEMENTS = ("shared", "split")


def _pin(core_pid: int, placement: str, cpus: list[int] | None) -> dict | None:
    """Pin the TEE daemon's process tree (core, TA processes) to the last CPU; this
    process, the normal world's client, to that CPU too (``shared``) or to the others
    (``split``). ``cpus``: the CPUs this process had before any pinning (taken again
    from its affinity, the second runtime would see only the first's normal-world CPUs
    and go unpinned, as it did before issue 16). Returns the CPUs used, or None where
    there is one CPU (or no affinity).

    ``shared`` is how a TrustZone TEE runs: the secure world executes on the CPU
    of the normal-world thread that called it, which waits meanwhile; the
    hand-overs are then switches on one CPU. ``split`` gives the TEE a CPU of
    its own, and every request wakes the other CPU twice (in a virtual
    machine, an idle virtual CPU's wake-up is a trip through the hypervisor).
    The plain app is pinned to the TEE's CPU in both.
    """
    if placement not in PLACEMENTS:
        raise BenchError(f"placement {placement!r}: one of {', '.join(PLACEMENTS)}")
    if not cpus or len(cpus) < 2:
        return None
    _pin_tree(core_pid, {cpus[-1]})
    nw = [cpus[-1]] if placement == "shared" else cpus[:-1]
    os.sched_setaffinity(0, set(nw))
    return {"ta": [cpus[-1]], "normal_world": nw, "placement": placement}


def _cpu_clock(pid: int):
    """A function giving the CPU time of process ``pid`` so far, ns: every thread's, the
    ended ones' too (the process's CPU-time clock, ``clock_getcpuclockid``)."""
    import ctypes

    cid = ctypes.c_int()
    err = ctypes.CDLL(None, use_errno=True).clock_getcpuclockid(pid, ctypes.byref(cid))
    if err:
        raise BenchError(f"no CPU-time clock for process {pid} (error {err})")
    clock = cid.value
    return lambda: time.clock_gettime_ns(clock)


TARGETS = {
    # (JSON key, target on the upper end of its 95 % interval): issue 16's
    "operation_ratio_tflm": 1.02,
    "operation_ratio_litert_batch": 1.02,
    "operation_ratio_litert_single": 1.05,
}
HALF_WIDTH_TARGET = 0.005
"""The interval's half-width target, relative, for TFLM single clip and batches."""


def targets(res: dict) -> list[dict]:
    """Each target with the figure it is judged on: met only if the interval's upper end is within it.

    A figure without an interval (an old bench.json) is never marked met."""
    rows = []
    for key, limit in TARGETS.items():
        value, ci = res.get(key), res.get(f"{key}_ci95")
        rows.append({"figure": key, "target": limit, "ratio": value, "ci95": ci,
                     "met": bool(ci) and ci[1] <= limit})  # fmt: skip
    return rows


def guard_bench(run_dir, *, workdir=None, data=None, n: int = 24, repeats: int = 3, block: int = 8,
                batch_clips: int = 128, warmup: int = 5, trace_requests: int = 40, placement: str = "shared",
                runtimes: tuple[str, ...] | None = None, say=print) -> dict:  # fmt: skip
    """Plain against guarded in paired blocks, per phase and per runtime (``omgkit.stats``).

    ``n`` pairs of blocks per repeat and measurement, ``repeats`` repeats;
    a single-clip block is ``block`` clips, a batch block ``batch_clips``
    clips. Both sides run on the CPU the TA gets (the TEE daemon's process
    tree is pinned to the last CPU, the plain app's process too; this
    process, the normal world's client, on that CPU as well with
    ``placement="shared"``, the default, as TrustZone runs the secure world
    on the caller's core, or on the others with ``"split"``), with one BLAS
    thread and the same allocator policy. The plain side is an app of its
    own (``omgkit.plain_app``), measured there around its work.
    """
    from .util import fixed_heap

    if runtimes is None:  # ai-edge-litert, tflite-micro and the C core, where each is here
        from omg_ta.runtime import available_runtimes

        runtimes = tuple(available_runtimes(["litert", "tflm", "c"]))
    if placement not in PLACEMENTS:
        raise BenchError(f"placement {placement!r}: one of {', '.join(PLACEMENTS)}")
    if n < 2 or repeats < 1 or block < 1 or batch_clips < 1:
        raise BenchError(
            "the bench needs n >= 2 pairs, repeats >= 1, block >= 1 and batch clips >= 1"
        )
    fixed_heap()
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):  # the client's own numpy (copying into shared memory)
            return _guard_bench(run_dir, workdir=workdir, data=data, n=n, repeats=repeats, block=block,
                                batch_clips=batch_clips, warmup=warmup, trace_requests=trace_requests,
                                placement=placement, runtimes=runtimes, say=say)  # fmt: skip
    finally:
        if cpus:
            os.sched_setaffinity(0, cpus)  # a notebook kernel gets its CPUs back


class _Guarded:
    """The guarded side's blocks: timed in this process, CPU time of all three processes."""

    def __init__(self, g, dev_path, clips, ta_pid: int, core_pid: int):
        self.g, self.dev, self.clips = g, dev_path, clips
        self.cpu_ta, self.cpu_core = _cpu_clock(ta_pid), _cpu_clock(core_pid)
        self.i = 0

    def _next(self, k: int):
        idx = (np.arange(k) + self.i) % len(self.clips)
        self.i += k
        return self.clips[idx]

    def _cpu(self) -> int:
        return self.cpu_ta() + self.cpu_core() + time.thread_time_ns()

    def single(self, k: int) -> tuple[float, float]:
        clips, walls = self._next(k), []
        c = self._cpu()
        for j in range(k):
            t = time.perf_counter_ns()
            self.g.classify_batch(clips[j : j + 1])
            walls.append(time.perf_counter_ns() - t)
        return statistics.median(walls) / 1e9, (self._cpu() - c) / k / 1e9

    def stream(self, k: int) -> tuple[float, float]:
        from .tee import mic_feed

        mic_feed(self.dev, self._next(k))  # the microphone has heard them before the requests
        walls = []
        c = self._cpu()
        for _ in range(k):
            t = time.perf_counter_ns()
            self.g.classify_mic(1)
            walls.append(time.perf_counter_ns() - t)
        return statistics.median(walls) / 1e9, (self._cpu() - c) / k / 1e9

    def batch(self, k: int) -> tuple[float, float]:
        clips = self._next(k)
        c, t = self._cpu(), time.perf_counter_ns()
        self.g.classify_batch(clips)
        return (time.perf_counter_ns() - t) / k / 1e9, (self._cpu() - c) / k / 1e9


class _PlainBlocks:
    def __init__(self, app, n_clips: int, window: int):
        self.app, self.n, self.window, self.i = app, n_clips, window, 0

    def _start(self, k: int) -> int:
        s, self.i = self.i, self.i + k
        return s % self.n

    def single(self, k: int) -> tuple[float, float]:
        r = self.app.call("single", start=self._start(k), k=k)
        return statistics.median(r["wall_ns"]) / 1e9, r["cpu_ns"] / k / 1e9

    def batch(self, k: int) -> tuple[float, float]:
        r = self.app.call("batch", start=self._start(k), n=k, window=self.window)
        return r["wall_ns"] / k / 1e9, r["cpu_ns"] / k / 1e9


def _measure(pairs: int, repeats: int, guarded, plain, seed: int) -> dict:
    """``repeats`` × ``pairs`` paired blocks, pooled: wall and CPU ratios with intervals."""
    from .stats import block_report, run_pairs

    blocks: dict = {"guarded": {"wall": [], "cpu": []}, "plain": {"wall": [], "cpu": []}}
    rep = []
    for r in range(repeats):
        b = run_pairs(pairs, guarded, plain, seed=seed * 1000 + r)
        for side in ("guarded", "plain"):
            for kind in ("wall", "cpu"):
                blocks[side][kind] += b[side][kind]
        rep += [r] * pairs
    rep_ = block_report(blocks, rep)
    w, c = rep_["wall"], rep_["cpu"]
    return {
        "ratio": w["ratio"], "ratio_ci95": w["ci95"], "half_width": w["half_width"],
        "repeats": w["repeats"], "repeat_spread": w["repeat_spread"], "pairs": w["pairs"],
        "guarded": {"median_ms": w["guarded_ms"], "cpu_ms": c["guarded_ms"]},
        "plain": {"median_ms": w["plain_ms"], "cpu_ms": c["plain_ms"]},
        "cpu_ratio": c["ratio"], "cpu_ratio_ci95": c["ci95"], "cpu_repeats": c["repeats"],
        "samples_ms": {"guarded": [v * 1000 for v in blocks["guarded"]["wall"]],
                       "plain": [v * 1000 for v in blocks["plain"]["wall"]]},
    }  # fmt: skip


@dataclasses.dataclass
class _Setup:
    lg: Any
    vendor: Any
    release: Any
    root: Any
    x_test: np.ndarray
    y_test: np.ndarray
    audio: np.ndarray
    window: int
    n: int
    repeats: int
    block: int
    batch_clips: int
    warmup: int
    trace_requests: int
    placement: str
    cpus: list[int] | None
    say: Any


def _bench_runtime(s: _Setup, k: int, rt_name: str) -> dict:
    """One runtime's measurements (see :func:`guard_bench`): a device whose TEE image holds
    that runtime only (as a TA links TFLM), so that the TA's memory is that runtime's."""
    from .guard import GuardedModel
    from .plain_app import PlainApp
    from .stats import paired_ratio, run_pairs
    from .tee import trace
    from .tee.client import hardware

    lg, vendor, release, root, x_test, y_test = (
        s.lg,
        s.vendor,
        s.release,
        s.root,
        s.x_test,
        s.y_test,
    )
    n, repeats, block, batch_clips, w = s.n, s.repeats, s.block, s.batch_clips, s.window
    # one device per runtime, its TEE image holding that runtime only
    # (as a TA links TFLM): the TA's memory is then that runtime's
    dev_path = lg.device(f"device-{rt_name}", runtimes=(rt_name,))
    core_pid = lg.daemons[f"device-{rt_name}"].proc.pid
    pinned = _pin(core_pid, s.placement, s.cpus)
    rel = dataclasses.replace(release, model_id=f"{release.model_id}-{rt_name}", runtime=rt_name)
    mid = rel.model_id
    pkg = vendor.seal_model(rel, model_version=1)
    g = GuardedModel(dev_path, root / f"normal-{rt_name}")
    t = time.perf_counter()
    g.prepare(vendor, model_id=mid, model_version=1)
    prep = time.perf_counter() - t
    g.install_package(pkg)
    g.close()
    app = PlainApp({pinned["ta"][0]} if pinned else None)
    try:
        app.call(
            "load",
            runtime=rt_name,
            model=release.model,
            frontend=release.frontend.to_dict(),
            audio=s.audio.tobytes(),
        )

        # initialization (cold start) against a plain app's model loading
        def init_g():
            t = time.perf_counter()
            gi = GuardedModel(dev_path, root / f"normal-{rt_name}")
            gi.initialize()
            wall = time.perf_counter() - t
            gi.close()
            return wall, wall

        def init_p():
            wall = app.call("init")["wall_ns"] / 1e9
            return wall, wall

        ib = run_pairs(max(5, n // 4), init_g, init_p, seed=k)
        ig, ip = ib["guarded"]["wall"], ib["plain"]["wall"]
        ir = paired_ratio(ig, ip)
        g = GuardedModel(dev_path, root / f"normal-{rt_name}")
        g.initialize()
        tas = hardware(dev_path, "ta_status")["tas"]
        ta_pid = max(tas, key=lambda t: t["session"])["pid"]
        gs = _Guarded(g, dev_path, x_test, ta_pid, core_pid)
        ps = _PlainBlocks(app, len(x_test), w)
        for _ in range(s.warmup):
            gs.single(1)
            ps.single(1)
            gs.stream(1)
        gs.batch(batch_clips)
        ps.batch(batch_clips)
        s.say(f"{rt_name}: {repeats} × {n} pairs of {block}-clip blocks (single, streaming), "
            f"{repeats} × {max(2, n // 3)} pairs of {batch_clips}-clip batches")  # fmt: skip
        single = _measure(
            n, repeats, lambda: gs.single(block), lambda: ps.single(block), seed=10 + k
        )
        stream = _measure(
            n, repeats, lambda: gs.stream(block), lambda: ps.single(block), seed=20 + k
        )
        batch = _measure(max(2, n // 3), repeats, lambda: gs.batch(batch_clips),
                         lambda: ps.batch(batch_clips), seed=30 + k)  # fmt: skip
        # where the guarded time goes: a few traced requests, after the measurement
        hardware(dev_path, "trace", on=True)
        trace.enable(True)
        try:
            for _ in range(s.trace_requests):
                gs.single(1)
        finally:
            mine = trace.take()
            trace.enable(False)
            theirs = hardware(dev_path, "trace", on=False)["marks"]
        stages = trace.breakdown(mine + [tuple(m) for m in theirs])
        # the whole test split, once: labels and accuracy of both sides
        guarded_labels = g.classify_batch(x_test).labels
        plain_labels = app.call("batch", start=0, n=len(x_test), window=w)["labels"]
        one = app.call("one_shot", start=0, n=len(x_test))
        one_shot = one["labels"]
        whole_g = g.classify_batch(x_test).seconds
        whole_p = app.call("batch", start=0, n=len(x_test), window=w)["wall_ns"] / 1e9
        # the TA's own process (the TEE core's is apart): its peak, before the session ends
        ta_rss = _rss_mb(ta_pid)
        g.close()
    finally:
        app.close()
    r = {
        "preparation_ms": prep * 1000,
        "initialization": {"guarded": summary(ig), "plain": summary(ip),
                           "overhead_ms": (statistics.median(ig) - statistics.median(ip)) * 1000,
                           "ratio": ir["ratio"], "ratio_ci95": ir["ci95"]},
        "single": single,
        "streaming_mic": stream,
        "batch": {**batch, "clips_per_block": batch_clips, "window_clips": w,
                  "whole_split": {"clips": int(len(x_test)), "guarded_ms": whole_g * 1000,
                                  "plain_ms": whole_p * 1000, "plain_one_shot_ms": one["wall_ns"] / 1e6}},
        "breakdown": stages,
        "labels_equal": guarded_labels == plain_labels == one_shot,
        "accuracy_guarded_int8": float(np.mean(np.asarray(guarded_labels) == y_test)),
        "accuracy_plain_int8": float(np.mean(np.asarray(plain_labels) == y_test)),
        "ta_peak_rss_mb": ta_rss,
        "pinned_cpus": pinned,
    }  # fmt: skip
    s.say(f"{rt_name}: single ×{_fmt_ci(single)}, streaming ×{_fmt_ci(stream)}, batch ×{_fmt_ci(batch)}; "
        f"CPU single ×{single['cpu_ratio']:.3f}; init +{r['initialization']['overhead_ms']:.1f} ms; "
        f"labels equal: {r['labels_equal']}")  # fmt: skip
    return r


def _guard_bench(run_dir, *, workdir, data, n: int, repeats: int, block: int, batch_clips: int,
                 warmup: int, trace_requests: int, placement: str, runtimes: tuple[str, ...], say) -> dict:  # fmt: skip
    """See :func:`guard_bench`.

    Guarded = the TA in the emulated TEE's process, through the TEE Client
    API (audio through registered shared memory, or the secure microphone).
    """
    import tempfile
    from pathlib import Path

    from .guard import GuardedModel
    from .guard.local import LocalGuard
    from .kws.dataset import load_dataset
    from .kws.release import Release, model_file
    from .kws.run import RunDir

    run = RunDir(run_dir)
    man = run.manifest()
    release = Release.from_run(run.path)
    release.check()
    fe_settings = release.frontend
    model_f32 = run.require(model_file("float32"), f"omg convert --run {run.path}").read_bytes()
    root = Path(workdir or tempfile.mkdtemp(prefix="omg-bench-"))
    ds = load_dataset(Path(data or man.data_path))
    x_test, y_test = ds.load(ds.evaluation_items("testing", man.holdout_engine))
    audio = np.ascontiguousarray(x_test, "<i2")
    w = GuardedModel.SHARED_CLIPS
    batch_clips = min(batch_clips, len(x_test))

    t0 = time.perf_counter()
    lg = LocalGuard.create(root)
    vendor = lg.vendor
    res: dict = {"model": man.model, "frontend": fe_settings.kind, "test_clips": int(len(x_test)),
                 "design": {"placement": placement, "pairs_per_repeat": n, "repeats": repeats, "clips_per_block": block,
                            "batch_clips_per_block": batch_clips, "window_clips": w,
                            "estimate": "geometric mean of paired block ratios; 95 % percentile bootstrap over pairs"},
                 "runtimes": {}}  # fmt: skip
    setup = _Setup(lg=lg, vendor=vendor, release=release, root=root, x_test=x_test, y_test=y_test, audio=audio,
                   window=w, n=n, repeats=repeats, block=block, batch_clips=batch_clips, warmup=warmup,
                   trace_requests=trace_requests, placement=placement, say=say,
                   cpus=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)  # fmt: skip
    try:
        for k, rt_name in enumerate(runtimes):
            res["runtimes"][rt_name] = _bench_runtime(setup, k, rt_name)
        res["ta_peak_rss_mb"] = max(r["ta_peak_rss_mb"] for r in res["runtimes"].values())
    finally:
        lg.close()
    for rt_name, r in res["runtimes"].items():
        r["plain_peak_rss_mb"] = plain_peak_rss_mb(release.source, rt_name, fe_settings)
    res["plain_peak_rss_mb"] = max(r["plain_peak_rss_mb"] for r in res["runtimes"].values())
    from omg_ta.frontend import Frontend
    from omg_ta.runtime import load_runtime

    f32 = load_runtime("litert", model_f32).classify(Frontend(fe_settings)(x_test)[..., None])
    res["accuracy_plain_float32"] = float(np.mean(f32 == y_test))
    rts = res["runtimes"]
    figures = {"operation_ratio_tflm": ("tflm", "single"), "operation_ratio_c": ("c", "single"),
               "operation_ratio_litert_single": ("litert", "single"),
               "operation_ratio_litert_batch": ("litert", "batch"),
               "operation_ratio_tflm_batch": ("tflm", "batch"), "operation_ratio_c_batch": ("c", "batch"),
               "operation_ratio_litert_streaming": ("litert", "streaming_mic"),
               "operation_ratio_tflm_streaming": ("tflm", "streaming_mic"),
               "operation_ratio_c_streaming": ("c", "streaming_mic")}  # fmt: skip
    for key, (rt, part) in figures.items():
        m = rts.get(rt, {}).get(part)
        res[key] = m["ratio"] if m else None
        res[f"{key}_ci95"] = m["ratio_ci95"] if m else None
        res[key.replace("operation_ratio", "cpu_ratio")] = m["cpu_ratio"] if m else None
        res[key.replace("operation_ratio", "cpu_ratio") + "_ci95"] = (
            m["cpu_ratio_ci95"] if m else None
        )
    res.update({
        "initialization_overhead_ms": rts.get("litert", {}).get("initialization", {}).get("overhead_ms"),
        "labels_equal": all(r["labels_equal"] for r in rts.values()),
        "seconds": time.perf_counter() - t0,
    })  # fmt: skip
    res["targets"] = targets(res)
    return res


def _fmt_ci(m: dict) -> str:
    return fmt_ratio(m.get("ratio"), m.get("ratio_ci95"))


def fmt_ratio(value: float | None, ci: list | None, target: float | None = None) -> str:
    """``1.012 [1.008, 1.016]``; with a target, whether the interval's upper end meets it."""
    if value is None:
        return "—"
    s = f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " (no interval)")
    if target is not None:
        met = bool(ci) and ci[1] <= target
        s += f" {'✓' if met else '✗'} ≤ {target:.2f}"
    return s


def report_lines(res: dict) -> list[str]:
    """`omg bench --run`'s table: each ratio with its interval, CPU time, where the time goes, targets."""
    names = {
        "single": "single clip",
        "streaming_mic": "streaming (mic)",
        "batch": "batch, per clip",
    }
    lines = [f"{res['model']} ({res['frontend']}), {res['test_clips']} test clips; labels equal: "
             f"{res['labels_equal']}; TA peak RSS {res['ta_peak_rss_mb']:.0f} MB (plain "
             f"{res['plain_peak_rss_mb']:.0f} MB)",
             f"{'':8} {'':16} {'guarded':>9} {'plain':>9}  {'wall ratio [95 % CI]':<24} "
             f"{'CPU ratio [95 % CI]':<24} repeats"]  # fmt: skip
    for rt, r in res["runtimes"].items():
        for part, label in names.items():
            m = r[part]
            c_lo, c_hi = m["cpu_ratio_ci95"]
            reps = " ".join(f"{v:.3f}" for v in m["repeats"])
            lines.append(f"{rt:<8} {label:<16} {m['guarded']['median_ms']:7.3f}ms {m['plain']['median_ms']:7.3f}ms  "
                         f"{_fmt_ci(m):<24} {m['cpu_ratio']:.3f} [{c_lo:.3f}, {c_hi:.3f}]  {reps}")  # fmt: skip
        i = r["initialization"]
        lines.append(f"{rt:<8} {'initialization':<16} {i['guarded']['median_ms']:7.1f}ms "
                     f"{i['plain']['median_ms']:7.1f}ms  +{i['overhead_ms']:.1f} ms")  # fmt: skip
    for rt, r in res["runtimes"].items():
        b = r.get("breakdown") or {}
        if b.get("requests"):
            st = b["stages"]
            parts = ", ".join(f"{k} {v['median_us']:.0f}" for k, v in st.items())
            lines.append(
                f"where a guarded clip's time goes ({rt}, µs, median of {b['requests']}): {parts}"
            )
    for t in res.get("targets", []):
        if t["ratio"] is None:
            continue
        hi = t["ci95"][1] if t["ci95"] else float("nan")
        lines.append(f"target {t['figure']} <= {t['target']:.2f}: {t['ratio']:.3f}, upper bound {hi:.3f} "
                     f"{'met' if t['met'] else 'NOT met'}")  # fmt: skip
    return lines
