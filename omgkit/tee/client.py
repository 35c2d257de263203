"""The normal world's side: an API shaped like the GlobalPlatform TEE Client API.

    with TeeContext(device_dir) as ctx:                 # TEEC_InitializeContext
        sess = ctx.open_session(TA_UUID)                # TEEC_OpenSession
        out = sess.invoke(CMD, types, [p0, p1, p2, p3]) # TEEC_InvokeCommand
        shm = ctx.allocate_shared_memory(n)             # TEEC_AllocateSharedMemory

A parameter is ``None``, :class:`Value`, ``bytes`` (a temporary input
memref), :class:`SharedWindow` (a window of registered shared memory) or
:class:`Output` (an output memref of at most ``size`` bytes). Failures are
the TA's errors (``omg_ta.errors``), rebuilt from their result codes.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omg_ta import commands as C
from omg_ta.errors import OmgError, TeeError

from ..errors import ConfigError
from . import trace, wire
from .wire import HW_SOCKET, TEE_SOCKET, raise_for

__all__ = ["Output", "Session", "SharedMemory", "SharedWindow", "TeeContext", "TeeError",
           "TeeUnavailableError", "Value", "hardware", "mic_feed", "set_clock_offset"]  # fmt: skip


class TeeUnavailableError(OmgError):
    """No TEE daemon answers for this device."""

    result_code = C.RESULT_COMMUNICATION


@dataclasses.dataclass(frozen=True)
class Value:
    a: int
    b: int = 0


@dataclasses.dataclass(frozen=True)
class Output:
    size: int = C.MAX_OUTPUT


@dataclasses.dataclass(frozen=True)
class SharedWindow:
    memory: SharedMemory
    offset: int = 0
    size: int | None = None


class SharedMemory:
    """Registered shared memory (TEEC_AllocateSharedMemory): a memfd, sealed against
    shrinking and growing before the TEE maps it, so the normal world cannot pull pages
    from under the TEE (a shrunk mapping would kill the daemon with SIGBUS); the TEE
    daemon refuses memory without that seal."""

    def __init__(self, size: int):
        import fcntl
        import mmap

        self.size = size
        self.fd = os.memfd_create("omg-tee-shm", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, max(1, size))
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)  # fmt: skip
            self._map = mmap.mmap(self.fd, max(1, size))
        except OSError:
            os.close(self.fd)
            raise
        self._buf = memoryview(self._map)[:size]
        self.id: int | None = None
        """The TEE's handle once registered."""

    @property
    def buffer(self) -> memoryview:
        return self._buf

    def window(self, offset: int = 0, size: int | None = None) -> SharedWindow:
        return SharedWindow(self, offset, self.size - offset if size is None else size)

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            self._buf.release()
            self._map.close()
        except BufferError:
            pass  # an exported view is still alive: the mapping goes with it
        os.close(self.fd)
        self.fd = -1


class Session:
    def __init__(self, ctx: TeeContext, sid: int):
        self.ctx, self.id = ctx, sid

    def invoke(self, cmd: int, types: int, params: list[Any]) -> list[Any]:
        """TEEC_InvokeCommand: returns the four slots (outputs filled in)."""
        if len(params) != 4:
            raise ConfigError("four parameters, as in the TEE Client API")
        wire_params = []
        for p in params:
            if p is None:
                wire_params.append(None)
            elif isinstance(p, Value):
                wire_params.append(["v", p.a, p.b])
            elif isinstance(p, (bytes, bytearray, memoryview)):
                wire_params.append(["m", bytes(p)])
            elif isinstance(p, SharedWindow):
                if p.memory.id is None:
                    raise ConfigError(
                        "shared memory of another context (allocate it with this one)"
                    )
                wire_params.append(["s", p.memory.id, p.offset, p.size])
            elif isinstance(p, Output):
                wire_params.append(["o", p.size])
            else:
                raise ConfigError(f"unsupported parameter {type(p).__name__}")
        body = wire.pack_invoke(self.id, cmd, types, wire_params)  # the light path, where it fits
        if body is not None:
            reply = self.ctx._call_body(body)
        else:
            reply = self.ctx._call({"op": "invoke", "session": self.id, "cmd": cmd, "types": types,
                                    "params": wire_params})  # fmt: skip
        out = []
        for p in reply["params"]:
            if p is None:
                out.append(None)
            elif p[0] == "v":
                out.append(Value(p[1], p[2]))
            else:
                out.append(bytes(p[1]))
        return out

    def close(self) -> None:
        if self.id is not None:
            try:
                self.ctx._call({"op": "close_session", "session": self.id})
            finally:
                self.id = None


class TeeContext:
    """A connection to a device's TEE daemon (TEEC_Context).

    ``recorder``, if given, receives every frame the TEE sends back, as
    bytes: the leak tests use it to check what crosses into the normal world.
    """

    def __init__(self, device_dir: str | os.PathLike, *, recorder: Callable[[bytes], None] | None = None,
                 timeout: float = 120.0):  # fmt: skip
        self.path = Path(device_dir) / TEE_SOCKET
        self.recorder = recorder
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._rx: wire.FdReceiver | None = None
        self._shm: list[SharedMemory] = []

    def open(self) -> TeeContext:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(str(self.path))
            except OSError:
                s.close()
                raise TeeUnavailableError(
                    f"no TEE daemon at {self.path}: start it (TeeDaemon(device).start(), or `omg board up`)"
                ) from None
            self._sock = s
            self._rx = wire.FdReceiver(s, fds=False)
        return self

    def _reply(self) -> dict:
        body = self._rx.recv_body()
        trace.mark("c.received")
        if self.recorder:
            self.recorder(struct.pack(">I", len(body)) + body)
        reply = wire.decode_any(body)
        raise_for(reply)
        return reply

    def _call_body(self, body: bytes) -> dict:
        """A binary invoke (``wire.pack_invoke``); its reply as ``{ok, params}``."""
        self.open()
        trace.mark("c.framed")
        try:
            wire.send_body(self._sock, body)
            return self._reply()
        except OSError as e:
            self.close()
            raise TeeUnavailableError(f"TEE daemon connection lost: {e}") from None

    def _call(self, req: dict, fds: list[int] | None = None) -> dict:
        self.open()
        try:
            if fds:
                wire.send_with_fds(self._sock, req, fds)
            else:
                data = wire.frame(req)
                trace.mark("c.framed")
                self._sock.sendall(data)
            return self._reply()
        except OSError as e:
            self.close()
            raise TeeUnavailableError(f"TEE daemon connection lost: {e}") from None

    def open_session(self, ta_uuid) -> Session:
        return Session(self, self._call({"op": "open_session", "uuid": ta_uuid.bytes})["session"])

    def allocate_shared_memory(self, size: int) -> SharedMemory:
        m = SharedMemory(size)
        try:
            m.id = self._call({"op": "register_shm"}, [m.fd])["shm"]
        except BaseException:
            m.release()
            raise
        self._shm.append(m)
        return m

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._rx = None
        for m in self._shm:
            m.release()
        self._shm.clear()

    def __enter__(self) -> TeeContext:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def hardware(device_dir: str | os.PathLike, op: str, **fields) -> dict:
    """Talk to the daemon's hardware socket (microphone, clock, the TA processes' status):
    test harness and tools only. Returns the reply."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(Path(device_dir) / HW_SOCKET))
        except OSError:
            raise TeeUnavailableError(f"no TEE daemon for {device_dir}") from None
        wire.send(s, {"op": op, **fields})
        reply, _ = wire.recv(s)
    raise_for(reply)
    return reply


def mic_feed(device_dir: str | os.PathLike, clips) -> None:
    """Play int16 clips into the device's secure microphone."""
    import numpy as np

    a = np.asarray(clips, dtype="<i2").reshape(-1, C.CLIP_SAMPLES)
    hardware(device_dir, "mic_feed", clips=[row.tobytes() for row in a])


def set_clock_offset(device_dir: str | os.PathLike, seconds: int) -> None:
    """Move the device's secure clock (as an attacker with hardware access could not)."""
    hardware(device_dir, "clock_offset", seconds=int(seconds))
