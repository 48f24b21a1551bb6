"""EnhancedConvLSTMCell: ConvLSTM with temporal gates on h(t-2), temporal and spatial skips, GroupNorm."""

import keras

from fer_keras.layers.conv_lstm_cell import ConvLSTMCell
from fer_keras.layers.temporal_gates import TemporalGates

PEEPHOLE_MODES = ("hadamard", "conv")


@keras.saving.register_keras_serializable(package="fer_keras")
class EnhancedConvLSTMCell(TemporalGates, ConvLSTMCell):
    """One time step of the Enhanced ConvLSTM (Miyoshi et al.), paper 001 eq. (2).

    A ConvLSTM (eq. 1, see `ConvLSTMCell`) plus temporal gates that read h_{t-2}, a
    temporal skip, a spatial skip and Group Normalization on the output:

        i_t = σ(W_xi * x_t + W_hi * h_{t-1} + W_ci ⋄ c_{t-1} + b_i)
        f_t = σ(W_xf * x_t + W_hf * h_{t-1} + W_cf ⋄ c_{t-1} + b_f)
        c_t = f_t ∘ c_{t-1} + i_t ∘ tanh(W_xc * x_t + W_hc * h_{t-1} + b_c)
        s~_t = tanh(W_xs~ * x_t + W_hs~ * h_{t-2} + b_s~)      temporal modulation gate
        s_t = σ(W_xs * x_t + W_hs * h_{t-2} + b_s)              temporal skip gate
        o_t = σ(W_xo * x_t + W_ho * h_{t-1} + W_co ⋄ c_t + b_o)
        h_t = g(o_t ∘ tanh(c_t) + s_t ∘ s~_t + W_xr * x_t)      g: GroupNorm

    `*` is a stride-1 'same' convolution and `∘` the Hadamard product. `s_t ∘ s~_t` is the
    temporal skip connection and `W_xr * x_t` (no bias; g has its own β) the spatial skip.
    The normalized h_t is what the next steps read as h_{t-1} and h_{t-2}; c_t is not
    normalized.

    Peepholes (`⋄` above): eq. (2) writes them `W_ci * c_{t-1}` with the same `*` it also
    uses for Hadamard products (`f_t * c_{t-1}`, `s_t * s~_t`), so the notation does not
    settle whether they are convolutions. Eq. (2) is presented as eq. (1) plus additions,
    and eq. (1) (Shi et al.) has Hadamard peepholes, so the default
    `peephole_mode="hadamard"` keeps them as in `ConvLSTMCell`: weights of shape
    `(H, W, filters)`. `peephole_mode="conv"` reads eq. (2) literally: W_ci, W_cf, W_co
    are `kernel_size` convolutions (no bias) on the cell state, stored in one
    `peephole_kernel` (kh, kw, filters, 3*filters), gate order i, f, o.
    `peephole=False` drops them.

    h_{t-2} is carried as a third state. States are `[h_{t-1}, c_{t-1}, h_{t-2}]` and the
    cell returns `h_t, [h_t, c_t, h_{t-1}]`. The initial states are zeros, so at t = 0
    both h_{t-1} and h_{t-2} are zero and at t = 1 h_{t-2} is still zero: the temporal
    gates then see only x_t.

    Weights: those of `ConvLSTMCell` (`kernel`, `recurrent_kernel`, `bias`, peepholes),
    plus `temporal_kernel` (kh, kw, C, 2*filters) and `temporal_recurrent_kernel`
    (kh, kw, filters, 2*filters) and `temporal_bias` (2*filters,), gate order s~, s;
    `skip_kernel` (sk, sk, C, filters); and `group_norm` (γ, β of shape (filters,)).

    Args:
        filters: int >= 1, channels of h and c.
        kernel_size: int or pair, window of the gate convolutions (input, recurrent,
            temporal and, in "conv" mode, peephole).
        strides: must be 1.
        groups: int, GroupNorm groups; must divide `filters`. Default 32 as in Wu and He.
        skip_kernel_size: int or pair, window of the spatial skip W_xr. Default 1 (a
            point-wise projection, as a ResNet projection shortcut); the papers do not
            give it.
        peephole: bool, whether to add the peephole terms.
        peephole_mode: "hadamard" (default) or "conv", see above.
        norm_epsilon: float > 0, GroupNorm epsilon.
        use_bias: bool, whether to add the gate biases b.
        unit_forget_bias: bool, start the forget-gate bias at 1.
        kernel_initializer: initializer for `kernel`, `temporal_kernel`, `skip_kernel`.
        recurrent_initializer: initializer for `recurrent_kernel` and
            `temporal_recurrent_kernel`.
        bias_initializer: initializer for `bias` and `temporal_bias`.
        peephole_initializer: initializer for the peephole weights.
        kernel_regularizer: regularizer for the input-side kernels.
        recurrent_regularizer: regularizer for the recurrent kernels.
        bias_regularizer: regularizer for the biases.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: frame features x_t, `(B, H, W, C)`.
        states: list `[h_{t-1}, c_{t-1}, h_{t-2}]`, each `(B, H, W, filters)`.
        training: unused; accepted for the `keras.layers.RNN` interface.

    Input shape:
        4D `(batch, height, width, channels)`, height, width and channels known.

    Output shape:
        `h_t`: `(batch, height, width, filters)`, and the new states
        `[h_t, c_t, h_{t-1}]` of the same shape.

    Example:

    >>> cell = EnhancedConvLSTMCell(filters=8, kernel_size=3, groups=4)
    >>> frames = keras.random.normal((2, 8, 16, 16, 4))  # (B, T, H, W, C)
    >>> ConvRNN(cell, return_sequences=True)(frames).shape
    (2, 8, 16, 16, 8)

    References:
        - Miyoshi, Nagata and Hashimoto, "Recurrent Attention Module による動画ベース
          表情認識の内部構造分析" (paper 001), eq. (2); and 三好ら, "動画からの表情認識
          のための表情の時空間的変化に着目した Enhanced Convolutional LSTM の提案",
          MIRU 2020 (paper 000: temporal gates, temporal and spatial skip connections).
        - Shi et al., "Convolutional LSTM Network", NIPS 2015 (eq. 3, the base cell).
        - Wu and He, "Group Normalization", ECCV 2018 (g).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        groups=32,
        skip_kernel_size=1,
        peephole=True,
        peephole_mode="hadamard",
        norm_epsilon=1e-3,
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
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            peephole=peephole,
            use_bias=use_bias,
            unit_forget_bias=unit_forget_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            peephole_initializer=peephole_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            **kwargs,
        )
        if peephole_mode not in PEEPHOLE_MODES:
            raise ValueError(
                f"peephole_mode must be one of {PEEPHOLE_MODES}. Received: peephole_mode={peephole_mode!r}"
            )
        self.peephole_mode = peephole_mode
        self._init_temporal_gates(filters, groups, skip_kernel_size, norm_epsilon)

    @property
    def state_size(self):
        """Channels of `[h_{t-1}, c, h_{t-2}]`; the spatial size is the input's."""
        return [self.filters, self.filters, self.filters]

    def build(self, inputs_shape, states_shape=None):
        super().build(inputs_shape)
        self._build_temporal_gates()

    def _build_peepholes(self):
        if self.peephole_mode == "hadamard":
            super()._build_peepholes()
            return
        self.peephole_kernel = self.add_weight(
            shape=self.kernel_size + (self.filters, 3 * self.filters),
            initializer=self.peephole_initializer,
            name="peephole_kernel",
        )

    def _peephole_terms(self, c_prev):
        if self.peephole_mode == "hadamard":
            return super()._peephole_terms(c_prev)
        f = self.filters
        p = self._conv(c_prev, self.peephole_kernel[..., : 2 * f])  # (B, H, W, 2*filters)
        return p[..., :f], p[..., f:]

    def _output_peephole_term(self, c):
        if self.peephole_mode == "hadamard":
            return super()._output_peephole_term(c)
        return self._conv(c, self.peephole_kernel[..., 2 * self.filters :])

    def call(self, inputs, states, training=False):
        h_prev, c_prev, h_prev2 = states[0], states[1], states[2]
        lstm_out, c = self._lstm_step(inputs, h_prev, c_prev)  # o_t ∘ tanh(c_t), c_t
        h = self._enhance(lstm_out, inputs, h_prev2, training=training)  # GroupNorm(lstm_out + s_t ∘ s~_t + W_x * x_t)
        return h, [h, c, h_prev]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                **self._temporal_gates_config(),
                "peephole_mode": self.peephole_mode,
            }
        )
        return config

