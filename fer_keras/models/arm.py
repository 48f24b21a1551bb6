"""ResNet-18 + ARM (Shi and Zhu 2021): the RGB baseline network of paper 003, `arm_resnet18`.

The landmark-heatmap fusion of paper 003 (`landmark_arm`) builds on this network with its
weights frozen; this module registers the baseline alone.
"""

import math

import keras
from keras import layers

from fer_keras.layers.amend_representation import AmendRepresentation
from fer_keras.models.registry import register_model
from fer_keras.models.resnet import resnet18_backbone

# torchvision's ImageNet statistics, as the ARM reference code normalises its inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESNET18_STRIDE = 32

ARM_SIZES = {
    # Reference ARM: 224 px -> 7x7x512 -> pixel shuffle x16 -> 112x112x2 -> 32x32/8 kernel -> 11x11 = 121.
    "paper": {"upscale_factor": 16, "kernel_size": 32, "strides": 8},
    # 64 px -> 2x2x512 -> 32x32x2 -> 8x8/4 -> 7x7 = 49; 112 px -> 15x15 = 225; 32 px -> 3x3 = 9.
    "small": {"upscale_factor": 16, "kernel_size": 8, "strides": 4},
}


def arm_output_size(image_size, upscale_factor, kernel_size, strides):
    """Side of the ARM output map for a square `image_size` input to ResNet-18 + ARM."""
    features = math.ceil(image_size / _RESNET18_STRIDE)  # ResNet-18 output side
    return (features * upscale_factor - kernel_size) // strides + 1


@register_model(
    "arm_resnet18",
    kind="still",
    sizes=ARM_SIZES,
    family="arm",
    optimizer="adabelief",
    description="Paper 003 baseline (Shi and Zhu 2021): ResNet-18 features + Amend Representation Module + softmax.",
)
def arm_resnet18(
    input_shape,
    num_classes,
    upscale_factor=16,
    kernel_size=32,
    strides=8,
    use_moving_global_mean=True,
    imagenet_normalization=True,
    weights=None,
    batch_size=None,
):
    """ResNet-18 + Amend Representation Module (ARM) + a softmax classifier.

    Images `(B, H, W, C)` in [0, 255] are divided by 255; grey images (C = 1) are repeated
    to 3 channels inside the model, so that the first convolution always has torchvision's
    3 input channels and RGB (ImageNet or MS-Celeb-1M) weights load unchanged. Then
    torchvision's ImageNet mean/std normalisation (as in the ARM reference code), the
    ResNet-18 feature extractor (`resnet18_backbone`, up to `layer4`), ARM in place of the
    global average pooling (`AmendRepresentation`: pixel shuffle x`upscale_factor`,
    de-albino kernel, affinity), and a `Dense` softmax named "probabilities" (the reference
    `fc = nn.Linear(121, num_classes)`; no dropout, the reference's default drop rate is 0).

    Sizes: "paper" is the reference ARM (r 16, kernel 32, stride 8) for 224x224 input
    (7x7x512 features -> 11x11 -> 121 features). "small" (r 16, kernel 8, stride 4) keeps
    a few features on small inputs: 32 px -> 3x3, 64 px -> 7x7, 112 px -> 15x15. The ARM
    output side is `(ceil(H / 32) * r - k) // s + 1` and must be >= 1.

    The registration names AdaBelief, which paper 003 uses for its proposed model (sec. 5.1, Table 4). For this
    baseline the paper says its authors used Adam (sec. 5.1), and paper 003 itself took their pre-trained model
    (sec. 4.3). fer-keras trains it with AdaBelief too, so that the baseline and `landmark_arm` are trained alike
    (docs/benchmarks.md was measured so).

    Args:
        input_shape: `(H, W, C)`, C = 1 or 3, static H and W.
        num_classes: int.
        upscale_factor, kernel_size, strides: ARM's pixel-shuffle factor `r`, de-albino
            kernel size `k` and stride `s`.
        use_moving_global_mean: ARM's batch-independent inference (see `AmendRepresentation`).
        imagenet_normalization: bool; subtract torchvision's ImageNet mean and divide by
            its std after scaling to [0, 1].
        weights: None or the path of a Keras `.weights.h5` file of `resnet18_backbone`
            (for example converted from torchvision with `load_torch_state_dict`); nothing
            is downloaded.
        batch_size: int or None, static batch size (1 for the TFLite export).

    Returns:
        `keras.Model` "arm_resnet18": input "images", output "probabilities" `(B, num_classes)`.

    References:
        Shi and Zhu, "Learning to Amend Facial Expression Representation via De-albino and
        Affinity", arXiv 2103.10189 (2021), and their code (`ResNet18_ARM___RAF`);
        paper 003 (Kanamori et al.), sec. 3, 4.1 (RGB-based network), 5.1 (AdaBelief).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[0] is None or input_shape[1] is None:
        raise ValueError(f"input_shape must be a static (height, width, channels). Received: input_shape={input_shape}")
    channels = input_shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"arm_resnet18 takes grey (1) or RGB (3) images. Received: input_shape={input_shape}")
    for side in input_shape[:2]:
        if arm_output_size(side, upscale_factor, kernel_size, strides) < 1:
            smallest = math.ceil(kernel_size / upscale_factor) * _RESNET18_STRIDE - _RESNET18_STRIDE + 1
            raise ValueError(
                f"ARM (upscale_factor={upscale_factor}, kernel_size={kernel_size}) needs images of at least "
                f"{smallest} px (ResNet-18 features of ceil(H/32) >= kernel_size/upscale_factor); use size 'small' "
                f"or a larger --image-size. Received: input_shape={input_shape}"
            )

    inputs = keras.Input(shape=input_shape, batch_size=batch_size, name="images")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    if channels == 1:
        # Grey faces (CK+, JAFFE...) feed the RGB stem unchanged: R = G = B.
        x = layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])  # (B, H, W, 3)
    if imagenet_normalization:
        x = layers.Normalization(
            mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_normalization"
        )(x)
    backbone = resnet18_backbone(input_shape[:2] + (3,), weights=weights, name="resnet18")
    x = backbone(x)  # (B, ceil(H/32), ceil(W/32), 512)
    x = AmendRepresentation(
        upscale_factor=upscale_factor,
        kernel_size=kernel_size,
        strides=strides,
        use_moving_global_mean=use_moving_global_mean,
        name="arm",
    )(x)  # (B, H'*W')
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="arm_resnet18")
