"""Stacked (denoising) autoencoder classifier of paper 002: `sae`, `sdae`, `sae_nopretrain`.

A fully connected network of sigmoid units on the pixels of a 64x64 grey face. Its hidden
layers W1..W4 are initialised by greedy layer-wise autoencoder pretraining (W1, W2 as
denoising autoencoders with masking noise, W3, W4 as plain autoencoders), then the whole
network with a softmax layer W5 on top is fine-tuned with the labels (paper 002, sec. 2.1,
2.2, 3.2, Fig. 5). `fer-keras train` runs `model.pretrain(...)` before `fit` (see
`fer_keras.models.registry`).
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from fer_keras.models.registry import register_model

# ITU-R BT.601 luma, the weights of tf.image.rgb_to_grayscale and PIL's "L" mode.
_GREY_WEIGHTS = (0.299, 0.587, 0.114)

SAE_SIZES = {
    # Hinton & Salakhutdinov (2006)-like halving widths; tiny enough for CPU tests.
    "small": {"hidden_units": (256, 128, 64, 32)},
    # Paper 002 gives no widths (Fig. 5 shows W1..W5 only); see StackedAutoencoderClassifier.
    "paper": {"hidden_units": (2000, 1000, 500, 250), "image_size": 64},
}


@keras.saving.register_keras_serializable(package="fer_keras")
class MaskingNoise(keras.layers.Layer):
    """Masking noise of a denoising autoencoder: sets a random `fraction` of units to 0.

    Unlike `Dropout`, the kept units are not rescaled: the corrupted input `x~` keeps the
    values of `x` where it is not zeroed (Vincent et al. 2010, sec. 4.2; paper 002,
    sec. 2.2: "ランダムにユニットの値を 0 にする"). Active only when `training=True`.

    Args:
        fraction: float in [0, 1), the probability that each unit is set to 0.
        seed: int or None, seed of the layer's random generator.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: tensor of any shape.
        training: bool; noise is applied only when True.

    Example:

    >>> x = keras.ops.ones((2, 1000))
    >>> y = MaskingNoise(0.25, seed=0)(x, training=True)  # about 500 zeros, the rest 1.0

    References:
        Vincent et al., "Stacked Denoising Autoencoders", JMLR 11 (2010), sec. 4.2;
        paper 002 (Nishime et al.), sec. 2.2, Fig. 3.
    """

    def __init__(self, fraction, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1). Received: fraction={fraction}")
        self.fraction = float(fraction)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        if not training or self.fraction == 0.0:
            return inputs
        keep = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator) >= self.fraction
        return inputs * ops.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"fraction": self.fraction, "seed": self.seed})
        return config


def _check_image_shape(image_shape):
    if len(tuple(image_shape)) != 3 or any(d is None for d in image_shape):
        raise ValueError(
            "input_shape must be a static (height, width, channels). "
            f"Received: input_shape={image_shape}"
        )
    if image_shape[-1] not in (1, 3):
        raise ValueError(
            f"The stacked autoencoder takes grey (1) or RGB (3) images. Received: input_shape={image_shape}"
        )


@keras.saving.register_keras_serializable(package="fer_keras")
class StackedAutoencoderClassifier(keras.Model):
    """Stacked (denoising) autoencoder classifier: pixels -> W1..W4 (sigmoid) -> W5 (softmax).

    Network (paper 002, Fig. 5): the input units are the pixels of a grey image (64x64 in
    the paper, so 4096 units), four fully connected sigmoid layers W1..W4 and a softmax
    layer W5 with one unit per emotion. Inputs are raw pixels in [0, 255]; the model
    divides by 255, turns RGB into grey with BT.601 weights (0.299, 0.587, 0.114) when
    given 3 channels, resizes to `image_size` when that is set and differs from the input,
    and flattens row-major.

    Pretraining (`pretrain`, sec. 2.1, 3.2): for each hidden layer k in turn, a
    one-hidden-layer autoencoder `code_{k-1} -> sigmoid(W_k) -> sigmoid(decoder)` is
    trained to reproduce `code_{k-1}` (the pixels for k = 1; the codes of the already
    pretrained layers below otherwise) with mean squared error, and its encoder weights are
    copied into layer k. The first `denoising_layers` autoencoders are denoising: their
    input is corrupted by `MaskingNoise(masking_fraction)` and the target is the clean code.
    W5 is learned only in the supervised fine-tuning of the whole network (`fit`).

    Choices where paper 002 is silent (it gives no widths, noise level, loss, optimiser
    or epochs):

    - widths: "paper" size (2000, 1000, 500, 250), the halving stack of Hinton and
      Salakhutdinov (2006) on 4096 inputs; "small" (256, 128, 64, 32).
    - masking fraction 0.25 (Vincent et al. 2010 report 10-40% masking as typical).
    - reconstruction loss: mean squared error (sec. 2.1: output equals input, learnt by
      back-propagation); decoder weights are untied (a separate matrix, discarded after
      pretraining); decoder units are sigmoid like the encoder (pixels and codes lie in [0, 1]).
    - pretraining optimiser: Adam with `pretrain_learning_rate`, `epochs` epochs per layer
      (the `epochs` of `fer-keras train`), the batches of the training set.
    - output: paper 002 has one sigmoid unit per emotion and takes the largest (sec. 2.1,
      3.2); here W5 ends in a softmax trained with cross-entropy, which picks the same class
      and gives probabilities that the other models' exports and metrics share.
    - split: paper 002 draws 10 test images per emotion at random (sec. 3.1, Table 2; an image
      split, so a subject can be on both sides) and averages 6 seeds; fer-keras splits by
      subject (k-fold, or a dataset's official split), which is stricter.

    Args:
        image_shape: `(H, W, C)` of the input images, C = 1 (grey) or 3 (RGB).
        num_classes: int, number of emotions (W5 output units).
        hidden_units: tuple of ints, the widths of W1, W2, ... (paper: four layers).
        denoising_layers: int, how many of the lowest layers are pretrained as denoising
            autoencoders (paper: 2, i.e. W1 and W2; 0 is a plain stacked autoencoder).
        masking_fraction: float in [0, 1), the fraction of input units zeroed for those.
        layerwise_pretraining: bool; False makes `pretrain` a no-op (random initialisation,
            the comparison without pretraining).
        image_size: int or None; resize the (grey) image to `image_size` squared inside the
            model (paper: 64). None keeps the input size.
        pretrain_learning_rate: float, Adam learning rate of the autoencoders.
        seed: int or None, seed of the masking noise and the autoencoders' initialisation.
        batch_size: int or None, static batch size of the input (1 for TFLite export).
        **kwargs: `name`, `trainable`.

    Call arguments:
        inputs: `(B, H, W, C)` float images in [0, 255].
        training: bool, as for any Keras model.

    Input shape: `(batch, H, W, C)`. Output shape: `(batch, num_classes)` probabilities.

    Example:

    >>> model = StackedAutoencoderClassifier((32, 32, 1), 7, hidden_units=(64, 32, 16, 8))
    >>> results = model.pretrain(train_ds, epochs=5)  # train_ds yields (images, labels)
    >>> model.compile("adam", "sparse_categorical_crossentropy"); model.fit(train_ds)

    References:
        - Paper 002 (Nishime et al.), sec. 2.1 (stacked AE), 2.2 (denoising AE, masking
          noise), 3.2 (W1, W2 by DAE, W3, W4 by AE, fine-tuning, W5), 3.5 and Fig. 6
          (input saliency from weights: `first_layer_saliency`).
        - Bengio et al., "Greedy Layer-Wise Training of Deep Networks", NIPS 2006.
        - Vincent et al., "Stacked Denoising Autoencoders", JMLR 11 (2010).
    """

    def __init__(
        self,
        image_shape,
        num_classes,
        hidden_units=(256, 128, 64, 32),
        denoising_layers=2,
        masking_fraction=0.25,
        layerwise_pretraining=True,
        image_size=None,
        pretrain_learning_rate=1e-3,
        seed=None,
        batch_size=None,
        **kwargs,
    ):
        image_shape = tuple(image_shape)
        hidden_units = tuple(int(u) for u in hidden_units)
        _check_image_shape(image_shape)
        if not hidden_units or min(hidden_units) < 1:
            raise ValueError(f"hidden_units must be a non-empty tuple of ints >= 1. Received: hidden_units={hidden_units}")
        if not 0 <= denoising_layers <= len(hidden_units):
            raise ValueError(
                f"denoising_layers must be in [0, {len(hidden_units)}] (the number of hidden layers). "
                f"Received: denoising_layers={denoising_layers}"
            )
        if not 0.0 <= masking_fraction < 1.0:
            raise ValueError(f"masking_fraction must be in [0, 1). Received: masking_fraction={masking_fraction}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be None or >= 1. Received: image_size={image_size}")

        inputs = keras.Input(shape=image_shape, batch_size=batch_size, name="images")
        preprocess = _Preprocess(image_shape, image_size)
        x = preprocess(inputs)  # (B, h*w)
        for k, units in enumerate(hidden_units, start=1):
            x = layers.Dense(units, activation="sigmoid", name=f"hidden{k}")(x)  # W_k
        outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)  # W5
        super().__init__(inputs, outputs, **kwargs)

        self.image_shape = image_shape
        self.num_classes = int(num_classes)
        self.hidden_units = hidden_units
        self.denoising_layers = int(denoising_layers)
        self.masking_fraction = float(masking_fraction)
        self.layerwise_pretraining = bool(layerwise_pretraining)
        self.image_size = image_size
        self.pretrain_learning_rate = float(pretrain_learning_rate)
        self.seed = seed
        self.batch_size = batch_size
        self.pixel_shape = preprocess.pixel_shape  # (h, w) of the flattened grey image

    def flat_pixels(self, images):
        """The input units of W1: `(B, H, W, C)` images in [0, 255] -> `(B, h*w)` in [0, 1]."""
        return self.get_layer("preprocess")(images)

    def codes(self, images, depth):
        """Output of hidden layer `depth` (0: the input units) for a batch of images."""
        x = self.flat_pixels(images)
        for k in range(1, depth + 1):
            x = self.get_layer(f"hidden{k}")(x)
        return x

    def pretrain(self, train_ds, epochs=1, verbose=0):
        """Greedy layer-wise (denoising) autoencoder pretraining of W1, W2, ... (sec. 2.1, 3.2).

        Args:
            train_ds: finite `tf.data.Dataset` of `(images, labels)` (or `(images, labels,
                meta)`) batches, one pass per epoch; only the images are used.
            epochs: int >= 1, training epochs of each autoencoder.
            verbose: Keras verbosity of each autoencoder's `fit`.

        Returns:
            A list with one dict per hidden layer: `layer` (name), `denoising` (bool),
            `autoencoder` (the trained one-hidden-layer `keras.Model`; its `encoder`
            layer's weights are now those of the classifier's layer), `loss_before` and
            `loss_after` (mean squared reconstruction error of the clean codes over
            `train_ds`, before and after training), `history` (the `fit` history dict).
            An empty list when `layerwise_pretraining` is False.
        """
        if not self.layerwise_pretraining:
            return []
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1. Received: epochs={epochs}")
        if train_ds.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError("train_ds must be finite (one pass = one epoch); it repeats forever.")
        results = []
        in_dim = self.pixel_shape[0] * self.pixel_shape[1]
        for k, units in enumerate(self.hidden_units, start=1):
            denoising = k <= self.denoising_layers
            autoencoder = _autoencoder(
                in_dim,
                units,
                self.masking_fraction if denoising else 0.0,
                seed=None if self.seed is None else self.seed + k,
                name=f"autoencoder{k}",
            )
            autoencoder.compile(
                optimizer=keras.optimizers.Adam(self.pretrain_learning_rate),
                loss=keras.losses.MeanSquaredError(),
            )
            if verbose:
                kind = "denoising autoencoder" if denoising else "autoencoder"
                print(f"Pretraining {self.name} layer hidden{k} ({kind}, {in_dim} -> {units}), {epochs} epochs")
            codes_ds = train_ds.map(
                lambda images, *_, depth=k - 1: _pair(self.codes(images, depth)),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            loss_before = float(autoencoder.evaluate(codes_ds, verbose=0))
            history = autoencoder.fit(codes_ds, epochs=epochs, verbose=verbose, shuffle=False)
            loss_after = float(autoencoder.evaluate(codes_ds, verbose=0))
            if not (math.isfinite(loss_before) and math.isfinite(loss_after)):
                raise ValueError(
                    f"The reconstruction loss of autoencoder {k} is not finite "
                    f"(before {loss_before}, after {loss_after}); lower pretrain_learning_rate."
                )
            self.get_layer(f"hidden{k}").set_weights(autoencoder.get_layer("encoder").get_weights())
            results.append(
                {
                    "layer": f"hidden{k}",
                    "denoising": denoising,
                    "autoencoder": autoencoder,
                    "loss_before": loss_before,
                    "loss_after": loss_after,
                    "history": history.history,
                }
            )
            in_dim = units
        return results

    def get_config(self):
        return {
            "image_shape": self.image_shape,
            "num_classes": self.num_classes,
            "hidden_units": self.hidden_units,
            "denoising_layers": self.denoising_layers,
            "masking_fraction": self.masking_fraction,
            "layerwise_pretraining": self.layerwise_pretraining,
            "image_size": self.image_size,
            "pretrain_learning_rate": self.pretrain_learning_rate,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _pair(codes):
    return codes, codes  # an autoencoder's input is its target


def _autoencoder(in_dim, units, masking_fraction, seed, name):
    """One-hidden-layer (denoising) autoencoder: [mask] -> sigmoid encoder -> sigmoid decoder."""
    inputs = keras.Input(shape=(in_dim,), name="codes")
    x = MaskingNoise(masking_fraction, seed=seed, name="masking_noise")(inputs)
    init = keras.initializers.GlorotUniform(seed=seed)
    x = layers.Dense(units, activation="sigmoid", kernel_initializer=init, name="encoder")(x)
    outputs = layers.Dense(in_dim, activation="sigmoid", kernel_initializer=init, name="decoder")(x)
    return keras.Model(inputs, outputs, name=name)


class _Preprocess(keras.layers.Layer):
    """[0, 255] images -> grey [0, 1] -> optional resize -> row-major flat pixels.

    Rebuilt by `StackedAutoencoderClassifier.__init__` (never deserialised on its own).
    """

    def __init__(self, image_shape, image_size=None, **kwargs):
        kwargs.setdefault("name", "preprocess")
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.image_size = image_size
        h, w = self.image_shape[:2]
        self.pixel_shape = (image_size, image_size) if image_size else (h, w)
        self.resize = None
        if image_size and (h, w) != self.pixel_shape:
            self.resize = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")

    def call(self, images):
        x = ops.cast(images, self.compute_dtype) / 255.0
        if self.image_shape[-1] == 3:
            weights = ops.convert_to_tensor(_GREY_WEIGHTS, dtype=x.dtype)
            x = ops.sum(x * weights, axis=-1, keepdims=True)  # (B, H, W, 1)
        if self.resize is not None:
            x = self.resize(x)  # (B, h, w, 1)
        return ops.reshape(x, (-1, self.pixel_shape[0] * self.pixel_shape[1]))  # (B, h*w), row-major

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.pixel_shape[0] * self.pixel_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update({"image_shape": self.image_shape, "image_size": self.image_size})
        return config


def first_layer_saliency(model, threshold=None):
    """Input saliency from W1 (paper 002, sec. 3.5, Fig. 6).

    Paper 002 marks an input unit (a pixel) as effective when a weight from it to the first
    hidden layer exceeds a threshold. Here the strength of pixel `i` is `max_j |W1[i, j]|`
    (the paper says only that large weights matter and that they are signed; the absolute
    value is our reading).

    Args:
        model: a `StackedAutoencoderClassifier` (or any model with a Dense layer `hidden1`
            on the row-major flattened pixels; then `pixel_shape` must be an attribute).
        threshold: None for the strength map, or a float for the boolean map of pixels with
            some `|W1[i, j]| > threshold`.

    Returns:
        `np.ndarray` of shape `(h, w)` (the pixel grid W1 reads, 64x64 in the paper):
        float32 strengths, or bool when `threshold` is given.
    """
    kernel = np.asarray(model.get_layer("hidden1").kernel)  # (h*w, units)
    h, w = model.pixel_shape
    if kernel.shape[0] != h * w:
        raise ValueError(f"W1 has {kernel.shape[0]} inputs, expected {h}x{w}.")
    strength = np.abs(kernel).max(axis=1).reshape(h, w)  # row-major, as the flattening
    if threshold is None:
        return strength.astype(np.float32)
    return strength > threshold


def _build(input_shape, num_classes, name, batch_size, **kwargs):
    return StackedAutoencoderClassifier(input_shape, num_classes, batch_size=batch_size, name=name, **kwargs)


@register_model(
    "sdae",
    kind="still",
    sizes=SAE_SIZES,
    family="sae",
    description="Paper 002: stacked denoising autoencoder (W1, W2 DAE with masking noise; W3, W4 AE) + softmax, sigmoid units.",
)
def sdae(input_shape, num_classes, hidden_units=(256, 128, 64, 32), denoising_layers=2, masking_fraction=0.25,
         image_size=None, pretrain_learning_rate=1e-3, seed=None, batch_size=None):
    return _build(input_shape, num_classes, "sdae", batch_size, hidden_units=hidden_units,
                  denoising_layers=denoising_layers, masking_fraction=masking_fraction, image_size=image_size,
                  pretrain_learning_rate=pretrain_learning_rate, seed=seed)


@register_model(
    "sae",
    kind="still",
    sizes=SAE_SIZES,
    family="sae",
    description="Paper 002 ablation: stacked plain autoencoders (no noise) + softmax, greedy pretraining then fine-tuning.",
)
def sae(input_shape, num_classes, hidden_units=(256, 128, 64, 32), image_size=None, pretrain_learning_rate=1e-3,
        seed=None, batch_size=None):
    return _build(input_shape, num_classes, "sae", batch_size, hidden_units=hidden_units, denoising_layers=0,
                  image_size=image_size, pretrain_learning_rate=pretrain_learning_rate, seed=seed)


@register_model(
    "sae_nopretrain",
    kind="still",
    sizes=SAE_SIZES,
    family="sae",
    description="Paper 002 network without pretraining: the same sigmoid MLP trained from random initialisation.",
)
def sae_nopretrain(input_shape, num_classes, hidden_units=(256, 128, 64, 32), image_size=None, batch_size=None):
    return _build(input_shape, num_classes, "sae_nopretrain", batch_size, hidden_units=hidden_units,
                  denoising_layers=0, layerwise_pretraining=False, image_size=image_size)
