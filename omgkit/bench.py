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

import os
import statistics
import time

import numpy as np

from omg_ta import commands as C

from .errors import OmgError
from .util import timing_summary as summary


def board_rtt(url: str, n: int = 50, warmup: int = 5) -> dict:
    from .board import Board, RemoteEnclave

    clip = (np.random.default_rng(0).standard_normal((1, C.CLIP_SAMPLES)) * 1000).astype(np.int16)
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
    return {"board": url, "ping": summary(ping), "classify_one_clip": summary(classify)}


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


class BenchError(OmgError):
    """A part of the benchmark failed; its figures would be wrong, so none are reported."""


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


def _pin(ta_pid: int) -> dict | None:
    """Pin the TA's process to the last CPU and this one (plain and the host) to the others.

    A TA runs on a core of its own while the normal world waits; pinned, the
    two sides keep their caches and neither is moved mid-measurement.
    Returns the CPUs used, or None where there is one CPU (or no affinity).
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(cpus) < 2:
        return None
    _pin_tree(ta_pid, {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))
    return {"ta": [cpus[-1]], "normal_world": cpus[:-1]}


def guard_bench(run_dir, *, workdir=None, data=None, n: int = 60, warmup: int = 5,
                runtimes: tuple[str, ...] | None = None, say=print) -> dict:  # fmt: skip
    """Plain against guarded, interleaved in one run, per phase and per runtime.

    Both sides run BLAS on one thread (the TEE daemon is started so; this
    process is limited with threadpoolctl, also when numpy was loaded before,
    as in a notebook): otherwise plain would use two cores against the TA's one,
    and idle BLAS threads spinning after a call slow the other side. Both use
    the same allocator policy (``util.fixed_heap``). The TA's process is pinned
    to one CPU and this thread to the others (``_pin``), restored at the end.
    """
    from threadpoolctl import threadpool_limits

    from omg_ta.runtime import available_runtimes

    from .util import fixed_heap

    if runtimes is None:  # ai-edge-litert, tflite-micro and the C core, where each is here
        runtimes = tuple(available_runtimes(["litert", "tflm", "c"]))
    fixed_heap()  # the allocator policy of the TEE daemon, for plain too
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        with threadpool_limits(limits=1):
            return _guard_bench(
                run_dir, workdir=workdir, data=data, n=n, warmup=warmup, runtimes=runtimes, say=say
            )
    finally:
        if cpus:
            os.sched_setaffinity(0, cpus)  # a notebook kernel gets its CPUs back


def _guard_bench(
    run_dir, *, workdir, data, n: int, warmup: int, runtimes: tuple[str, ...], say
) -> dict:
    """See :func:`guard_bench`.

    Plain = the same runtime and frontend in this process, model from bytes.
    Guarded = the TA in the emulated TEE's process, through the TEE Client
    API (audio through registered shared memory, or the secure microphone).
    """
    import dataclasses
    import tempfile
    from pathlib import Path

    from omg_ta.frontend import Frontend
    from omg_ta.runtime import load_runtime

    from .guard import GuardedModel
    from .guard.local import LocalGuard
    from .kws.dataset import load_dataset
    from .kws.release import Release, model_file
    from .kws.run import RunDir
    from .tee import mic_feed

    run = RunDir(run_dir)
    man = run.manifest()
    release = Release.from_run(run.path)
    release.check()
    model, fe_settings = release.model, release.frontend
    model_f32 = run.require(model_file("float32"), f"omg convert --run {run.path}").read_bytes()
    root = Path(workdir or tempfile.mkdtemp(prefix="omg-bench-"))
    ds = load_dataset(Path(data or man.data_path))
    x_test, y_test = ds.load(ds.evaluation_items("testing", man.holdout_engine))
    fe = Frontend(fe_settings)
    clip = x_test[:1]

    t0 = time.perf_counter()
    lg = LocalGuard.create(root)
    vendor = lg.vendor
    res: dict = {
        "model": man.model,
        "frontend": fe_settings.kind,
        "test_clips": int(len(x_test)),
        "runtimes": {},
    }
    try:
        for rt_name in runtimes:
            # one device per runtime, its TEE image holding that runtime only
            # (as a TA links TFLM): the TA's memory is then that runtime's
            dev_path = lg.device(f"device-{rt_name}", runtimes=(rt_name,))
            pinned = _pin(lg.daemons[f"device-{rt_name}"].proc.pid)
            rel = dataclasses.replace(
                release, model_id=f"{release.model_id}-{rt_name}", runtime=rt_name
            )
            mid = rel.model_id
            pkg = vendor.seal_model(rel, model_version=1)
            g = GuardedModel(dev_path, root / f"normal-{rt_name}")
            t = time.perf_counter()
            g.prepare(vendor, model_id=mid, model_version=1)
            prep = time.perf_counter() - t
            g.install_package(pkg)
            g.close()
            # initialization (cold start) against plain model loading, interleaved
            init_g, init_p = [], []
            for _ in range(max(5, n // 6)):
                t = time.perf_counter()
                g = GuardedModel(dev_path, root / f"normal-{rt_name}")
                g.initialize()
                init_g.append(time.perf_counter() - t)
                g.close()
                t = time.perf_counter()
                load_runtime(
                    rt_name, model
                )  # what a plain app does at start: interpreter, frontend
                Frontend(fe_settings)
                init_p.append(time.perf_counter() - t)
            g = GuardedModel(dev_path, root / f"normal-{rt_name}")
            g.initialize()
            plain = load_runtime(rt_name, model)
            for _ in range(warmup):
                g.classify_batch(clip)
                plain.classify(fe(clip)[..., None])
            single_g, single_p, mic_g = [], [], []
            for _ in range(n):  # interleaved: drift hits both alike
                t = time.perf_counter()
                g.classify_batch(clip)
                single_g.append(time.perf_counter() - t)
                t = time.perf_counter()
                plain.classify(fe(clip)[..., None])
                single_p.append(time.perf_counter() - t)
                mic_feed(dev_path, clip)  # the microphone "hears" before the request, as in life
                t = time.perf_counter()
                g.classify_mic(1)
                mic_g.append(time.perf_counter() - t)
            # Batch: the guarded side streams the batch through one shared-memory
            # window of W clips; plain does the same work in the same W-clip
            # steps (frontend, then model), so the ratio is the guard's cost. Plain
            # in one go (all features, then the model) is reported beside it: on
            # x86 it is a few % faster because frontend and model do not take
            # turns in the caches (measured: quick test split 307 against 321 ms).
            w = GuardedModel.SHARED_CLIPS
            batch_g, batch_p, batch_p1 = [], [], []
            reps = 3
            for _ in range(reps):
                t = time.perf_counter()
                guarded_labels = g.classify_batch(x_test).labels
                batch_g.append(time.perf_counter() - t)
                t = time.perf_counter()
                plain_labels = [int(v) for i in range(0, len(x_test), w)
                                for v in plain.classify(fe(x_test[i : i + w])[..., None])]  # fmt: skip
                batch_p.append(time.perf_counter() - t)
                t = time.perf_counter()
                one_shot = plain.classify(fe(x_test)[..., None]).tolist()
                batch_p1.append(time.perf_counter() - t)
            # the TA's own process (the TEE core's is apart): its peak, before the session ends
            from .tee.client import hardware

            ta_rss = max(_rss_mb(t["pid"]) for t in hardware(g.device_dir, "ta_status")["tas"])
            g.close()
            med = statistics.median
            r = {
                "preparation_ms": prep * 1000,
                "initialization": {"guarded": summary(init_g), "plain": summary(init_p),
                                   "overhead_ms": (med(init_g) - med(init_p)) * 1000},
                "single": {"guarded": summary(single_g), "plain": summary(single_p),
                           "ratio": med(single_g) / med(single_p),
                           "samples_ms": {"guarded": [v * 1000 for v in single_g],
                                          "plain": [v * 1000 for v in single_p]}},
                "streaming_mic": {"guarded": summary(mic_g), "ratio": med(mic_g) / med(single_p)},
                "batch": {"guarded_ms": med(batch_g) * 1000, "plain_ms": med(batch_p) * 1000, "window_clips": w,
                          "plain_one_shot_ms": med(batch_p1) * 1000, "ratio_to_one_shot": med(batch_g) / med(batch_p1),
                          "ratio": med(batch_g) / med(batch_p), "clips": int(len(x_test))},
                "labels_equal": guarded_labels == plain_labels == one_shot,
                "accuracy_guarded_int8": float(np.mean(np.asarray(guarded_labels) == y_test)),
                "accuracy_plain_int8": float(np.mean(np.asarray(plain_labels) == y_test)),
            }  # fmt: skip
            r["ta_peak_rss_mb"] = ta_rss
            r["pinned_cpus"] = pinned
            res["runtimes"][rt_name] = r
            say(f"{rt_name}: single ×{r['single']['ratio']:.3f}, batch ×{r['batch']['ratio']:.3f}, "
                f"init +{r['initialization']['overhead_ms']:.1f} ms, labels equal: {r['labels_equal']}")  # fmt: skip
        res["ta_peak_rss_mb"] = max(r["ta_peak_rss_mb"] for r in res["runtimes"].values())
    finally:
        lg.close()
    for rt_name, r in res["runtimes"].items():
        r["plain_peak_rss_mb"] = plain_peak_rss_mb(release.source, rt_name, fe_settings)
    res["plain_peak_rss_mb"] = max(r["plain_peak_rss_mb"] for r in res["runtimes"].values())
    f32 = load_runtime("litert", model_f32).classify(fe(x_test)[..., None])
    res["accuracy_plain_float32"] = float(np.mean(f32 == y_test))
    lit, tf = res["runtimes"].get("litert", {}), res["runtimes"].get("tflm", {})
    cr = res["runtimes"].get("c", {})
    res.update({
        "operation_ratio_tflm": tf.get("single", {}).get("ratio"),
        "operation_ratio_c": cr.get("single", {}).get("ratio"),
        "operation_ratio_litert_single": lit.get("single", {}).get("ratio"),
        "operation_ratio_litert_batch": lit.get("batch", {}).get("ratio"),
        "initialization_overhead_ms": lit.get("initialization", {}).get("overhead_ms"),
        "labels_equal": all(r["labels_equal"] for r in res["runtimes"].values()),
        "seconds": time.perf_counter() - t0,
    })  # fmt: skip
    return res
