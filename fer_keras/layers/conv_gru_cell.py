"""ConvGRUCell: one time step of a convolutional GRU (Ballas et al. 2016)."""

import keras
from keras import ops

from fer_keras.layers.conv_cell import ConvCell


@keras.saving.register_keras_serializable(package="fer_keras")
class ConvGRUCell(ConvCell):
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

    gates = 3  # z, r, h~

    @property
    def state_size(self):
        """Channels of `[h]`; the spatial size is the input's."""
        return [self.filters]

    def build(self, inputs_shape, states_shape=None):
        self.build_gate_weights(inputs_shape)

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
