"""Backbones for the `landmark_arm` family (paper 003): ResNet-18 and the landmark CNN.

`resnet18_backbone` is torchvision's `resnet18` without `avgpool` and `fc`, layer for
layer, so that PyTorch weights (ImageNet from torchvision, MS-Celeb-1M from the FER
literature, or a trained ARM model) can be converted with `convert_torch_state_dict` /
`load_torch_state_dict`. Nothing is downloaded: see docs/pretrained_weights.md.

`landmark_cnn_backbone` is the landmark-heatmap CNN of paper 003, Table 1.
"""

import os
import re

import keras
import numpy as np

from fer_keras.layers.basic_block import BasicBlock

RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (filters, first stride)
RESNET18_BLOCKS_PER_STAGE = 2
_BN_EPSILON = 1e-5  # PyTorch BatchNorm2d default
_BN_MOMENTUM = 0.9  # PyTorch momentum=0.1 (PyTorch weighs the new value, Keras the old)

# torch BatchNorm2d parameter -> keras BatchNormalization variable
_TORCH_BN = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
# The ARM reference model keeps `nn.Sequential(*list(resnet.children())[:-2])` as
# `features`: children 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-layer4.
_SEQUENTIAL_PREFIXES = {
    "features.0.": "conv1.",
    "features.1.": "bn1.",
    "features.4.": "layer1.",
    "features.5.": "layer2.",
    "features.6.": "layer3.",
    "features.7.": "layer4.",
}


def _check_input_shape(input_shape, channels_hint):
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels). Received: input_shape={input_shape}"
        )
    if input_shape[-1] is None:
        raise ValueError(
            f"The channel dimension of input_shape must be known ({channels_hint}). "
            f"Received: input_shape={input_shape}"
        )


def resnet18_backbone(input_shape=(224, 224, 3), weights=None, name="resnet18"):
    """ResNet-18 feature extractor: torchvision's `resnet18` up to `layer4`.

    7x7/2 stem convolution (64, no bias) + BN + ReLU, 3x3/2 max pooling, then four stages
    of two `BasicBlock`s (64, 128, 256, 512 filters; the first block of stages 2-4 has
    stride 2 and a 1x1 projection shortcut). BN epsilon 1e-5, momentum 0.9 (PyTorch's
    defaults). Padding is explicit and symmetric as in PyTorch. The max pooling pads with
    zeros instead of PyTorch's -inf, which is the same after a ReLU (inputs >= 0).

    Layer names follow torchvision's (`conv1`, `bn1`, `layer1_0` ... `layer4_1`), which is
    what `load_torch_state_dict` relies on.

    Args:
        input_shape: `(H, W, C)`. 224x224x3 gives 7x7x512 features; 112 gives 4x4;
            64 gives 2x2. The output size is `ceil(H / 32)`.
        weights: None (random initialisation as in torchvision) or the path of a Keras
            `.weights.h5` file saved from this same architecture (for example after
            `load_torch_state_dict` + `model.save_weights(...)`). Nothing is downloaded.
        name: model name.

    Returns:
        `keras.Model` mapping `(B, H, W, C)` images to `(B, ceil(H/32), ceil(W/32), 512)`
        features. Inputs are expected normalised as the weights were trained (for
        torchvision ImageNet weights: RGB in [0, 1], minus mean (0.485, 0.456, 0.406),
        divided by std (0.229, 0.224, 0.225)).

    Example:

    >>> model = resnet18_backbone((64, 64, 3))
    >>> model.output_shape
    (None, 2, 2, 512)

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Table 1
        (18-layer); torchvision `resnet18`; paper 003 sec. 4.1 (ResNet18 + ARM).
    """
    _check_input_shape(input_shape, "3 for RGB")
    if weights is not None:
        weights = os.fspath(weights)
        if not weights.endswith(".weights.h5"):
            raise ValueError(
                "weights must be None or the path of a Keras '.weights.h5' file; convert "
                "PyTorch checkpoints with load_torch_state_dict first "
                f"(docs/pretrained_weights.md). Received: weights={weights!r}"
            )
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file not found. Received: weights={weights!r}")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(
        64,
        7,
        strides=2,
        padding="valid",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(
            2.0, mode="fan_out", distribution="untruncated_normal"
        ),
        name="conv1",
    )(x)
    x = keras.layers.BatchNormalization(
        momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name="bn1"
    )(x)
    x = keras.layers.ReLU(name="relu")(x)
    # Zero padding equals PyTorch's -inf padding here because x >= 0 after the ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)
    for stage, (filters, first_stride) in enumerate(RESNET18_STAGES, start=1):
        for block in range(RESNET18_BLOCKS_PER_STAGE):
            x = BasicBlock(
                filters,
                strides=first_stride if block == 0 else 1,
                bn_momentum=_BN_MOMENTUM,
                bn_epsilon=_BN_EPSILON,
                name=f"layer{stage}_{block}",
            )(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def landmark_cnn_backbone(input_shape=(224, 224, 1), name="landmark_cnn"):
    """Landmark-heatmap CNN of paper 003, Table 1: 224x224x1 heatmap -> 7x7x512 features.

    | layer   | kernel | stride | output (224 input) |
    |---------|--------|--------|--------------------|
    | conv    | 5      | 1      | 220x220x32         |
    | maxpool | 2      | 2      | 110x110x32         |
    | conv    | 3      | 1      | 108x108x64         |
    | maxpool | 2      | 2      | 54x54x64           |
    | conv    | 3      | 1      | 52x52x128          |
    | maxpool | 2      | 2      | 26x26x128          |
    | conv    | 3      | 1      | 24x24x256          |
    | maxpool | 2      | 2      | 12x12x256          |
    | conv    | 3      | 1      | 10x10x512          |
    | conv    | 4      | 1      | 7x7x512            |

    The output sizes of Table 1 imply "valid" (no) padding everywhere. The paper does
    not name activations or normalisation; each convolution here has a bias and a
    ReLU (the last one too, as ResNet-18's features before ARM are post-ReLU), and there
    is no batch normalisation. The last 4x4 convolution only resizes the map to 7x7 so
    that ARM's pixel shuffle (x16) and de-albino kernel give 11x11 as for ResNet-18
    (paper 003, sec. 4.1).

    Args:
        input_shape: `(H, W, C)`, default `(224, 224, 1)`. The smallest square input is
            128 (1x1x512 output).
        name: model name.

    Returns:
        `keras.Model` mapping `(B, H, W, C)` heatmaps to `(B, h, w, 512)` features,
        `h = ((((H - 4)//2 - 2)//2 - 2)//2 - 2)//2 - 5`.

    Example:

    >>> landmark_cnn_backbone().output_shape
    (None, 7, 7, 512)

    References:
        Paper 003 (Kanamori et al.), sec. 4.1, Table 1, Fig. 2 ("Landmark CNN").
    """
    _check_input_shape(input_shape, "1 for a grey heatmap")
    for size in input_shape[:2]:
        if size is not None:
            out = ((((size - 4) // 2 - 2) // 2 - 2) // 2 - 2) // 2 - 5
            if out < 1:
                raise ValueError(
                    "The landmark CNN needs at least 128x128 input (Table 1 uses 224). "
                    f"Received: input_shape={input_shape}"
                )
    inputs = keras.Input(shape=tuple(input_shape), name="heatmap")
    x = inputs
    table1 = ((32, 5, True), (64, 3, True), (128, 3, True), (256, 3, True),
              (512, 3, False), (512, 4, False))  # (filters, kernel, maxpool after)
    for i, (filters, kernel, pool) in enumerate(table1, start=1):
        x = keras.layers.Conv2D(
            filters, kernel, strides=1, padding="valid", activation="relu", name=f"conv{i}"
        )(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{i}")(x)
    return keras.Model(inputs, x, name=name)


def _normalise_torch_key(key):
    if key.startswith("module."):  # nn.DataParallel / DistributedDataParallel
        key = key[len("module."):]
    for prefix, replacement in _SEQUENTIAL_PREFIXES.items():
        if key.startswith(prefix):
            return replacement + key[len(prefix):]
    return key


def _torch_key_to_keras_path(key):
    """Keras variable path of a torchvision resnet18 state-dict key, or None."""
    module, _, param = key.rpartition(".")
    match = re.fullmatch(
        r"layer([1-4])\.([01])\.(conv1|bn1|conv2|bn2|downsample\.0|downsample\.1)", module
    )
    if module in ("conv1", "bn1"):
        layer_path = module
    elif match:
        stage, block, sub = match.groups()
        sub = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(sub, sub)
        layer_path = f"layer{stage}_{block}/{sub}"
    else:
        return None
    if layer_path.rpartition("/")[2] in ("conv1", "conv2", "downsample_conv"):
        return f"{layer_path}/kernel" if param == "weight" else None
    return f"{layer_path}/{_TORCH_BN[param]}" if param in _TORCH_BN else None


def _resnet18_keras_paths():
    """Variable paths of `resnet18_backbone().weights`, in that order."""
    bn = ("gamma", "beta", "moving_mean", "moving_variance")
    paths = ["conv1/kernel"] + [f"bn1/{v}" for v in bn]
    for stage, (_, first_stride) in enumerate(RESNET18_STAGES, start=1):
        for block in range(RESNET18_BLOCKS_PER_STAGE):
            prefix = f"layer{stage}_{block}"
            paths.append(f"{prefix}/conv1/kernel")
            paths += [f"{prefix}/bn1/{v}" for v in bn]
            paths.append(f"{prefix}/conv2/kernel")
            paths += [f"{prefix}/bn2/{v}" for v in bn]
            if block == 0 and stage > 1:
                paths.append(f"{prefix}/downsample_conv/kernel")
                paths += [f"{prefix}/downsample_bn/{v}" for v in bn]
    return paths


def _convert_to_paths(state_dict, strict):
    converted, unused = {}, []
    for raw_key, value in state_dict.items():
        key = _normalise_torch_key(raw_key)
        if key.endswith("num_batches_tracked") or key.startswith("fc."):
            continue
        path = _torch_key_to_keras_path(key)
        if path is None:
            unused.append(raw_key)
            continue
        array = np.asarray(value, dtype=np.float32)
        if path.endswith("/kernel"):
            if array.ndim != 4:
                raise ValueError(
                    f"A convolution weight must be 4D (O, I, kH, kW). Received: {raw_key} "
                    f"with shape {array.shape}"
                )
            array = np.transpose(array, (2, 3, 1, 0))  # OIHW -> HWIO
        converted[path] = array
    if strict and unused:
        raise ValueError(
            "state_dict has keys that are not part of torchvision's resnet18 (fc.* and "
            "num_batches_tracked are skipped); pass strict=False to ignore them. "
            f"Received: {unused}"
        )
    missing = [p for p in _resnet18_keras_paths() if p not in converted]
    if missing:
        raise ValueError(f"state_dict lacks ResNet-18 weights for Keras variables: {missing}")
    return converted


def convert_torch_state_dict(state_dict, strict=True):
    """Converts a torchvision `resnet18` state dict (NumPy arrays) to Keras weights.

    Does not import torch: pass `{k: v.numpy() for k, v in sd.items()}`. Convolution
    weights go from OIHW to HWIO; BN `weight, bias, running_mean, running_var` become
    `gamma, beta, moving_mean, moving_variance`. Keys `fc.*` and `*.num_batches_tracked`
    are skipped; a `module.` prefix (DataParallel) and the ARM reference model's
    `features.N.` names (`features.0` = conv1 ... `features.7` = layer4) are understood.

    Args:
        state_dict: mapping from PyTorch parameter names to arrays.
        strict: bool; True raises on keys that are not ResNet-18 weights (for example
            `arm.*` of an ARM checkpoint), False ignores them.

    Returns:
        list of `np.ndarray` in the order of `resnet18_backbone(...).weights`, ready for
        `model.set_weights(...)`.

    Raises:
        ValueError: on missing weights, unknown keys (strict) or a wrongly shaped kernel.
    """
    converted = _convert_to_paths(state_dict, strict)
    return [converted[p] for p in _resnet18_keras_paths()]


def load_torch_state_dict(model, state_dict, strict=True):
    """Loads a torchvision `resnet18` state dict (NumPy arrays) into `resnet18_backbone`.

    Matches weights by Keras variable path (`layer2_0/downsample_conv/kernel` ...), so it
    also works on a larger model that contains the backbone's layers under the same
    names. See `convert_torch_state_dict` for the conversion rules.

    Args:
        model: a `keras.Model` from `resnet18_backbone` (or containing its layers).
        state_dict: mapping from PyTorch parameter names to arrays.
        strict: as in `convert_torch_state_dict`.

    Returns:
        The number of variables assigned (100 for ResNet-18: 20 convolution kernels and
        20 x 4 BN variables).

    Raises:
        ValueError: as `convert_torch_state_dict`, or when a model variable is missing
            or has another shape than the converted array.
    """
    converted = _convert_to_paths(state_dict, strict)
    by_path = {v.path: v for v in model.weights}
    missing = [p for p in converted if p not in by_path]
    if missing:
        raise ValueError(
            f"The model has no variables named {missing}; was it built by resnet18_backbone?"
        )
    for path, array in converted.items():
        variable = by_path[path]
        if tuple(variable.shape) != array.shape:
            raise ValueError(
                f"Shape mismatch for {path}: model {tuple(variable.shape)}, "
                f"converted {array.shape}."
            )
        variable.assign(array)
    return len(converted)
