"""The emulated TEE daemon: a process of its own, apart from the normal world.

``python -m omgkit.tee --device DIR`` listens on two Unix sockets in
``DIR``: ``tee.sock``, the TEE Client API (what the normal world may call),
and ``hw.sock``, which stands in for hardware — the secure microphone's
audio and the secure clock's setting. On a real board the normal world has
no way to the second; in emulation it is a socket only the test harness and
``omg`` tools use, which docs/threat-model.md states plainly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from omg_ta.errors import BadParametersError, BadStateError, ShortBufferError

from ..errors import ConfigError
from ..util import fixed_heap
from . import wire
from .device import Device
from .wire import HW_SOCKET, TEE_SOCKET, error_reply
from .world import SecureWorld

PID_FILE = "tee.pid"


class _FrameHandler(socketserver.BaseRequestHandler):
    """One connection: read a frame, answer it, until the peer closes."""

    world: SecureWorld

    def reply_to(self, req: dict) -> dict:
        raise NotImplementedError

    def closed(self) -> None:
        """Called once the connection ends."""

    def handle(self) -> None:
        try:
            while True:
                try:
                    req, _ = wire.recv(self.request)
                except (wire.WireError, ConnectionError):
                    return
                try:
                    reply = self.reply_to(req)
                except Exception as e:  # every failure becomes a reply with a result code
                    reply = error_reply(e)
                wire.send(self.request, reply)
        finally:
            self.closed()


class _Handler(_FrameHandler):
    """The TEE Client API: sessions and shared memory live as long as the connection."""

    def setup(self) -> None:
        self.sessions: set[int] = set()
        self.shm: dict[str, object] = {}

    def reply_to(self, req: dict) -> dict:
        return self.dispatch(req, self.sessions, self.shm)

    def closed(self) -> None:
        for sid in list(self.sessions):
            self.world.close_session(sid)
        for s in self.shm.values():
            try:
                s.close()
            except BufferError:
                pass  # a view is still alive; the mapping goes with the process

    def _param_in(self, p, shm: dict):
        if p is None:
            return None
        if p[0] == "o":  # an output memref: the TA sees its size, as under GP
            return int(p[1])
        if p[0] == "v":
            return (int(p[1]), int(p[2]))
        if p[0] == "m":
            return bytes(p[1])
        if p[0] == "s":
            from multiprocessing import shared_memory

            name, off, size = p[1], int(p[2]), int(p[3])
            if name not in shm:
                from multiprocessing import resource_tracker

                shm[name] = shared_memory.SharedMemory(name=name)
                # attaching must not make this process the owner (Python < 3.13 would unlink it at exit)
                resource_tracker.unregister(shm[name]._name, "shared_memory")
            buf = shm[name].buf
            if off < 0 or size < 0 or off + size > len(buf):
                raise BadParametersError("shared memory window out of range")
            # a memref into shared memory, not a copy (as OP-TEE maps it into
            # the TA); the TA copies what it checks (omg_ta.commands)
            return buf[off : off + size].toreadonly()
        raise BadParametersError("bad parameter slot")

    def dispatch(self, req: dict, sessions: set[int], shm: dict) -> dict:
        op = req.get("op")
        w = self.world
        if op == "open_session":
            sid, m = w.open_session(uuid.UUID(bytes=req["uuid"]))
            sessions.add(sid)
            return {"ok": True, "session": sid}
        if op == "invoke":
            sid = req["session"]
            if sid not in sessions:
                raise BadStateError("session not opened on this connection")
            params = req["params"]
            args = [self._param_in(p, shm) for p in params]
            try:
                out = w.invoke(sid, int(req["cmd"]), int(req["types"]), args)
            finally:
                for a in args:  # the TA's views into shared memory end with the call
                    if isinstance(a, memoryview):
                        try:
                            a.release()
                        except BufferError:
                            pass  # still referenced by the TA; freed with it
            res = []
            for p, o in zip(params, out, strict=True):
                if p is not None and p[0] == "o":
                    if o is not None and len(o) > int(p[1]):
                        raise ShortBufferError(
                            f"the TA's output of {len(o)} bytes does not fit the {int(p[1])}-byte buffer"
                        )
                    res.append(["m", o or b""])
                elif isinstance(o, tuple):
                    res.append(["v", o[0], o[1]])
                else:
                    res.append(None)
            return {"ok": True, "params": res}
        if op == "close_session":
            sid = req["session"]
            if sid in sessions:
                sessions.discard(sid)
                w.close_session(sid)
            return {"ok": True}
        raise BadParametersError(f"unknown op {op!r}")


class _HwHandler(_FrameHandler):
    """The hardware stand-ins: the secure microphone and the secure clock."""

    def reply_to(self, req: dict) -> dict:
        if req["op"] == "mic_feed":
            self.world.mic_feed(list(req["clips"]))
        elif req["op"] == "clock_offset":
            self.world.device.set_clock_offset(int(req["seconds"]))
        elif req["op"] != "ping":
            raise BadParametersError("unknown hardware op")
        return {"ok": True}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(device_dir: str | os.PathLike, preload: list[str] | None = None) -> None:
    fixed_heap()
    device = Device(device_dir)
    world = SecureWorld(device)
    # The inference runtimes are part of the TEE image, as a TA's statically
    # linked TFLM would be: load them now, not inside the first initialize.
    # ``preload`` names the image's runtimes (default: every one installed).
    from omg_ta.runtime import available_runtimes

    available_runtimes(preload)
    servers = []
    for name, handler in ((TEE_SOCKET, _Handler), (HW_SOCKET, _HwHandler)):
        path = device.path / name
        path.unlink(missing_ok=True)
        h = type(handler.__name__, (handler,), {"world": world})
        srv = _Server(str(path), h)
        servers.append(srv)
    os.chmod(device.path / HW_SOCKET, 0o600)
    (device.path / PID_FILE).write_text(f"{os.getpid()}\n")
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()

    def stop(*_):
        threading.Thread(target=servers[0].shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        servers[0].serve_forever()
    finally:
        for s in servers:
            s.server_close()
        for name in (TEE_SOCKET, HW_SOCKET, PID_FILE):
            (device.path / name).unlink(missing_ok=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (a notebook kernel killed, say).

    Linux ties this to the *thread* that started the child: start daemons
    from a thread that lives as long as they should (the main one)."""
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TeeDaemon:
    """Start and stop a device's TEE daemon as a child process."""

    def __init__(
        self, device_dir: str | os.PathLike, preload: list[str] | tuple[str, ...] | None = None
    ):
        self.device = Path(device_dir)
        self.preload = preload
        """The TEE image's runtimes (default: every one installed)."""
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.device / TEE_SOCKET

    @property
    def hw_socket(self) -> Path:
        return self.device / HW_SOCKET

    def start(self, timeout: float = 30.0) -> TeeDaemon:
        Device(self.device)  # clear error if it is not a device
        for name in (TEE_SOCKET, HW_SOCKET):
            (self.device / name).unlink(missing_ok=True)
        # One thread for BLAS, as a TA on one secure core: idle BLAS threads spinning
        # after a request would otherwise steal the other core from the normal world.
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "omgkit.tee", "--device", str(self.device)]
        if self.preload:
            cmd += ["--preload", ",".join(self.preload)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent
        )

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"TEE daemon exited with {self.proc.returncode}")
            if self.socket.exists() and self.hw_socket.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(self.hw_socket))
                        wire.send(s, {"op": "ping"})
                        wire.recv(s)
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"TEE daemon did not start within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> TeeDaemon:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the emulated TEE daemon")
    ap.add_argument("--device", required=True)
    ap.add_argument(
        "--preload", help="runtimes of the TEE image, comma-separated (default: all installed)"
    )
    a = ap.parse_args(argv)
    serve(a.device, a.preload.split(",") if a.preload else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
