"""Identity/expression disentangling VAE of paper 004 (`vae_swap`) and its Table 3 baselines.

Networks (paper 004, Tables 1 and 2):

* IdentityEncoder, ExpressionEncoder: 3x3 convolutions, stride 2 then 1, 32-64-128-256
  channels (+ a conv5 pair of 256 for 128 px input), 4x4 average pooling, fc mu and fc
  log-variance of 64 dimensions each.
* Decoder: 128-d latent [z_i, z_e] -> fc 4096 -> 256x4x4 -> transposed convs and convs up to
  64 px (128 px with the extra pair) -> image.
* Discriminator: the encoder structure with a single (logit) output.

Choices where Tables 1 and 2 are silent: ReLU after every encoder and decoder convolution,
LeakyReLU(0.2) in the discriminator (DCGAN's); the "fc sigma" head is the log-variance; Table 1's
"4x4 average pooling, pad 1" would leave a 3x3 map, not the 1x1 that the fc sizes imply, so the
pooling averages the whole 4x4 map.

He initialisation everywhere. The networks are plain functional `keras.Model`s so each one
saves, loads and exports on its own; `VAESwap` holds them together with the training
hyper-parameters, so one trainer (`fer_keras.training.vae_swap`) serves every Table 3 row.

Input: raw pixels in [0, 255], rescaled inside the encoders. The decoder's output channels
follow the data (1 for SynthFER's grey stills, 3 for RGB); the paper's 3-channel output is the
RGB case. The decoder ends in a sigmoid: images in [0, 1].

`VAESwap(images)` returns {"probabilities", "z_e", "z_i"}: z_e/z_i are the encoder means and
"probabilities" a readout softmax(-||z_e - c_k||^2 / 2) over per-class centroids `c_k` in z_e
space. The centroids are a non-trainable weight (zeros: uniform probabilities) that the trainer
fills, after training, with the mean z_e of each class over the training subjects; they exist
so the model fits the registry's classifier contract and `predict`. The paper's evaluation is
the label-free k-means++ protocol in `fer_keras.evaluation.vae_swap`, which ignores them.
"""

import keras
from keras import layers, ops

from fer_keras.models.registry import register_model

ENCODER_FILTERS = (32, 64, 128, 256)
DECODER_FILTERS = (128, 64, 32, 16)

# Training hyper-parameters live in the model so `--config {"model_args": {...}}` picks a Table 3 row.
# alpha_kl / alpha_rec: the paper prints alpha_1 = 1e5 (KL) and alpha_2 = 0.01 (reconstruction);
# only the inverted reading trains (docs/vae_swap.md gives the evidence), so it is the default.
TRAINING_DEFAULTS = dict(
    identity=True, gan=True, switch=True, rounds=2, alpha_kl=0.01, alpha_rec=1e5, beta=1.0, gamma=10.0,
    learning_rate=5e-4, lr_decay=0.95, kmeans_k=9, subtract_subject_mean=False,
)

PAPER = dict(encoder_filters=ENCODER_FILTERS, decoder_filters=DECODER_FILTERS, latent_dim=64)
SMALL = dict(encoder_filters=(16, 32, 64, 128), decoder_filters=(64, 32, 16, 8), latent_dim=64)

VAE_SWAP_SIZES = {
    "small": dict(SMALL),
    # Section 5.1; the number of iterated rounds is not printed (Fig. 3 plots 1..N): 4 here.
    "paper": dict(PAPER, rounds=4),
}
_PLAIN = dict(identity=False, gan=False, switch=False, rounds=1)
VAE_SIZES = {"small": dict(SMALL, **_PLAIN), "paper": dict(PAPER, **_PLAIN)}
VAE_MEANSUB_SIZES = {k: dict(v, subtract_subject_mean=True) for k, v in VAE_SIZES.items()}
CVAE_SIZES = {k: dict(v, identity=False, conditional=True) for k, v in VAE_SIZES.items()}


def _he():
    return keras.initializers.HeNormal()


def _check_size(image_size, extra_block):
    factor = 32 if extra_block else 16
    if image_size % factor:
        raise ValueError(
            f"image_size must be a multiple of {factor} (4 stride-2 stages{' + conv5' if extra_block else ''}). "
            f"Received: image_size={image_size}"
        )
    return image_size // factor


def _conv_trunk(x, filters, extra_block, activation, prefix):
    """Table 1: (3x3 stride 2, 3x3 stride 1) pairs, then global average pooling (= 4x4 at 64/128 px)."""
    pairs = list(filters) + ([filters[-1]] if extra_block else [])
    for i, f in enumerate(pairs, start=1):
        x = layers.Conv2D(f, 3, strides=2, padding="same", kernel_initializer=_he(), name=f"{prefix}conv{i}_1")(x)
        x = activation()(x)
        x = layers.Conv2D(f, 3, strides=1, padding="same", kernel_initializer=_he(), name=f"{prefix}conv{i}_2")(x)
        x = activation()(x)
    return layers.GlobalAveragePooling2D(name=f"{prefix}pool")(x)  # (B, 256)


def build_encoder(image_size, channels, *, latent_dim=64, filters=ENCODER_FILTERS, extra_block=False, name="encoder"):
    """Table 1 encoder: raw pixels (B, S, S, C) in [0, 255] -> [mu (B, latent), log_var (B, latent)]."""
    _check_size(image_size, extra_block)
    images = keras.Input((image_size, image_size, channels), name="images")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(images)
    x = _conv_trunk(x, filters, extra_block, layers.ReLU, "")
    mu = layers.Dense(latent_dim, kernel_initializer=_he(), name="fc_mu")(x)
    log_var = layers.Dense(latent_dim, kernel_initializer=_he(), name="fc_log_var")(x)
    return keras.Model(images, [mu, log_var], name=name)


def build_discriminator(image_size, channels, *, filters=ENCODER_FILTERS, extra_block=False, name="discriminator"):
    """The encoder structure with one logit output; takes images in [0, 1] (decoder outputs, real/255)."""
    _check_size(image_size, extra_block)
    images = keras.Input((image_size, image_size, channels), name="images")
    x = _conv_trunk(images, filters, extra_block, lambda: layers.LeakyReLU(0.2), "")
    logit = layers.Dense(1, kernel_initializer=_he(), name="fc_out")(x)
    return keras.Model(images, logit, name=name)


def build_decoder(image_size, channels, *, latent_dim=64, filters=DECODER_FILTERS, extra_block=False, name="decoder"):
    """Table 2 decoder: [z_i, z_e] (B, 2 * latent) -> image (B, S, S, channels) in [0, 1]."""
    base = _check_size(image_size, extra_block)
    z = keras.Input((2 * latent_dim,), name="z")
    x = layers.Dense(base * base * 256, kernel_initializer=_he(), name="fc1")(z)  # 4096 at 64/128 px
    x = layers.ReLU()(x)
    x = layers.Reshape((base, base, 256))(x)  # (B, 4, 4, 256)
    # Table 2: 4x4 kernels for the first two upsamplings, 3x3 for the rest.
    stages = list(zip(filters, (4, 4, 3, 3))) + ([(filters[-1] // 2 or 1, 3)] if extra_block else [])
    for i, (f, k) in enumerate(stages, start=1):
        x = layers.Conv2DTranspose(f, k, strides=2, padding="same", kernel_initializer=_he(), name=f"deconv{i}_1")(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(f, 3, padding="same", kernel_initializer=_he(), name=f"conv{i}_2")(x)
        x = layers.ReLU()(x)
    x = layers.Conv2D(channels, 3, padding="same", kernel_initializer=_he(), name="conv6")(x)
    image = layers.Activation("sigmoid", name="image")(x)
    return keras.Model(z, image, name=name)


@keras.saving.register_keras_serializable(package="fer_keras")
class VAESwap(keras.Model):
    """IdentityEncoder + ExpressionEncoder + Decoder (+ Discriminator) of paper 004.

    Args:
        image_size, channels: input geometry (raw pixels 0..255).
        num_classes: classes of the centroid readout ("probabilities").
        latent_dim: size of z_i and of z_e (64 in the paper; the decoder takes 2 * latent_dim).
        encoder_filters, decoder_filters: channel widths (paper: 32-64-128-256 and 128-64-32-16).
        extra_block: the conv5/deconv5 pair of the 128 px model (default: image_size >= 128).
        identity: False for the plain-VAE baselines: no identity stage, z_i = 0.
        conditional: C-VAE baseline: z_i is a learned embedding of the subject id (decoder condition).
        num_subjects: rows of that embedding (training subjects; set by the trainer).
        gan, switch, rounds: Table 3 rows: add L_gan, add L_switch, number of (stage 1, stage 2) rounds.
        alpha_kl, alpha_rec, beta, gamma: loss weights of eqs. 1, 2 and 5.
        learning_rate, lr_decay: Adam lr and its factor per epoch (paper: 5e-4, 0.95).
        kmeans_k: clusters of the k-means++ evaluation (paper: 9).
        subtract_subject_mean: evaluate with eq. 6 (per-subject mean removed from the latent).

    Call arguments:
        inputs: (B, S, S, C) raw pixels.

    Returns:
        {"probabilities": (B, num_classes), "z_e": (B, latent_dim), "z_i": (B, latent_dim)}.

    Example:

    >>> model = VAESwap(64, 1, 7)
    >>> out = model(keras.ops.zeros((2, 64, 64, 1)))  # out["z_e"].shape == (2, 64)

    References:
        Kanou & Nagao, "Weakly supervised learning for acquisition of continuous facial
        expression features" (paper 004): Tables 1, 2; eqs. 1-5; section 5.1.
    """

    def __init__(self, image_size, channels, num_classes, latent_dim=64, encoder_filters=ENCODER_FILTERS,
                 decoder_filters=DECODER_FILTERS, extra_block=None, identity=True, conditional=False, num_subjects=0,
                 gan=True, switch=True, rounds=2, alpha_kl=0.01, alpha_rec=1e5, beta=1.0, gamma=10.0,
                 learning_rate=5e-4, lr_decay=0.95, kmeans_k=9, subtract_subject_mean=False, **kwargs):
        super().__init__(**kwargs)
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1. Received: rounds={rounds}")
        if conditional and identity:
            raise ValueError("conditional (C-VAE) replaces the identity encoder: pass identity=False.")
        if (switch or gan) and not identity:
            raise ValueError(f"L_gan and L_switch belong to the two-stage model (identity=True). Received: gan={gan}, switch={switch}")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.num_classes = int(num_classes)
        self.latent_dim = int(latent_dim)
        self.encoder_filters = tuple(encoder_filters)
        self.decoder_filters = tuple(decoder_filters)
        self.extra_block = bool(image_size >= 128) if extra_block is None else bool(extra_block)
        self.identity = bool(identity)
        self.conditional = bool(conditional)
        self.num_subjects = int(num_subjects)
        self.gan, self.switch, self.rounds = bool(gan), bool(switch), int(rounds)
        self.alpha_kl, self.alpha_rec, self.beta, self.gamma = float(alpha_kl), float(alpha_rec), float(beta), float(gamma)
        self.learning_rate, self.lr_decay = float(learning_rate), float(lr_decay)
        self.kmeans_k = int(kmeans_k)
        self.subtract_subject_mean = bool(subtract_subject_mean)
        geometry = dict(extra_block=self.extra_block)
        self.expression_encoder = build_encoder(self.image_size, self.channels, latent_dim=self.latent_dim,
                                                filters=self.encoder_filters, name="expression_encoder", **geometry)
        self.identity_encoder = build_encoder(self.image_size, self.channels, latent_dim=self.latent_dim,
                                              filters=self.encoder_filters, name="identity_encoder", **geometry)
        self.decoder = build_decoder(self.image_size, self.channels, latent_dim=self.latent_dim,
                                     filters=self.decoder_filters, name="decoder", **geometry)
        self.discriminator = build_discriminator(self.image_size, self.channels, filters=self.encoder_filters,
                                                 name="discriminator", **geometry)
        self.subject_embedding = (
            layers.Embedding(max(self.num_subjects, 1), self.latent_dim, name="subject_embedding")
            if self.conditional else None
        )
        self.centroids = self.add_weight(shape=(self.num_classes, self.latent_dim), initializer="zeros",
                                         trainable=False, name="class_centroids")

    def build(self, input_shape=None):
        if self.subject_embedding is not None and not self.subject_embedding.built:
            self.subject_embedding.build((None,))
        self.built = True

    def identity_latent(self, images, subjects=None, training=False):
        """z_i (mean) of `images`: the identity encoder, zeros for the plain VAE, the subject embedding for the C-VAE."""
        if self.conditional:
            if subjects is None:
                raise ValueError("The C-VAE needs subject indices to decode.")
            return self.subject_embedding(subjects)
        if not self.identity:
            return ops.zeros((ops.shape(images)[0], self.latent_dim), dtype="float32")
        return self.identity_encoder(images, training=training)[0]

    def call(self, inputs, training=None):
        z_e = self.expression_encoder(inputs, training=training)[0]
        z_i = self.identity_latent(inputs) if not self.conditional else ops.zeros_like(z_e)
        distances = ops.sum(ops.square(z_e[:, None, :] - self.centroids[None]), axis=-1)  # (B, K)
        return {"probabilities": ops.softmax(-0.5 * distances, axis=-1), "z_e": z_e, "z_i": z_i}

    def swap(self, identity_images, expression_images):
        """Decodes [z_i of identity_images, z_e of expression_images] -> images in [0, 1]."""
        z_i = self.identity_latent(identity_images)
        z_e = self.expression_encoder(expression_images, training=False)[0]
        return self.decoder(ops.concatenate([z_i, z_e], axis=-1), training=False)

    def train_step(self, data):
        """A plain expression-stage step (L_e of eq. 2 on the input itself) with `self.optimizer`.

        Only for fitting the model directly (the registry's one-step sweep); `fer-keras train`
        runs the staged trainer of `fer_keras.training.vae_swap` with one optimizer per network.
        """
        import tensorflow as tf

        from fer_keras.training.vae_swap import kl_divergence, reconstruction_error, reparameterize

        x = data[0] if isinstance(data, (tuple, list)) else data
        variables = self.expression_encoder.trainable_variables + self.decoder.trainable_variables
        with tf.GradientTape() as tape:
            mu, log_var = self.expression_encoder(x, training=True)
            z_e = reparameterize(mu, log_var)
            z_i = ops.zeros_like(z_e) if self.conditional else ops.stop_gradient(self.identity_latent(x))
            recon = self.decoder(ops.concatenate([z_i, z_e], axis=-1), training=True)
            kl, rec = kl_divergence(mu, log_var), reconstruction_error(x / 255.0, recon)
            loss = self.alpha_kl * kl + self.alpha_rec * rec
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return {"loss": loss, "kl": kl, "rec": rec}

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size, channels=self.channels, num_classes=self.num_classes,
            latent_dim=self.latent_dim, encoder_filters=list(self.encoder_filters),
            decoder_filters=list(self.decoder_filters), extra_block=self.extra_block, identity=self.identity,
            conditional=self.conditional, num_subjects=self.num_subjects, gan=self.gan, switch=self.switch,
            rounds=self.rounds, alpha_kl=self.alpha_kl, alpha_rec=self.alpha_rec, beta=self.beta, gamma=self.gamma,
            learning_rate=self.learning_rate, lr_decay=self.lr_decay, kmeans_k=self.kmeans_k,
            subtract_subject_mean=self.subtract_subject_mean,
        )
        return config


def _build(input_shape, num_classes, **args):
    size, width, channels = input_shape
    if size != width:
        raise ValueError(f"vae_swap takes square images. Received: input_shape={input_shape}")
    model = VAESwap(size, channels, num_classes, **args)
    model.build((None,) + tuple(input_shape))
    return model


_HOOKS = dict(trainer="fer_keras.training.vae_swap:train", evaluator="fer_keras.evaluation.vae_swap:evaluate")


@register_model("vae_swap", kind="still", sizes=VAE_SWAP_SIZES, family="vae_swap", **_HOOKS,
                description="Paper 004: identity/expression VAE, stage 1 identity + stage 2 expression (L_gan, L_switch), iterated.")
def vae_swap(input_shape, num_classes, **args):
    return _build(input_shape, num_classes, **args)


@register_model("vae", kind="still", sizes=VAE_SIZES, family="vae_swap", **_HOOKS,
                description="Paper 004 Table 3 row 6: plain VAE (64-d z_e, z_i = 0), k-means on its latent.")
def vae(input_shape, num_classes, **args):
    return _build(input_shape, num_classes, **args)


@register_model("vae_meansub", kind="still", sizes=VAE_MEANSUB_SIZES, family="vae_swap", **_HOOKS,
                description="Paper 004 Table 3 row 7: plain VAE evaluated with the subject mean subtracted (eq. 6).")
def vae_meansub(input_shape, num_classes, **args):
    return _build(input_shape, num_classes, **args)


@register_model("cvae", kind="still", sizes=CVAE_SIZES, family="vae_swap", **_HOOKS,
                description="Paper 004 Table 3 row 8: C-VAE, decoder conditioned on a learned subject-id embedding.")
def cvae(input_shape, num_classes, **args):
    return _build(input_shape, num_classes, **args)
