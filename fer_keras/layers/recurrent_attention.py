"""RecurrentAttention: the Recurrent Attention Module (RAM), ABN's attention branch made recurrent."""

import keras
from keras import ops

from fer_keras.layers.conv_cell import _is_positive_int, _pair
from fer_keras.layers.conv_rnn import ConvRNN


@keras.saving.register_keras_serializable(package="fer_keras")
class RecurrentAttention(keras.layers.Layer):
    """Recurrent Attention Module (paper 001, sec. 2): a recurrent ABN attention branch.

    ABN (Fukui et al. 2019) computes, from a feature map x, per-class logits and an
    attention map M in [0, 1] in an attention branch, and feeds x ∘ (1 + M) (its
    "residual" attention mechanism) to the perception branch. RAM makes the attention
    branch recurrent: the intermediate state it uses for the map and the logits is kept
    as an internal state and read at the next time step (paper 001, sec. 2, fig. 1).
    Here ABN's attention-branch trunk (ResNet blocks, `att_layer4` in ABN's code) is a
    `ConvRNN` of the chosen cell, and ABN's head follows it at every step. Paper 001
    gives RAM no equations; (R1)-(R5) are this docstring's labels:

        a_t, S_t = cell(x_t, S_{t-1})              recurrent trunk, state S carried (R1)
        k_t = ReLU(BN(W_k ⊛ BN(a_t)))              1x1 conv to K channels        (R2)
        l_t = GAP(W_l ⊛ k_t)                       1x1 conv, then global average  (R3)
        M_t = σ(BN(W_m ⊛ k_t))                     attention map, (H, W, 1)       (R4)
        x'_t = x_t ∘ (1 + M_t)                     perception-branch input        (R5)

    `⊛` is a stride-1 'same' convolution without bias (W_k, W_l 1x1; W_m
    `attention_kernel_size`, 3x3 in ABN). S_0 is zeros. The head is the same at every
    step; `call` applies it to all B*T frames at once, so in training its BatchNorms take
    batch statistics over all frames of the batch. The module is trained, like ABN's
    attention branch, with a cross-entropy loss on the logits l_t (paper 001, sec. 2
    and 3.1: CE(attention) + CE(perception)).

    For streaming (one frame at a time), `get_initial_state(batch_size)` and
    `step(x_t, states)` run the same weights one step at a time; with `training=False`
    a sequence of `step` calls gives exactly the frames of `call`.

    Args:
        num_classes: int >= 1, K, the classes of the attention logits.
        cell: a convolutional cell instance (`ConvLSTMCell`, `EnhancedConvLSTMCell`,
            `ConvGRUCell`, `EnhancedConvGRUCell`) or its serialized config: the
            recurrent trunk of the attention branch, with its own `filters`.
        attention_kernel_size: int or pair, window of W_m in (R4). Default 3 (ABN).
        unroll: bool, unroll the time loop of the trunk (needs a known T; TFLite).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: feature sequence x, `(B, T, H, W, C)`.
        training: Python bool, for the BatchNorms (and the cell).

    Returns:
        A dict:
        - `"features"`: x ∘ (1 + M), `(B, T, H, W, C)`, the perception-branch input.
        - `"attention_logits"`: l, `(B, T, K)`, per-step class logits (no softmax).
        - `"attention_maps"`: M, `(B, T, H, W, 1)`, in [0, 1].

    Input shape:
        5D `(batch, time, height, width, channels)`, height, width and channels known.

    Output shape:
        The dict above. `step` returns the same keys without the time axis, and the
        cell's new states.

    Example:

    >>> ram = RecurrentAttention(num_classes=7, cell=EnhancedConvLSTMCell(16, 3, groups=4))
    >>> out = ram(keras.random.normal((2, 8, 12, 12, 32)))  # (B, T, H, W, C)
    >>> out["features"].shape, out["attention_logits"].shape, out["attention_maps"].shape
    ((2, 8, 12, 12, 32), (2, 8, 7), (2, 8, 12, 12, 1))

    Streaming, one frame at a time:

    >>> states = ram.get_initial_state(batch_size=2)
    >>> frame_out, states = ram.step(keras.random.normal((2, 12, 12, 32)), states)
    >>> frame_out["attention_logits"].shape
    (2, 7)

    References:
        - Miyoshi, Nagata and Hashimoto, "Recurrent Attention Module による動画ベース
          表情認識の内部構造分析" (paper 001), sec. 2 (RAM), sec. 3.1 and fig. 1-2.
        - Fukui et al., "Attention Branch Network: Learning of Attention Mechanism for
          Visual Explanation", CVPR 2019 (attention branch head, x ∘ (1 + M)).
    """

    def __init__(self, num_classes, cell, attention_kernel_size=3, unroll=False, **kwargs):
        super().__init__(**kwargs)
        if not _is_positive_int(num_classes):
            raise ValueError(f"num_classes must be an int >= 1. Received: num_classes={num_classes!r}")
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        if not isinstance(cell, keras.layers.Layer) or not hasattr(cell, "get_initial_state"):
            raise ValueError(
                "cell must be a convolutional cell instance such as ConvLSTMCell(16, 3). "
                f"Received: cell={cell!r}"
            )
        self.num_classes = num_classes
        self.attention_kernel_size = _pair(attention_kernel_size, "attention_kernel_size")
        self.unroll = bool(unroll)
        # The cell lives only inside the ConvRNN (see `cell`), so it is tracked and saved once.
        self.rnn = ConvRNN(cell, return_sequences=True, unroll=self.unroll, name="attention_rnn")
        self.rnn_norm = keras.layers.BatchNormalization(name="attention_rnn_norm")
        self.class_conv = keras.layers.Conv2D(num_classes, 1, use_bias=False, name="class_conv")
        self.class_norm = keras.layers.BatchNormalization(name="class_norm")
        self.logit_conv = keras.layers.Conv2D(num_classes, 1, use_bias=False, name="logit_conv")
        self.map_conv = keras.layers.Conv2D(
            1, self.attention_kernel_size, padding="same", use_bias=False, name="map_conv"
        )
        self.map_norm = keras.layers.BatchNormalization(name="map_norm")
        self.input_spec = keras.layers.InputSpec(ndim=5)

    @property
    def cell(self):
        """The recurrent trunk's cell (one time step)."""
        return self.rnn.cell

    def build(self, input_shape):
        if len(input_shape) != 5 or None in tuple(input_shape[2:]):
            raise ValueError(
                "RecurrentAttention takes feature sequences (batch, time, height, width, channels) "
                f"with known height, width and channels. Received: input_shape={tuple(input_shape)}"
            )
        self.rnn.build(input_shape)
        h, w = input_shape[2], input_shape[3]
        k = self.num_classes
        self.rnn_norm.build((None, h, w, self.cell.filters))
        self.class_conv.build((None, h, w, self.cell.filters))
        self.class_norm.build((None, h, w, k))
        self.logit_conv.build((None, h, w, k))
        self.map_conv.build((None, h, w, k))
        self.map_norm.build((None, h, w, 1))

    def _head(self, a, training):
        """(R2)-(R4) on trunk outputs a of shape (N, H, W, filters): logits (N, K), maps (N, H, W, 1)."""
        k = ops.relu(self.class_norm(self.class_conv(self.rnn_norm(a, training=training)), training=training))
        logits = ops.mean(self.logit_conv(k), axis=(1, 2))  # (N, K)
        maps = ops.sigmoid(self.map_norm(self.map_conv(k), training=training))  # (N, H, W, 1)
        return logits, maps

    def call(self, inputs, training=None):
        a = self.rnn(inputs, training=training)  # (B, T, H, W, filters)
        steps = inputs.shape[1] if inputs.shape[1] is not None else ops.shape(inputs)[1]
        h, w = inputs.shape[2], inputs.shape[3]
        # The head has no state: run it on all frames at once.
        a = ops.reshape(a, (-1, h, w, a.shape[-1]))  # (B*T, H, W, filters)
        logits, maps = self._head(a, training)
        logits = ops.reshape(logits, (-1, steps, self.num_classes))  # (B, T, K)
        maps = ops.reshape(maps, (-1, steps, h, w, 1))  # (B, T, H, W, 1)
        return {
            "features": inputs * (1.0 + maps),
            "attention_logits": logits,
            "attention_maps": maps,
        }

    def get_initial_state(self, batch_size):
        """The trunk cell's zero states for `step`, each `(batch_size, H, W, filters)`."""
        if not self.built:
            raise ValueError(
                "RecurrentAttention.get_initial_state needs the spatial size: build the layer "
                "first (ram.build((None, T, H, W, C))). "
                f"Received: batch_size={batch_size!r} on an unbuilt layer"
            )
        return self.cell.get_initial_state(batch_size=batch_size)

    def step(self, inputs, states, training=False):
        """One time step (streaming): (R1)-(R5) on x_t of shape (B, H, W, C).

        Returns `(outputs, new_states)`: `outputs` has the keys of `call` with per-step
        shapes (features `(B, H, W, C)`, attention_logits `(B, K)`, attention_maps
        `(B, H, W, 1)`); `new_states` is the cell's state list, to pass to the next step.
        """
        if not self.built:
            self.build((inputs.shape[0], None) + tuple(inputs.shape[1:]))
        a, new_states = self.cell(inputs, states, training=training)  # (B, H, W, filters)
        logits, maps = self._head(a, training)
        outputs = {"features": inputs * (1.0 + maps), "attention_logits": logits, "attention_maps": maps}
        return outputs, new_states

    def compute_output_shape(self, input_shape):
        b, t, h, w, _ = input_shape
        return {
            "features": tuple(input_shape),
            "attention_logits": (b, t, self.num_classes),
            "attention_maps": (b, t, h, w, 1),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "cell": keras.saving.serialize_keras_object(self.cell),
                "attention_kernel_size": self.attention_kernel_size,
                "unroll": self.unroll,
            }
        )
        return config
