"""Runtime adapters: from bytes only, int8 scores agree across runtimes."""

from __future__ import annotations

import numpy as np
import pytest

from omg_ta.runtime import RUNTIMES, available_runtimes, load_runtime
from omgkit.errors import ModelFormatError, RuntimeUnavailableError, UnknownNameError


@pytest.fixture(scope="module")
def features(tiny_run):
    return np.load(tiny_run / "representative.npy")


@pytest.mark.parametrize("q", ["float32", "int8"])
def test_litert_and_tflm_agree(tiny_run, features, q):
    blob = (tiny_run / f"model_{q}.tflite").read_bytes()
    a = load_runtime("litert", blob).predict(features)
    b = load_runtime("tflm", blob).predict(features)
    assert a.shape == b.shape == (len(features), 12)
    if q == "int8":
        step = 1 / 256  # the int8 softmax output's quantization step
        assert np.max(np.abs(a - b)) <= step + 1e-7
        assert np.mean(np.all(a == b, axis=1)) >= 0.95  # bit-identical for almost all clips
    else:
        assert np.allclose(a, b, atol=1e-4)
    assert np.array_equal(a.argmax(1), b.argmax(1))


def test_batch_equals_one_by_one(tiny_run, features):
    rt = load_runtime("litert", (tiny_run / "model_int8.tflite").read_bytes())
    batch = rt.predict(features[:17])
    single = np.vstack([rt.predict(features[i : i + 1]) for i in range(17)])
    assert np.array_equal(batch, single)


def test_model_bytes_outlive_caller_reference(tiny_run, features):
    blob = bytearray((tiny_run / "model_int8.tflite").read_bytes())
    rt = load_runtime("litert", blob)
    expected = rt.predict(features[:4])
    blob[:] = b"\0" * len(blob)  # the caller reuses its buffer: the adapter holds its own copy
    del blob
    assert np.array_equal(rt.predict(features[:4]), expected)


def test_garbage_and_paths_are_refused():
    with pytest.raises(ModelFormatError, match="no TFL3 identifier"):
        load_runtime("litert", b"\x00" * 64)
    with pytest.raises(ModelFormatError, match="must be bytes"):
        load_runtime("tflm", "model_int8.tflite")  # type: ignore[arg-type]


def test_wrong_feature_shape(tiny_run):
    rt = load_runtime("litert", (tiny_run / "model_int8.tflite").read_bytes())
    with pytest.raises(ModelFormatError, match=r"the model takes \(49, 10, 1\)"):
        rt.predict(np.zeros((1, 49, 40, 1), np.float32))


def test_unknown_runtime_lists_known():
    with pytest.raises(UnknownNameError, match="known: litert, tflm, tflite-runtime"):
        load_runtime("onnx", b"")


def test_tflite_runtime_is_optional(tiny_run):
    blob = (tiny_run / "model_int8.tflite").read_bytes()
    assert {"litert", "tflm"} <= set(available_runtimes()) <= set(RUNTIMES)
    if "tflite-runtime" in available_runtimes():
        assert load_runtime("tflite-runtime", blob).num_classes == 12
    else:
        with pytest.raises(RuntimeUnavailableError, match="install the 'tflite-runtime' package"):
            load_runtime("tflite-runtime", blob)
