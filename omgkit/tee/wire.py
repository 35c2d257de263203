"""Framing: the normal world and the TEE daemon, and the workbench and a board agent.

A frame is a 4-byte big-endian length and a CBOR map. Requests carry
``op`` and its fields; replies carry ``ok`` and either results or
``code`` (a GP or OMG result code) and ``message``. A parameter slot is
``None``, ``["v", a, b]`` (value), ``["m", bytes]`` (temporary memref),
``["s", name, offset, size]`` (window of registered shared memory) or
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
from omg_ta.errors import OmgError, from_result, to_result

MAX_FRAME = 256 << 20
TEE_SOCKET, HW_SOCKET = "tee.sock", "hw.sock"


class WireError(OSError):
    pass


def frame(obj: Any) -> bytes:
    """One frame: the 4-byte length and the CBOR encoding of ``obj``."""
    data = cbor2.dumps(obj)
    return struct.pack(">I", len(data)) + data


def read_frame(read_exact: Callable[[int], bytes]) -> tuple[Any, bytes]:
    """Decode one frame from any byte source; ``read_exact(n)`` returns n bytes or raises.

    Returns (decoded object, raw bytes as received).
    """
    head = read_exact(4)
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise WireError("frame too large")
    body = read_exact(n)
    return cbor2.loads(body), head + body


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


def recv(sock: socket.socket) -> tuple[Any, bytes]:
    """One frame from a socket: (decoded object, raw bytes as received)."""
    return read_frame(lambda n: _recv_exact(sock, n))


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
