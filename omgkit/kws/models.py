"""Keyword-spotting models (Keras 3): DS-CNN S/M/L and tiny_conv.

- DS-CNN, from Hello Edge (Zhang et al., 2017): a strided 10x4 convolution,
  then blocks of depthwise 3x3 + pointwise 1x1 convolutions, global average
  pooling and one dense layer. S: 64 channels x 4 blocks (~24k parameters),
  M: 172 x 4, L: 276 x 5.
- tiny_conv, the micro_speech model family the OMG paper ran under TFLM:
  one strided 10x8 convolution with 8 filters and a dense layer.

BatchNorm momentum is 0.9, not Keras 3's default 0.99: measured, with 0.99
the validation accuracy sits at chance for the first epochs because the
moving statistics lag far behind the weights on small corpora.
The models take features as ``(frames, coefficients, 1)`` so the TFLite
graph needs no reshape, and end in a softmax.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UnknownNameError

BN_MOMENTUM = 0.9
_DS_CNN = {"ds_cnn_s": (64, 4), "ds_cnn_m": (172, 4), "ds_cnn_l": (276, 5)}


def _ds_cnn(filters: int, blocks: int) -> Callable:
    def build(input_shape: tuple[int, int], num_classes: int):
        from tensorflow import keras
        from tensorflow.keras import layers

        inp = keras.Input(shape=(*input_shape, 1), name="features")
        x = layers.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inp)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
        for _ in range(blocks):
            x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
            x = layers.ReLU()(x)
            x = layers.Conv2D(filters, (1, 1), use_bias=False)(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
            x = layers.ReLU()(x)
        x = layers.Dropout(0.3)(x)
        x = layers.GlobalAveragePooling2D()(x)
        out = layers.Dense(num_classes, activation="softmax", name="scores")(x)
        return keras.Model(inp, out)

    return build


def _tiny_conv(input_shape: tuple[int, int], num_classes: int):
    from tensorflow import keras
    from tensorflow.keras import layers

    inp = keras.Input(shape=(*input_shape, 1), name="features")
    x = layers.Conv2D(8, (10, 8), strides=(2, 2), padding="same")(inp)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Flatten()(x)
    out = layers.Dense(num_classes, activation="softmax", name="scores")(x)
    return keras.Model(inp, out)


MODELS: dict[str, Callable] = {
    **{k: _ds_cnn(*v) for k, v in _DS_CNN.items()},
    "tiny_conv": _tiny_conv,
}


def build_model(name: str, input_shape: tuple[int, int], num_classes: int):
    """A fresh Keras model by name."""
    if name not in MODELS:
        raise UnknownNameError("model", name, list(MODELS))
    model = MODELS[name](tuple(input_shape), int(num_classes))
    model.name = name  # Keras names models by attribute
    return model
