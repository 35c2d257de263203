"""The TEE Client API of a real OP-TEE: libteec, through ctypes.

On an OP-TEE board the normal world reaches the secure world through
``/dev/tee0`` and OP-TEE's client library (Debian's ``libteec1``).
:class:`OpteeContext` wraps it with the same face as the emulated TEE's
:class:`~omgkit.tee.client.TeeContext` — ``open_session``, ``invoke`` with
``Value``/``bytes``/``SharedWindow``/``Output`` slots, shared memory — so
``GuardedModel`` and the board agent work unchanged on either TEE.

GlobalPlatform carries only a result code; for an operational failure the
client asks the TA for its message (``CMD_LAST_ERROR``), so errors read as
they do on the emulated TEE. A TA the TEE refuses to load (its signature
does not verify) is ``TALoadError`` here too.

The structures are those of optee_client 3.19's ``tee_client_api.h``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import uuid as _uuid
from typing import Any

from omg_ta import commands as C
from omg_ta.errors import OmgError, TALoadError, from_result, is_security_code

from ..errors import ConfigError
from .client import Output, SharedWindow, TeeUnavailableError, Value

DEVICE = "/dev/tee0"

# TEEC parameter types (client side): temporary and partial registered memrefs
TEEC_NONE, TEEC_VALUE_INPUT, TEEC_VALUE_OUTPUT = 0x0, 0x1, 0x2
TEEC_MEMREF_TEMP_INPUT, TEEC_MEMREF_TEMP_OUTPUT = 0x5, 0x6
TEEC_MEMREF_PARTIAL_INPUT = 0xD
TEEC_MEM_INPUT, TEEC_MEM_OUTPUT = 0x1, 0x2
TEEC_LOGIN_PUBLIC = 0
TEEC_ORIGIN_TRUSTED_APP = 4
_ORIGINS = {1: "the client library", 2: "the communication with the TEE", 3: "the TEE", 4: "the TA"}
TEEC_SUCCESS = 0
TEEC_ERROR_SHORT_BUFFER = C.RESULT_SHORT_BUFFER
MAX_OUTPUT = 256 << 10
"""The largest output memref asked of OP-TEE's shared memory at first: the contract's
default (16 MiB, fine for the emulated TEE) is more than its pool gives; a TA that needs
more says so (SHORT_BUFFER with the size) and the call is made again with that size."""
#: GP codes with which the TEE itself (not the TA) refuses to load a TA
_LOAD_REFUSALS = {C.RESULT_SECURITY, 0xFFFF3072, 0xFFFF0005}  # and SIGNATURE_INVALID, BAD_FORMAT


class _Context(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("reg_mem", ctypes.c_bool), ("memref_null", ctypes.c_bool)]


class _UUID(ctypes.Structure):
    _fields_ = [("timeLow", ctypes.c_uint32), ("timeMid", ctypes.c_uint16),
                ("timeHiAndVersion", ctypes.c_uint16), ("clockSeqAndNode", ctypes.c_uint8 * 8)]  # fmt: skip


class _SharedMemory(ctypes.Structure):
    _fields_ = [("buffer", ctypes.c_void_p), ("size", ctypes.c_size_t), ("flags", ctypes.c_uint32),
                ("id", ctypes.c_int), ("alloced_size", ctypes.c_size_t), ("shadow_buffer", ctypes.c_void_p),
                ("registered_fd", ctypes.c_int), ("internal", ctypes.c_uint8)]  # fmt: skip


class _TempRef(ctypes.Structure):
    _fields_ = [("buffer", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _RegRef(ctypes.Structure):
    _fields_ = [("parent", ctypes.POINTER(_SharedMemory)), ("size", ctypes.c_size_t),
                ("offset", ctypes.c_size_t)]  # fmt: skip


class _Value(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32)]


class _Parameter(ctypes.Union):
    _fields_ = [("tmpref", _TempRef), ("memref", _RegRef), ("value", _Value)]


class _Session(ctypes.Structure):
    _fields_ = [("ctx", ctypes.POINTER(_Context)), ("session_id", ctypes.c_uint32)]


class _Operation(ctypes.Structure):
    _fields_ = [("started", ctypes.c_uint32), ("paramTypes", ctypes.c_uint32),
                ("params", _Parameter * 4), ("session", ctypes.POINTER(_Session))]  # fmt: skip


_lib: ctypes.CDLL | None = None


def _libteec() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("teec") or "libteec.so.1"
        try:
            _lib = ctypes.CDLL(name)
        except OSError as e:
            raise TeeUnavailableError(
                f"OP-TEE's client library is not here ({e}): install libteec1"
            ) from None
        u32, P = ctypes.c_uint32, ctypes.c_void_p
        _lib.TEEC_InitializeContext.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Context)]
        _lib.TEEC_InitializeContext.restype = u32
        _lib.TEEC_FinalizeContext.argtypes = [ctypes.POINTER(_Context)]
        _lib.TEEC_OpenSession.argtypes = [ctypes.POINTER(_Context), ctypes.POINTER(_Session),
                                          ctypes.POINTER(_UUID), u32, P, ctypes.POINTER(_Operation),
                                          ctypes.POINTER(u32)]  # fmt: skip
        _lib.TEEC_OpenSession.restype = u32
        _lib.TEEC_CloseSession.argtypes = [ctypes.POINTER(_Session)]
        _lib.TEEC_InvokeCommand.argtypes = [ctypes.POINTER(_Session), u32, ctypes.POINTER(_Operation),
                                            ctypes.POINTER(u32)]  # fmt: skip
        _lib.TEEC_InvokeCommand.restype = u32
        _lib.TEEC_AllocateSharedMemory.argtypes = [
            ctypes.POINTER(_Context),
            ctypes.POINTER(_SharedMemory),
        ]
        _lib.TEEC_AllocateSharedMemory.restype = u32
        _lib.TEEC_ReleaseSharedMemory.argtypes = [ctypes.POINTER(_SharedMemory)]
    return _lib


def available() -> bool:
    """Whether this machine has an OP-TEE driver to talk to."""
    return os.path.exists(DEVICE)


def _uuid_struct(u: _uuid.UUID) -> _UUID:
    f = u.fields
    node = (f[3], f[4], *f[5].to_bytes(6, "big"))
    return _UUID(f[0], f[1], f[2], (ctypes.c_uint8 * 8)(*node))


class OpteeSharedMemory:
    """Registered shared memory (TEEC_AllocateSharedMemory)."""

    def __init__(self, ctx: OpteeContext, size: int):
        self._shm = _SharedMemory()
        self._shm.size = max(1, size)
        self._shm.flags = TEEC_MEM_INPUT | TEEC_MEM_OUTPUT
        rc = _libteec().TEEC_AllocateSharedMemory(ctypes.byref(ctx._ctx), ctypes.byref(self._shm))
        if rc != TEEC_SUCCESS:
            raise from_result(rc, f"cannot allocate {size} bytes of shared memory")
        self.size = size
        self._view = memoryview(
            (ctypes.c_char * self._shm.size).from_address(self._shm.buffer)
        ).cast("B")

    @property
    def buffer(self) -> memoryview:
        return self._view

    def window(self, offset: int = 0, size: int | None = None) -> SharedWindow:
        return SharedWindow(self, offset, self.size - offset if size is None else size)

    def release(self) -> None:
        if self._shm is not None:
            self._view.release()
            _libteec().TEEC_ReleaseSharedMemory(ctypes.byref(self._shm))
            self._shm = None


class OpteeSession:
    def __init__(self, ctx: OpteeContext, session: _Session):
        self.ctx, self._s = ctx, session

    def _raise(self, rc: int, origin: int, cmd: int) -> None:
        if origin != TEEC_ORIGIN_TRUSTED_APP:
            where = _ORIGINS.get(origin, f"origin {origin}")
            raise from_result(rc, f"command {cmd} failed in {where} (result {rc:#010x})")
        message = "" if is_security_code(rc) else self._last_error()  # GP carries no message
        raise from_result(rc, message)

    def _last_error(self) -> str:
        try:
            out = self.invoke(C.CMD_LAST_ERROR, C.SIGNATURES[C.CMD_LAST_ERROR],
                              [Output(256), None, None, None], _fetch_message=False)  # fmt: skip
        except OmgError:
            return ""
        return (out[0] or b"").decode(errors="replace")

    def invoke(self, cmd: int, types: int, params: list[Any], *, _fetch_message: bool = True,
               _sizes: dict[int, int] | None = None) -> list[Any]:  # fmt: skip
        """TEEC_InvokeCommand: returns the four slots (outputs filled in)."""
        if len(params) != 4:
            raise ConfigError("four parameters, as in the TEE Client API")
        sizes = _sizes or {}
        op = _Operation()
        client_types = 0
        keep = []  # buffers that must live through the call
        for i, p in enumerate(params):
            t = TEEC_NONE
            if isinstance(p, Value):
                t = TEEC_VALUE_INPUT
                op.params[i].value.a, op.params[i].value.b = p.a, p.b
            elif isinstance(p, (bytes, bytearray, memoryview)):
                buf = ctypes.create_string_buffer(bytes(p), max(1, len(p)))
                keep.append(buf)
                t = TEEC_MEMREF_TEMP_INPUT
                op.params[i].tmpref.buffer = ctypes.cast(buf, ctypes.c_void_p)
                op.params[i].tmpref.size = len(p)
            elif isinstance(p, SharedWindow):
                if not isinstance(p.memory, OpteeSharedMemory):
                    raise ConfigError("a shared window of this TEE's own shared memory is needed")
                t = TEEC_MEMREF_PARTIAL_INPUT
                op.params[i].memref.parent = ctypes.pointer(p.memory._shm)
                op.params[i].memref.offset = p.offset
                op.params[i].memref.size = p.size
            elif isinstance(p, Output):
                size = min(p.size, sizes.get(i, MAX_OUTPUT))
                buf = ctypes.create_string_buffer(max(1, size))
                keep.append(buf)
                t = TEEC_MEMREF_TEMP_OUTPUT
                op.params[i].tmpref.buffer = ctypes.cast(buf, ctypes.c_void_p)
                op.params[i].tmpref.size = size
            elif p is not None:
                raise ConfigError(f"unsupported parameter {type(p).__name__}")
            client_types |= t << (4 * i)
        op.paramTypes = client_types
        origin = ctypes.c_uint32()
        rc = _libteec().TEEC_InvokeCommand(
            ctypes.byref(self._s), cmd, ctypes.byref(op), ctypes.byref(origin)
        )
        if rc == TEEC_ERROR_SHORT_BUFFER and origin.value == TEEC_ORIGIN_TRUSTED_APP and not _sizes:
            # the TA says how much it needs: ask again with that much (up to what was allowed)
            outs = [i for i, p in enumerate(params) if isinstance(p, Output)]
            want = {i: op.params[i].tmpref.size for i in outs}
            if all(want[i] <= params[i].size for i in outs):
                return self.invoke(cmd, types, params, _fetch_message=_fetch_message, _sizes=want)
        if rc != TEEC_SUCCESS:
            if _fetch_message:
                self._raise(rc, origin.value, cmd)
            raise from_result(rc)
        return [ctypes.string_at(op.params[i].tmpref.buffer, op.params[i].tmpref.size)
                if isinstance(p, Output) else None for i, p in enumerate(params)]  # fmt: skip

    def close(self) -> None:
        if self._s is not None:
            _libteec().TEEC_CloseSession(ctypes.byref(self._s))
            self._s = None


class OpteeContext:
    """A TEEC_Context on this machine's OP-TEE: the emulated TeeContext's face."""

    #: The attestation token leaves the TA without its certificate chain; the
    #: normal world attaches it (it is public; the vendor checks it anyway).
    attaches_chain = True

    def __init__(self) -> None:
        self._ctx: _Context | None = None
        self._shm: list[OpteeSharedMemory] = []

    def open(self) -> OpteeContext:
        if self._ctx is None:
            if not available():
                raise TeeUnavailableError(f"no OP-TEE driver here ({DEVICE} is missing)")
            ctx = _Context()
            rc = _libteec().TEEC_InitializeContext(None, ctypes.byref(ctx))
            if rc != TEEC_SUCCESS:
                raise TeeUnavailableError(
                    f"OP-TEE did not answer (TEEC_InitializeContext: {rc:#010x}): is tee-supplicant running?"
                )
            self._ctx = ctx
        return self

    def open_session(self, ta_uuid: _uuid.UUID) -> OpteeSession:
        self.open()
        s = _Session()
        origin = ctypes.c_uint32()
        rc = _libteec().TEEC_OpenSession(ctypes.byref(self._ctx), ctypes.byref(s),
                                         ctypes.byref(_uuid_struct(ta_uuid)), TEEC_LOGIN_PUBLIC, None,
                                         None, ctypes.byref(origin))  # fmt: skip
        if rc != TEEC_SUCCESS:
            if origin.value != TEEC_ORIGIN_TRUSTED_APP and rc in _LOAD_REFUSALS:
                raise TALoadError()  # the TEE would not load it: its signature does not verify
            if rc == C.RESULT_ITEM_NOT_FOUND:
                raise from_result(
                    rc, f"no TA {ta_uuid} is installed on this device: deploy one (omg deploy)"
                )
            raise from_result(rc, f"opening a session with {ta_uuid} failed")
        return OpteeSession(self, s)

    def allocate_shared_memory(self, size: int) -> OpteeSharedMemory:
        self.open()
        m = OpteeSharedMemory(self, size)
        self._shm.append(m)
        return m

    def close(self) -> None:
        for m in self._shm:
            m.release()
        self._shm.clear()
        if self._ctx is not None:
            _libteec().TEEC_FinalizeContext(ctypes.byref(self._ctx))
            self._ctx = None

    def __enter__(self) -> OpteeContext:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


#: The OMG pseudo-TA in our OP-TEE build (ta/optee/include/omg_pta.h).
PTA_UUID = _uuid.UUID("6f6d676b-7074-6100-0000-000000000001")
PTA_CMD_DEVICE_INFO = 2


def pta_device_info(ctx: OpteeContext) -> tuple[bytes, bytes, str]:
    """The device's attestation public key, its id and the TEE's version, from the OMG pseudo-TA."""
    s = ctx.open_session(PTA_UUID)
    try:
        out = s.invoke(PTA_CMD_DEVICE_INFO, 0, [Output(32), Output(16), Output(64), None],
                       _fetch_message=False)  # fmt: skip
    finally:
        s.close()
    return out[0], out[1], out[2].decode(errors="replace")


#: OP-TEE's statistics pseudo-TA (core/pta/stats.c; in our build: CFG_WITH_STATS, CFG_TA_STATS).
STATS_UUID = _uuid.UUID("d96a5b40-e2c7-b1af-8794-1002a5d5c61b")
STATS_CMD_ALLOC_STATS, STATS_CMD_TA_STATS = 1, 3
STATS_POOL_TA_RAM = 3
#: struct pta_stats_alloc: desc[32], free2_sum u64, then six u32
_ALLOC = struct.Struct("<32sQ6I")
#: struct pta_stats_ta: TEE_UUID (u32, u16, u16, u8[8]), panicked, sess_num, the TA's heap
_TA_STATS = struct.Struct("<IHH8sII")


def _alloc_stats(blob: bytes) -> dict[str, int]:
    _, _, allocated, peak, size, fails, _, _ = _ALLOC.unpack_from(blob)
    return {
        "allocated": allocated,
        "max_allocated": peak,
        "size": size,
        "failed_allocations": fails,
    }


def ta_memory_stats(ctx: OpteeContext) -> dict[str, Any]:
    """What OP-TEE's statistics pseudo-TA says of TA memory, measured by the TEE core itself.

    ``ta_ram``: secure physical memory allocated from the core's and the TA
    pools together (OP-TEE adds the two; the core's includes its own image),
    so only a *difference* means something: what a TA holds is the
    allocation with it loaded minus the allocation without. ``tas``: each
    loaded user TA's heap (bytes allocated now, at most, and the heap's
    size), counted by the TA's own allocator (libutils); empty when no TA is
    loaded.
    """
    s = ctx.open_session(STATS_UUID)
    try:
        out = s.invoke(STATS_CMD_ALLOC_STATS, 0,
                       [Value(STATS_POOL_TA_RAM, 0), Output(_ALLOC.size), None, None],
                       _fetch_message=False)  # fmt: skip
        ta_ram = _alloc_stats(out[1])
        tas = []
        try:
            blob = s.invoke(STATS_CMD_TA_STATS, 0, [Output(64 * (_TA_STATS.size + _ALLOC.size)), None, None, None],
                            _fetch_message=False)[0]  # fmt: skip
        except OmgError as e:
            if e.result_code != C.RESULT_ITEM_NOT_FOUND:  # no user TA loaded: an empty list
                raise
            blob = b""
        step = _TA_STATS.size + _ALLOC.size
        for off in range(0, len(blob) - step + 1, step):
            tl, tm, th, rest, panicked, sessions = _TA_STATS.unpack_from(blob, off)
            u = _uuid.UUID(bytes=struct.pack(">IHH", tl, tm, th) + rest)
            tas.append({"uuid": str(u), "panicked": bool(panicked), "sessions": sessions,
                        "heap": _alloc_stats(blob[off + _TA_STATS.size : off + step])})  # fmt: skip
    finally:
        s.close()
    return {"ta_ram": ta_ram, "tas": tas}
