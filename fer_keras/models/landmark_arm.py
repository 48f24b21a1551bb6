"""Landmark heatmaps + ARM fused with a frozen ResNet-18 + ARM (paper 003, sec. 4): `landmark_arm`.

Paper 003 (Kanamori et al.) keeps a trained ResNet-18 + ARM (the `arm_resnet18` baseline) fixed
as its "RGB-based network", adds a "landmark-based network" (a grey image of the face landmarks
-> the landmark CNN of Table 1 -> ARM), weights the landmark features by the landmark branch's
confidence and its agreement with the RGB branch (sec. 4.2, `LandmarkFusion`), concatenates the
two feature vectors and classifies with one fully connected layer. The loss is
L = L_landmark + L_overall (eq. 3), trained with AdaBelief and ExponentialLR(0.9) (sec. 5.1).

Choices where the paper is silent, or where this project differs:
- The model takes the raw landmarks, not a heatmap file: inputs are
  `{"images": (B, H, W, C) pixels in [0, 255], "landmarks": (B, 68, 2) (x, y) pixels}` (any
  frame: the sec. 4.4 alignment inside `LandmarkHeatmap` is affine-invariant), and the heatmap
  is drawn inside the model with TF ops, so evaluation, explain and exports need no extra
  preprocessing. Called with images alone, the landmarks count as missing and the heatmap is
  black, as for a record that has no landmarks (`fit.make_dataset` feeds the landmarks the
  records carry; SynthFER and the dlib-based adapters store 68 points per image).
- The heatmap size is its own argument: Table 1 needs at least 128 px (224 in the paper), more
  than the 32-64 px images the "small" size trains on. "small" draws at 128 px (the landmark
  CNN then ends at 1x1x512 and ARM gives 3x3 = 9 features); "paper" at 224 px (7x7x512 -> 121).
- `rgb_run` names a trained `arm_resnet18` run (or its model.keras): its network is loaded,
  frozen (weights, batch-norm statistics and ARM's moving global mean never change), and its
  classifier initialises the RGB part of the final classifier (the landmark part starts at
  zero), so training starts from the baseline's predictions. Without `rgb_run` the RGB branch
  is a randomly initialised, frozen ResNet-18 + ARM: only for architecture tests and sweeps;
  `fer-keras train` refuses it (`fit.build_model`).
- The landmarks are dlib's 68 points, not the paper's. Sec. 4.4 draws RAF-DB's 37 automatic (Face++) points, aligned
  by its 5 manual ones. Neither set can be computed on a new photo offline, which `predict` and the exports must do,
  so `prepare rafdb --landmarks dlib` (the default) predicts 68 points in the aligned images. `--landmarks dataset`
  stores the 5 and 37 points (for study) and no 68, and `fer-keras train` refuses this model on such data
  (`fit.load_dataset`): every heatmap would be black.
- Batch size: the paper's 256 (training) and 64 (test) are not the default (32); pass `--batch-size 256` where memory
  allows it.
- The landmark branch has its own softmax classifier (p_landmark of eq. 1, and L_landmark).
- Grey images feed the RGB branch as `arm_resnet18` does (R = G = B).
"""

import pathlib
import warnings

import keras
import numpy as np
from keras import layers, ops

from fer_keras.errors import UserError
from fer_keras.layers.amend_representation import AmendRepresentation
from fer_keras.layers.landmark_fusion import FUSION_MODES, LandmarkFusion
from fer_keras.layers.landmark_heatmap import LandmarkHeatmap
from fer_keras.models.arm import arm_resnet18
from fer_keras.models.registry import register_model
from fer_keras.models.resnet import landmark_cnn_backbone
from fer_keras.models.two_loss import functional_network

NETWORK_OUTPUTS = ("probabilities", "landmark_probabilities", "rgb_probabilities", "heatmap", "rgb_stage4", "landmark_conv5")

LANDMARK_ARM_SIZES = {
    # Table 1 at 224 px -> 7x7x512 -> reference ARM (r 16, k 32, s 8) -> 121 features, both branches.
    "paper": {"heatmap_size": 224, "upscale_factor": 16, "kernel_size": 32, "strides": 8},
    # 128 px heatmap -> 1x1x512 -> ARM (r 16, k 8, s 4) -> 9 features; the RGB branch as arm_resnet18 "small".
    "small": {"heatmap_size": 128, "upscale_factor": 16, "kernel_size": 8, "strides": 4},
}


class _ExponentialDecayPerEpoch(keras.callbacks.Callback):
    """lr(epoch) = lr(0) * gamma**epoch, PyTorch's ExponentialLR stepped once per epoch.

    The base rate is read from the optimizer at the first epoch of this `fit` call: at epoch 0
    it is lr(0); when a run resumes at epoch e > 0, the checkpointed optimizer holds the rate set
    at the start of epoch e - 1, lr(0) * gamma**(e - 1).
    """

    def __init__(self, gamma):
        super().__init__()
        self.gamma = float(gamma)
        self.base = None

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if isinstance(getattr(optimizer, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule):
            return  # the user's own schedule wins
        if self.base is None:
            self.base = float(ops.convert_to_numpy(optimizer.learning_rate)) / self.gamma ** max(epoch - 1, 0)
        optimizer.learning_rate = self.base * self.gamma**epoch


@keras.saving.register_keras_serializable(package="fer_keras")
class LandmarkARMClassifier(keras.Model):
    """Paper 003's fused classifier: predicts with the fused head, trains on L_landmark + L_overall.

    Wraps a functional `network` with inputs `{"images", "landmarks"}` and dict outputs:
    - "probabilities": the final softmax on `[F_rgb, F'_landmark]`, `(B, K)`;
    - "landmark_probabilities": the landmark branch's softmax (p_c of eq. 1), `(B, K)`;
    - "rgb_probabilities": the frozen RGB network's softmax, `(B, K)`;
    - "heatmap": the drawn landmark image, `(B, S, S, 1)`;
    - "rgb_stage4", "landmark_conv5": the feature maps Grad-CAM++ explains (ResNet-18 stage 4;
      the landmark CNN's 5th convolution).

    `model(x)` returns "probabilities" only, so evaluation and prediction see an ordinary
    classifier. `x` is `{"images": ..., "landmarks": ...}`, or images alone (then the landmarks
    count as missing: a black heatmap). `compute_loss` adds to the compiled loss (CE on the
    final output, L_overall) `landmark_loss_weight * CE(y, p_landmark)` (L_landmark), eq. (3),
    also reported as the metric "landmark_loss". `fit` decays the learning rate by `lr_decay`
    per epoch (ExponentialLR, sec. 5.1) unless the optimizer already has a schedule.

    Args:
        network: a functional `keras.Model` (or its serialized config) with the outputs above.
        landmark_loss_weight: float >= 0, weight of L_landmark (paper: 1).
        lr_decay: float in (0, 1] or None, learning-rate factor per epoch (paper: 0.9).
        **kwargs: base `keras.Model` arguments.

    Call arguments:
        inputs: dict `{"images": (B, H, W, C), "landmarks": (B, N, 2)}` or images `(B, H, W, C)`.
        training: Python bool.

    Returns:
        The final softmax `(B, K)`.

    Example:

    >>> model = get_model("landmark_arm", (64, 64, 1), 7, rgb_run="runs/arm")
    >>> model.compile(AdaBelief(1e-3), keras.losses.SparseCategoricalCrossentropy())
    >>> model.fit(dataset)       # batches ({"images": x, "landmarks": p}, y)
    >>> model.explain({"images": x, "landmarks": p})["heatmap"]

    References:
        Paper 003 (Kanamori et al.), sec. 4.1-4.3, eq. (1)-(3), sec. 5.1.
    """

    def __init__(self, network, landmark_loss_weight=1.0, lr_decay=0.9, **kwargs):
        super().__init__(**kwargs)
        network = functional_network(network, NETWORK_OUTPUTS)
        if not landmark_loss_weight >= 0:
            raise ValueError(f"landmark_loss_weight must be >= 0. Received: landmark_loss_weight={landmark_loss_weight!r}")
        if lr_decay is not None and not 0.0 < lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1] or None. Received: lr_decay={lr_decay!r}")
        self.network = network
        self.landmark_loss_weight = float(landmark_loss_weight)
        self.lr_decay = None if lr_decay is None else float(lr_decay)
        self.num_landmarks = int(network.get_layer("landmark_heatmap").input.shape[1])
        self.landmark_loss_tracker = keras.metrics.Mean(name="landmark_loss")
        self._landmark_probabilities = None
        self.built = True  # the network is built

    @property
    def inputs(self):
        """The network's inputs: images first, then landmarks."""
        return self.network.inputs

    def _as_network_inputs(self, inputs):
        if isinstance(inputs, dict):
            if "images" not in inputs:
                raise ValueError(f"landmark_arm takes {{'images', 'landmarks'}}. Received keys: {sorted(inputs)}")
            images = inputs["images"]
            landmarks = inputs.get("landmarks")
        else:
            images, landmarks = inputs, None
        images = ops.convert_to_tensor(images, dtype="float32")
        if landmarks is None:
            # No landmarks: NaN points, which LandmarkHeatmap draws as a black image.
            landmarks = ops.full((ops.shape(images)[0], self.num_landmarks, 2), float("nan"))
        return {"images": images, "landmarks": ops.convert_to_tensor(landmarks, dtype="float32")}

    def call(self, inputs, training=None):
        outputs = self.network(self._as_network_inputs(inputs), training=training)
        # Kept for compute_loss, which train_step/test_step call on this same forward pass.
        self._landmark_probabilities = outputs["landmark_probabilities"]
        return outputs["probabilities"]

    def explain(self, inputs, training=False):
        """The network's dict of outputs (see the class docstring)."""
        return self.network(self._as_network_inputs(inputs), training=training)

    def landmark_loss(self, y, landmark_probabilities, sample_weight=None):
        """L_landmark: CE of the landmark branch, reduced as Keras reduces the compiled loss."""
        loss_fn = (
            keras.losses.CategoricalCrossentropy()
            if len(y.shape) == len(landmark_probabilities.shape)
            else keras.losses.SparseCategoricalCrossentropy()
        )
        return loss_fn(y, landmark_probabilities, sample_weight=sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """L = L_overall (the compiled loss on the final output, plus regularisers) + weight * L_landmark, eq. (3)."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if self._landmark_probabilities is None:
            raise ValueError(
                "LandmarkARMClassifier.compute_loss needs the landmark probabilities of the forward pass that "
                "made y_pred: call the model on x first. Received: no forward pass"
            )
        landmark = self.landmark_loss(y, self._landmark_probabilities, sample_weight)
        self._landmark_probabilities = None
        self.landmark_loss_tracker.update_state(landmark)
        return loss + self.landmark_loss_weight * ops.cast(landmark, loss.dtype)

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, plus the per-epoch exponential learning-rate decay (`lr_decay`)."""
        if self.lr_decay is not None and self.lr_decay != 1.0:
            callbacks = list(callbacks or []) + [_ExponentialDecayPerEpoch(self.lr_decay)]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "network": keras.saving.serialize_keras_object(self.network),
                "landmark_loss_weight": self.landmark_loss_weight,
                "lr_decay": self.lr_decay,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"), custom_objects=custom_objects)
        return cls(network=network, **config)


def load_rgb_run(rgb_run, input_shape, num_classes):
    """The trained `arm_resnet18` model of a run folder (or a model.keras path), checked against the inputs."""
    path = pathlib.Path(rgb_run)
    model_path = path / "model.keras" if path.is_dir() else path
    if not model_path.is_file():
        raise UserError(
            f"rgb_run must be a trained arm_resnet18 run folder (holding model.keras) or a .keras file. "
            f"Received: rgb_run={str(rgb_run)!r}"
        )
    config_path = model_path.parent / "config.json"
    if config_path.is_file():
        import json

        trained = json.loads(config_path.read_text()).get("model")
        if trained != "arm_resnet18":
            raise UserError(f"rgb_run must be an arm_resnet18 run. Received: {str(rgb_run)!r}, a {trained!r} run")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except (ValueError, OSError, TypeError) as e:
        raise UserError(f"Cannot load rgb_run model {str(model_path)!r}: {str(e).splitlines()[0]}") from None
    names = {layer.name for layer in model.layers}
    if not {"resnet18", "arm", "probabilities"} <= names:
        raise UserError(f"rgb_run {str(rgb_run)!r} is not an arm_resnet18 model (layers: {sorted(names)}).")
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if shape != tuple(input_shape) or int(model.outputs[0].shape[-1]) != num_classes:
        raise UserError(
            f"rgb_run {str(rgb_run)!r} takes images {shape} and predicts {int(model.outputs[0].shape[-1])} classes; "
            f"this landmark_arm takes {tuple(input_shape)} and {num_classes} classes. Train both at the same "
            "--image-size, channels and label set."
        )
    return model


def _rgb_network(arm_model):
    """Frozen view of an `arm_resnet18` model: {"stage4", "features", "probabilities"}."""
    arm = arm_model.get_layer("arm")
    network = keras.Model(
        arm_model.inputs[0],
        {"stage4": arm.input, "features": arm.output, "probabilities": arm_model.outputs[0]},
        name="rgb_network",
    )
    network.trainable = False  # paper 003 sec. 4.1, 4.3: the RGB-based network is not updated
    return network


@register_model(
    "landmark_arm",
    kind="still",
    sizes=LANDMARK_ARM_SIZES,
    family="landmark_arm",
    optimizer="adabelief",
    description="Paper 003: frozen ResNet-18 + ARM (an arm_resnet18 run) fused with a landmark-heatmap CNN + ARM; "
    "F' = p_max * w * F_landmark; loss L_landmark + L_overall.",
)
def landmark_arm(
    input_shape,
    num_classes,
    rgb_run=None,
    fusion_mode="both",
    disagreement_weight=0.6,
    num_landmarks=68,
    heatmap_size=224,
    heatmap_mode="dots",
    heatmap_radius=1.0,
    heatmap_sigma=2.0,
    upscale_factor=16,
    kernel_size=32,
    strides=8,
    use_moving_global_mean=True,
    landmark_loss_weight=1.0,
    lr_decay=0.9,
    init_classifier_from_rgb=True,
    batch_size=None,
):
    """Paper 003's proposed model: RGB network (frozen) + landmark network, weighted fusion.

        F_rgb, p_rgb = ARM(ResNet18(I)), softmax          (frozen, from `rgb_run`)
        F_landmark = ARM(LandmarkCNN(heatmap(landmarks)))  (Table 1)
        p_landmark = max_c softmax(W_l F_landmark)_c       (1)
        F'_landmark = p_landmark * w * F_landmark          (2)  w = 0.6 if argmax differ else 1
        p = softmax(W [F_rgb, F'_landmark] + b)
        L = CE(y, softmax(W_l F_landmark)) + CE(y, p)      (3)

    Args:
        input_shape: `(H, W, C)` of the images, C = 1 or 3, static H and W.
        num_classes: int.
        rgb_run: None, or a trained `arm_resnet18` run folder (or its model.keras) with the
            same input shape and classes; its network becomes the frozen RGB branch. None: a
            randomly initialised frozen RGB branch (tests only; `fer-keras train` needs it).
        fusion_mode: "none", "uncertainty", "agreement" or "both" (sec. 5.4 ablation, Tables 7 and 8).
        disagreement_weight: `w` when the two branches disagree (paper: 0.6).
        num_landmarks: points per face (68 dlib, 5 RAF-DB manual).
        heatmap_size: side of the heatmap (Table 1: 224; at least 128).
        heatmap_mode, heatmap_radius, heatmap_sigma: see `LandmarkHeatmap` ("dots", radius 1).
        upscale_factor, kernel_size, strides: ARM of the landmark branch (and of an RGB branch
            built without `rgb_run`).
        use_moving_global_mean: ARM's batch-independent inference.
        landmark_loss_weight: weight of L_landmark (paper: 1).
        lr_decay: learning-rate factor per epoch (paper: ExponentialLR(0.9)); None for none.
        init_classifier_from_rgb: with `rgb_run`, start the final classifier as the RGB
            network's own on `F_rgb` and at zero on `F'_landmark`.
        batch_size: int or None, static batch size.

    Returns:
        `LandmarkARMClassifier` named "landmark_arm".

    References:
        Paper 003 (Kanamori et al.), sec. 4.1-4.4, Table 1, eqs. (1)-(3), sec. 5.1;
        Shi and Zhu, arXiv 2103.10189 (ARM).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[0] is None or input_shape[1] is None or input_shape[-1] not in (1, 3):
        raise ValueError(f"input_shape must be a static (height, width, 1 or 3). Received: input_shape={input_shape}")
    if fusion_mode not in FUSION_MODES:
        raise ValueError(f"fusion_mode must be one of {FUSION_MODES}. Received: fusion_mode={fusion_mode!r}")
    if heatmap_size < 128:
        raise ValueError(f"heatmap_size must be >= 128 (the landmark CNN of Table 1). Received: heatmap_size={heatmap_size}")
    cnn_side = ((((heatmap_size - 4) // 2 - 2) // 2 - 2) // 2 - 2) // 2 - 5
    if cnn_side * upscale_factor < kernel_size:
        smallest = next(s for s in range(128, 1025) if (((((s - 4) // 2 - 2) // 2 - 2) // 2 - 2) // 2 - 5) * upscale_factor >= kernel_size)
        raise ValueError(
            f"The landmark ARM (upscale_factor={upscale_factor}, kernel_size={kernel_size}) needs heatmap_size >= "
            f"{smallest}. Received: heatmap_size={heatmap_size}"
        )

    if rgb_run is None:
        warnings.warn(
            "landmark_arm without rgb_run: the frozen RGB branch is randomly initialised (for tests only). "
            "Train an arm_resnet18 run first and pass rgb_run=<its run folder>.",
            stacklevel=2,
        )
        arm_model = arm_resnet18(input_shape, num_classes, upscale_factor=upscale_factor, kernel_size=kernel_size,
                                 strides=strides, use_moving_global_mean=use_moving_global_mean)
    else:
        arm_model = load_rgb_run(rgb_run, input_shape, num_classes)
    rgb_network = _rgb_network(arm_model)

    images = keras.Input(shape=input_shape, batch_size=batch_size, name="images")
    landmarks = keras.Input(shape=(num_landmarks, 2), batch_size=batch_size, name="landmarks")
    rgb = rgb_network(images)

    heatmap = LandmarkHeatmap(size=heatmap_size, mode=heatmap_mode, radius=heatmap_radius, sigma=heatmap_sigma,
                              name="landmark_heatmap")(landmarks)  # (B, S, S, 1)
    cnn = landmark_cnn_backbone((heatmap_size, heatmap_size, 1), name="landmark_cnn_table1")
    landmark_cnn = keras.Model(cnn.inputs[0], {"conv5": cnn.get_layer("conv5").output, "features": cnn.outputs[0]},
                               name="landmark_cnn")
    landmark = landmark_cnn(heatmap)  # conv5 (B, s+3, s+3, 512), features (B, s, s, 512)
    landmark_features = AmendRepresentation(upscale_factor=upscale_factor, kernel_size=kernel_size, strides=strides,
                                            use_moving_global_mean=use_moving_global_mean,
                                            name="landmark_arm")(landmark["features"])  # (B, h'*w')
    landmark_probabilities = layers.Dense(num_classes, activation="softmax",
                                          name="landmark_probabilities")(landmark_features)
    fused = LandmarkFusion(mode=fusion_mode, disagreement_weight=disagreement_weight, name="fusion")(
        [rgb["features"], landmark_features, rgb["probabilities"], landmark_probabilities]
    )  # (B, D_rgb + D_landmark)
    classifier = layers.Dense(num_classes, activation="softmax", name="probabilities")
    probabilities = classifier(fused)

    if rgb_run is not None and init_classifier_from_rgb:
        rgb_kernel, rgb_bias = arm_model.get_layer("probabilities").get_weights()
        kernel = np.zeros((fused.shape[-1], num_classes), np.float32)
        kernel[: rgb_kernel.shape[0]] = rgb_kernel  # F_rgb rows as the baseline; F'_landmark rows start at 0
        classifier.set_weights([kernel, rgb_bias])

    network = keras.Model(
        {"images": images, "landmarks": landmarks},
        {
            "probabilities": probabilities,
            "landmark_probabilities": landmark_probabilities,
            "rgb_probabilities": rgb["probabilities"],
            "heatmap": heatmap,
            "rgb_stage4": rgb["stage4"],
            "landmark_conv5": landmark["conv5"],
        },
        name="landmark_arm_network",
    )
    return LandmarkARMClassifier(network, landmark_loss_weight=landmark_loss_weight, lr_decay=lr_decay,
                                 name="landmark_arm")

