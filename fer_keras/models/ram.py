"""Conv-RNN + Recurrent Attention Module clip classifiers of paper 001, and their two-loss model.

Paper 001 (Miyoshi, Nagata and Hashimoto, "Recurrent Attention Module による動画ベース表情
認識の内部構造分析") sec. 3.1 and fig. 2: one convolution, three max-pooling layers and four
ConvLSTM (or Enhanced ConvLSTM) layers extract features; the Recurrent Attention Module
(RAM, sec. 2, `fer_keras.layers.RecurrentAttention`) turns them into class logits and
attention maps M; the maps are applied to the features by ABN's residual mechanism
x ∘ (1 + M); and fully connected layers (the perception branch) classify. The loss is the
sum of the cross-entropies of the RAM's logits and of the perception branch (sec. 3.1).
Registered as `convlstm_ram` and `econvlstm_ram` (table 1 "ConvLSTM + RAM" and
"Enhanced ConvLSTM + RAM").

Choices where the paper is silent (the layer counts are its only numbers):
- The feature extractor is the one of `fer_keras.models.convrnn` (conv 3x3 + BN + ReLU,
  pools after the conv and after Conv-RNN layers 1 and 2), the paper's "ConvLSTM" and
  "Enhanced ConvLSTM" baselines of table 1, with every Conv-RNN returning sequences so that
  the RAM runs over time.
- The RAM's recurrent trunk uses the same kind of cell as the extractor (ConvLSTM or
  Enhanced ConvLSTM), with `attention_filters` filters.
- A clip has one label. The perception branch reads the attended features of the last step
  (x ∘ (1 + M) at t = T-1, which has seen the whole clip), and the attention-branch loss uses
  the RAM's logits of the same last step.
- The perception branch is the three fully connected layers of paper 000 (two hidden ReLU
  layers with dropout, then the softmax), so that "+ RAM" is the only difference from the
  baselines.
- Sizes: "paper": conv 64, Conv-RNN (64, 64, 128, 128), RAM trunk 128, GroupNorm 32 groups,
  FC 512-256-K. "small": conv 8, Conv-RNN (8, 8, 16, 16), RAM trunk 16, 4 groups, FC 64-32-K
  (at 64 px, T=8: about 0.1 s per clip and training step on 2 CPU cores, after ~1 min of tracing).
"""

import threading

import keras
from keras import layers

from fer_keras.layers.recurrent_attention import RecurrentAttention
from fer_keras.models.convrnn import check_clip_shape, clip_inputs, conv_rnn_stream, dense_head, make_cell, parse_streams
from fer_keras.models.registry import register_model
from fer_keras.models.two_loss import functional_network

NETWORK_OUTPUTS = ("probabilities", "attention_logits", "attention_maps")

_PLAIN_SIZES = {
    "small": {"conv_filters": 8, "rnn_filters": (8, 8, 16, 16), "attention_filters": 16, "dense_units": (64, 32)},
    "paper": {"conv_filters": 64, "rnn_filters": (64, 64, 128, 128), "attention_filters": 128, "dense_units": (512, 256)},
}
_ENHANCED_SIZES = {
    "small": dict(_PLAIN_SIZES["small"], groups=4),
    "paper": dict(_PLAIN_SIZES["paper"], groups=32),
}


@keras.saving.register_keras_serializable(package="fer_keras")
class RAMClassifier(keras.Model):
    """A clip classifier with an attention branch: predicts with the perception branch, trains on both.

    Wraps a functional `network` whose outputs are a dict:
    - "probabilities": perception-branch softmax, `(B, K)`;
    - "attention_logits": attention-branch (RAM) class logits, `(B, K)`, no softmax;
    - "attention_maps": the RAM's maps M in [0, 1], `(B, T, h, w, 1)`.

    `model(x)` returns "probabilities" only, so prediction, SavedModel and TFLite export see an
    ordinary classifier. `compute_loss` adds to the compiled loss (CE on the perception
    branch, e.g. `SparseCategoricalCrossentropy()`) the attention branch's cross-entropy,
    paper 001 sec. 3.1:

        L = CE(y, p_perception) + attention_loss_weight * CE(y, softmax(l_attention))

    with `attention_loss_weight=1` in the paper. The attention logits come from the same
    forward pass as `y_pred`: `call` keeps them for `compute_loss`, which Keras's
    `train_step` and `test_step` call right after it. The attention term is also reported
    as the metric "attention_loss". Labels are class indices (sparse), or one-hot when
    they have the logits' rank.

    Args:
        network: a functional `keras.Model` (or its serialized config) with the dict outputs
            above.
        attention_loss_weight: float >= 0, weight of the attention-branch cross-entropy.
        **kwargs: base `keras.Model` arguments (`name`, ...).

    Call arguments:
        inputs: what `network` takes, e.g. clips `(B, T, H, W, C)` of raw pixels.
        training: Python bool, for BatchNorm and dropout.

    Returns:
        The perception softmax `(B, K)`.

    Example:

    >>> model = get_model("econvlstm_ram", (8, 48, 48, 1), 7)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    >>> model.fit(clips, labels)                # loss = CE(perception) + CE(attention)
    >>> maps = model.explain(clips)["attention_maps"]  # (B, T, h, w, 1) for overlays

    References:
        - Miyoshi, Nagata and Hashimoto, Recurrent Attention Module (paper 001), sec. 2, 3.1.
        - Fukui et al., "Attention Branch Network", CVPR 2019 (the two-branch loss).
    """

    def __init__(self, network, attention_loss_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        network = functional_network(network, NETWORK_OUTPUTS)
        if not attention_loss_weight >= 0:
            raise ValueError(f"attention_loss_weight must be >= 0. Received: attention_loss_weight={attention_loss_weight!r}")
        self.network = network
        self.attention_loss_weight = float(attention_loss_weight)
        self.attention_loss_tracker = keras.metrics.Mean(name="attention_loss")
        # Per thread: MirroredStrategy runs each replica's step in its own thread on this one
        # object, and a shared attribute let one replica's loss read another's logits.
        self._forward = threading.local()
        self.built = True  # the network is built

    @property
    def inputs(self):
        """The network's inputs (as `keras.Sequential` exposes its functional model's)."""
        return self.network.inputs

    def call(self, inputs, training=None):
        outputs = self.network(inputs, training=training)
        # Kept for compute_loss, which train_step/test_step call on this same forward pass.
        self._forward.attention_logits = outputs["attention_logits"]
        return outputs["probabilities"]

    def explain(self, inputs, training=False):
        """The network's dict: "probabilities" (B, K), "attention_logits" (B, K), "attention_maps" (B, T, h, w, 1)."""
        return self.network(inputs, training=training)

    def attention_loss(self, y, attention_logits, sample_weight=None):
        """CE of the attention branch, reduced as Keras reduces the compiled loss (mean over the batch)."""
        loss_fn = (
            keras.losses.CategoricalCrossentropy(from_logits=True)
            if len(y.shape) == len(attention_logits.shape)
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        return loss_fn(y, attention_logits, sample_weight=sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss on the perception branch (plus regularisers) + weighted attention CE."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        attention_logits = getattr(self._forward, "attention_logits", None)
        if attention_logits is None:
            raise ValueError(
                "RAMClassifier.compute_loss needs the attention logits of the forward pass that made y_pred: "
                "call the model on x first. Received: no forward pass"
            )
        # Under tf.distribute both terms come already divided by num_replicas_in_sync: a
        # keras.losses.Loss reduced over the batch scales itself (keras/src/losses/loss.py,
        # reduce_values), as the compiled loss does, and the optimizer all-reduces with SUM.
        # So no extra scaling here; only the reported metric is multiplied back.
        attention = self.attention_loss(y, attention_logits, sample_weight)
        self._forward.attention_logits = None
        self.attention_loss_tracker.update_state(attention * _replicas_in_sync())
        return loss + self.attention_loss_weight * keras.ops.cast(attention, loss.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "network": keras.saving.serialize_keras_object(self.network),
                "attention_loss_weight": self.attention_loss_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"), custom_objects=custom_objects)
        return cls(network=network, **config)


def _replicas_in_sync():
    """Replicas of the current tf.distribute strategy (1 outside one, and on other backends)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def build_ram_classifier(input_shape, num_classes, *, cell, name, streams=("rgb",), conv_filters=8,
                         rnn_filters=(8, 8, 16, 16), attention_filters=16, kernel_size=3, groups=None,
                         dense_units=(64, 32), dropout=0.3, pool_after=(0, 1, 2), attention_loss_weight=1.0,
                         unroll=False, batch_size=None):
    """Paper 001 fig. 2: Conv-RNN features -> RAM -> x ∘ (1 + M) -> fully connected layers.

    Args:
        input_shape: (T, H, W, C) of the clip.
        num_classes: K.
        cell: "lstm" or "enhanced_lstm" (any kind of `convrnn.CELLS` works), for the four
            extractor layers and the RAM's trunk.
        name: the model's name.
        streams: ("rgb",) only: paper 001 uses RGB clips. Accepted so that a caller passing
            the pipeline's streams to every clip model gets a clear error for flow.
        conv_filters: filters of the frame-wise 3x3 convolution.
        rnn_filters: filters of each extractor Conv-RNN layer (four in the paper).
        attention_filters: filters of the RAM's recurrent trunk.
        kernel_size: window of the Conv-RNN gate convolutions (extractor and RAM).
        groups: GroupNorm groups of the Enhanced cells; must divide every `rnn_filters`
            entry and `attention_filters`. Unused by plain cells.
        dense_units: hidden fully connected layers of the perception branch.
        dropout: dropout after each hidden fully connected layer.
        pool_after: 2x2 max-pool positions, as in `convrnn.build_conv_rnn_classifier`.
        attention_loss_weight: weight of CE(attention) in the loss (1 in the paper).
        unroll: unroll every time loop (TFLite); weights and their order do not depend on it.
        batch_size: fixed batch size (1 for TFLite), or None.

    Returns:
        A `RAMClassifier`: `model(x)` is the perception softmax "probabilities" (B, K);
        `model.explain(x)` also gives "attention_logits" (B, K) and "attention_maps"
        (B, T, h, w, 1).
    """
    input_shape = tuple(input_shape)
    if parse_streams(streams) != ("rgb",):
        raise ValueError(f"The RAM models of paper 001 take RGB clips only. Received: streams={streams!r}")
    rnn_filters, pool_after, dense_units = tuple(rnn_filters), tuple(pool_after), tuple(dense_units)
    check_clip_shape(input_shape, pool_after, rnn_filters)
    steps = input_shape[0]
    frames, scaled = clip_inputs(input_shape, ("rgb",), batch_size, flow_scale=1.0)
    x = conv_rnn_stream(
        scaled["rgb"],
        cell=cell,
        conv_filters=conv_filters,
        rnn_filters=rnn_filters,
        kernel_size=kernel_size,
        groups=groups,
        pool_after=pool_after,
        return_sequences=True,
        unroll=unroll,
        name="rgb",
    )  # (B, T, h, w, F)
    ram = RecurrentAttention(
        num_classes, make_cell(cell, attention_filters, kernel_size, groups, name="attention_cell"), unroll=unroll,
        name="ram",
    )(x)
    # Perception branch on the last step: slice t = T-1 with builtin layers (TFLite: STRIDED_SLICE).
    last = layers.Cropping3D(((steps - 1, 0), (0, 0), (0, 0)), name="last_step")(ram["features"])  # (B, 1, h, w, F)
    probabilities = dense_head(last, num_classes, dense_units, dropout)  # (B, K)
    logits = layers.Cropping1D((steps - 1, 0), name="last_attention_step")(ram["attention_logits"])  # (B, 1, K)
    logits = layers.Reshape((num_classes,), name="attention_logits")(logits)  # (B, K)
    network = keras.Model(
        frames,
        {"probabilities": probabilities, "attention_logits": logits, "attention_maps": ram["attention_maps"]},
        name=f"{name}_network",
    )
    return RAMClassifier(network, attention_loss_weight=attention_loss_weight, name=name)


@register_model(
    "convlstm_ram",
    kind="clip",
    family="ram",
    sizes=_PLAIN_SIZES,
    description="Paper 001: conv + 4 ConvLSTM layers + Recurrent Attention Module, FC; loss CE(attention) + CE(perception).",
)
def convlstm_ram(input_shape, num_classes, streams=("rgb",), conv_filters=8, rnn_filters=(8, 8, 16, 16),
                 attention_filters=16, kernel_size=3, dense_units=(64, 32), dropout=0.3, pool_after=(0, 1, 2),
                 attention_loss_weight=1.0, unroll=False, batch_size=None):
    """ConvLSTM + RAM (paper 001 sec. 2-3, fig. 1-2, table 1 "ConvLSTM + RAM").

    Cells: `ConvLSTMCell`, paper 001 eq. (1), in the extractor and the RAM trunk.

    Arguments: as `build_ram_classifier`.
    """
    return build_ram_classifier(
        input_shape, num_classes, cell="lstm", name="convlstm_ram", streams=streams, conv_filters=conv_filters,
        rnn_filters=rnn_filters, attention_filters=attention_filters, kernel_size=kernel_size,
        dense_units=dense_units, dropout=dropout, pool_after=pool_after,
        attention_loss_weight=attention_loss_weight, unroll=unroll, batch_size=batch_size,
    )


@register_model(
    "econvlstm_ram",
    kind="clip",
    family="ram",
    sizes=_ENHANCED_SIZES,
    description="Paper 001: conv + 4 Enhanced ConvLSTM layers + Recurrent Attention Module, FC; two CE losses.",
)
def econvlstm_ram(input_shape, num_classes, streams=("rgb",), conv_filters=8, rnn_filters=(8, 8, 16, 16),
                  attention_filters=16, kernel_size=3, groups=4, dense_units=(64, 32), dropout=0.3,
                  pool_after=(0, 1, 2), attention_loss_weight=1.0, unroll=False, batch_size=None):
    """Enhanced ConvLSTM + RAM (paper 001 sec. 2-3, fig. 2, table 1 "Enhanced ConvLSTM + RAM").

    Cells: `EnhancedConvLSTMCell`, paper 001 eq. (2), in the extractor and the RAM trunk.

    Arguments: as `build_ram_classifier`.
    """
    return build_ram_classifier(
        input_shape, num_classes, cell="enhanced_lstm", name="econvlstm_ram", streams=streams,
        conv_filters=conv_filters, rnn_filters=rnn_filters, attention_filters=attention_filters,
        kernel_size=kernel_size, groups=groups, dense_units=dense_units, dropout=dropout, pool_after=pool_after,
        attention_loss_weight=attention_loss_weight, unroll=unroll, batch_size=batch_size,
    )
