"""Model factory and conversion to TFLite builtins."""

from __future__ import annotations

import numpy as np
import pytest

from omgkit.errors import ConversionError, UnknownNameError
from omgkit.kws.convert import to_tflite
from omgkit.kws.models import MODELS, build_model


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(
        UnknownNameError,
        match="unknown model 'resnet'; known: ds_cnn_s, ds_cnn_m, ds_cnn_l, tiny_conv",
    ):
        build_model("resnet", (49, 10), 12)


@pytest.mark.parametrize("name", list(MODELS))
def test_models_build_and_convert_to_builtins(name):
    m = build_model(name, (49, 10), 12)
    assert m.output_shape == (None, 12)
    blob = to_tflite(m, "float32")
    from omg_ta.runtime import load_runtime

    rt = load_runtime("tflm", blob)
    p = rt.predict(np.zeros((2, 49, 10, 1), np.float32))
    assert p.shape == (2, 12) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_ds_cnn_s_is_hello_edge_sized():
    n = build_model("ds_cnn_s", (49, 10), 12).count_params()
    assert 20_000 < n < 30_000  # Hello Edge: DS-CNN-S has 24k parameters (38.6k before BN folding)


def test_flex_op_is_refused_with_clear_error():
    import tensorflow as tf
    from tensorflow import keras

    inp = keras.Input((49, 40, 1))
    x = keras.layers.Lambda(lambda t: tf.signal.mfccs_from_log_mel_spectrograms(t[..., 0]))(inp)
    out = keras.layers.Dense(12, activation="softmax")(keras.layers.Flatten()(x))
    with pytest.raises(ConversionError, match="not TFLite builtins.*Flex"):
        to_tflite(keras.Model(inp, out), "float32")


def test_int8_needs_representative_data():
    with pytest.raises(ConversionError, match="representative"):
        to_tflite(build_model("tiny_conv", (49, 10), 12), "int8", None)


def test_a_matching_run_is_reused_not_trained_again(tiny_run, tiny_corpus, tmp_path):
    """Notebook 01 after `make demo`: the same settings on the same corpus copy the run."""
    from omgkit.kws.augment import AugmentSettings
    from omgkit.kws.run import RunDir
    from omgkit.kws.train import TrainSettings, reuse_run

    same = TrainSettings(epochs=4, augment=AugmentSettings(copies=1))  # conftest's _train_tiny
    out = tmp_path / "run"
    m = reuse_run(tiny_run, out, tiny_corpus, same)
    assert m is not None and m["reused_from"] == str(tiny_run) and m["epochs_run"] >= 1
    man = RunDir(out).manifest()
    assert man.done("train") and not man.done("convert")  # conversion runs again, from the copy
    assert (out / "model.keras").read_bytes() == (tiny_run / "model.keras").read_bytes()
    # another setting, or another corpus: nothing is copied
    other = tmp_path / "other"
    assert (
        reuse_run(
            tiny_run, other, tiny_corpus, TrainSettings(epochs=5, augment=AugmentSettings(copies=1))
        )
        is None
    )
    assert not other.exists()
    assert reuse_run(tiny_run, other, tmp_path / "no-corpus", same) is None
    assert reuse_run(tmp_path / "nothing", other, tiny_corpus, same) is None
