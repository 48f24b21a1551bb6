"""EnhancedConvGRUCell: ConvGRU with temporal gates on h(t-2), temporal and spatial skips, GroupNorm."""

import keras

from fer_keras.layers.conv_gru_cell import ConvGRUCell
from fer_keras.layers.temporal_gates import TemporalGates


@keras.saving.register_keras_serializable(package="fer_keras")
class EnhancedConvGRUCell(TemporalGates, ConvGRUCell):
    """One time step of the Enhanced ConvGRU (paper 000): eq. (2)'s additions on a ConvGRU.

    Paper 000 improves ConvGRU and ConvLSTM with the same three additions and writes the
    equations only for the LSTM (paper 001 eq. 2). Here they are put on the ConvGRU of
    `ConvGRUCell` (eqs. G1-G4) exactly as eq. (2) puts them on the ConvLSTM: the temporal
    gates read h_{t-2}, and the temporal skip, the spatial skip and GroupNorm act on the
    output:

        z_t = σ(W_xz * x_t + W_hz * h_{t-1} + b_z)                         (G1)
        r_t = σ(W_xr * x_t + W_hr * h_{t-1} + b_r)                         (G2)
        h~_t = tanh(W_xh * x_t + W_hh * (r_t ∘ h_{t-1}) + b_h)             (G3)
        s~_t = tanh(W_xs~ * x_t + W_hs~ * h_{t-2} + b_s~)    temporal modulation gate, eq. (2)
        s_t = σ(W_xs * x_t + W_hs * h_{t-2} + b_s)           temporal skip gate, eq. (2)
        h_t = g((1 - z_t) ∘ h_{t-1} + z_t ∘ h~_t + s_t ∘ s~_t + W_xp * x_t)   g: GroupNorm

    `*` is a stride-1 'same' convolution and `∘` the Hadamard product. The spatial skip
    is called W_xp here (eq. 2's W_xr) because W_xr is the GRU's reset gate; it has no
    bias (g has its own β). The normalized h_t is what the next steps read as h_{t-1} and
    h_{t-2}.

    h_{t-2} is carried as a second state. States are `[h_{t-1}, h_{t-2}]` and the cell
    returns `h_t, [h_t, h_{t-1}]`. The initial states are zeros, so at t = 0 both are
    zero and at t = 1 h_{t-2} is still zero: the temporal gates then see only x_t.

    Weights: those of `ConvGRUCell` (`kernel`, `recurrent_kernel`, `bias`, gate order z,
    r, h~), plus `temporal_kernel` (kh, kw, C, 2*filters), `temporal_recurrent_kernel`
    (kh, kw, filters, 2*filters), `temporal_bias` (2*filters,), gate order s~, s;
    `skip_kernel` (sk, sk, C, filters); and `group_norm` (γ, β of shape (filters,)).

    Args:
        filters: int >= 1, channels of h.
        kernel_size: int or pair, window of the gate convolutions (input, recurrent and
            temporal).
        strides: must be 1.
        groups: int, GroupNorm groups; must divide `filters`. Default 32 as in Wu and He.
        skip_kernel_size: int or pair, window of the spatial skip W_xp. Default 1 (a
            point-wise projection); the papers do not give it.
        norm_epsilon: float > 0, GroupNorm epsilon.
        use_bias: bool, whether to add the gate biases b.
        kernel_initializer: initializer for `kernel`, `temporal_kernel`, `skip_kernel`.
        recurrent_initializer: initializer for `recurrent_kernel` and
            `temporal_recurrent_kernel`.
        bias_initializer: initializer for `bias` and `temporal_bias`.
        kernel_regularizer: regularizer for the input-side kernels.
        recurrent_regularizer: regularizer for the recurrent kernels.
        bias_regularizer: regularizer for the biases.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: frame features x_t, `(B, H, W, C)`.
        states: list `[h_{t-1}, h_{t-2}]`, each `(B, H, W, filters)`.
        training: unused; accepted for the `keras.layers.RNN` interface.

    Input shape:
        4D `(batch, height, width, channels)`, height, width and channels known.

    Output shape:
        `h_t`: `(batch, height, width, filters)`, and the new states `[h_t, h_{t-1}]` of
        the same shape.

    Example:

    >>> cell = EnhancedConvGRUCell(filters=8, kernel_size=3, groups=4)
    >>> frames = keras.random.normal((2, 8, 16, 16, 4))  # (B, T, H, W, C)
    >>> ConvRNN(cell, return_sequences=True)(frames).shape
    (2, 8, 16, 16, 8)

    References:
        - 三好ら, Enhanced Conv-RNNs (paper 000): Enhanced ConvGRU, 88.99% on CK+.
        - Miyoshi, Nagata and Hashimoto (paper 001), eq. (2): the temporal gates, the
          temporal and spatial skips and g, as written for the LSTM.
        - Ballas et al., "Delving Deeper into Convolutional Networks for Learning Video
          Representations", ICLR 2016 (the base ConvGRU).
        - Wu and He, "Group Normalization", ECCV 2018 (g).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        groups=32,
        skip_kernel_size=1,
        norm_epsilon=1e-3,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
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
        self._init_temporal_gates(filters, groups, skip_kernel_size, norm_epsilon)

    @property
    def state_size(self):
        """Channels of `[h_{t-1}, h_{t-2}]`; the spatial size is the input's."""
        return [self.filters, self.filters]

    def build(self, inputs_shape, states_shape=None):
        super().build(inputs_shape)
        self._build_temporal_gates()

    def call(self, inputs, states, training=False):
        h_prev, h_prev2 = states[0], states[1]
        gru_out = self._gru_step(inputs, h_prev)  # (1 - z_t) ∘ h_{t-1} + z_t ∘ h~_t
        h = self._enhance(gru_out, inputs, h_prev2, training=training)  # GroupNorm(gru_out + s_t ∘ s~_t + W_x * x_t)
        return h, [h, h_prev]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                **self._temporal_gates_config(),
            }
        )
        return config
