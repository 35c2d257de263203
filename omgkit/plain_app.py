"""The plain side of `omg bench`: an app without OMG, in a process of its own.

``python -m omgkit.plain_app FD`` serves one socket (FD, from a socket
pair) in frames (``omgkit.tee.wire``). It runs what the TA runs — the same
runtime on the same model bytes, the same frontend — under the same
placement as the TA's process: started with one BLAS thread and the same
allocator policy (``util.fixed_heap``), and pinned by ``omg bench`` to the
CPU the TA gets. The only difference left between the two sides is the
guard. Each figure is measured here, around the work only, with the clocks
the guarded side is read with (``CLOCK_MONOTONIC`` for wall time, the
thread's CPU clock for CPU time).

Requests (``op``): ``load`` (runtime name, model bytes, frontend settings,
test clips), ``init`` (load runtime and frontend anew: a plain app's cold
start), ``single`` (``k`` clips from ``start``, one per call), ``batch``
(``n`` clips from ``start`` in ``window``-clip steps, as the guarded side
streams them through its shared-memory window), ``one_shot`` (``n`` clips
in one call).
"""

from __future__ import annotations

import os
import socket
import sys
import time

import numpy as np


class _App:
    def __init__(self) -> None:
        self.rt = self.fe = self.clips = None
        self.name = ""
        self.model = b""
        self.settings = None

    def _load(self):
        from omg_ta.frontend import Frontend
        from omg_ta.runtime import load_runtime

        return load_runtime(self.name, self.model), Frontend(self.settings)

    def load(self, req: dict) -> dict:
        from omg_ta import commands as C
        from omg_ta.frontend import FrontendSettings

        self.name, self.model = str(req["runtime"]), bytes(req["model"])
        self.settings = FrontendSettings.from_dict(dict(req["frontend"]))
        self.clips = np.frombuffer(req["audio"], "<i2").reshape(-1, C.CLIP_SAMPLES)
        self.rt, self.fe = self._load()
        return {"ok": True, "clips": len(self.clips)}

    def _pick(self, start: int, n: int) -> np.ndarray:
        idx = (np.arange(n) + start) % len(self.clips)
        return self.clips[idx]

    def init(self, req: dict) -> dict:
        t = time.perf_counter_ns()
        self._load()
        return {"ok": True, "wall_ns": time.perf_counter_ns() - t}

    def single(self, req: dict) -> dict:
        clips = self._pick(int(req["start"]), int(req["k"]))
        rt, fe = self.rt, self.fe
        walls, labels = [], []
        c0 = time.thread_time_ns()
        for i in range(len(clips)):
            t = time.perf_counter_ns()
            labels.append(int(rt.classify(fe(clips[i : i + 1])[..., None])[0]))
            walls.append(time.perf_counter_ns() - t)
        return {"ok": True, "wall_ns": walls, "cpu_ns": time.thread_time_ns() - c0,
                "labels": labels}  # fmt: skip

    def batch(self, req: dict) -> dict:
        clips = self._pick(int(req["start"]), int(req["n"]))
        w = int(req["window"])
        rt, fe = self.rt, self.fe
        c0, t = time.thread_time_ns(), time.perf_counter_ns()
        labels = [
            int(v)
            for i in range(0, len(clips), w)
            for v in rt.classify(fe(clips[i : i + w])[..., None])
        ]
        wall = time.perf_counter_ns() - t
        return {"ok": True, "wall_ns": wall, "cpu_ns": time.thread_time_ns() - c0, "labels": labels}

    def one_shot(self, req: dict) -> dict:
        clips = self._pick(int(req["start"]), int(req["n"]))
        c0, t = time.thread_time_ns(), time.perf_counter_ns()
        labels = [int(v) for v in self.rt.classify(self.fe(clips)[..., None])]
        wall = time.perf_counter_ns() - t
        return {"ok": True, "wall_ns": wall, "cpu_ns": time.thread_time_ns() - c0, "labels": labels}


def main(argv: list[str] | None = None) -> int:
    from .tee import wire
    from .util import fixed_heap

    argv = sys.argv[1:] if argv is None else argv
    fixed_heap()
    sock = socket.socket(fileno=int(argv[0]))
    app = _App()
    ops = {"load": app.load, "init": app.init, "single": app.single, "batch": app.batch,
           "one_shot": app.one_shot}  # fmt: skip
    while True:
        try:
            req, _ = wire.recv(sock)
        except (wire.WireError, ConnectionError):
            return 0
        op = ops.get(req.get("op"))
        try:
            if op is None:
                raise wire.MalformedFrameError(f"unknown op {req.get('op')!r}")
            reply = op(req)
        except Exception as e:  # noqa: BLE001 - every failure is a reply
            reply = wire.error_reply(e, who="plain")
        wire.send(sock, reply)


class PlainApp:
    """``omg bench``'s handle on the plain process: started, pinned, asked, stopped."""

    def __init__(self, cpus: set[int] | None = None):
        import subprocess

        from .tee import wire

        self._wire = wire
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "omgkit.plain_app", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)  # fmt: skip
        theirs.close()
        self.sock = mine
        if cpus:  # before anything loads: threads started later inherit it
            os.sched_setaffinity(self.proc.pid, cpus)

    def call(self, op: str, **fields) -> dict:
        from .errors import BenchError

        try:
            self._wire.send(self.sock, {"op": op, **fields})
            reply, _ = self._wire.recv(self.sock)
        except OSError as e:
            raise BenchError(f"the plain process failed ({op}): {e}") from None
        if not reply.get("ok"):
            raise BenchError(f"the plain process failed ({op}): {reply.get('message')}")
        return reply

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(10)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> PlainApp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
