"""`fer-keras train`: data -> split -> model -> fit, into a run folder.

runs/<name>/
    config.json          resolved configuration, split subjects, dataset path
    model.keras          the best checkpoint (by validation accuracy when there is a validation side)
    checkpoints/         best.keras, last.keras
    history.csv          per-epoch metrics
    logs/                TensorBoard
    data/                the generated SynthFER set when --data synth
"""

import json
import math
import os
import pathlib
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from fer_keras.data import pipeline, records, splits
from fer_keras.errors import UserError
from fer_keras.models.registry import get_model, get_spec


class StopOnNaN(keras.callbacks.Callback):
    """Stops training with a clear message naming the epoch and step where the loss became NaN/inf."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            self.failed_at = (self._epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


def set_seed(seed):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_dataset(config, run_dir, *, quiet=False):
    """The manifest of the run's data; generates SynthFER into the run folder for data == 'synth'."""
    spec = get_spec(config["model"])
    wanted = "still" if spec.kind == "still" else "sequence"
    if config["data"] == "synth":
        from fer_keras.data_prep.synth import prepare_synth

        s = config["synth"]
        data_dir = pathlib.Path(run_dir) / "data"
        if not (data_dir / records.MANIFEST).exists():
            prepare_synth(
                data_dir,
                kind=wanted,
                subjects=s["subjects"],
                samples_per_emotion=s["samples_per_emotion"],
                sequences_per_emotion=s["sequences_per_emotion"],
                size=s["size"],
                grey=s["grey"],
                label_set=s["label_set"],
                flow=s["flow"] or "flow" in config["streams"],
                seed=s["seed"],
                quiet=quiet,
            )
        manifest = records.read_manifest(data_dir)
    else:
        manifest = records.read_manifest(config["data"], verify=True)
    if manifest["kind"] != wanted:
        raise UserError(
            f"Model {spec.name!r} takes {spec.kind}s but {manifest['_dir']!r} holds {manifest['kind']} records."
        )
    return manifest


def make_split(config, manifest):
    if config["split"] == "official":
        return splits.official_split(manifest)
    return splits.kfold_split(pipeline.subjects_of(manifest), config["folds"], config["fold"])


def input_geometry(config, manifest):
    image = manifest.get("image", {})
    size = config["image_size"] or image.get("size")
    channels = config["channels"] or image.get("channels")
    if not size or not channels:
        raise UserError("The dataset manifest gives no image size/channels; pass --image-size and --channels.")
    return int(size), int(channels)


def make_dataset(config, manifest, split, side, *, training=False, with_meta=False, batch_size=None):
    """tf.data for one side ("train", "val", "test") of `split`."""
    size, channels = input_geometry(config, manifest)
    if split.official:
        selection = {"split_name": {"train": "train", "val": "val", "test": "test"}[side]}
    else:
        subjects = getattr(split, side)
        if not subjects:
            return None
        selection = {"subjects": subjects}
    common = dict(image_size=size, channels=channels, batch_size=batch_size or config["batch_size"], training=training, seed=config["seed"], with_meta=with_meta, **selection)
    if manifest["kind"] == "still":
        return pipeline.still_dataset(manifest, **common)
    streams = tuple(s.strip() for s in config["streams"].split(","))
    return pipeline.clip_dataset(manifest, clip_length=config["clip_length"], clip_stride=config["clip_stride"], streams=streams, **common)


def model_input_shape(config, manifest):
    size, channels = input_geometry(config, manifest)
    if get_spec(config["model"]).kind == "clip":
        return (config["clip_length"], size, size, channels)
    return (size, size, channels)


def build_model(config, manifest, **overrides):
    return get_model(
        config["model"],
        model_input_shape(config, manifest),
        len(manifest["labels"]),
        size=config["size"],
        **dict(config["model_args"], **overrides),
    )


def make_optimizer(config):
    """The optimizer the model's registration names: Adam, or AdaBelief (paper 003 Table 4)."""
    if get_spec(config["model"]).optimizer == "adabelief":
        from fer_keras.training.adabelief import AdaBelief

        return AdaBelief(learning_rate=config["learning_rate"])
    return keras.optimizers.Adam(config["learning_rate"])


def _new_run_dir(out, name):
    run_dir = pathlib.Path(out) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"Run folder {str(run_dir)!r} already exists; choose another --name or remove it.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train(config, *, out="runs", name=None, quiet=False):
    """Trains per `config` (see `training.config.resolve`) and returns the run folder."""
    get_spec(config["model"])  # unknown model: fail before creating anything
    name = name or f"{config['model']}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = _new_run_dir(out, name)
    try:
        return _train(config, run_dir, quiet=quiet)
    except BaseException:
        # Nothing half-written: a run that did not finish one epoch leaves no folder behind.
        if not (run_dir / "checkpoints" / "last.keras").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train(config, run_dir, *, quiet):
    set_seed(config["seed"])
    manifest = load_dataset(config, run_dir, quiet=quiet)
    split = make_split(config, manifest)
    train_ds = make_dataset(config, manifest, split, "train", training=True)
    val_ds = make_dataset(config, manifest, split, "val")
    resolved = dict(
        config,
        run_name=run_dir.name,
        dataset={"dir": os.path.relpath(manifest["_dir"], run_dir) if config["data"] == "synth" else os.path.abspath(manifest["_dir"]),
                 "name": manifest["dataset"], "kind": manifest["kind"], "label_set": manifest["label_set"], "labels": manifest["labels"]},
        split_subjects=split.to_dict(),
        version=__import__("fer_keras").__version__,
    )
    (run_dir / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")

    model = build_model(config, manifest)
    model.compile(
        optimizer=make_optimizer(config),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    monitor = "val_accuracy" if val_ds is not None else "accuracy"
    nan_guard = StopOnNaN()
    callbacks = [
        keras.callbacks.ModelCheckpoint(run_dir / "checkpoints" / "best.keras", monitor=monitor, save_best_only=True, mode="max"),
        keras.callbacks.ModelCheckpoint(run_dir / "checkpoints" / "last.keras"),
        keras.callbacks.CSVLogger(run_dir / "history.csv"),
        keras.callbacks.TensorBoard(run_dir / "logs", write_graph=False, profile_batch=0),
        nan_guard,
    ]
    verbose = 0 if quiet else (1 if os.isatty(2) else 2)
    if hasattr(model, "pretrain"):
        # Staged models (e.g. greedy layer-wise autoencoder pretraining) run their own stage first.
        model.pretrain(train_ds, epochs=config["epochs"], verbose=verbose)
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config["epochs"],
        callbacks=callbacks,
        verbose=verbose,
    )
    if getattr(nan_guard, "failed_at", None):
        epoch, step = nan_guard.failed_at
        raise UserError(f"Training stopped: the loss became NaN/inf at epoch {epoch + 1}, step {step + 1}. Lower --lr or check the data.")
    if not history.history.get("loss"):
        raise UserError("The training side of the split produced no batches.")
    shutil.copyfile(run_dir / "checkpoints" / "best.keras", run_dir / "model.keras.tmp")
    os.replace(run_dir / "model.keras.tmp", run_dir / "model.keras")
    return run_dir


def load_run(run_dir):
    """(config, manifest, model) of a finished run folder."""
    run_dir = pathlib.Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise UserError(f"{str(run_dir)!r} is not a fer-keras run folder (no config.json).")
    config = json.loads(config_path.read_text())
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        raise UserError(f"Run {str(run_dir)!r} has no model.keras: its training did not finish.")
    data_dir = pathlib.Path(config["dataset"]["dir"])
    if not data_dir.is_absolute():
        data_dir = run_dir / data_dir
    manifest = records.read_manifest(data_dir)
    model = load_model(model_path)
    return config, manifest, model


def load_model(path):
    _register_custom_objects()
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, TypeError) as e:
        raise UserError(f"Cannot load model {str(path)!r}: {str(e).splitlines()[0]}") from None


def _register_custom_objects():
    """Importing the layer modules registers their classes for deserialisation."""
    from fer_keras.models.registry import list_models

    list_models()


def predict_numpy(model, dataset):
    """Runs `model` over a (x, y, meta) dataset; returns probabilities, labels and meta as NumPy."""
    probs, labels, metas = [], [], {}
    for x, y, meta in dataset:
        out = model(x, training=False)
        probs.append((out["probabilities"] if isinstance(out, dict) else out).numpy())
        labels.append(y.numpy())
        for k, v in meta.items():
            metas.setdefault(k, []).append(v.numpy())
    if not probs:
        raise UserError("The evaluation side of the split is empty.")
    return np.concatenate(probs), np.concatenate(labels), {k: np.concatenate(v) for k, v in metas.items()}
