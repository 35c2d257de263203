"""Framing: the normal world and the TEE daemon, and the workbench and a board agent.

A frame is a 4-byte big-endian length and a CBOR map. Requests carry
``op`` and its fields; replies carry ``ok`` and either results or
``code`` (a GP or OMG result code) and ``message``. A parameter slot is
``None``, ``["v", a, b]`` (value), ``["m", bytes]`` (temporary memref),
``["s", shm, offset, size]`` (window of registered shared memory, a sealed memfd) or
``["o", max_size]`` (output memref); replies fill output slots with
``["v", a, b]`` or ``["m", bytes]``. An invoke without a temporary memref,
and its successful reply, may instead be a fixed binary layout (the light
request path, below). docs/protocol.md describes the ops and both layouts.
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
    With descriptors, it reads no byte past the current frame: descriptors
    the kernel hands over with the next frame's bytes would be taken for
    this one's. ``fds=False`` (a peer that sends none) reads ahead: one
    ``recv`` of up to 64 KiB usually holds a whole small frame, head and
    body (two calls a frame otherwise).
    """

    CHUNK = 1 << 16

    def __init__(self, sock: socket.socket, fds: bool = True):
        self.sock = sock
        self.fds: list[int] = []
        self._with_fds = fds
        self._buf = bytearray()

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            if self._with_fds:
                want = min(n - len(self._buf), 1 << 20)
                msg, fds, flags, _ = socket.recv_fds(self.sock, want, MAX_FDS)
                self.fds += fds
                if len(self.fds) > MAX_FDS or flags & socket.MSG_CTRUNC:
                    self.close_all()
                    raise TooManyFdsError(f"more than {MAX_FDS} file descriptors with a frame")
            else:
                msg = self.sock.recv(min(max(n - len(self._buf), self.CHUNK), 1 << 20))
            if not msg:
                raise WireError("connection closed")
            self._buf += msg

    def recv_body(self, max_frame: int = MAX_FRAME) -> bytes:
        """One frame's body, undecoded (:class:`FrameTooLargeError` over ``max_frame``)."""
        self._fill(4)
        (n,) = struct.unpack_from(">I", self._buf)
        if n > max_frame:
            raise FrameTooLargeError(f"a frame of {n:,} bytes is over this channel's {max_frame:,}")
        self._fill(4 + n)
        body = bytes(self._buf[4 : 4 + n])
        del self._buf[: 4 + n]
        return body

    def recv(self, max_frame: int = MAX_FRAME, max_items: int = MAX_ITEMS) -> tuple[Any, bytes]:
        body = self.recv_body(max_frame)
        return decode_body(body, max_items), struct.pack(">I", len(body)) + body

    def take(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds

    def close_all(self) -> None:
        for fd in self.take():
            try:
                os.close(fd)
            except OSError:
                pass


# -- the light request path: an invoke and its reply as fixed binary layouts --
#
# A frame's body is a CBOR map, or one of these two (told apart by the first
# byte: a CBOR map's head is 0xa0-0xbf). Only an invoke whose parameters are
# values, windows of registered shared memory and outputs goes this way (the
# hot path: classify); one with a temporary memref, and every error reply,
# stays CBOR. Decoding is one struct unpack and every field is checked:
# docs/protocol.md, "The light request path".

INVOKE_TAG, REPLY_TAG = 0x01, 0x02
FLAG_TRACE = 0x01
"""Invoke flag, core to TA: trace this invoke (``omgkit.tee.trace``)."""
SLOT_NONE, SLOT_VALUE, SLOT_SHM, SLOT_OUTPUT, SLOT_MEMREF = 0, 1, 2, 3, 4
_INVOKE = struct.Struct(">BBHIII" + "BIII" * 4)
INVOKE_SIZE = _INVOKE.size
"""68 bytes: tag, flags, reserved (0), session, cmd, types; four slots of kind and three u32."""
_REPLY_HEAD = struct.Struct(">BBH")
_U32X2 = struct.Struct(">II")
_U32 = struct.Struct(">I")


def pack_invoke(session: int, cmd: int, types: int, params: list, flags: int = 0) -> bytes | None:
    """An invoke as a binary frame body, or None when a slot needs CBOR (a temporary memref).

    ``params`` are wire slots: None, ``["v", a, b]``, ``["s", shm, offset, size]``, ``["o", size]``."""
    fields = [INVOKE_TAG, flags, 0, session, cmd, types]
    for p in params:
        if p is None:
            fields += (SLOT_NONE, 0, 0, 0)
        elif not isinstance(p, list) or not p:  # a temporary memref (bytes): CBOR
            return None
        elif p[0] == "v":
            fields += (SLOT_VALUE, p[1], p[2], 0)
        elif p[0] == "s":
            fields += (SLOT_SHM, p[1], p[2], p[3])
        elif p[0] == "o":
            fields += (SLOT_OUTPUT, p[1], 0, 0)
        else:
            return None
    try:
        return _INVOKE.pack(*fields)
    except struct.error:  # a field over 32 bits: CBOR carries it, and the TEE refuses it there
        return None


def unpack_invoke(body: bytes, allowed_flags: int = FLAG_TRACE) -> dict:
    """A binary invoke as the request map the CBOR path gives (``op: invoke``, wire slots).

    :class:`MalformedFrameError` for a wrong size, tag, reserved field, flag or slot."""
    if len(body) != INVOKE_SIZE:
        raise MalformedFrameError(f"a binary invoke is {INVOKE_SIZE} bytes, not {len(body)}")
    f = _INVOKE.unpack(body)
    tag, flags, reserved, session, cmd, types = f[:6]
    if tag != INVOKE_TAG or reserved or flags & ~allowed_flags:
        raise MalformedFrameError("a binary invoke with a wrong tag, flag or reserved field")
    params: list = []
    for i in range(6, 22, 4):
        kind, a, b, c = f[i : i + 4]
        if kind == SLOT_NONE and not (a or b or c):
            params.append(None)
        elif kind == SLOT_VALUE and not c:
            params.append(["v", a, b])
        elif kind == SLOT_SHM:
            params.append(["s", a, b, c])
        elif kind == SLOT_OUTPUT and not (b or c):
            params.append(["o", a])
        else:
            raise MalformedFrameError(
                f"a binary invoke's slot of kind {kind} with fields it cannot have"
            )
    return {"op": "invoke", "session": session, "cmd": cmd, "types": types, "params": params,
            "trace": bool(flags & FLAG_TRACE)}  # fmt: skip


def pack_reply(slots: list) -> bytes:
    """An invoke's successful reply as a binary body; ``slots``: None, ``["v", a, b]``, ``["m", bytes]``."""
    if len(slots) != 4:
        raise ValueError(f"a reply has four slots, not {len(slots)}")
    out = [_REPLY_HEAD.pack(REPLY_TAG, 0, 0)]
    for p in slots:
        if p is None:
            out.append(b"\0")
        elif p[0] == "v" and len(p) == 3:
            out.append(bytes([SLOT_VALUE]) + _U32X2.pack(p[1], p[2]))
        elif p[0] == "m" and len(p) == 2 and isinstance(p[1], bytes):
            out.append(bytes([SLOT_MEMREF]) + _U32.pack(len(p[1])) + p[1])
        else:
            raise ValueError(f"a reply slot of kind {p[0]!r}")
    return b"".join(out)


def unpack_reply(body: bytes, max_output: int = C.MAX_OUTPUT) -> list:
    """A binary reply's four slots (None, ``["v", a, b]``, ``["m", bytes]``), every length checked
    against what remains and against ``max_output`` (:class:`MalformedFrameError`)."""
    if len(body) < 4 + 4 or body[0] != REPLY_TAG or body[1] or body[2] or body[3]:
        raise MalformedFrameError("not a binary reply")
    pos, slots = 4, []
    for _ in range(4):
        if pos >= len(body):
            raise MalformedFrameError("a binary reply ends before its four slots")
        kind, pos = body[pos], pos + 1
        if kind == SLOT_NONE:
            slots.append(None)
        elif kind == SLOT_VALUE and pos + 8 <= len(body):
            a, b = _U32X2.unpack_from(body, pos)
            slots.append(["v", a, b])
            pos += 8
        elif kind == SLOT_MEMREF and pos + 4 <= len(body):
            (n,) = _U32.unpack_from(body, pos)
            pos += 4
            if n > max_output or n > len(body) - pos:
                raise MalformedFrameError(
                    f"a binary reply's output of {n} bytes (at most {max_output}, in the frame)"
                )
            slots.append(["m", body[pos : pos + n]])
            pos += n
        else:
            raise MalformedFrameError(f"a binary reply's slot of kind {kind}, or cut short")
    if pos != len(body):
        raise MalformedFrameError(f"{len(body) - pos} bytes after a binary reply's slots")
    return slots


def decode_any(body: bytes, max_items: int = MAX_ITEMS, invoke_flags: int = FLAG_TRACE) -> dict:
    """A frame's body, whichever its encoding: a binary invoke as its request map, a binary
    reply as ``{ok: True, params}``, anything else as a CBOR map (:func:`decode_body`).
    ``invoke_flags``: the flags a binary invoke may carry here (none from the normal world)."""
    if body[:1] == b"\x01":
        return unpack_invoke(body, invoke_flags)
    if body[:1] == b"\x02":
        return {"ok": True, "params": unpack_reply(body)}
    return decode_body(body, max_items)


def out_slots(out: Any) -> list:
    """A TA's ``out`` (None, ``[a, b]`` or bytes each) as reply slots; a malformed entry
    becomes a slot :func:`pack_reply` refuses."""
    if not isinstance(out, list):
        return [["?", out]]
    return [None if o is None else ["v", *o] if isinstance(o, list) else ["m", o] for o in out]


def send_reply(
    sock: socket.socket, reply: dict, slots: list | None = None, who: str = "tee"
) -> None:
    """Send a reply: on the light path (``slots``: the four slots of a successful reply) as a
    binary body, else as CBOR; slots that do not fit become an error reply."""
    if slots is not None and reply.get("ok"):
        try:
            send_body(sock, pack_reply(slots))
            return
        except (TypeError, ValueError, struct.error) as e:
            reply = error_reply(
                BadParametersError(f"a reply that does not fit the light path ({e})"), who
            )
    send(sock, reply)


def send_body(sock: socket.socket, body: bytes) -> None:
    """One frame of an already encoded body."""
    sock.sendall(struct.pack(">I", len(body)) + body)


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
