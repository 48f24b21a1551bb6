"""BasicBlock: the two-convolution residual block of ResNet-18/34."""

import keras
from keras import ops


def _torch_resnet_conv_initializer():
    # torchvision's ResNet: kaiming_normal_(mode="fan_out", nonlinearity="relu").
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


@keras.saving.register_keras_serializable(package="fer_keras")
class BasicBlock(keras.layers.Layer):
    """ResNet basic residual block, numerically equal to torchvision's `BasicBlock`.

    `y = relu(BN2(conv2(relu(BN1(conv1(x))))) + shortcut(x))`, where conv1 is 3x3 with
    stride `strides`, conv2 is 3x3 with stride 1, both without bias, and `shortcut` is
    the identity or, when the shape changes, a 1x1 convolution with stride `strides`
    followed by BN ("option B" of He et al.).

    Padding is explicit (one pixel on every side, then a "valid" convolution) as in
    PyTorch's `padding=1`. Keras' `padding="same"` with stride 2 pads only the bottom and
    right of an even-sized input and would shift the sampling grid by one pixel, which
    breaks weight conversion from PyTorch.

    Args:
        filters: int, output channels.
        strides: int, 1 or 2, stride of conv1 and of the projection shortcut.
        downsample: bool or None. None: use a projection shortcut when `strides != 1`
            or the input channels differ from `filters` (torchvision's rule); True /
            False force it on / off.
        bn_momentum: float, BN momentum (0.9 = PyTorch's `momentum=0.1`).
        bn_epsilon: float, BN epsilon (PyTorch default 1e-5).
        kernel_initializer: initializer of the convolution kernels; default is
            torchvision's He normal with `fan_out`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: tensor `(B, H, W, C_in)`.
        training: bool, BN in training mode when True.

    Input shape:
        4D `(batch, H, W, C_in)`.

    Output shape:
        4D `(batch, ceil(H / strides), ceil(W / strides), filters)`.

    Sublayer names (used by `fer_keras.models.resnet.load_torch_state_dict`):
        `conv1`, `bn1`, `conv2`, `bn2`, and `downsample_conv`, `downsample_bn` when
        there is a projection shortcut (torchvision: `downsample.0`, `downsample.1`).

    Example:

    >>> block = BasicBlock(128, strides=2)
    >>> block(keras.random.normal((1, 16, 16, 64))).shape
    (1, 8, 8, 128)

    References:
        - He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
          eq. (1) (identity shortcut), eq. (2) (projection shortcut), Table 1 (18-layer).
        - torchvision `torchvision.models.resnet.BasicBlock`.
    """

    def __init__(
        self,
        filters,
        strides=1,
        downsample=None,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be an int >= 1. Received: filters={filters!r}")
        if strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2. Received: strides={strides!r}")
        if downsample not in (None, True, False):
            raise ValueError(
                f"downsample must be None, True or False. Received: downsample={downsample!r}"
            )
        if not 0.0 <= bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1). Received: bn_momentum={bn_momentum}")
        if bn_epsilon <= 0:
            raise ValueError(f"bn_epsilon must be > 0. Received: bn_epsilon={bn_epsilon}")
        self.filters = filters
        self.strides = strides
        self.downsample = downsample
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or _torch_resnet_conv_initializer()
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _conv(self, kernel_size, strides, name):
        return keras.layers.Conv2D(
            self.filters,
            kernel_size,
            strides=strides,
            padding="valid",
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            name=name,
        )

    def _bn(self, name):
        return keras.layers.BatchNormalization(
            axis=-1, momentum=self.bn_momentum, epsilon=self.bn_epsilon, name=name
        )

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"BasicBlock needs a known channel dimension. Received: input_shape={input_shape}"
            )
        self.use_projection = (
            self.downsample
            if self.downsample is not None
            else (self.strides != 1 or in_channels != self.filters)
        )
        if not self.use_projection and (self.strides != 1 or in_channels != self.filters):
            raise ValueError(
                "downsample=False needs strides=1 and input channels == filters for the "
                f"identity shortcut. Received: input_shape={input_shape}, "
                f"filters={self.filters}, strides={self.strides}"
            )
        b, h, w, _ = input_shape
        padded = (b, None if h is None else h + 2, None if w is None else w + 2, in_channels)
        self.conv1 = self._conv(3, self.strides, "conv1")
        self.conv1.build(padded)
        mid = self.conv1.compute_output_shape(padded)
        self.bn1 = self._bn("bn1")
        self.bn1.build(mid)
        mid_padded = (b, None if mid[1] is None else mid[1] + 2,
                      None if mid[2] is None else mid[2] + 2, self.filters)
        self.conv2 = self._conv(3, 1, "conv2")
        self.conv2.build(mid_padded)
        self.bn2 = self._bn("bn2")
        self.bn2.build(mid)
        if self.use_projection:
            self.downsample_conv = self._conv(1, self.strides, "downsample_conv")
            self.downsample_conv.build(input_shape)
            self.downsample_bn = self._bn("downsample_bn")
            self.downsample_bn.build(mid)
        self.built = True

    @staticmethod
    def _pad1(x):
        return ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, H+2, W+2, C)

    def call(self, inputs, training=None):
        x = self.conv1(self._pad1(inputs))
        x = ops.relu(self.bn1(x, training=training))
        x = self.bn2(self.conv2(self._pad1(x)), training=training)
        if self.use_projection:
            shortcut = self.downsample_bn(self.downsample_conv(inputs), training=training)
        else:
            shortcut = inputs
        return ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides
        return (
            b,
            None if h is None else (h - 1) // s + 1,
            None if w is None else (w - 1) // s + 1,
            self.filters,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "downsample": self.downsample,
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
