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
import itertools
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

from omg_ta import commands as C
from omg_ta.errors import BadParametersError, BadStateError, ShortBufferError

from ..errors import ConfigError
from ..util import fixed_heap
from . import trace, wire
from .device import Device
from .wire import HW_SOCKET, TEE_SOCKET, error_reply
from .world import SecureWorld, ShmWindow

PID_FILE = "tee.pid"


def _field(req: dict, name: str, kind: type | tuple[type, ...]):
    """A request's field, of the type the op needs (BadParametersError otherwise)."""
    v = req.get(name)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        raise BadParametersError(f"{req.get('op')}: field {name!r} is missing or of the wrong type")
    return v


class _FrameHandler(socketserver.BaseRequestHandler):
    """One connection: read a frame, answer it, until the peer closes.

    Every frame gets one reply: a malformed one (not CBOR, not a map, over
    the channel's item bound, wrong fields) an error reply, and the
    connection goes on; only a frame over the size bound, which cannot be
    skipped unread, ends the connection (after its error reply).
    """

    world: SecureWorld
    max_frame = wire.TEE_MAX_FRAME
    max_items = wire.TEE_MAX_ITEMS

    def reply_to(self, req: dict, fds: list[int]) -> dict:
        raise NotImplementedError

    def closed(self) -> None:
        """Called once the connection ends."""

    def handle(self) -> None:
        rx = wire.FdReceiver(self.request)
        try:
            while True:
                try:
                    body = rx.recv_body(self.max_frame)
                    binary = body[:1] == b"\x01"
                    req = wire.decode_any(body, self.max_items, invoke_flags=0)
                except wire.FrameTooLargeError as e:
                    wire.send(self.request, error_reply(BadParametersError(str(e))))
                    return
                except (wire.WireError, ConnectionError):
                    return
                except BadParametersError as e:  # malformed, read whole: the stream is in step
                    rx.close_all()
                    wire.send(self.request, error_reply(e))
                    continue
                fds = rx.take()
                try:
                    reply = self.reply_to(req, fds)
                except Exception as e:  # every failure becomes a reply with a result code
                    reply = error_reply(e)
                finally:
                    for fd in fds:  # what reply_to kept it has dup'ed or mapped
                        os.close(fd)
                wire.send_reply(self.request, reply, reply.get("params") if binary else None)
        except (ConnectionError, OSError):
            return
        finally:
            rx.close_all()
            self.closed()


_SERIALS = itertools.count(1)


class _Registered:
    """Shared memory the normal world registered: a memfd sealed against shrinking.

    The core checks it and hands it on to a TA's process, which maps it
    read-only (OP-TEE maps a TA's memref inputs; the TA copies what it
    checks); the core itself never maps normal-world memory."""

    MAX_SIZE = 256 << 20

    def __init__(self, fd: int):
        import fcntl

        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            raise BadParametersError(
                "shared memory must be a memfd sealed against shrinking"
            ) from None
        if not seals & fcntl.F_SEAL_SHRINK:
            # the normal world could shrink it under the TA's mapping: SIGBUS in the TEE
            raise BadParametersError("shared memory must be a memfd sealed against shrinking")
        self.size = os.fstat(fd).st_size
        if not 0 < self.size <= self.MAX_SIZE:
            raise BadParametersError(f"shared memory of {self.size} bytes (1 to {self.MAX_SIZE})")
        self.fd = os.dup(fd)
        self.serial = next(_SERIALS)
        """Names this registration for the TA processes (an object's id() is reused)."""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Handler(_FrameHandler):
    """The TEE Client API: sessions and shared memory live as long as the connection."""

    MAX_SHM = 64
    """Registered shared memory per connection."""

    def setup(self) -> None:
        self.sessions: set[int] = set()
        self.shm: dict[int, _Registered] = {}
        self._next_shm = 1

    def reply_to(self, req: dict, fds: list[int]) -> dict:
        trace.mark("k.received")
        return self.dispatch(req, fds)

    def closed(self) -> None:
        for sid in list(self.sessions):
            self.world.close_session(sid)
        for s in self.shm.values():
            s.close()

    def _param_in(self, p):
        if p is None:
            return None
        if not isinstance(p, list) or not p or not isinstance(p[0], str):
            raise BadParametersError("bad parameter slot")
        kind, args = p[0], p[1:]
        ints = all(isinstance(a, int) and not isinstance(a, bool) for a in args)
        if kind == "o" and len(args) == 1 and ints and 0 <= args[0] <= C.MAX_OUTPUT:
            return int(args[0])  # an output memref: the TA sees its size, as under GP
        if kind == "v" and len(args) == 2 and ints and all(0 <= a < 1 << 32 for a in args):
            return (int(args[0]), int(args[1]))
        if kind == "m" and len(args) == 1 and isinstance(args[0], bytes):
            return args[0]
        if kind == "s" and len(args) == 3 and ints:
            reg = self.shm.get(args[0])
            if reg is None:
                raise BadParametersError("a window of shared memory that is not registered")
            off, size = args[1], args[2]
            if off < 0 or size < 0 or off + size > reg.size:
                raise BadParametersError("shared memory window out of range")
            # a memref into shared memory, not a copy (as OP-TEE maps it into
            # the TA); the TA copies what it checks (omg_ta.commands)
            return ShmWindow(reg, off, size)
        raise BadParametersError("bad parameter slot")

    def dispatch(self, req: dict, fds: list[int]) -> dict:
        op = _field(req, "op", str)
        w = self.world
        if op == "register_shm":  # TEEC_RegisterSharedMemory: one sealed memfd
            if len(fds) != 1:
                raise BadParametersError("register_shm carries one file descriptor")
            if len(self.shm) >= self.MAX_SHM:
                raise BadParametersError(f"at most {self.MAX_SHM} shared memories per context")
            reg = _Registered(fds[0])
            sid, self._next_shm = self._next_shm, self._next_shm + 1
            self.shm[sid] = reg
            return {"ok": True, "shm": sid}
        if op == "release_shm":
            reg = self.shm.pop(_field(req, "shm", int), None)
            if reg is not None:
                reg.close()
            return {"ok": True}
        if op == "open_session":
            u = _field(req, "uuid", bytes)
            if len(u) != 16:
                raise BadParametersError("open_session: a UUID is 16 bytes")
            sid, m = w.open_session(uuid.UUID(bytes=u))
            self.sessions.add(sid)
            return {"ok": True, "session": sid}
        if op == "invoke":
            sid = _field(req, "session", int)
            cmd, types = _field(req, "cmd", int), _field(req, "types", int)
            params = _field(req, "params", list)
            if len(params) != 4:
                raise BadParametersError("invoke: four parameter slots")
            if sid not in self.sessions:
                raise BadStateError("session not opened on this connection")
            args = [self._param_in(p) for p in params]
            out = w.invoke(sid, cmd, types, args)
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
            sid = _field(req, "session", int)
            if sid in self.sessions:
                self.sessions.discard(sid)
                w.close_session(sid)
            return {"ok": True}
        raise BadParametersError(f"unknown op {op!r}")


class _HwHandler(_FrameHandler):
    """The hardware stand-ins: the secure microphone and the secure clock."""

    max_items = wire.HW_MAX_ITEMS

    def reply_to(self, req: dict, fds: list[int]) -> dict:
        op = _field(req, "op", str)
        if op == "mic_feed":
            clips = _field(req, "clips", list)
            if not all(isinstance(c, bytes) for c in clips):
                raise BadParametersError("mic_feed: clips are bytes")
            self.world.mic_feed(clips)
        elif op == "clock_offset":
            self.world.device.set_clock_offset(_field(req, "seconds", int))
        elif op == "ta_status":  # each session's TA process: the harness and the bench
            return {"ok": True, "tas": self.world.ta_status()}
        elif op == "trace":  # the trace port (omgkit.tee.trace): the marks so far, then on or off
            on = _field(req, "on", bool)
            marks = [list(m) for m in trace.take()] + self.world.ta_marks()
            trace.enable(on)
            if not on:  # what was marked while the TA processes answered
                marks += [list(m) for m in trace.take()]
            return {"ok": True, "marks": marks}
        elif op != "ping":
            raise BadParametersError("unknown hardware op")
        return {"ok": True}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(device_dir: str | os.PathLike, preload: list[str] | None = None) -> None:
    fixed_heap()
    device = Device(device_dir)
    # The inference runtimes are part of the TEE image, as a TA's statically
    # linked TFLM would be: each TA process loads them before its TA, and one
    # waits warm for the next session. ``preload`` names the image's
    # runtimes (default: every one installed).
    world = SecureWorld(device, preload)
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
        world.shutdown()
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

    def __init__(self, device_dir: str | os.PathLike, preload: list[str] | tuple[str, ...] | None = None,
                 *, python: str | None = None):  # fmt: skip
        self.device = Path(device_dir)
        self.preload = preload
        """The TEE image's runtimes (default: every one installed)."""
        self.python = python or sys.executable
        """The interpreter the TEE (and so its TA processes) runs in: a board's own environment."""
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
        cmd = [self.python, "-m", "omgkit.tee", "--device", str(self.device)]
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
