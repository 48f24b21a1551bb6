"""ConvLSTMCell: one time step of a convolutional LSTM with optional peepholes (Shi et al. 2015)."""

import keras
from keras import ops

from fer_keras.layers.conv_cell import ConvCell


@keras.saving.register_keras_serializable(package="fer_keras")
class ConvLSTMCell(ConvCell):
    """One time step of a convolutional LSTM, peephole connections optional.

    Implements paper 001 eq. (1), the ConvLSTM of Shi et al. (2015, eq. 3):

        i_t = σ(W_xi * x_t + W_hi * h_{t-1} + W_ci ∘ c_{t-1} + b_i)
        f_t = σ(W_xf * x_t + W_hf * h_{t-1} + W_cf ∘ c_{t-1} + b_f)
        c_t = f_t ∘ c_{t-1} + i_t ∘ tanh(W_xc * x_t + W_hc * h_{t-1} + b_c)
        o_t = σ(W_xo * x_t + W_ho * h_{t-1} + W_co ∘ c_t + b_o)
        h_t = o_t ∘ tanh(c_t)

    `*` is a stride-1 convolution with 'same' padding and `∘` the Hadamard product.
    As in Shi et al., the peephole weights W_ci, W_cf, W_co have the state's own shape
    `(H, W, filters)` (one weight per position and channel), so a cell with peepholes is
    tied to the spatial size it was built on. They start at zero, so an untrained cell
    behaves as one without peepholes. With `peephole=False` the three peephole terms are
    dropped and the cell computes what `keras.layers.ConvLSTM2D(padding="same")` computes
    (same gate order i, f, c, o in `kernel`, `recurrent_kernel` and `bias`).

    Weights: `kernel` (kh, kw, C, 4*filters), `recurrent_kernel` (kh, kw, filters,
    4*filters), `bias` (4*filters,), gate order i, f, c, o; with peepholes
    `input_peephole`, `forget_peephole`, `output_peephole`, each (H, W, filters).

    States: `[h_{t-1}, c_{t-1}]`; the cell returns `h_t, [h_t, c_t]`. `state_size` lists
    the channels of each state; their spatial size is the input's (stride 1, 'same'),
    and `get_initial_state(batch_size)` gives zero tensors of the full shape.

    Args:
        filters: int >= 1, channels of h and c.
        kernel_size: int or pair of ints, window of the input and recurrent convolutions.
        strides: must be 1 (h, c and x share one spatial size). Accepted so that
            configurations written like Keras's ConvLSTM2D read naturally.
        peephole: bool, whether to add the peephole terms W_c ∘ c of eq. (1).
        use_bias: bool, whether to add the biases b.
        unit_forget_bias: bool, start the forget-gate bias at 1 (Jozefowicz et al. 2015).
        kernel_initializer: initializer for `kernel` (the W_x* weights).
        recurrent_initializer: initializer for `recurrent_kernel` (the W_h* weights).
        bias_initializer: initializer for `bias`.
        peephole_initializer: initializer for the peephole weights.
        kernel_regularizer: regularizer for `kernel`.
        recurrent_regularizer: regularizer for `recurrent_kernel`.
        bias_regularizer: regularizer for `bias`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: frame features x_t, `(B, H, W, C)`.
        states: list `[h_{t-1}, c_{t-1}]`, each `(B, H, W, filters)`.
        training: unused; accepted for the `keras.layers.RNN` interface.

    Input shape:
        4D `(batch, height, width, channels)`, height, width and channels known.

    Output shape:
        `h_t`: `(batch, height, width, filters)`, and the new states `[h_t, c_t]` of
        the same shape.

    Example:

    >>> cell = ConvLSTMCell(filters=8, kernel_size=3)
    >>> x = keras.random.normal((2, 16, 16, 4))
    >>> cell.build(x.shape)
    >>> h, states = cell(x, cell.get_initial_state(batch_size=2))
    >>> h.shape, len(states)
    ((2, 16, 16, 8), 2)

    Run it over time with `ConvRNN(cell)` on `(B, T, H, W, C)` sequences.

    References:
        - Shi et al., "Convolutional LSTM Network: A Machine Learning Approach for
          Precipitation Nowcasting", NIPS 2015 (eq. 3).
        - Miyoshi, Nagata and Hashimoto, "Recurrent Attention Module による動画ベース
          表情認識の内部構造分析" (paper 001), eq. (1).
    """

    gates = 4  # i, f, c, o

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        peephole=True,
        use_bias=True,
        unit_forget_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        peephole_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            **kwargs,
        )
        self.peephole = bool(peephole)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.peephole_initializer = keras.initializers.get(peephole_initializer)

    @property
    def state_size(self):
        """Channels of `[h, c]`; the spatial size is the input's."""
        return [self.filters, self.filters]

    def build(self, inputs_shape, states_shape=None):
        self.build_gate_weights(inputs_shape, bias_initializer=self._gate_bias_initializer())
        if self.peephole:
            self._build_peepholes()

    def _gate_bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        f = self.filters

        def initializer(shape, dtype=None):
            # Gate order i, f, c, o: only the forget slice starts at 1.
            return ops.concatenate(
                [
                    self.bias_initializer((f,), dtype=dtype),
                    ops.ones((f,), dtype=dtype),
                    self.bias_initializer((2 * f,), dtype=dtype),
                ]
            )

        return initializer

    def _build_peepholes(self):
        """Hadamard peephole weights W_ci, W_cf, W_co of eq. (1), shaped like the state."""
        shape = self.spatial_dims + (self.filters,)  # (H, W, filters)
        self.input_peephole = self.add_weight(
            shape=shape, initializer=self.peephole_initializer, name="input_peephole"
        )
        self.forget_peephole = self.add_weight(
            shape=shape, initializer=self.peephole_initializer, name="forget_peephole"
        )
        self.output_peephole = self.add_weight(
            shape=shape, initializer=self.peephole_initializer, name="output_peephole"
        )

    def _peephole_terms(self, c_prev):
        """(W_ci ∘ c_{t-1}, W_cf ∘ c_{t-1}) of eq. (1)."""
        return c_prev * self.input_peephole, c_prev * self.forget_peephole

    def _output_peephole_term(self, c):
        """W_co ∘ c_t of eq. (1)."""
        return c * self.output_peephole

    def _lstm_step(self, inputs, h_prev, c_prev):
        """Eq. (1) up to the output: returns (o_t ∘ tanh(c_t), c_t)."""
        z = self._conv(inputs, self.kernel, self.bias) + self._conv(h_prev, self.recurrent_kernel)
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)  # 4 x (B, H, W, filters)
        if self.peephole:
            p_i, p_f = self._peephole_terms(c_prev)
            z_i, z_f = z_i + p_i, z_f + p_f
        i = ops.sigmoid(z_i)
        f = ops.sigmoid(z_f)
        c = f * c_prev + i * ops.tanh(z_c)
        if self.peephole:
            # The output gate peeps at the new cell state c_t, not c_{t-1}.
            z_o = z_o + self._output_peephole_term(c)
        o = ops.sigmoid(z_o)
        return o * ops.tanh(c), c

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states[0], states[1]
        h, c = self._lstm_step(inputs, h_prev, c_prev)
        return h, [h, c]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "peephole": self.peephole,
                "unit_forget_bias": self.unit_forget_bias,
                "peephole_initializer": keras.initializers.serialize(self.peephole_initializer),
            }
        )
        return config
