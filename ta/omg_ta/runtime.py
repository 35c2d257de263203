"""Inference runtimes that load a TensorFlow Lite model from ``bytes``.

A guarded model is only ever plaintext in the TA's memory, so no adapter
takes a path. Each adapter keeps a reference to the bytes it was given:
the interpreters point into that buffer for as long as they live.

- ``litert``: ai-edge-litert (the default; batched invoke). Its default
  XNNPACK delegate is off unless asked for (``xnnpack=True``): without it,
  int8 scores match TFLM's to one quantization step (bit-identical for 99 %
  or more of clips, measured), so plain, guarded and microcontroller
  inference give the same labels.
- ``tflm``: TensorFlow Lite for Microcontrollers (the runtime the paper ran;
  one clip per invoke, as on a microcontroller).
- ``tflite-runtime``: the legacy wheel; it needs numpy<2, so it is used only
  where it is installed.

None of them imports TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelFormatError, RuntimeUnavailableError, UnknownNameError

if TYPE_CHECKING:
    from .frontend import FrontendSettings

RUNTIMES = ("litert", "tflm", "tflite-runtime", "c")
DEFAULT_RUNTIME = "litert"
_PACKAGES = {"litert": "ai-edge-litert", "tflm": "tflite-micro", "tflite-runtime": "tflite-runtime",
             "c": "omgkit's C core (make -C ta/optee/hostlib)"}  # fmt: skip


def _one_line(e: BaseException) -> str:
    """A runtime's error text on one line, at most 300 characters (they print C++ logs)."""
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _check_flatbuffer(model: bytes) -> bytes:
    if not isinstance(model, (bytes, bytearray, memoryview)):
        raise ModelFormatError(f"model must be bytes, got {type(model).__name__}")
    model = bytes(model)
    # A TFLite flatbuffer carries the file identifier "TFL3" at offset 4.
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ModelFormatError("not a TensorFlow Lite model (no TFL3 identifier)")
    return model


class _Quant:
    """Quantize inputs / dequantize outputs of an integer model."""

    def __init__(self, detail: dict[str, Any]):
        self.dtype = np.dtype(detail["dtype"])
        q = detail.get("quantization_parameters") or {}
        scales = np.asarray(q.get("scales", []), dtype=np.float32)
        zeros = np.asarray(q.get("zero_points", []), dtype=np.int64)
        if scales.size == 0 and detail.get("quantization"):
            s, z = detail["quantization"]
            scales, zeros = np.asarray([s], np.float32), np.asarray([z], np.int64)
        self.scale = float(scales[0]) if scales.size and scales[0] != 0 else None
        self.zero = int(zeros[0]) if zeros.size else 0

    def to_model(self, x: np.ndarray) -> np.ndarray:
        if self.dtype == np.float32 or self.scale is None:
            return x.astype(self.dtype, copy=False)
        info = np.iinfo(self.dtype)
        q = np.round(x / self.scale) + self.zero
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def from_model(self, y: np.ndarray) -> np.ndarray:
        if self.dtype == np.float32 or self.scale is None:
            return y.astype(np.float32, copy=False)
        return (y.astype(np.float32) - self.zero) * self.scale


class Runtime:
    """Common face of the adapters: float features in, float scores out."""

    name: str = ""

    def __init__(self, model: bytes):
        self._model = _check_flatbuffer(model)  # kept alive: interpreters point into it
        self.input_shape: tuple[int, ...] = ()
        self.input_dtype: np.dtype = np.dtype(np.float32)
        self.num_classes: int = 0

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores (after the model's softmax) for a batch of feature maps."""
        raise NotImplementedError

    def invoke_raw(self, q: np.ndarray) -> np.ndarray:
        """The model's own output tensors (int8 for an int8 model) for a batch of its inputs:
        how runtimes are compared byte for byte on the same input tensor."""
        raise NotImplementedError

    def quantize(self, features: np.ndarray) -> np.ndarray:
        """Feature maps as the model's input tensors (int8: round half to even, clip)."""
        return self._qin.to_model(self._check(features))

    def classify(self, features: np.ndarray) -> np.ndarray:
        """Class indices for a batch of feature maps."""
        return np.argmax(self.predict(features), axis=-1)

    def _check(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        if x.shape[1:] != tuple(self.input_shape[1:]):
            raise ModelFormatError(
                f"features of shape {x.shape[1:]} given; the model takes {tuple(self.input_shape[1:])}"
            )
        return x


class _InterpreterRuntime(Runtime):
    """ai-edge-litert and tflite-runtime share the tf.lite.Interpreter API."""

    module = ""

    def __init__(self, model: bytes, num_threads: int = 1, xnnpack: bool = False):
        super().__init__(model)
        try:
            mod = importlib.import_module(self.module)
        except ImportError as e:
            raise RuntimeUnavailableError(self.name, _PACKAGES[self.name], str(e)) from None
        # XNNPACK's int8 kernels round differently from the builtin ones: with
        # it, 0.7 % of int8 labels differed from TFLM's (and only 36 % of score
        # vectors were identical). Without it, scores are identical for 99-100 %
        # of clips and otherwise one quantization step apart.
        resolver = (
            mod.OpResolverType.AUTO
            if xnnpack
            else mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        self.xnnpack = xnnpack
        try:
            self._interp = mod.Interpreter(
                model_content=self._model,
                num_threads=num_threads,
                experimental_op_resolver_type=resolver,
            )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelFormatError(f"{self.name} cannot load the model: {_one_line(e)}") from None
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_dtype = np.dtype(inp["dtype"])
        self.num_classes = int(out["shape"][-1])
        self._qin, self._qout = _Quant(inp), _Quant(out)
        self._batch = int(inp["shape"][0])

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = self._check(features)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes), np.float32)
        return self._qout.from_model(self.invoke_raw(self._qin.to_model(x)))

    def invoke_raw(self, q: np.ndarray) -> np.ndarray:
        """The model's own output tensor (int8 for an int8 model) for a batch of its input tensors."""
        if q.shape[0] != self._batch:
            self._interp.resize_tensor_input(self._in_index, [q.shape[0], *self.input_shape[1:]])
            self._interp.allocate_tensors()
            self._batch = q.shape[0]
        self._interp.set_tensor(self._in_index, np.asarray(q, self.input_dtype))
        self._interp.invoke()
        return self._interp.get_tensor(self._out_index).copy()


class LiteRTRuntime(_InterpreterRuntime):
    name = "litert"
    module = "ai_edge_litert.interpreter"


class TFLiteRuntime(_InterpreterRuntime):
    name = "tflite-runtime"
    module = "tflite_runtime.interpreter"


class TFLMRuntime(Runtime):
    """TensorFlow Lite Micro: static arena, one clip per invoke."""

    name = "tflm"

    def __init__(self, model: bytes, arena_size: int | None = None, num_threads: int = 1):
        super().__init__(model)
        try:
            from tflite_micro.python.tflite_micro import runtime as tflm
        except ImportError as e:
            raise RuntimeUnavailableError(self.name, _PACKAGES[self.name], str(e)) from None
        arena = arena_size or max(len(self._model) * 10, 256 * 1024)
        try:
            self._interp = tflm.Interpreter.from_bytes(self._model, arena_size=arena)
        except (ValueError, RuntimeError) as e:
            raise ModelFormatError(f"tflm cannot load the model: {_one_line(e)}") from None
        inp = self._interp.get_input_details(0)
        out = self._interp.get_output_details(0)
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_dtype = np.dtype(inp["dtype"])
        self.num_classes = int(out["shape"][-1])
        self._qin, self._qout = _Quant(inp), _Quant(out)

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = self._check(features)
        return self._qout.from_model(self.invoke_raw(self._qin.to_model(x)))

    def invoke_raw(self, q: np.ndarray) -> np.ndarray:
        """The model's own output tensors for a batch of its input tensors, one invoke each."""
        out = np.empty((q.shape[0], self.num_classes), self._qout.dtype)
        for i in range(q.shape[0]):
            self._interp.set_input(np.asarray(q[i : i + 1], self.input_dtype), 0)
            self._interp.invoke()
            out[i] = self._interp.get_output(0).reshape(-1)
        return out


class CRuntime(Runtime):
    """omgkit's own int8 engine, the C core the OP-TEE TA runs (``omg_ta.ccore``).

    Loaded from the host library; one clip per invoke, as in the TA. Inputs
    are quantized here exactly as for the other runtimes, so all of them see
    the same int8 tensor.
    """

    name = "c"

    def __init__(self, model: bytes, num_threads: int = 1):
        super().__init__(model)
        from . import ccore

        self._engine = ccore.CEngine(self._model)  # RuntimeUnavailableError if not built
        io = self._engine.io
        self.input_shape = tuple(self._engine.input_shape)
        self.input_dtype = np.dtype(np.int8)
        self.num_classes = int(io.output_bytes)
        self._qin = _Quant(
            {"dtype": np.int8, "quantization": (io.input_scale, io.input_zero_point)}
        )
        self._qout = _Quant(
            {"dtype": np.int8, "quantization": (io.output_scale, io.output_zero_point)}
        )

    def invoke_raw(self, q: np.ndarray) -> np.ndarray:
        """int8 outputs for a batch of int8 input tensors, one invoke each (as in the TA)."""
        q = np.asarray(q, np.int8)
        out = np.empty((q.shape[0], self.num_classes), np.int8)
        for i in range(q.shape[0]):
            out[i] = self._engine.invoke(q[i])
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = self._check(features)
        return self._qout.from_model(self.invoke_raw(self._qin.to_model(x)))


_ADAPTERS: dict[str, type[Runtime]] = {
    "litert": LiteRTRuntime,
    "tflm": TFLMRuntime,
    "tflite-runtime": TFLiteRuntime,
    "c": CRuntime,
}


def load_runtime(name: str, model: bytes, **kwargs: Any) -> Runtime:
    """An interpreter for ``model`` (TFLite flatbuffer bytes) on runtime ``name``."""
    if name not in _ADAPTERS:
        raise UnknownNameError("runtime", name, RUNTIMES)
    return _ADAPTERS[name](model, **kwargs)


def check_model(rt: Runtime, settings: FrontendSettings, labels: Sequence[str]) -> None:
    """Refuse a loaded model that does not fit its frontend settings or its labels.

    The vendor runs this before sealing and the TA at initialization, before
    it changes any counter: the model's input must be the frontend's feature
    map, ``(frames, features)`` with a trailing channel of 1, and its output
    one score per label.
    """
    want = (*settings.shape, 1)
    got = tuple(int(d) for d in rt.input_shape[1:])
    if got not in (want, want[:2]):
        raise ModelFormatError(
            f"the model takes features of shape {got}, but its frontend settings "
            f"({settings.kind}, {settings.num_frames} frames x {settings.num_features}) make {want}: "
            "seal it with the frontend settings it was trained with"
        )
    if (
        not labels
        or not all(isinstance(x, str) and x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise ModelFormatError("the labels must be distinct, non-empty names, one per model output")
    if rt.num_classes != len(labels):
        raise ModelFormatError(
            f"the model has {rt.num_classes} outputs but {len(labels)} labels are given"
        )


def load_checked(name: str, model: bytes, settings: FrontendSettings, labels: Sequence[str],
                 **kwargs: Any) -> Runtime:  # fmt: skip
    """:func:`load_runtime`, then :func:`check_model`: a runtime that fits, or ModelFormatError."""
    rt = load_runtime(name, model, **kwargs)
    check_model(rt, settings, labels)
    return rt


def installed_runtimes() -> list[str]:
    """Runtimes installed here, found without importing them (cheap: a board reports these).

    ``available_runtimes`` is the stricter test: it loads each one."""
    import importlib.util

    out = []
    for name, mod in _MODULES.items():
        if mod is None:
            from . import ccore

            if ccore.library_path().is_file():
                out.append(name)
            continue
        try:
            found = importlib.util.find_spec(mod.split(".")[0]) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            out.append(name)
    return out


_MODULES = {
    "litert": "ai_edge_litert.interpreter",
    "tflm": "tflite_micro.python.tflite_micro.runtime",
    "tflite-runtime": "tflite_runtime.interpreter",
    "c": None,  # the C core: a library of ours, loaded with ctypes
}


def available_runtimes(only: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Runtimes whose package imports here (of ``only``, if given); importing is loading."""
    out = []
    for name, mod in _MODULES.items():
        if only is not None and name not in only:
            continue
        try:
            if mod is None:  # the C core: a library of ours, loaded with ctypes
                from . import ccore

                ccore.load()
            else:
                importlib.import_module(mod)
        except Exception:  # a broken wheel (or an unbuilt library) counts as missing
            continue
        out.append(name)
    return out
