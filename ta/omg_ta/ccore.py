"""The C core of the TA (``ta/optee/core``), loaded as a host library.

The same C sources build into the OP-TEE TA and into ``libomgcore.so``,
which this module loads with ctypes: the workbench runs and cross-checks
the very code the TA runs. :class:`CEngine` is the int8 engine (it reads the
``.tflite`` bytes in place), :class:`CFrontend` the feature frontend,
:func:`plan` what a model needs in the TA's memory.

The library is found at ``$OMG_CORE_LIB``, else beside the ``omg_ta``
package (``ta/optee/build/host/``, where ``make`` builds it).
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError, ModelFormatError, OmgError, RuntimeUnavailableError, from_result

if TYPE_CHECKING:
    from .frontend import FrontendSettings

LIB_NAME = "libomgcore.so"
MAX_DIMS = 4
_ERR = 256


def library_path() -> Path:
    """Where the host library is expected (it may not be built yet)."""
    env = os.environ.get("OMG_CORE_LIB")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("omg_ta")
    base = Path(spec.origin).parent if spec and spec.origin else Path(__file__).parent
    return base.parent / "optee" / "build" / "host" / LIB_NAME


class _Plan(ctypes.Structure):
    _fields_ = [("arena_bytes", ctypes.c_size_t), ("activation_bytes", ctypes.c_size_t),
                ("scratch_bytes", ctypes.c_size_t), ("weight_bytes", ctypes.c_size_t),
                ("num_ops", ctypes.c_uint32), ("num_tensors", ctypes.c_uint32),
                ("macs", ctypes.c_uint64), ("input_dims", ctypes.c_int32 * MAX_DIMS),
                ("input_rank", ctypes.c_uint32), ("output_size", ctypes.c_uint32)]  # fmt: skip


class _IO(ctypes.Structure):
    _fields_ = [("input_scale", ctypes.c_float), ("input_zero_point", ctypes.c_int32),
                ("output_scale", ctypes.c_float), ("output_zero_point", ctypes.c_int32),
                ("input_bytes", ctypes.c_uint32), ("output_bytes", ctypes.c_uint32)]  # fmt: skip


class _FeSettings(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int32), ("sample_rate", ctypes.c_int32), ("clip_ms", ctypes.c_int32),
                ("window_ms", ctypes.c_double), ("hop_ms", ctypes.c_double),
                ("num_mel_bins", ctypes.c_int32), ("num_coefficients", ctypes.c_int32),
                ("lower_hz", ctypes.c_double), ("upper_hz", ctypes.c_double),
                ("log_offset", ctypes.c_double), ("log_floor", ctypes.c_double)]  # fmt: skip


class _FePlan(ctypes.Structure):
    _fields_ = [("clip_samples", ctypes.c_int32), ("window_samples", ctypes.c_int32),
                ("hop_samples", ctypes.c_int32), ("fft_length", ctypes.c_int32),
                ("num_frames", ctypes.c_int32), ("num_features", ctypes.c_int32),
                ("state_bytes", ctypes.c_size_t)]  # fmt: skip


_lib: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """The host library (loaded once), or RuntimeUnavailableError saying how to build it."""
    global _lib
    if _lib is None:
        path = library_path()
        if not path.is_file():
            raise RuntimeUnavailableError(
                "c", "omgkit's C core", f"{path} is not built: run `make -C ta/optee/hostlib`"
            )
        lib = ctypes.CDLL(str(path))
        P, S, E = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        u32 = ctypes.c_uint32
        for name, args in {
            "omg_engine_plan": [P, S, ctypes.POINTER(_Plan), E, S],
            "omg_engine_init": [ctypes.POINTER(P), P, S, P, S, E, S],
            "omg_engine_io": [P, ctypes.POINTER(_IO)],
            "omg_engine_invoke": [P, P, P],
            "omg_frontend_plan": [ctypes.POINTER(_FeSettings), ctypes.POINTER(_FePlan), E, S],
            "omg_frontend_init": [ctypes.POINTER(P), ctypes.POINTER(_FeSettings), P, S, E, S],
            "omg_frontend_run": [P, P, P],
            "omg_quantize": [P, S, ctypes.c_float, ctypes.c_int32, P],
        }.items():
            fn = getattr(lib, name, None)
            if fn is None:  # a partial build (tests of one part): the call will say so
                continue
            fn.argtypes = args
            fn.restype = None if name in ("omg_engine_io", "omg_quantize") else u32
        _lib = lib
    return _lib


def _check(status: int, err: ctypes.Array | None = None, cls: type[OmgError] | None = None) -> None:
    if status:
        msg = err.value.decode(errors="replace") if err is not None else ""
        if cls is not None and status == cls.result_code:
            raise cls(msg)
        raise from_result(status, msg)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a model needs in the TA's memory (``omg_engine_plan``)."""

    arena_bytes: int
    activation_bytes: int
    scratch_bytes: int
    weight_bytes: int
    num_ops: int
    num_tensors: int
    macs: int
    input_shape: tuple[int, ...]
    output_size: int


def plan(model: bytes) -> Plan:
    """Check a ``.tflite`` model against the C engine; what it needs (or ModelFormatError)."""
    lib = load()
    p, err = _Plan(), ctypes.create_string_buffer(_ERR)
    buf = ctypes.create_string_buffer(bytes(model), len(model))
    _check(lib.omg_engine_plan(buf, len(model), ctypes.byref(p), err, _ERR), err, ModelFormatError)
    return Plan(p.arena_bytes, p.activation_bytes, p.scratch_bytes, p.weight_bytes, p.num_ops,
                p.num_tensors, p.macs, tuple(p.input_dims[: p.input_rank]), p.output_size)  # fmt: skip


class CEngine:
    """The C int8 engine on one model: int8 tensors in, int8 tensors out.

    Keeps the model's bytes (the engine reads them in place) and one arena,
    allocated here once; ``invoke`` allocates nothing.
    """

    def __init__(self, model: bytes):
        lib = load()
        self.plan = plan(model)
        self._model = ctypes.create_string_buffer(bytes(model), len(model))
        self._arena = ctypes.create_string_buffer(self.plan.arena_bytes + 16)
        base = ctypes.addressof(self._arena)
        aligned = (base + 15) & ~15
        self._handle = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERR)
        _check(lib.omg_engine_init(ctypes.byref(self._handle), self._model, len(model), aligned,
                                   self.plan.arena_bytes, err, _ERR), err, ModelFormatError)  # fmt: skip
        io = _IO()
        lib.omg_engine_io(self._handle, ctypes.byref(io))
        self.io = io
        self.input_shape = self.plan.input_shape

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One int8 input tensor (any shape of the right size) to the int8 output."""
        a = np.ascontiguousarray(x, dtype=np.int8).reshape(-1)
        if a.size != self.io.input_bytes:
            raise ConfigError(f"the model takes {self.io.input_bytes} int8 values, not {a.size}")
        out = np.empty(self.io.output_bytes, np.int8)
        _check(load().omg_engine_invoke(self._handle, a.ctypes.data, out.ctypes.data))
        return out


class CFrontend:
    """The C frontend with the settings of ``omg_ta.frontend.FrontendSettings``."""

    def __init__(self, settings: FrontendSettings):
        lib = load()
        s = settings
        self.settings = s
        self._s = _FeSettings(0 if s.kind == "mfcc" else 1, s.sample_rate, s.clip_ms, s.window_ms,
                              s.hop_ms, s.num_mel_bins, s.num_coefficients, s.lower_hz, s.upper_hz,
                              s.log_offset, s.log_floor)  # fmt: skip
        p, err = _FePlan(), ctypes.create_string_buffer(_ERR)
        _check(
            lib.omg_frontend_plan(ctypes.byref(self._s), ctypes.byref(p), err, _ERR),
            err,
            ConfigError,
        )
        self.plan = p
        self.shape = (p.num_frames, p.num_features)
        self._mem = ctypes.create_string_buffer(p.state_bytes + 16)
        aligned = (ctypes.addressof(self._mem) + 15) & ~15
        self._handle = ctypes.c_void_p()
        _check(lib.omg_frontend_init(ctypes.byref(self._handle), ctypes.byref(self._s), aligned,
                                     p.state_bytes, err, _ERR), err, ConfigError)  # fmt: skip

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Features ``(batch, frames, features)`` float32 of int16 clips ``(batch, samples)``."""
        a = np.asarray(audio)
        if a.ndim == 1:
            a = a[None, :]
        if a.dtype != np.int16 or a.ndim != 2 or a.shape[1] != self.plan.clip_samples:
            raise ConfigError(
                f"the C frontend takes int16 clips of {self.plan.clip_samples} samples"
            )
        a = np.ascontiguousarray(a)
        out = np.empty((a.shape[0], *self.shape), np.float32)
        lib = load()
        for i in range(a.shape[0]):
            _check(lib.omg_frontend_run(self._handle, a[i].ctypes.data, out[i].ctypes.data))
        return out


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The C core's float32 -> int8 quantization (as the TA does before the engine)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(a.shape, np.int8)
    load().omg_quantize(a.ctypes.data, a.size, scale, zero_point, out.ctypes.data)
    return out


def stack_bytes(callgraph_dir: str | os.PathLike | None = None) -> int:
    """The core's deepest stack: the longest chain of frames in GCC's call graph.

    ``make`` writes ``build/host/callgraph/*.ci`` (``-fcallgraph-info=su``):
    every function's frame and whom it calls. This walks every chain from
    every function and returns the largest sum (the core has no recursion;
    a cycle would be an error). Frames are those of the build that made the
    files: the host's here, the TA's when its build writes them.
    """
    import re

    d = Path(callgraph_dir) if callgraph_dir else library_path().parent / "callgraph"
    files = sorted(d.glob("*.ci"))
    if not files:
        raise RuntimeUnavailableError("c", "omgkit's C core", f"no call graph in {d}: run make")
    frame: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    node = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n[^"]*?\\n(\d+) bytes')
    edge = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')

    def key(name: str) -> str:  # static functions are titled file:name
        return name.rsplit(":", 1)[-1]

    for f in files:
        text = f.read_text()
        for m in node.finditer(text):
            frame[key(m.group(1))] = max(frame.get(key(m.group(1)), 0), int(m.group(2)))
        for m in edge.finditer(text):
            calls.setdefault(key(m.group(1)), set()).add(key(m.group(2)))
    memo: dict[str, int] = {}

    def deepest(fn: str, path: tuple[str, ...]) -> int:
        if fn in path:
            raise ConfigError(
                f"the C core recurses ({' -> '.join((*path, fn))}): its stack is unbounded"
            )
        if fn not in memo:
            below = [deepest(c, (*path, fn)) for c in calls.get(fn, ())]
            memo[fn] = frame.get(fn, 0) + max(below, default=0)
        return memo[fn]

    return max(deepest(fn, ()) for fn in frame)
