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

import socket
import struct
from collections.abc import Callable
from typing import Any

import cbor2

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
