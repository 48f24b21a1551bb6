"""Conv-RNN clip classifiers of paper 000: ConvLSTM, ConvGRU and their Enhanced versions.

Paper 000 (三好ら; our copy has no title page: the MIRU 2020 title "動画からの表情認識のための
表情の時空間的変化に着目した Enhanced Convolutional LSTM の提案" is how paper 001 cites it, ref. [4])
sec. 2.2 and fig. 2: one stream per input modality
(RGB frames and optical flow), each a stack of (Enhanced) Conv-RNN layers, the streams
concatenated and classified by three fully connected layers. Sec. 3 compares ConvGRU,
ConvLSTM, Enhanced ConvGRU and Enhanced ConvLSTM (table 1); they are registered here as
`convgru`, `convlstm`, `econvgru` and `econvlstm`.

Paper 000 gives neither the layers in front of the Conv-RNNs nor any filter count. Paper 001
(same authors) sec. 3.1 describes its ConvLSTM / Enhanced ConvLSTM feature extractor as one
convolution, three max-pooling layers and four ConvLSTM layers, and its table 1 baselines
"ConvLSTM" and "Enhanced ConvLSTM" are these models, so each stream here is:

    frames -> Conv 3x3 + BN + ReLU -> MaxPool -> RNN1 -> MaxPool -> RNN2 -> MaxPool -> RNN3 -> RNN4

The order of the pools among the recurrent layers is not given; `pool_after=(0, 1, 2)`
(after the convolution and after RNN1, RNN2) lets the first Conv-RNNs see fine detail (the
wrinkles paper 001 sec. 1 cares about) while the deeper ones run at 1/8 of the input size.
The top layer of each stream returns its last hidden state h_{T-1}; the streams' states are
concatenated along channels, flattened, and go through three fully connected layers (two
ReLU layers with dropout, then the softmax "probabilities").

Sizes ("paper" is our choice where the papers are silent, which is everywhere but the layer
counts): "paper": conv 64, Conv-RNN filters (64, 64, 128, 128), GroupNorm 32 groups (Wu and
He's default, which paper 001 eq. (2) cites), FC 512-256-K. "small": conv 8, Conv-RNN
(8, 8, 16, 16), 4 groups, FC 64-32-K: measured at 64 px, T=8, batch 16 on 2 shared CPU cores,
about 0.1 s per clip and training step after 20-60 s of graph tracing, so an epoch of a
thousand clips takes a minute or two.

Also not from paper 000:
- Streams: the method of sec. 2.2 is two-stream (RGB + optical flow), but `fer-keras train`
  defaults to `--streams rgb` (one stream, half the cost, and data prepared without --flow
  works); pass `--streams rgb,flow` (data prepared with `--flow`) for the paper's method.
- Clips: paper 000 gives no clip length or per-video decision; its models take paper 001's
  (sec. 3.1): 8-frame clips at stride 2, and the majority vote of a video's clips.
- "Concat + Point-wise convolution" is a figure legend at the end of our copy of paper 000,
  whose figures are missing, so where that block sits (Fig. 1's cell or Fig. 2's fusion) is
  unknown. No 1x1 convolution is added: the streams' states are concatenated and go straight
  to the three fully connected layers that sec. 2.2's text names.
"""

import keras
from keras import layers

from fer_keras.layers.conv_gru_cell import ConvGRUCell
from fer_keras.layers.conv_lstm_cell import ConvLSTMCell
from fer_keras.layers.conv_rnn import ConvRNN
from fer_keras.layers.enhanced_conv_gru_cell import EnhancedConvGRUCell
from fer_keras.layers.enhanced_conv_lstm_cell import EnhancedConvLSTMCell
from fer_keras.layers.frame_wise import FrameWise
from fer_keras.models.registry import register_model

CELLS = {
    "lstm": ConvLSTMCell,
    "gru": ConvGRUCell,
    "enhanced_lstm": EnhancedConvLSTMCell,
    "enhanced_gru": EnhancedConvGRUCell,
}
STREAMS = ("rgb", "flow")
FLOW_CHANNELS = 2

_PLAIN_SIZES = {
    "small": {"conv_filters": 8, "rnn_filters": (8, 8, 16, 16), "dense_units": (64, 32)},
    "paper": {"conv_filters": 64, "rnn_filters": (64, 64, 128, 128), "dense_units": (512, 256)},
}
_ENHANCED_SIZES = {
    "small": dict(_PLAIN_SIZES["small"], groups=4),
    "paper": dict(_PLAIN_SIZES["paper"], groups=32),
}


def parse_streams(streams):
    """("rgb",) or ("rgb", "flow") from a tuple/list or a comma-separated string."""
    if isinstance(streams, str):
        streams = streams.split(",")
    parsed = tuple(s.strip() for s in streams)
    if "rgb" not in parsed or len(set(parsed)) != len(parsed) or not set(parsed) <= set(STREAMS):
        raise ValueError(
            f"streams must be ('rgb',) or ('rgb', 'flow') (the clip pipeline always gives RGB). Received: streams={streams!r}"
        )
    return tuple(s for s in STREAMS if s in parsed)


def make_cell(cell, filters, kernel_size=3, groups=None, name="cell"):
    """A fresh cell of kind `cell` ("lstm", "gru", "enhanced_lstm", "enhanced_gru").

    Named, so that weight paths (e.g. "rgb_rnn1/cell/kernel") do not depend on how many
    cells the process has made: the TFLite exporter's rebuild is checked against them.
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}. Received: cell={cell!r}")
    if cell.startswith("enhanced"):
        if groups is None or filters % groups:
            raise ValueError(
                f"GroupNorm groups must divide every Conv-RNN layer's filters. Received: groups={groups!r}, filters={filters}"
            )
        return CELLS[cell](filters, kernel_size, groups=groups, name=name)
    return CELLS[cell](filters, kernel_size, name=name)


def check_clip_shape(input_shape, pool_after, rnn_filters):
    """Validates (T, H, W, C) and the pooling schedule against the number of Conv-RNN layers."""
    if len(input_shape) != 4 or any(d is None or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be a known (T, H, W, C). Received: input_shape={input_shape!r}")
    if not rnn_filters:
        raise ValueError(f"rnn_filters must list at least one Conv-RNN layer. Received: rnn_filters={rnn_filters!r}")
    if sorted(set(pool_after)) != sorted(pool_after) or not all(0 <= p < len(rnn_filters) for p in pool_after):
        raise ValueError(
            "pool_after lists distinct positions: 0 (after the convolution) or i (after Conv-RNN layer i, "
            f"not the last). Received: pool_after={pool_after!r} with {len(rnn_filters)} Conv-RNN layers"
        )
    factor = 2 ** len(pool_after)
    if min(input_shape[1:3]) < factor:
        raise ValueError(
            f"Frames of {input_shape[1]}x{input_shape[2]} are too small for {len(pool_after)} 2x2 poolings. "
            f"Received: input_shape={input_shape!r}"
        )


def conv_rnn_stream(x, *, cell, conv_filters, rnn_filters, kernel_size=3, groups=None, pool_after=(0, 1, 2),
                    return_sequences=False, unroll=False, name="rgb"):
    """One stream: frame-wise conv + BN + ReLU, then Conv-RNN layers with max-pooling between them.

    `x` is a scaled (B, T, H, W, C) clip. Returns the top layer's last state (B, h, w, F), or
    with `return_sequences` its every state (B, T, h, w, F).
    """
    conv = keras.Sequential(
        [
            layers.Conv2D(conv_filters, 3, padding="same", use_bias=False, name="conv"),
            layers.BatchNormalization(name="bn"),
            layers.ReLU(name="relu"),
        ],
        name=f"{name}_conv_block",
    )
    x = FrameWise(conv, name=f"{name}_conv")(x)  # (B, T, H, W, conv_filters)
    if 0 in pool_after:
        x = FrameWise(layers.MaxPooling2D(2), name=f"{name}_pool0")(x)
    for i, filters in enumerate(rnn_filters, start=1):
        top = i == len(rnn_filters)
        x = ConvRNN(
            make_cell(cell, filters, kernel_size, groups),
            return_sequences=return_sequences or not top,
            unroll=unroll,
            name=f"{name}_rnn{i}",
        )(x)  # (B, T, h, w, filters), or (B, h, w, filters) at the top
        if i in pool_after:
            x = FrameWise(layers.MaxPooling2D(2), name=f"{name}_pool{i}")(x)
    return x


def dense_head(x, num_classes, dense_units, dropout):
    """Flatten, ReLU Dense layers with dropout, softmax Dense "probabilities"."""
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def clip_inputs(input_shape, streams, batch_size, flow_scale):
    """Keras inputs and their scaled tensors: {"rgb": ..., "flow": ...} for two streams, "frames" for one.

    RGB pixels are [0, 255] and scaled by 1/255; flow is in pixels per frame and scaled by
    1/`flow_scale` so that typical facial motion lands near [-1, 1].
    """
    if len(streams) == 1:
        frames = keras.Input(shape=input_shape, batch_size=batch_size, name="frames")  # (B, T, H, W, C)
        return frames, {"rgb": layers.Rescaling(1.0 / 255.0, name="rgb_rescale")(frames)}
    if not flow_scale > 0:
        raise ValueError(f"flow_scale must be > 0. Received: flow_scale={flow_scale!r}")
    rgb = keras.Input(shape=input_shape, batch_size=batch_size, name="rgb")  # (B, T, H, W, C)
    flow = keras.Input(shape=tuple(input_shape[:3]) + (FLOW_CHANNELS,), batch_size=batch_size, name="flow")  # (B, T, H, W, 2)
    scaled = {
        "rgb": layers.Rescaling(1.0 / 255.0, name="rgb_rescale")(rgb),
        "flow": layers.Rescaling(1.0 / flow_scale, name="flow_rescale")(flow),
    }
    return {"rgb": rgb, "flow": flow}, scaled


def build_conv_rnn_classifier(input_shape, num_classes, *, cell, name, streams=("rgb",), conv_filters=8,
                              rnn_filters=(8, 8, 16, 16), kernel_size=3, groups=None, dense_units=(64, 32),
                              dropout=0.3, pool_after=(0, 1, 2), flow_scale=20.0, unroll=False, batch_size=None):
    """The paper 000 classifier (sec. 2.2, fig. 2) with Conv-RNN cells of kind `cell`.

    Args:
        input_shape: (T, H, W, C) of the RGB clip; the flow clip is (T, H, W, 2).
        num_classes: K, the classes of the softmax.
        cell: "lstm", "gru", "enhanced_lstm" or "enhanced_gru" (see `CELLS`).
        name: the model's name.
        streams: ("rgb",) (one input "frames") or ("rgb", "flow") (inputs "rgb" and "flow",
            as `data.pipeline.clip_dataset(streams=("rgb", "flow"))` gives them); a
            comma-separated string is accepted.
        conv_filters: filters of the frame-wise 3x3 convolution.
        rnn_filters: filters of each Conv-RNN layer (four in the papers).
        kernel_size: window of the Conv-RNN gate convolutions.
        groups: GroupNorm groups of the Enhanced cells; must divide every `rnn_filters`
            entry. Unused by the plain cells.
        dense_units: the hidden fully connected layers (two, plus the softmax layer: the
            paper's three).
        dropout: dropout after each hidden fully connected layer.
        pool_after: where the 2x2 max-poolings go: 0 after the convolution, i after
            Conv-RNN layer i (never the top one).
        flow_scale: flow (pixels per frame) is divided by this inside the model.
        unroll: unroll the Conv-RNN time loops (TFLite export with builtin ops). The
            weights, and their order, do not depend on it.
        batch_size: fixed batch size of the inputs (1 for TFLite), or None.

    Returns:
        A functional `keras.Model` taking raw pixels in [0, 255] (and flow in pixels), with
        the softmax output "probabilities" (B, K).

    References:
        - 三好ら, Enhanced Conv-RNNs, MIRU 2020 (paper 000), sec. 2.1-2.2, fig. 1-2, table 1.
        - Miyoshi, Nagata and Hashimoto, Recurrent Attention Module (paper 001), sec. 3.1
          (1 conv + 3 max-pool + 4 Conv-RNN layers), eqs. (1)-(2).
    """
    input_shape = tuple(input_shape)
    streams = parse_streams(streams)
    rnn_filters, pool_after, dense_units = tuple(rnn_filters), tuple(pool_after), tuple(dense_units)
    check_clip_shape(input_shape, pool_after, rnn_filters)
    inputs, scaled = clip_inputs(input_shape, streams, batch_size, flow_scale)
    features = [
        conv_rnn_stream(
            scaled[stream],
            cell=cell,
            conv_filters=conv_filters,
            rnn_filters=rnn_filters,
            kernel_size=kernel_size,
            groups=groups,
            pool_after=pool_after,
            unroll=unroll,
            name=stream,
        )
        for stream in streams
    ]  # each (B, h, w, rnn_filters[-1])
    x = features[0] if len(features) == 1 else layers.Concatenate(name="streams")(features)  # (B, h, w, F * streams)
    outputs = dense_head(x, num_classes, dense_units, dropout)
    return keras.Model(inputs, outputs, name=name)


@register_model(
    "convlstm",
    kind="clip",
    family="convrnn",
    sizes=_PLAIN_SIZES,
    description="Paper 000 baseline: per-stream conv + 4 ConvLSTM layers (RGB, optional flow), 3 FC.",
)
def convlstm(input_shape, num_classes, streams=("rgb",), conv_filters=8, rnn_filters=(8, 8, 16, 16), kernel_size=3,
             dense_units=(64, 32), dropout=0.3, pool_after=(0, 1, 2), flow_scale=20.0, unroll=False, batch_size=None):
    """ConvLSTM clip classifier (paper 000 table 1 "ConvLSTM"; paper 001 eq. (1), table 1).

    Cells: `ConvLSTMCell` with peepholes, paper 001 eq. (1) (Shi et al. 2015 eq. 3).

    Arguments: as `build_conv_rnn_classifier`.
    """
    return build_conv_rnn_classifier(
        input_shape, num_classes, cell="lstm", name="convlstm", streams=streams, conv_filters=conv_filters,
        rnn_filters=rnn_filters, kernel_size=kernel_size, dense_units=dense_units, dropout=dropout,
        pool_after=pool_after, flow_scale=flow_scale, unroll=unroll, batch_size=batch_size,
    )


@register_model(
    "convgru",
    kind="clip",
    family="convrnn",
    sizes=_PLAIN_SIZES,
    description="Paper 000 baseline: per-stream conv + 4 ConvGRU layers (RGB, optional flow), 3 FC.",
)
def convgru(input_shape, num_classes, streams=("rgb",), conv_filters=8, rnn_filters=(8, 8, 16, 16), kernel_size=3,
            dense_units=(64, 32), dropout=0.3, pool_after=(0, 1, 2), flow_scale=20.0, unroll=False, batch_size=None):
    """ConvGRU clip classifier (paper 000 sec. 3.1 and table 1 "ConvGRU").

    Cells: `ConvGRUCell` (paper 000 ref. [3], Ballas et al.).

    Arguments: as `build_conv_rnn_classifier`.
    """
    return build_conv_rnn_classifier(
        input_shape, num_classes, cell="gru", name="convgru", streams=streams, conv_filters=conv_filters,
        rnn_filters=rnn_filters, kernel_size=kernel_size, dense_units=dense_units, dropout=dropout,
        pool_after=pool_after, flow_scale=flow_scale, unroll=unroll, batch_size=batch_size,
    )


@register_model(
    "econvlstm",
    kind="clip",
    family="convrnn",
    sizes=_ENHANCED_SIZES,
    description="Paper 000: per-stream conv + 4 Enhanced ConvLSTM layers (h(t-2) gates, skips, GroupNorm), 3 FC.",
)
def econvlstm(input_shape, num_classes, streams=("rgb",), conv_filters=8, rnn_filters=(8, 8, 16, 16), kernel_size=3,
              groups=4, dense_units=(64, 32), dropout=0.3, pool_after=(0, 1, 2), flow_scale=20.0, unroll=False,
              batch_size=None):
    """Enhanced ConvLSTM clip classifier (paper 000 sec. 2, fig. 1-2, table 1 "改良型 ConvLSTM").

    Cells: `EnhancedConvLSTMCell`, paper 001 eq. (2): temporal gates on h_{t-2}, temporal
    skip s_t ∘ s~_t, spatial skip W_xr * x_t, GroupNorm g on h_t. `groups` must divide
    every entry of `rnn_filters`.

    Arguments: as `build_conv_rnn_classifier`.
    """
    return build_conv_rnn_classifier(
        input_shape, num_classes, cell="enhanced_lstm", name="econvlstm", streams=streams,
        conv_filters=conv_filters, rnn_filters=rnn_filters, kernel_size=kernel_size, groups=groups,
        dense_units=dense_units, dropout=dropout, pool_after=pool_after, flow_scale=flow_scale, unroll=unroll,
        batch_size=batch_size,
    )


@register_model(
    "econvgru",
    kind="clip",
    family="convrnn",
    sizes=_ENHANCED_SIZES,
    description="Paper 000: per-stream conv + 4 Enhanced ConvGRU layers (h(t-2) gates, skips, GroupNorm), 3 FC.",
)
def econvgru(input_shape, num_classes, streams=("rgb",), conv_filters=8, rnn_filters=(8, 8, 16, 16), kernel_size=3,
             groups=4, dense_units=(64, 32), dropout=0.3, pool_after=(0, 1, 2), flow_scale=20.0, unroll=False,
             batch_size=None):
    """Enhanced ConvGRU clip classifier (paper 000 sec. 2, table 1 "改良型 ConvGRU").

    Cells: `EnhancedConvGRUCell`: paper 001 eq. (2)'s additions (temporal gates on h_{t-2},
    temporal and spatial skips, GroupNorm) on a ConvGRU. `groups` must divide every entry
    of `rnn_filters`.

    Arguments: as `build_conv_rnn_classifier`.
    """
    return build_conv_rnn_classifier(
        input_shape, num_classes, cell="enhanced_gru", name="econvgru", streams=streams,
        conv_filters=conv_filters, rnn_filters=rnn_filters, kernel_size=kernel_size, groups=groups,
        dense_units=dense_units, dropout=dropout, pool_after=pool_after, flow_scale=flow_scale, unroll=unroll,
        batch_size=batch_size,
    )
