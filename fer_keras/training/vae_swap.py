"""Training of paper 004's `vae_swap` (and its Table 3 baselines): losses, stages, iterated rounds.

Stage 1, identity (eq. 1): IdentityEncoder + Decoder with z = [z_i, 0]; the reconstruction
target is a random *other* image of the input's subject, never the input itself. Eq. 1 samples
x_rand_id from the subject's whole set, which includes x; excluding it (a choice) keeps every
step's target a different expression, so z_i cannot carry the input's own expression.

Stage 2 uses the identity encoder's mean for z_i (it is frozen there), not a sample (a choice).

Stage 2, expression (eqs. 2-5): IdentityEncoder frozen; ExpressionEncoder + Decoder (+
Discriminator) with L'_e = L_e + beta L_gan + gamma L_switch.

Iterated stages (section 4.1.3): `rounds` times stage 1 then stage 2, `epochs` epochs per stage.

Loss conventions (the paper gives none; the alpha weights only make sense with a fixed one):
* reconstruction: squared error on [0, 1] pixels, mean over pixels, mean over the batch;
* KL: KL(N(mu, sigma) || N(0, I)) summed over latent dimensions, mean over the batch;
* GAN: the discriminator maximises log D(x) + log(1 - D(x')) + log(1 - D(x_p)) (eq. 3); the
  generator uses the non-saturating form -log D(x') - log D(x_p) (Goodfellow et al. 2014, sec. 3);
* switch (eq. 4): MSE(z_i, z_i') + MSE(z_e^d, z_e^d') on encoder means, MSE = mean over dims and batch.

One Adam per network (lr 5e-4, betas 0.9/0.999, eps 1e-8), kept across stages and rounds; each
network's lr is multiplied by 0.95 per epoch it has trained.

Under `tf.distribute` (`fer-keras train --strategy`, docs/scaling.md) every step scales its loss
by 1 / num_replicas_in_sync itself: the losses here are `ops.mean`s, not `keras.losses.Loss`
objects, so Keras does not, and the optimizers all-reduce gradients with SUM. Each replica takes
its own slice of one noise draw (`_normal`), so replicas do not share noise; the switch loss's
donor is picked within each replica's share of the batch.

Checkpoints (`checkpoints/epoch-NNNN/`, NNNN counting epochs over all stages and rounds) hold
every network's weights, the four optimizers' states, the stages' random-seed states, the
epochs each network has trained and the history so far: `fer-keras train --resume RUN`
continues from the last one in the same stage, round and epoch.
"""

import csv
import json
import math
import os
import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from fer_keras.errors import UserError

# ---------------------------------------------------------------------------------------- losses


def _normal(shape, seed=None):
    """N(0, I) noise of `shape`; under tf.distribute each replica takes its own slice of one draw.

    Replicas read the same seed-generator state, so without the slice every replica would
    draw the same noise for its share of the batch.
    """
    context = tf.distribute.get_replica_context()
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if context is None or replicas == 1:
        return keras.random.normal(shape, seed=seed)
    draws = keras.random.normal([replicas] + list(shape), seed=seed)  # (R, *shape)
    return ops.take(draws, context.replica_id_in_sync_group, axis=0)


def reparameterize(mu, log_var, seed=None):
    """z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2014)."""
    eps = _normal(ops.shape(mu), seed=seed)
    return mu + ops.exp(0.5 * log_var) * eps


def sample_prior(shape, seed=None):
    """x_p's latent code z ~ N(0, I) (eq. 3)."""
    return _normal(shape, seed=seed)


def kl_divergence(mu, log_var):
    """KL(N(mu, exp(log_var)) || N(0, I)): sum over latent dims, mean over the batch."""
    kl = -0.5 * ops.sum(1.0 + log_var - ops.square(mu) - ops.exp(log_var), axis=-1)
    return ops.mean(kl)


def reconstruction_error(target, output):
    """Squared error of [0, 1] images: mean over pixels and the batch."""
    return ops.mean(ops.square(ops.cast(target, "float32") - output))


def _bce_logits(logits, label):
    return ops.mean(ops.binary_crossentropy(ops.full_like(logits, label), logits, from_logits=True))


def discriminator_loss(real_logits, recon_logits, prior_logits):
    """-(log D(x) + log(1 - D(x')) + log(1 - D(x_p))) of eq. 3, each term a batch mean."""
    return _bce_logits(real_logits, 1.0) + _bce_logits(recon_logits, 0.0) + _bce_logits(prior_logits, 0.0)


def generator_gan_loss(recon_logits, prior_logits):
    """Non-saturating generator side of eq. 3: -log D(x') - log D(x_p)."""
    return _bce_logits(recon_logits, 1.0) + _bce_logits(prior_logits, 1.0)


def switch_loss(z_i, z_i_again, z_e, z_e_again):
    """Eq. 4: MSE(z_i, z_i') + MSE(z_e^d, z_e^d')."""
    return ops.mean(ops.square(z_i - z_i_again)) + ops.mean(ops.square(z_e - z_e_again))


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _adam(learning_rate):
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8)


# ---------------------------------------------------------------------------------------- stages


class _Stage(keras.Model):
    """Shared plumbing: loss trackers (progress shows each term), per-network optimizers."""

    terms = ()

    def __init__(self, vae, optimizers, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.vae = vae
        self.nets = optimizers  # {network name: optimizer}
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {t: keras.metrics.Mean(name=t) for t in self.terms}
        # The networks are built; under a tf.distribute strategy Keras would otherwise try to
        # build this call-less model symbolically before fit.
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _apply(self, tape, scaled_loss, groups):
        """groups: {optimizer name: variables}; one tape.gradient over all of them.

        `scaled_loss` is the loss / num_replicas_in_sync, computed inside the tape.
        """
        names = [n for n in groups if groups[n]]
        flat = [v for n in names for v in groups[n]]
        grads = tape.gradient(scaled_loss, flat)
        i = 0
        for n in names:
            k = len(groups[n])
            self.nets[n].apply_gradients(zip(grads[i:i + k], groups[n]))
            i += k

    def _log(self, **values):
        for k, v in values.items():
            self.trackers[k].update_state(v)
        return {k: t.result() for k, t in self.trackers.items()}


class IdentityStage(_Stage):
    """Stage 1 (eq. 1): data (x, x_target) with x_target another image of x's subject."""

    terms = ("loss", "kl", "rec")

    def train_step(self, data):
        x, target = data[0], data[1]
        vae = self.vae
        with tf.GradientTape() as tape:
            mu, log_var = vae.identity_encoder(x, training=True)
            z_i = reparameterize(mu, log_var, self.seed_generator)
            recon = vae.decoder(ops.concatenate([z_i, ops.zeros_like(z_i)], axis=-1), training=True)  # z_e = 0
            kl, rec = kl_divergence(mu, log_var), reconstruction_error(target / 255.0, recon)
            loss = vae.alpha_kl * kl + vae.alpha_rec * rec
            scaled = loss / _replicas()
        self._apply(tape, scaled, {"identity_encoder": vae.identity_encoder.trainable_variables,
                                 "decoder": vae.decoder.trainable_variables})
        return self._log(loss=loss, kl=kl, rec=rec)


class ExpressionStage(_Stage):
    """Stage 2 (eqs. 2-5): data (x, subject index). Identity encoder frozen (not in any update)."""

    terms = ("loss", "kl", "rec", "gan_g", "gan_d", "switch")

    def train_step(self, data):
        x, subjects = data[0], data[1]
        vae = self.vae
        real = x / 255.0
        batch = ops.shape(x)[0]
        g_vars = {"expression_encoder": vae.expression_encoder.trainable_variables,
                  "decoder": vae.decoder.trainable_variables
                  + (vae.subject_embedding.trainable_variables if vae.conditional else [])}
        with tf.GradientTape(persistent=vae.gan) as tape:
            mu, log_var = vae.expression_encoder(x, training=True)
            z_e = reparameterize(mu, log_var, self.seed_generator)
            z_i = ops.stop_gradient(vae.identity_latent(x)) if not vae.conditional else vae.identity_latent(x, subjects)
            recon = vae.decoder(ops.concatenate([z_i, z_e], axis=-1), training=True)
            kl, rec = kl_divergence(mu, log_var), reconstruction_error(real, recon)
            loss = vae.alpha_kl * kl + vae.alpha_rec * rec
            gan_g = gan_d = sw = ops.zeros(())
            if vae.gan:
                prior = sample_prior((batch, 2 * vae.latent_dim), seed=self.seed_generator)
                x_p = vae.decoder(prior, training=True)
                d_real = vae.discriminator(real, training=True)
                d_recon, d_prior = vae.discriminator(recon, training=True), vae.discriminator(x_p, training=True)
                gan_d = discriminator_loss(d_real, d_recon, d_prior)
                gan_g = generator_gan_loss(d_recon, d_prior)
                loss = loss + vae.beta * gan_g
            if vae.switch:
                sw = self._switch(x, mu, subjects)
                loss = loss + vae.gamma * sw
            scaled, scaled_d = loss / _replicas(), gan_d / _replicas()
        self._apply(tape, scaled, g_vars)
        if vae.gan:
            self._apply(tape, scaled_d, {"discriminator": vae.discriminator.trainable_variables})
            del tape
        return self._log(loss=loss, kl=kl, rec=rec, gan_g=gan_g, gan_d=gan_d, switch=sw)

    def _switch(self, x, z_e_mean, subjects):
        """Gives image j's z_i the z_e^d of the next image of another subject, decodes, re-encodes."""
        vae = self.vae
        # Donor: the nearest later position in the batch holding another subject (roll by 1..B-1).
        n = ops.shape(x)[0]
        donor = _other_subject_index(subjects, n)
        z_i = vae.identity_encoder(x, training=False)[0]
        z_e_d = ops.take(z_e_mean, donor, axis=0)
        swapped = vae.decoder(ops.concatenate([z_i, z_e_d], axis=-1), training=True)
        z_i_again = vae.identity_encoder(swapped * 255.0, training=False)[0]
        z_e_again = vae.expression_encoder(swapped * 255.0, training=True)[0]
        return switch_loss(z_i, z_i_again, z_e_d, z_e_again)


def _other_subject_index(subjects, n):
    """For each position j, the first position (j + s) mod n, s >= 1, whose subject differs (j + 1 if none)."""
    idx = tf.range(n)
    shifts = tf.range(1, tf.maximum(n, 2))
    cand = (idx[:, None] + shifts[None, :]) % n  # (n, n-1)
    differs = tf.not_equal(tf.gather(subjects, cand), subjects[:, None])
    first = tf.argmax(tf.cast(differs, tf.int32), axis=1, output_type=tf.int32)
    return tf.gather(cand, first, batch_dims=1)


class _LearningRates(keras.callbacks.Callback):
    """lr of each active network = base * decay ** (epochs that network has trained so far)."""

    def __init__(self, vae, optimizers, active, counts):
        super().__init__()
        self.vae, self.optimizers, self.active, self.counts = vae, optimizers, active, counts

    def on_epoch_begin(self, epoch, logs=None):
        for name in self.active:
            self.optimizers[name].learning_rate.assign(self.vae.learning_rate * self.vae.lr_decay ** self.counts[name])

    def on_epoch_end(self, epoch, logs=None):
        for name in self.active:
            self.counts[name] += 1


class _History(keras.callbacks.Callback):
    """Rows of history.csv: stage, round, epoch, seconds and every loss term."""

    def __init__(self, rows, stage, round_index):
        super().__init__()
        self.rows, self.stage, self.round = rows, stage, round_index

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append(dict(stage=self.stage, round=self.round, epoch=epoch + 1,
                              seconds=round(time.perf_counter() - self.t0, 3),
                              **{k: float(v) for k, v in (logs or {}).items()}))


# ---------------------------------------------------------------------------------------- data


def load_stills(manifest, subjects, image_size, channels):
    """All still records of `subjects` as NumPy: images float32 (N, S, S, C) 0..255, labels, subjects, aus."""
    from fer_keras.data import pipeline, records

    table = set(map(str, subjects))
    ds = tf.data.TFRecordDataset(records.shard_paths(manifest)).map(records.parse_still)
    images, labels, subject_ids, aus = [], [], [], []
    for r in ds:
        subject = r["subject"].numpy().decode()
        if subject not in table:
            continue
        images.append(pipeline.decode_image(r["image/encoded"], channels, image_size).numpy())
        labels.append(int(r["label"]))
        subject_ids.append(subject)
        aus.append(r["aus"].numpy())
    if not images:
        raise UserError(f"No still records for the {len(table)} selected subjects.")
    width = max(len(a) for a in aus)
    aus = np.stack([np.pad(a, (0, width - len(a))) for a in aus]).astype(np.float32)
    return {"images": np.stack(images).astype(np.float32), "labels": np.array(labels, np.int32),
            "subjects": np.array(subject_ids), "aus": aus}


def subject_indices(subjects):
    """String subject ids -> (int index per image, sorted unique ids)."""
    names, index = np.unique(subjects, return_inverse=True)
    return index.astype(np.int32), names


def same_subject_partners(subject_index, rng):
    """For each image, a random *different* image of the same subject (itself only if it is alone)."""
    partner = np.empty(len(subject_index), np.int64)
    for s in np.unique(subject_index):
        members = np.flatnonzero(subject_index == s)
        if len(members) == 1:
            partner[members] = members
            continue
        # A random offset 1..m-1 within the subject's list never lands on the image itself.
        offsets = rng.integers(1, len(members), size=len(members))
        partner[members] = members[(np.arange(len(members)) + offsets) % len(members)]
    return partner


def _distributed(ds):
    from fer_keras.training import distribute

    return distribute.distribute_dataset(ds)


def _epoch_batches(per_epoch, batch_size):
    """Each epoch's items (an array, or a tuple of arrays) batched on their own, then the epochs in a row.

    An epoch is then exactly its ceil(n / batch_size) batches, the last one short: batched as one
    stream, a batch would straddle two epochs, and a stage resumed at an epoch boundary would see
    other batches than the uninterrupted stage.
    """
    ds = None
    for items in per_epoch:
        epoch = tf.data.Dataset.from_tensor_slices(tuple(items) if isinstance(items, tuple) else items).batch(batch_size)
        ds = epoch if ds is None else ds.concatenate(epoch)
    return ds


def pair_dataset(images, subject_index, *, batch_size, epochs, seed, start_epoch=0):
    """Stage 1 data: (image, another image of the same subject), reshuffled and re-paired each epoch.

    Epoch e's order depends only on (seed, e): a resumed stage starts at `start_epoch`.
    """
    order, partners = [], []
    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([seed, epoch, 1])
        perm = rng.permutation(len(images))
        order.append(perm)
        partners.append(same_subject_partners(subject_index, rng)[perm])
    table = tf.constant(images)
    ds = _epoch_batches(list(zip(order, partners)), batch_size).map(lambda i, j: (tf.gather(table, i), tf.gather(table, j)))
    return _distributed(ds.prefetch(tf.data.AUTOTUNE))


def image_dataset(images, subject_index, *, batch_size, epochs, seed, start_epoch=0):
    """Stage 2 data: (image, subject index), reshuffled each epoch (epoch e's order from (seed, e))."""
    order = [np.random.default_rng([seed, epoch, 2]).permutation(len(images)) for epoch in range(start_epoch, epochs)]
    table, subjects = tf.constant(images), tf.constant(subject_index)
    ds = _epoch_batches(order, batch_size)
    return _distributed(ds.map(lambda i: (tf.gather(table, i), tf.gather(subjects, i))).prefetch(tf.data.AUTOTUNE))


# ---------------------------------------------------------------------------------------- loops


def make_optimizers(vae):
    """One Adam per network, built on its variables (so stages can trace steps that apply them)."""
    optimizers = {
        "identity_encoder": _adam(vae.learning_rate),
        "expression_encoder": _adam(vae.learning_rate),
        "decoder": _adam(vae.learning_rate),
        "discriminator": _adam(vae.learning_rate),
    }
    decoder_vars = vae.decoder.trainable_variables + (vae.subject_embedding.trainable_variables if vae.conditional else [])
    for name, variables in (("identity_encoder", vae.identity_encoder.trainable_variables),
                            ("expression_encoder", vae.expression_encoder.trainable_variables),
                            ("decoder", decoder_vars), ("discriminator", vae.discriminator.trainable_variables)):
        optimizers[name].build(variables)
    return optimizers


def run_stage(vae, stage, data, *, epochs, optimizers, counts, rows, round_index=0, batch_size=32, seed=0, verbose=0,
              stages=None, start_epoch=0, callbacks=()):
    """Fits one stage ("identity" or "expression") for `epochs`; returns its Keras History.

    `stages`: a dict that keeps the stage models between rounds, so each step is traced once.
    `start_epoch`: a resumed stage continues at this epoch (its data is that of epochs
    start_epoch.. of an uninterrupted stage). `callbacks` run after the stage's own.
    """
    images, subject_index = data
    steps = math.ceil(len(images) / batch_size)
    stages = {} if stages is None else stages
    if stage not in ("identity", "expression"):
        raise ValueError(f"stage must be 'identity' or 'expression'. Received: {stage!r}")
    model = stage_model(vae, stage, optimizers, stages, seed=seed)
    make = pair_dataset if stage == "identity" else image_dataset
    ds = make(images, subject_index, batch_size=batch_size, epochs=epochs, seed=seed + 1000 * round_index, start_epoch=start_epoch)
    if stage == "identity":
        active = ("identity_encoder", "decoder")
        vae.identity_encoder.trainable = True
    else:
        active = ("expression_encoder", "decoder") + (("discriminator",) if vae.gan else ())
        vae.identity_encoder.trainable = False  # frozen: stage 2 never updates it
    callbacks = [_LearningRates(vae, optimizers, active, counts), _History(rows, stage, round_index), *callbacks]
    try:
        return model.fit(ds, epochs=epochs, initial_epoch=start_epoch, steps_per_epoch=steps, callbacks=callbacks,
                         verbose=verbose)
    finally:
        vae.identity_encoder.trainable = True


def stage_model(vae, stage, optimizers, stages, seed=0):
    """The (cached) Keras model whose train_step is `stage`'s."""
    if stage not in stages:
        stages[stage] = (IdentityStage if stage == "identity" else ExpressionStage)(vae, optimizers, seed=seed)
        stages[stage].compile()
    return stages[stage]


def stage_plan(vae):
    """[(round, stage), ...] in training order: `rounds` x (stage 1 if the model has it, stage 2)."""
    plan = []
    for r in range(vae.rounds):
        if vae.identity:
            plan.append((r, "identity"))
        plan.append((r, "expression"))
    return plan


def train_vae(vae, images, subject_index, *, epochs, batch_size=32, seed=0, verbose=0, rows=None,
              checkpoint_dir=None, resume_from=None):
    """All stages of `vae`: `rounds` x (stage 1, stage 2), or stage 2 only for the plain/conditional VAE.

    With `checkpoint_dir`, a checkpoint is committed after every epoch of every stage
    (`StageCheckpoint`); `resume_from` (such a checkpoint folder) continues from it.
    """
    optimizers = make_optimizers(vae)
    counts = {name: 0 for name in optimizers}
    rows = [] if rows is None else rows
    data = (np.asarray(images, np.float32), np.asarray(subject_index, np.int32))
    stages = {}
    plan = stage_plan(vae)
    done = 0  # epochs completed over all stages
    if resume_from is not None:
        done = restore_checkpoint(resume_from, vae, optimizers, stages, counts, rows, seed=seed)
    saver = None
    if checkpoint_dir is not None:
        saver = StageCheckpoint(checkpoint_dir, vae, optimizers, stages, counts, rows, total_epochs=len(plan) * epochs)
    for k, (r, stage) in enumerate(plan):
        if done >= (k + 1) * epochs:
            continue
        start = max(done - k * epochs, 0)
        extra = [saver.at(k * epochs, r, stage)] if saver else []
        if verbose:  # Keras numbers each stage's epochs from 1; the checkpoints and a stop count them over all stages
            span = f"epoch {k + 1}" if epochs == 1 else f"epochs {k * epochs + 1}-{(k + 1) * epochs}"
            print(f"Stage {k + 1} of {len(plan)}: {stage}, round {r + 1}; {span} of {len(plan) * epochs} in all",
                  file=sys.stderr)
        run_stage(vae, stage, data, epochs=epochs, optimizers=optimizers, counts=counts, rows=rows, round_index=r,
                  batch_size=batch_size, seed=seed, verbose=verbose, stages=stages, start_epoch=start, callbacks=extra)
    return rows


# ---------------------------------------------------------------------------------------- checkpoints


class StageCheckpoint(keras.callbacks.Callback):
    """After every epoch of every stage: ``checkpoints/epoch-NNNN/`` (state.npz + state.json).

    NNNN counts epochs over all stages and rounds. state.npz holds every VAE variable (by its
    path), each optimizer's variables (in order) and each stage model's seed-generator state;
    state.json the position (round, stage, epoch in the stage), the epochs each network has
    trained (its lr decay) and the history rows. Variables are keyed by position in
    `vae.variables` (creation order, which freezing a network does not change; paths repeat
    across the encoders); restore checks their number and shapes. Written as ``.epoch-NNNN.tmp`` and renamed
    (the commit point); the two newest are kept.
    """

    def __init__(self, folder, vae, optimizers, stages, counts, rows, total_epochs, keep=2):
        super().__init__()
        self.folder = pathlib.Path(folder)
        self.vae, self.optimizers, self.stages, self.counts, self.rows = vae, optimizers, stages, counts, rows
        self.total_epochs, self.keep = total_epochs, keep
        self.offset, self.round, self.stage = 0, 0, None

    def at(self, offset, round_index, stage):
        """This callback for the stage whose first epoch is global epoch `offset` + 1."""
        self.offset, self.round, self.stage = offset, round_index, stage
        return self

    def on_epoch_end(self, epoch, logs=None):
        if not all(math.isfinite(float(v)) for v in (logs or {}).values()):
            return  # never checkpoint weights that a NaN/inf loss has spoiled
        from fer_keras.training.fit import commit_checkpoint

        number = self.offset + epoch + 1
        self.folder.mkdir(parents=True, exist_ok=True)

        def write(tmp):
            arrays = {f"vae/{i}": ops.convert_to_numpy(v) for i, v in enumerate(self.vae.variables)}
            for net, optimizer in self.optimizers.items():
                for i, v in enumerate(optimizer.variables):
                    arrays[f"opt/{net}/{i}"] = ops.convert_to_numpy(v)
            for stage, model in self.stages.items():
                arrays[f"seed/{stage}"] = ops.convert_to_numpy(model.seed_generator.state)
            with open(tmp / "state.npz", "wb") as f:
                np.savez(f, **arrays)

        state = {"epoch": number, "total_epochs": self.total_epochs, "round": self.round, "stage": self.stage,
                 "stage_epoch": epoch + 1, "counts": self.counts, "rows": self.rows}
        commit_checkpoint(self.folder, number, write, state, keep=self.keep)


def restore_checkpoint(folder, vae, optimizers, stages, counts, rows, seed=0):
    """Loads a `StageCheckpoint` into the (built) vae, optimizers and stage models; returns the epochs done."""
    folder = pathlib.Path(folder)
    state = json.loads((folder / "state.json").read_text())
    with np.load(folder / "state.npz") as arrays:
        saved = [arrays[f"vae/{i}"].shape for i in range(sum(k.startswith("vae/") for k in arrays.files))]
        if saved != [tuple(v.shape) for v in vae.variables]:
            raise UserError(f"Checkpoint {str(folder)!r} does not match this model's variables; was the run's config changed?")
        for i, v in enumerate(vae.variables):
            v.assign(arrays[f"vae/{i}"])
        for net, optimizer in optimizers.items():
            for i, v in enumerate(optimizer.variables):
                v.assign(arrays[f"opt/{net}/{i}"])
        for stage in ("identity", "expression"):
            if f"seed/{stage}" in arrays:
                stage_model(vae, stage, optimizers, stages, seed=seed).seed_generator.state.assign(arrays[f"seed/{stage}"])
    counts.update(state["counts"])
    rows[:] = state["rows"]
    return int(state["epoch"])


def encode(vae, images, batch_size=64, subjects=None):
    """(z_e, z_i) encoder means of NumPy images, batched."""
    z_e, z_i = [], []
    for start in range(0, len(images), batch_size):
        x = ops.convert_to_tensor(images[start:start + batch_size])
        z_e.append(ops.convert_to_numpy(vae.expression_encoder(x, training=False)[0]))
        s = None if subjects is None else ops.convert_to_tensor(subjects[start:start + batch_size])
        z_i.append(ops.convert_to_numpy(vae.identity_latent(x, s)))
    return np.concatenate(z_e), np.concatenate(z_i)


def set_centroids(vae, images, labels):
    """Fills the readout centroids with the mean z_e of each class (classes absent keep 0)."""
    z_e = np.concatenate([ops.convert_to_numpy(vae.expression_encoder(ops.convert_to_tensor(images[i:i + 64]),
                                                                       training=False)[0])
                          for i in range(0, len(images), 64)])  # z_e only: the C-VAE has no z_i without subjects
    centroids = np.zeros((vae.num_classes, vae.latent_dim), np.float32)
    for k in range(vae.num_classes):
        if np.any(labels == k):
            centroids[k] = z_e[labels == k].mean(axis=0)
    vae.centroids.assign(centroids)


# ---------------------------------------------------------------------------------------- hook


def train(*, config, manifest, split, run_dir, quiet=False, resume=False):
    """The `vae_swap` trainer hook of `fer-keras train`: all stages, then ``run_dir/model.keras``.

    `config["epochs"]` is epochs *per stage* (the paper: 100, or 50 per stage when iterating).
    Writes history.csv (stage, round, epoch, seconds, each loss term), stage_times.json and a
    checkpoint after every epoch of every stage. `resume`: the checkpoint folder to continue
    from (True: the run's newest). Called inside the run's tf.distribute strategy scope.
    """
    from fer_keras.training import fit

    if resume is True:
        resume = fit.latest_checkpoint(run_dir)
    if split.official:
        raise UserError("vae_swap trains on subject splits (--split kfold): stage 1 pairs images by subject.")
    run_dir = pathlib.Path(run_dir)
    size, channels = fit.input_geometry(config, manifest)
    data = load_stills(manifest, split.train, size, channels)
    index, names = subject_indices(data["subjects"])
    overrides = {"num_subjects": len(names)} if config["model"] == "cvae" or config["model_args"].get("conditional") else {}
    vae = fit.build_model(config, manifest, **overrides)
    verbose = 0 if quiet else (1 if os.isatty(2) else 2)
    rows = train_vae(vae, data["images"], index, epochs=config["epochs"], batch_size=config["batch_size"],
                     seed=config["seed"], verbose=verbose, checkpoint_dir=run_dir / "checkpoints",
                     resume_from=resume or None)
    if any(not math.isfinite(v) for row in rows for k, v in row.items() if isinstance(v, float)):
        raise UserError("Training stopped: a loss became NaN/inf. Lower the alpha weights or check the data.")
    set_centroids(vae, data["images"], data["labels"])
    _write_history(run_dir / "history.csv", rows)
    (run_dir / "subjects.json").write_text(json.dumps({"train_subjects": list(map(str, names))}, indent=2) + "\n")
    (run_dir / "stage_times.json").write_text(json.dumps(stage_times(rows, len(data["images"])), indent=2) + "\n")
    tmp = run_dir / "model.tmp.keras"
    vae.save(tmp)
    os.replace(tmp, run_dir / "model.keras")
    return run_dir


def stage_times(rows, num_images):
    """Mean seconds per epoch of each stage (the first epoch, which traces the step, apart)."""
    out = {"images_per_epoch": num_images}
    for stage in ("identity", "expression"):
        times = [r["seconds"] for r in rows if r["stage"] == stage]
        if times:
            later = times[1:] or times
            out[stage] = {"epochs": len(times), "first_epoch_s": times[0], "mean_epoch_s_after_first": float(np.mean(later))}
    return out


def _write_history(path, rows):
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
