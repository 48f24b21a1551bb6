"""PixelShuffle: PyTorch's `nn.PixelShuffle` on channels-last tensors."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fer_keras")
class PixelShuffle(keras.layers.Layer):
    """Rearranges (B, H, W, C*r*r) into (B, H*r, W*r, C) in PyTorch's channel order.

    PyTorch's `nn.PixelShuffle(r)` reads the input channel `k` of an NCHW tensor as
    `k = c*r*r + i*r + j`: output channel `c`, row offset `i`, column offset `j`
    (Shi et al. 2016, eq. 4, periodic shuffling `PS`). `tf.nn.depth_to_space` on NHWC
    reads it as `k = (i*r + j)*C + c` instead, so the two disagree whenever `C > 1`.
    This layer gives exactly `nhwc(torch_pixel_shuffle(nchw(x)))`, so that a PyTorch
    model that pixel-shuffles its features (ARM, Shi and Zhu 2021) can be ported
    weight for weight.

    Args:
        upscale_factor: int >= 1, the factor `r` by which height and width grow.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(B, H, W, C*r*r)`.

    Input shape:
        4D `(batch, height, width, channels)`, channels divisible by `r*r`.

    Output shape:
        4D `(batch, height*r, width*r, channels // (r*r))`.

    Example:

    >>> x = keras.random.normal((2, 7, 7, 512))
    >>> PixelShuffle(16)(x).shape
    (2, 112, 112, 2)

    References:
        - Shi et al., "Real-Time Single Image and Video Super-Resolution Using an
          Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016 (eq. 4).
        - PyTorch `torch.nn.PixelShuffle` (the channel order reproduced here).
        - Shi and Zhu, "Learning to Amend Facial Expression Representation via
          De-albino and Affinity", arXiv 2103.10189 (feature arrangement, r = 16).
    """

    def __init__(self, upscale_factor, **kwargs):
        super().__init__(**kwargs)
        if isinstance(upscale_factor, bool) or not isinstance(upscale_factor, int):
            raise ValueError(
                "upscale_factor must be an int >= 1. "
                f"Received: upscale_factor={upscale_factor!r}"
            )
        if upscale_factor < 1:
            raise ValueError(
                f"upscale_factor must be >= 1. Received: upscale_factor={upscale_factor}"
            )
        self.upscale_factor = upscale_factor
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = input_shape[-1]
        r2 = self.upscale_factor**2
        if channels is None:
            raise ValueError(
                "PixelShuffle needs a known channel dimension. "
                f"Received: input_shape={input_shape}"
            )
        if channels % r2:
            raise ValueError(
                f"The channel dimension must be divisible by upscale_factor**2 = {r2}. "
                f"Received: input_shape={input_shape}, upscale_factor={self.upscale_factor}"
            )
        self.built = True

    def call(self, inputs):
        r = self.upscale_factor
        if r == 1:
            return inputs
        shape = ops.shape(inputs)
        h, w, channels = shape[1], shape[2], inputs.shape[-1]
        c = channels // (r * r)
        # Batch and rows are merged so that every transpose stays 5D (TFLite-friendly).
        x = ops.reshape(inputs, (-1, w, c, r, r))  # (B*H, W, C, r_i, r_j)
        x = ops.transpose(x, (0, 3, 1, 4, 2))  # (B*H, r_i, W, r_j, C)
        # Row-major merge of (B*H, r_i) is (B, H*r) and of (W, r_j) is W*r.
        return ops.reshape(x, (-1, h * r, w * r, c))  # (B, H*r, W*r, C)

    def compute_output_shape(self, input_shape):
        r = self.upscale_factor
        b, h, w, c = input_shape
        return (
            b,
            None if h is None else h * r,
            None if w is None else w * r,
            None if c is None else c // (r * r),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"upscale_factor": self.upscale_factor})
        return config
