"""Framing: the normal world and the TEE daemon, and the workbench and a board agent.

A frame is a 4-byte big-endian length and a CBOR map. Requests carry
``op`` and its fields; replies carry ``ok`` and either results or
``code`` (a GP or OMG result code) and ``message``. A parameter slot is
``None``, ``["v", a, b]`` (value), ``["m", bytes]`` (temporary memref),
``["s", shm, offset, size]`` (window of registered shared memory, a sealed memfd) or
``["o", max_size]`` (output memref); replies fill output slots with
``["v", a, b]`` or ``["m", bytes]``. docs/protocol.md describes the ops.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

import cbor2

from omg_ta import commands as C
from omg_ta.cbor_limits import check_cbor
from omg_ta.errors import BadParametersError, OmgError, from_result, to_result

MAX_FRAME = 256 << 20
"""Default bound of a frame: the board agent's batches of audio (8,000 clips)."""
MAX_ITEMS = 1 << 17
"""Default bound of a frame's CBOR items: a batch's labels and scores fit."""
TEE_MAX_FRAME = 32 << 20
"""A request to the TEE daemon: temporary memrefs (a sealed package) fit;
audio goes through registered shared memory."""
TEE_MAX_ITEMS = 1024
"""A request to the TEE daemon is a map of a few fields and four slots."""
HW_MAX_ITEMS = C.MAX_BATCH + 16
"""The hardware socket: a microphone feed of up to MAX_BATCH clips."""
MAX_FDS = 4
"""File descriptors one frame may carry (registered shared memory: one)."""
TEE_SOCKET, HW_SOCKET = "tee.sock", "hw.sock"


class WireError(OSError):
    """The byte stream itself failed: closed, or out of step (nothing more can be read)."""


class FrameTooLargeError(WireError):
    """A frame's length is over the channel's bound: refused unread, the stream ends."""


class TooManyFdsError(FrameTooLargeError):
    """A frame came with more descriptors than a channel takes: refused, the stream ends."""


class MalformedFrameError(BadParametersError):
    """A whole frame was read but is not a CBOR map within the channel's bounds.

    The stream stays in step: the peer gets an error reply and may go on."""


def frame(obj: Any) -> bytes:
    """One frame: the 4-byte length and the CBOR encoding of ``obj``."""
    data = cbor2.dumps(obj)
    return struct.pack(">I", len(data)) + data


def read_frame(read_exact: Callable[[int], bytes], max_frame: int = MAX_FRAME,
               max_items: int = MAX_ITEMS) -> tuple[Any, bytes]:  # fmt: skip
    """Decode one frame from any byte source; ``read_exact(n)`` returns n bytes or raises.

    Returns (decoded object, raw bytes as received). A length over
    ``max_frame`` raises :class:`FrameTooLargeError` before the body is
    read; a body that is not one CBOR map of at most ``max_items`` items
    raises :class:`MalformedFrameError` before anything is decoded (memory:
    the frame plus at most about 100 bytes per item).
    """
    head = read_exact(4)
    (n,) = struct.unpack(">I", head)
    if n > max_frame:
        raise FrameTooLargeError(f"a frame of {n:,} bytes is over this channel's {max_frame:,}")
    body = read_exact(n)
    return decode_body(body, max_items), head + body


def decode_body(body: bytes, max_items: int = MAX_ITEMS) -> dict:
    """A frame's body as a map, within ``max_items`` (:class:`MalformedFrameError` otherwise)."""
    try:
        check_cbor(
            body, max_items, tags=frozenset()
        )  # a frame carries no tags (COSE rides as bytes)
    except BadParametersError as e:
        raise MalformedFrameError(str(e)) from None
    try:
        obj = cbor2.loads(body)
    except Exception as e:  # cbor2 raises many types on hostile input
        raise MalformedFrameError(f"a frame that is not CBOR ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise MalformedFrameError(f"a frame must be a CBOR map, not {type(obj).__name__}")
    return obj


def send(sock: socket.socket, obj: Any) -> bytes:
    data = frame(obj)
    sock.sendall(data)
    return data


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise WireError("connection closed")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket, max_frame: int = MAX_FRAME,
         max_items: int = MAX_ITEMS) -> tuple[Any, bytes]:  # fmt: skip
    """One frame from a socket: (decoded object, raw bytes as received)."""
    return read_frame(lambda n: _recv_exact(sock, n), max_frame, max_items)


def send_with_fds(sock: socket.socket, obj: Any, fds: list[int]) -> None:
    """One frame carrying file descriptors (SCM_RIGHTS on its first bytes)."""
    data = frame(obj)
    sent = sock.sendmsg(
        [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
    )
    if sent < len(data):
        sock.sendall(data[sent:])


class FdReceiver:
    """Reads frames from a Unix socket and keeps the descriptors that came with them.

    ``take()`` hands the caller the descriptors received so far (it must
    close them); any it leaves are closed by ``close_all()``. More than
    ``MAX_FDS`` pending is refused (the peer could exhaust the table).
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fds: list[int] = []

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            msg, fds, flags, _ = socket.recv_fds(self.sock, min(n - len(buf), 1 << 20), MAX_FDS)
            self.fds += fds
            if len(self.fds) > MAX_FDS or flags & socket.MSG_CTRUNC:
                self.close_all()
                raise TooManyFdsError(f"more than {MAX_FDS} file descriptors with a frame")
            if not msg:
                raise WireError("connection closed")
            buf += msg
        return bytes(buf)

    def recv(self, max_frame: int = MAX_FRAME, max_items: int = MAX_ITEMS) -> tuple[Any, bytes]:
        return read_frame(self._recv_exact, max_frame, max_items)

    def take(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds

    def close_all(self) -> None:
        for fd in self.take():
            try:
                os.close(fd)
            except OSError:
                pass


# -- errors on the wire: the one error path (omg_ta.errors.to_result / from_result) --


def error_reply(e: BaseException, who: str = "tee") -> dict:
    """A failure as a reply frame: ``{ok: false, code, message}``.

    Anything that is not an error of ours is logged (type only; with
    ``OMG_TEE_DEBUG`` set, the traceback) and crosses as an internal error.
    """
    code, message = to_result(e)
    if not hasattr(e, "result_code"):
        print(f"{who}: internal error {type(e).__name__}", file=sys.stderr)
        if os.environ.get("OMG_TEE_DEBUG"):
            import traceback

            traceback.print_exception(e)
    return {"ok": False, "code": code, "message": message}


def error_of(reply: dict) -> OmgError:
    """The error a failed reply (``{ok: false, code, message}``) stands for."""
    code = reply.get("code")
    ok_code = isinstance(code, int) and not isinstance(code, bool)
    return from_result(code if ok_code else C.RESULT_GENERIC, str(reply.get("message") or ""))


def raise_for(reply: dict) -> None:
    """Raise :func:`error_of` a reply unless it is ``ok``."""
    if not reply.get("ok"):
        raise error_of(reply)
