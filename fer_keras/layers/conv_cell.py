"""ConvCell: what the one-step convolutional recurrent cells share."""

import keras
from keras import ops


class ConvCell(keras.layers.Layer):
    """Base of the one-step convolutional cells: gate convolutions over x_t and h_{t-1}.

    Every cell here computes its gates from two stride-1 'same' convolutions, `W_x* * x_t`
    with `kernel` (kh, kw, C, gates*filters) and `W_h* * h_{t-1}` with `recurrent_kernel`
    (kh, kw, filters, gates*filters), plus `bias` (gates*filters,). Its states have the
    input's spatial size. This class holds those weights, the arguments that describe them,
    the zero states and the config; a subclass sets `gates` (4 for the LSTM's i, f, c, o, 3
    for the GRU's z, r, h~), defines `state_size` and `call`, and calls
    `build_gate_weights` from its `build`. It is not registered: only the cells are layers.

    Args:
        filters: int >= 1, channels of the state(s).
        kernel_size: int or pair of ints, window of the input and recurrent convolutions.
        strides: must be 1 (states and input share one spatial size). Accepted so that
            configurations written like Keras's ConvLSTM2D read naturally.
        use_bias: bool, whether to add the biases b.
        kernel_initializer: initializer for `kernel` (the W_x* weights).
        recurrent_initializer: initializer for `recurrent_kernel` (the W_h* weights).
        bias_initializer: initializer for `bias`.
        kernel_regularizer: regularizer for `kernel`.
        recurrent_regularizer: regularizer for `recurrent_kernel`.
        bias_regularizer: regularizer for `bias`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        4D `(batch, height, width, channels)`, height, width and channels known.
    """

    gates = None  # set by each cell

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not _is_positive_int(filters):
            raise ValueError(f"filters must be an int >= 1. Received: filters={filters!r}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if _pair(strides, "strides") != (1, 1):
            raise ValueError(
                "Only strides=1 is supported: the states and the input share one spatial size. "
                f"Received: strides={strides!r}"
            )
        self.strides = (1, 1)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def output_size(self):
        return self.filters

    def build_gate_weights(self, inputs_shape, bias_initializer=None):
        """Checks the step shape and makes `kernel`, `recurrent_kernel` and `bias`, in that order.

        `bias_initializer` replaces `self.bias_initializer` for the whole bias when given
        (the LSTM's forget-gate slice starting at 1).
        """
        self.spatial_dims, self.input_dim = _check_step_shape(inputs_shape, type(self).__name__)
        units = self.gates * self.filters
        self.kernel = self.add_weight(
            shape=self.kernel_size + (self.input_dim, units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=self.kernel_size + (self.filters, units),
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            name="recurrent_kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(units,),
                initializer=bias_initializer or self.bias_initializer,
                regularizer=self.bias_regularizer,
                name="bias",
            )
        else:
            self.bias = None

    def _conv(self, x, kernel, bias=None):
        y = ops.conv(x, kernel, strides=1, padding="same", data_format="channels_last")
        return y if bias is None else y + bias

    def compute_output_shape(self, inputs_shape, states_shape=None):
        shape = tuple(inputs_shape[:-1]) + (self.filters,)  # (B, H, W, filters)
        return shape, [shape] * len(self.state_size)

    def get_initial_state(self, batch_size=None):
        """Zero states, each `(batch_size, H, W, filters)`; the cell must be built."""
        if not self.built:
            raise ValueError(
                f"{type(self).__name__}.get_initial_state needs the spatial size: build the "
                "cell first (cell.build(input_shape)) or run it inside ConvRNN. "
                f"Received: batch_size={batch_size!r} on an unbuilt cell"
            )
        shape = (batch_size,) + self.spatial_dims + (self.filters,)
        return [ops.zeros(shape, dtype=self.compute_dtype) for _ in self.state_size]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config


def _pair(value, name):
    """An int or a pair of ints >= 1 as a pair."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(_is_positive_int(v) for v in pair):
        raise ValueError(f"{name} must be an int >= 1 or a pair of them. Received: {name}={value!r}")
    return pair


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_step_shape(inputs_shape, owner):
    """(H, W) and C of a (B, H, W, C) step shape, all of which must be known."""
    if len(inputs_shape) != 4:
        raise ValueError(
            f"{owner} takes one time step of shape (batch, height, width, channels). "
            f"Received: inputs_shape={tuple(inputs_shape)}"
        )
    spatial_dims, channels = tuple(inputs_shape[1:3]), inputs_shape[3]
    if None in spatial_dims or channels is None:
        raise ValueError(
            f"{owner} needs known height, width and channels (its states are zero tensors of "
            f"that size). Received: inputs_shape={tuple(inputs_shape)}"
        )
    return spatial_dims, channels
