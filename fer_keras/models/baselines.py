"""Two small baselines: a frame CNN for stills and a Keras ConvLSTM2D clip model.

They exist so that every part of the pipeline (data, training, protocol, export, predict) can
be exercised before and beside the paper models, and as reference lines in the benchmarks.
"""

import keras
from keras import layers

from fer_keras.layers.frame_wise import FrameWise
from fer_keras.models.registry import register_model


def _conv_block(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


@register_model(
    "frame_cnn",
    kind="still",
    sizes={"small": {"filters": (16, 32, 64)}, "paper": {"filters": (32, 64, 128)}},
    description="Baseline: strided conv, conv-BN-ReLU-pool blocks, conv, flatten (keeps where things are), softmax.",
)
def frame_cnn(input_shape, num_classes, filters=(16, 32, 64), dropout=0.5, batch_size=None):
    """A small frame CNN: a strided 5x5 conv, two conv+pool blocks, one more conv, flatten, softmax.

    Flatten, not global pooling: an expression is *where* the face moves (brows up, lip corners
    up), and a global-average-pooled CNN stayed near chance on SynthFER. The strided first conv
    keeps CPU training short (about 12 M multiply-adds a 64 px frame at the small size).
    """
    inputs = keras.Input(shape=input_shape, batch_size=batch_size, name="images")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(filters[0], 5, strides=2, padding="same", use_bias=False, name="stem_conv")(x)  # (H/2, W/2)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, f in enumerate(filters[1:]):
        x = _conv_block(x, f, name=f"block{i + 1}")
    x = layers.Conv2D(filters[-1], 3, padding="same", activation="relu", name="top_conv")(x)  # (H/8, W/8)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="frame_cnn")


@register_model(
    "convlstm2d_clip",
    kind="clip",
    sizes={"small": {"filters": (16, 32), "lstm_filters": 32}, "paper": {"filters": (32, 64, 128), "lstm_filters": 128}},
    description="Baseline: per-frame conv blocks, Keras ConvLSTM2D over the clip, softmax.",
)
def convlstm2d_clip(input_shape, num_classes, filters=(16, 32), lstm_filters=32, dropout=0.3, unroll=False, batch_size=None):
    inputs = keras.Input(shape=input_shape, batch_size=batch_size, name="frames")  # (B, T, H, W, C)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, f in enumerate(filters):
        block = keras.Sequential(
            [
                layers.Conv2D(f, 3, padding="same", use_bias=False),
                layers.BatchNormalization(),
                layers.ReLU(),
                layers.MaxPooling2D(2),
            ],
            name=f"block{i + 1}",
        )
        x = FrameWise(block, name=f"frames_block{i + 1}")(x)  # (B, T, h, w, f)
    x = layers.ConvLSTM2D(lstm_filters, 3, padding="same", unroll=unroll, name="convlstm")(x)  # (B, h, w, F)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="convlstm2d_clip")
