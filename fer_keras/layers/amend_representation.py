"""AmendRepresentation: the Amend Representation Module (ARM) of Shi and Zhu (2021)."""

import keras
from keras import ops

from fer_keras.layers.pixel_shuffle import PixelShuffle


def _torch_conv_default_initializer():
    # PyTorch's Conv2d default (kaiming_uniform, a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


@keras.saving.register_keras_serializable(package="fer_keras")
class AmendRepresentation(keras.layers.Layer):
    """Amend Representation Module (ARM): pixel shuffle, de-albino kernel, affinity.

    ARM replaces the global average pooling of a CNN. For backbone features
    `x` of shape `(B, H, W, C)`:

    1. Feature arrangement: `z = PS_r(x)`, PyTorch-order pixel shuffle with `r = 16`,
       `(B, H, W, C) -> (B, H*r, W*r, C/r^2)`; 7x7x512 becomes 112x112x2.
    2. De-albino: one single-channel `k x k` kernel `K` (no bias), stride `s`, no
       padding, applied to each of the `C/r^2` maps separately, the same `K` for all:
       `d_c = K * z_c`, shape `(B, H', W', C/r^2)`.
    3. Batch normalisation over those channels: `n = BN(d)`.
    4. Affinity: `y = mean_c(n) + alpha * g`, with `g[h, w]` the mean of `n` over the
       batch and the channels (a `H' x W'` map shared by every sample in the batch),
       `alpha` a trainable scalar initialised to 1.
    5. Flatten: `(B, H'*W')` (row-major, as `x.view(B, -1)` on the PyTorch
       `(B, 1, H', W')` tensor), to be followed by the model's own `Dense` classifier.

    Output size: `H' = floor((H*r - k) / s) + 1` (and the same for `W'`). With the
    defaults `r = 16, k = 32, s = 8`: 7x7x512 (224 px ResNet-18) -> 11x11 -> 121
    features; 4x4x512 (112 px) -> 64x64x2 -> 5x5 -> 25 features.

    Differences from the reference PyTorch code (`Amend_raf` in `src/Networks.py` of
    github.com/SimKarras/Amend-Representation-Module, the code released with the paper):

    - The reference computes `g` from whatever batch it is given, at test time too,
      so one image's prediction depends on the other images in its batch. Here, with
      `use_moving_global_mean=True` (default), training uses the batch `g` exactly as
      the reference (gradients flow through it) and also updates a non-trainable
      moving average `moving_global_mean <- m * moving_global_mean + (1 - m) * g`
      (`m = global_mean_momentum`); inference (`training=False`) uses that moving
      average, so a prediction does not depend on the rest of the batch. Set
      `use_moving_global_mean=False` to reproduce the reference exactly. After loading
      reference weights, the moving average must be estimated first (see
      docs/pretrained_weights.md).
    - The pixel shuffle (`self.arrangement` in the reference model) is part of this
      layer; `upscale_factor=1` skips it.
    - The reference loops over channels and concatenates; a depthwise convolution
      with the one kernel tiled over the channels computes the same thing.

    Args:
        upscale_factor: int >= 1, pixel-shuffle factor `r` (reference: 16).
        kernel_size: int, size `k` of the square de-albino kernel (reference: 32).
        strides: int, stride `s` of the de-albino convolution (reference: 8).
        alpha_init: float, initial value of the affinity weight `alpha` (reference: 1.0).
        use_moving_global_mean: bool. True: inference uses the moving average of the
            global mean (batch-independent). False: the batch's own global mean, as in
            the reference code.
        global_mean_momentum: float in [0, 1), momentum `m` of that moving average.
        bn_momentum: float, momentum of the batch normalisation (0.9 = PyTorch's 0.1).
        bn_epsilon: float, epsilon of the batch normalisation (PyTorch default 1e-5).
        kernel_initializer: initializer of the de-albino kernel; default matches
            PyTorch's `Conv2d` default, U(-1/sqrt(k*k), 1/sqrt(k*k)).
        flatten: bool. True: output `(B, H'*W')`; False: `(B, H', W', 1)`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: backbone features `(B, H, W, C)`, with `C` divisible by `r*r` and
            static `H`, `W`, `C`.
        training: bool; batch statistics and the batch global mean (and their moving
            averages are updated) when True, moving averages when False or None. A
            frozen layer (`trainable=False`, e.g. paper 003's fixed RGB network) always
            runs as at inference, like Keras' `BatchNormalization`.

    Input shape:
        4D `(batch, H, W, C)`.

    Output shape:
        `(batch, H' * W')` if `flatten`, else `(batch, H', W', 1)`.

    Example:

    >>> arm = AmendRepresentation()
    >>> arm(keras.random.normal((2, 7, 7, 512))).shape
    (2, 121)

    References:
        - Shi and Zhu, "Learning to Amend Facial Expression Representation via
          De-albino and Affinity", arXiv 2103.10189 (2021), sec. 3 (feature
          arrangement, de-albino kernel, affinity / minibatch sharing) and the
          authors' PyTorch code (`Amend_raf`, `ResNet18_ARM___RAF`).
        - Kanamori et al. (paper 003 of this project), sec. 3 and 4.1: ARM after
          ResNet-18 and after the landmark CNN.
    """

    def __init__(
        self,
        upscale_factor=16,
        kernel_size=32,
        strides=8,
        alpha_init=1.0,
        use_moving_global_mean=True,
        global_mean_momentum=0.9,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        kernel_initializer=None,
        flatten=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg_name, value in (("kernel_size", kernel_size), ("strides", strides)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{arg_name} must be an int >= 1. Received: {arg_name}={value!r}"
                )
        if not 0.0 <= global_mean_momentum < 1.0:
            raise ValueError(
                "global_mean_momentum must be in [0, 1). "
                f"Received: global_mean_momentum={global_mean_momentum}"
            )
        if not 0.0 <= bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1). Received: bn_momentum={bn_momentum}")
        if bn_epsilon <= 0:
            raise ValueError(f"bn_epsilon must be > 0. Received: bn_epsilon={bn_epsilon}")
        self.upscale_factor = upscale_factor
        self.kernel_size = kernel_size
        self.strides = strides
        self.alpha_init = float(alpha_init)
        self.use_moving_global_mean = bool(use_moving_global_mean)
        self.global_mean_momentum = float(global_mean_momentum)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or _torch_conv_default_initializer()
        )
        self.flatten = bool(flatten)
        # PixelShuffle validates upscale_factor.
        self.pixel_shuffle = PixelShuffle(upscale_factor, name="arrangement")
        self.bn = keras.layers.BatchNormalization(
            axis=-1, momentum=self.bn_momentum, epsilon=self.bn_epsilon, name="bn"
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def output_size(self, height, width):
        """Spatial size `(H', W')` of the de-albino output for `(H, W)` input features."""
        r, k, s = self.upscale_factor, self.kernel_size, self.strides
        return (height * r - k) // s + 1, (width * r - k) // s + 1

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if height is None or width is None or channels is None:
            raise ValueError(
                "AmendRepresentation needs static height, width and channels (its "
                f"moving global mean has shape (H', W')). Received: input_shape={input_shape}"
            )
        r, k = self.upscale_factor, self.kernel_size
        if channels % (r * r):
            raise ValueError(
                f"The channel dimension must be divisible by upscale_factor**2 = {r * r}. "
                f"Received: input_shape={input_shape}, upscale_factor={r}"
            )
        if height * r < k or width * r < k:
            raise ValueError(
                f"The pixel-shuffled map ({height * r}x{width * r}) is smaller than the "
                f"de-albino kernel ({k}x{k}). Received: input_shape={input_shape}, "
                f"upscale_factor={r}, kernel_size={k}"
            )
        self.pixel_shuffle.build(input_shape)
        self.shuffled_channels = channels // (r * r)
        out_h, out_w = self.output_size(height, width)
        self.de_albino_kernel = self.add_weight(
            name="de_albino_kernel",
            shape=(k, k, 1, 1),
            initializer=self.kernel_initializer,
            trainable=True,
        )
        self.alpha = self.add_weight(
            name="alpha",
            shape=(1,),
            initializer=keras.initializers.Constant(self.alpha_init),
            trainable=True,
        )
        self.moving_global_mean = self.add_weight(
            name="moving_global_mean",
            shape=(out_h, out_w),
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        self.bn.build((None, out_h, out_w, self.shuffled_channels))
        self.built = True

    def call(self, inputs, training=None):
        # A frozen ARM behaves as at inference, like Keras' BatchNormalization.
        training = bool(training) and self.trainable
        x = self.pixel_shuffle(inputs)  # (B, H*r, W*r, c)
        # One kernel shared by every channel: tile it into a depthwise kernel.
        kernel = ops.tile(
            ops.cast(self.de_albino_kernel, x.dtype), (1, 1, self.shuffled_channels, 1)
        )  # (k, k, c, 1)
        x = ops.depthwise_conv(x, kernel, strides=self.strides, padding="valid")  # (B, H', W', c)
        x = self.bn(x, training=training)
        channel_mean = ops.mean(x, axis=-1, keepdims=True)  # (B, H', W', 1)
        if training or not self.use_moving_global_mean:
            global_mean = ops.mean(x, axis=(0, 3))  # (H', W'), over batch and channels
            if training:
                m = self.global_mean_momentum
                batch_mean = ops.cast(ops.stop_gradient(global_mean), self.moving_global_mean.dtype)
                self.moving_global_mean.assign(
                    m * self.moving_global_mean + (1.0 - m) * batch_mean
                )
        else:
            global_mean = ops.cast(self.moving_global_mean, x.dtype)
        alpha = ops.cast(self.alpha, x.dtype)
        x = channel_mean + alpha * global_mean[None, :, :, None]  # (B, H', W', 1)
        if self.flatten:
            # Row-major over (H', W'), as view(B, -1) on PyTorch's (B, 1, H', W').
            x = ops.reshape(x, (-1, x.shape[1] * x.shape[2]))  # (B, H'*W')
        return x

    def compute_output_shape(self, input_shape):
        out_h, out_w = self.output_size(input_shape[1], input_shape[2])
        if self.flatten:
            return (input_shape[0], out_h * out_w)
        return (input_shape[0], out_h, out_w, 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "upscale_factor": self.upscale_factor,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "alpha_init": self.alpha_init,
                "use_moving_global_mean": self.use_moving_global_mean,
                "global_mean_momentum": self.global_mean_momentum,
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "flatten": self.flatten,
            }
        )
        return config
