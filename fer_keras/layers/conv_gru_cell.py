"""ConvGRUCell: one time step of a convolutional GRU (Ballas et al. 2016)."""

import keras
from keras import ops

from fer_keras.layers.conv_lstm_cell import _check_step_shape, _is_positive_int, _pair


@keras.saving.register_keras_serializable(package="fer_keras")
class ConvGRUCell(keras.layers.Layer):
    """One time step of a convolutional GRU.

    Paper 000 compares against "ConvGRU [3]" but prints neither equations nor (in our
    copy) its reference list, so this is the usual ConvGRU of Ballas et al. (2016,
    "GRU-RCN"), with the reset gate applied before the recurrent convolution of the
    candidate (as in Cho et al. 2014). (G1)-(G4) are this docstring's labels:

        z_t = σ(W_xz * x_t + W_hz * h_{t-1} + b_z)                 update gate   (G1)
        r_t = σ(W_xr * x_t + W_hr * h_{t-1} + b_r)                 reset gate    (G2)
        h~_t = tanh(W_xh * x_t + W_hh * (r_t ∘ h_{t-1}) + b_h)     candidate     (G3)
        h_t = (1 - z_t) ∘ h_{t-1} + z_t ∘ h~_t                                   (G4)

    `*` is a stride-1 'same' convolution and `∘` the Hadamard product. (Keras's GRU
    writes the same cell with z and 1 - z swapped, and by default resets after the
    recurrent matmul; neither is used here.)

    Weights: `kernel` (kh, kw, C, 3*filters), `recurrent_kernel` (kh, kw, filters,
    3*filters), `bias` (3*filters,), gate order z, r, h~.

    States: `[h_{t-1}]`; the cell returns `h_t, [h_t]`. `state_size` lists the channels
    of the state; its spatial size is the input's (stride 1, 'same'), and
    `get_initial_state(batch_size)` gives a zero tensor of the full shape.

    Args:
        filters: int >= 1, channels of h.
        kernel_size: int or pair of ints, window of the input and recurrent convolutions.
        strides: must be 1 (h and x share one spatial size).
        use_bias: bool, whether to add the biases b.
        kernel_initializer: initializer for `kernel` (the W_x* weights).
        recurrent_initializer: initializer for `recurrent_kernel` (the W_h* weights).
        bias_initializer: initializer for `bias`.
        kernel_regularizer: regularizer for `kernel`.
        recurrent_regularizer: regularizer for `recurrent_kernel`.
        bias_regularizer: regularizer for `bias`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: frame features x_t, `(B, H, W, C)`.
        states: list `[h_{t-1}]`, `(B, H, W, filters)`.
        training: unused; accepted for the `keras.layers.RNN` interface.

    Input shape:
        4D `(batch, height, width, channels)`, height, width and channels known.

    Output shape:
        `h_t`: `(batch, height, width, filters)`, and the new states `[h_t]`.

    Example:

    >>> cell = ConvGRUCell(filters=8, kernel_size=3)
    >>> frames = keras.random.normal((2, 8, 16, 16, 4))  # (B, T, H, W, C)
    >>> ConvRNN(cell)(frames).shape
    (2, 16, 16, 8)

    References:
        - Ballas et al., "Delving Deeper into Convolutional Networks for Learning Video
          Representations", ICLR 2016 (the convolutional GRU, GRU-RCN).
        - Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for
          Statistical Machine Translation", EMNLP 2014 (the GRU).
        - 三好ら, Enhanced Conv-RNNs (paper 000): the ConvGRU baseline, [3].
    """

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
                "Only strides=1 is supported: h and the input share one spatial size. "
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
    def state_size(self):
        """Channels of `[h]`; the spatial size is the input's."""
        return [self.filters]

    @property
    def output_size(self):
        return self.filters

    def build(self, inputs_shape, states_shape=None):
        self.spatial_dims, self.input_dim = _check_step_shape(inputs_shape, type(self).__name__)
        f = self.filters
        self.kernel = self.add_weight(
            shape=self.kernel_size + (self.input_dim, 3 * f),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=self.kernel_size + (f, 3 * f),
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            name="recurrent_kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(3 * f,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                name="bias",
            )
        else:
            self.bias = None

    def _conv(self, x, kernel, bias=None):
        y = ops.conv(x, kernel, strides=1, padding="same", data_format="channels_last")
        return y if bias is None else y + bias

    def _gru_step(self, inputs, h_prev):
        """Eqs. (G1)-(G4): h_t from x_t and h_{t-1}."""
        f = self.filters
        x_zrh = self._conv(inputs, self.kernel, self.bias)  # (B, H, W, 3*filters)
        # The candidate's recurrent conv reads r_t ∘ h_{t-1}, so z and r are convolved apart.
        h_zr = self._conv(h_prev, self.recurrent_kernel[..., : 2 * f])  # (B, H, W, 2*filters)
        z = ops.sigmoid(x_zrh[..., :f] + h_zr[..., :f])
        r = ops.sigmoid(x_zrh[..., f : 2 * f] + h_zr[..., f:])
        h_cand = ops.tanh(x_zrh[..., 2 * f :] + self._conv(r * h_prev, self.recurrent_kernel[..., 2 * f :]))
        return (1.0 - z) * h_prev + z * h_cand

    def call(self, inputs, states, training=False):
        h = self._gru_step(inputs, states[0])
        return h, [h]

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
