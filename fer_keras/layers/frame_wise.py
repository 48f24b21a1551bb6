"""FrameWise: apply a 2-D layer to every frame of a clip by folding time into the batch."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fer_keras")
class FrameWise(keras.layers.Wrapper):
    """Applies `layer` to each frame of (B, T, H, W, C) input, as one batch of B*T images.

    Keras's `TimeDistributed` maps over time with `vectorized_map`, which failed here on a final
    partial batch of a tf.data pipeline; a reshape is simpler, as fast, and converts to TFLite
    with builtin ops (RESHAPE only).

    Args:
        layer: a Keras layer or model taking (N, H, W, C).

    Call arguments:
        inputs: (B, T, H, W, C) with static T, H, W, C.
        training: passed to `layer`.

    Output shape: (B, T) + layer's per-image output shape.

    Example:
        x = FrameWise(keras.layers.Conv2D(8, 3, padding="same"))(keras.Input((8, 32, 32, 1)))
    """

    def build(self, input_shape):
        if len(input_shape) < 3 or any(d is None for d in input_shape[1:]):
            raise ValueError(f"FrameWise needs (B, T, ...) input with static T and frame shape. Received: {input_shape}")
        self.frame_shape = tuple(input_shape[2:])
        self.num_frames = input_shape[1]
        if not self.layer.built:  # a deserialised inner layer arrives built
            self.layer.build((None,) + self.frame_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return (input_shape[0], input_shape[1]) + tuple(inner[1:])

    def call(self, inputs, training=None):
        # Shapes from build(): inside a traced function the input's T may read as unknown.
        frames = ops.reshape(inputs, (-1,) + self.frame_shape)  # (B*T, H, W, C)
        outputs = self.layer(frames, training=training)
        return ops.reshape(outputs, (-1, self.num_frames) + tuple(outputs.shape[1:]))  # (B, T, h, w, c)
