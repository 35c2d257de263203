"""`omg convert`: Keras model to TensorFlow Lite, float32 and full int8.

Only TFLite builtin operators are allowed: the TA's runtimes (ai-edge-litert
without Flex, TFLM) have nothing else. A model that would need Flex
(TensorFlow) ops is refused with :class:`~omgkit.errors.ConversionError`.
The int8 model is fully integer, inputs and outputs included, calibrated
on feature maps from the training split (``representative.npy``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..util import atomic_write_bytes
from .release import model_file
from .run import RunDir

QUANTIZATIONS = ("float32", "int8")


def to_tflite(
    model: Any, quantization: str = "int8", representative: np.ndarray | None = None
) -> bytes:
    """Convert a Keras model (input ``(frames, features, 1)``) to a TFLite flatbuffer."""
    from ..util import import_tensorflow, native_stderr_filtered

    tf = import_tensorflow()

    if quantization not in QUANTIZATIONS:
        from ..errors import UnknownNameError

        raise UnknownNameError("quantization", quantization, QUANTIZATIONS)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "int8":
        if representative is None or len(representative) == 0:
            raise ConversionError("int8 conversion needs representative feature maps")
        rep = representative.astype(np.float32)

        def gen():
            for i in range(len(rep)):
                yield [rep[i : i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    try:
        # The converter prints its saved-model signature to stdout and warns
        # about input statistics it does not need; keep the CLI readable.
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
            native_stderr_filtered(),
        ):
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(conv.convert())
    except Exception as e:  # the converter raises several unrelated types
        text = str(e)
        if "Flex" in text or "not supported" in text.lower() or "select_tf_ops" in text.lower():
            raise ConversionError(
                "the model needs operators that are not TFLite builtins (it would need Flex / "
                "TensorFlow ops, which the TA's runtimes do not have). Replace them with builtin "
                f"ones (e.g. do an MFCC's DCT as a matmul). Converter said: {text[-600:]}"
            ) from None
        raise ConversionError(f"TFLite conversion failed: {text[-600:]}") from None


def convert_run(
    run_dir: str | os.PathLike, quantizations: tuple[str, ...] = QUANTIZATIONS
) -> dict[str, int]:
    """Convert ``model.keras`` of a run; writes ``model_<q>.tflite``. Returns sizes."""
    from ..util import import_tensorflow

    import_tensorflow()
    from tensorflow import keras

    run = RunDir(run_dir)
    run.manifest()  # a run directory, or an error that says how to make one
    model = keras.models.load_model(run.require("model.keras", f"omg train --out {run.path}"))
    rep = np.load(run.require("representative.npy", f"omg train --out {run.path}"))
    sizes = {}
    for q in quantizations:
        blob = to_tflite(model, q, rep)
        atomic_write_bytes(run / model_file(q), blob)
        sizes[q] = len(blob)
    run.update({"convert": {"sizes": sizes}}, files=[model_file(q) for q in quantizations])
    return sizes
