"""`fer-keras train`: data -> split -> model -> fit, into a run folder.

runs/<name>/
    config.json          resolved configuration, split subjects, dataset path
    model.keras          the best checkpoint (by validation accuracy when there is a validation side)
    checkpoints/         best.keras and epoch-NNNN/ (the two newest epochs: model with optimizer state + state.json)
    history.csv          per-epoch metrics
    logs/                TensorBoard
    data/                the generated SynthFER set when --data synth
"""

import json
import math
import os
import pathlib
import shutil
import sys
import time
import uuid
import zipfile

import keras
import numpy as np
import tensorflow as tf

from fer_keras import atomic
from fer_keras.data import pipeline, records, splits
from fer_keras.errors import UserError, first_line
from fer_keras.json_files import read_json_object
from fer_keras.models.registry import builder_takes, get_model, get_spec


class StopOnNaN(keras.callbacks.Callback):
    """Stops training with a clear message naming the epoch and step where the loss became NaN/inf."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            self.failed_at = (self._epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


class ReseedPerEpoch(keras.callbacks.Callback):
    """Sets every layer's random-seed state (Dropout, noise ...) from (seed, epoch) at each epoch start.

    Keras keeps those states outside the saved weights, so without this a run resumed at epoch
    e would draw different dropout masks than an uninterrupted one.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        generators = [g for layer in self.model._flatten_layers() for g in getattr(layer, "_seed_generators", [])]
        for i, generator in enumerate(generators):
            value = (self.seed * 1_000_003 + epoch * 1_009 + i) % 2_147_483_647
            generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))


def set_seed(seed):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_dataset(config, run_dir, *, quiet=False):
    """The manifest of the run's data; generates SynthFER into the run folder for data == 'synth'."""
    spec = get_spec(config["model"])
    wanted = "still" if spec.kind == "still" else "sequence"
    if config["data"] == "synth":
        from fer_keras.data_prep.synth import prepare_synth

        data_dir = pathlib.Path(run_dir) / "data"
        if not (data_dir / records.MANIFEST).exists():
            prepare_synth(data_dir, **synth_arguments(config), quiet=quiet)
        # Verified as a prepared folder is: a resume finds the set the run generated, which may have been damaged since.
        manifest = records.read_manifest(data_dir, verify=True, remedy=regenerate_advice(run_dir, config))
    else:
        manifest = records.read_manifest(config["data"], verify=True, remedy=data_remedy(config["data"]))
    if manifest["kind"] != wanted:
        raise UserError(
            f"Model {spec.name!r} takes {spec.kind}s but {manifest['_dir']!r} holds {manifest['kind']} records."
        )
    if "flow" in str(config["streams"]) and not manifest.get("flow_bound"):
        raise UserError(f"{manifest['_dir']!r} has no optical flow, which --streams rgb,flow takes; prepare it with --flow.")
    bare = [s["dir"] for s in manifest.get("merged_from") or () if s.get("landmarks") is False]
    if manifest["kind"] == "still" and builder_takes(spec.name, "num_landmarks") and bare:
        raise UserError(f"Model {spec.name!r} draws its heatmaps from dlib's 68 landmarks, and {manifest['_dir']!r} "
                        f"merges stills without them ({', '.join(bare)}); merge folders prepared with dlib's detection "
                        "and landmarks, the default.")
    if manifest["kind"] == "still" and builder_takes(spec.name, "num_landmarks") and not records.stills_with_landmarks(manifest):
        # Without them every heatmap is black and the landmark branch learns a constant, silently.
        raise UserError(
            f"Model {spec.name!r} draws its heatmaps from dlib's 68 landmarks, and {manifest['_dir']!r} has none "
            f"(prepared with --no-detect, or from RAF-DB with --landmarks dataset, whose 5 and 37 points predict cannot "
            f"compute on a new photo); prepare it again with dlib's detection and landmarks, the default."
        )
    return manifest


def synth_arguments(config):
    """The `prepare_synth` arguments of the SynthFER set that a --data synth run generates into ``RUN/data``."""
    s = config["synth"]
    return dict(kind="still" if get_spec(config["model"]).kind == "still" else "sequence", subjects=s["subjects"],
                samples_per_emotion=s["samples_per_emotion"], sequences_per_emotion=s["sequences_per_emotion"],
                size=s["size"], grey=s["grey"], label_set=s["label_set"], flow=s["flow"] or "flow" in config["streams"],
                seed=s["seed"], capture=s.get("capture", "wild"))


def regenerate_advice(run_dir, config):
    """What to do about a damaged ``RUN/data`` of a --data synth run: no one prepared it, so `fer-keras prepare synth`
    with the run's own generator settings writes it again, the same samples (they depend only on the settings)."""
    import shlex

    a = synth_arguments(config)
    data_dir = pathlib.Path(run_dir) / "data"
    command = (f"fer-keras prepare synth --out {shlex.quote(str(data_dir))} --kind {a['kind']} --subjects {a['subjects']} "
               f"--samples-per-emotion {a['samples_per_emotion']} --sequences-per-emotion {a['sequences_per_emotion']} "
               f"--size {a['size']} {'--grey' if a['grey'] else '--rgb'} --label-set {a['label_set']}"
               f"{' --flow' if a['flow'] else ''} --seed {a['seed']} --capture {a['capture']}")
    return (f"it is the SynthFER set run {pathlib.Path(run_dir).name!r} generated: remove what is left of "
            f"{str(data_dir)!r} and generate it again as the run did, with `{command}`.")


def data_remedy(data_dir, expected=None):
    """What to do about a missing, damaged or replaced data folder `data_dir`, or None: prepare it again (the words
    of `records.read_manifest`). The SynthFER set a --data synth run generated into ``RUN/data`` (which its k-fold
    folds train on too) is generated again with the run's settings (`regenerate_advice`).

    It is that set only where the run above it recorded it as its own ``data`` and with the same samples: the
    fingerprint `expected` (what the calling run recorded), else the one of the manifest found there. A folder the
    user prepared and named ``data`` beside a copy of some run's config.json is not.
    """
    data_dir = pathlib.Path(data_dir)
    owner = data_dir.parent
    if data_dir.name != "data" or not (owner / "config.json").is_file():
        return None
    try:
        config = read_run_config(owner)
        recorded = config.get("dataset") or {}
        if config.get("data") != "synth" or not config.get("synth") or recorded.get("dir") != "data":
            return None
        if expected is None and (data_dir / records.MANIFEST).is_file():
            expected = data_fingerprint(read_json_object(data_dir / records.MANIFEST))
        if expected is None or expected != recorded.get("fingerprint"):
            return None
        return regenerate_advice(owner, config)
    except (UserError, KeyError, TypeError, AttributeError):
        return None


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


def make_dataset(config, manifest, split, side, *, training=False, with_meta=False, batch_size=None, epochs=None, start_epoch=0):
    """tf.data for one side ("train", "val", "test") of `split` (all epochs in one stream with `epochs`)."""
    size, channels = input_geometry(config, manifest)
    if split.official:
        selection = {"split_name": {"train": "train", "val": "val", "test": "test"}[side]}
    else:
        subjects = getattr(split, side)
        if not subjects:
            return None
        selection = {"subjects": subjects}
    common = dict(image_size=size, channels=channels, batch_size=batch_size or config["batch_size"], training=training, augment=config.get("augment", True), seed=config["seed"], with_meta=with_meta, epochs=epochs, start_epoch=start_epoch, **selection)
    if manifest["kind"] == "still":
        # Models that draw landmark heatmaps (landmark_arm) take dict(images=, landmarks=) batches.
        with_landmarks = builder_takes(config["model"], "num_landmarks")
        return pipeline.still_dataset(manifest, with_landmarks=with_landmarks, **common)
    streams = tuple(s.strip() for s in config["streams"].split(","))
    return pipeline.clip_dataset(manifest, clip_length=config["clip_length"], clip_stride=config["clip_stride"], streams=streams, **common)


def model_input_shape(config, manifest):
    size, channels = input_geometry(config, manifest)
    if get_spec(config["model"]).kind == "clip":
        return (config["clip_length"], size, size, channels)
    return (size, size, channels)


def build_model(config, manifest, **overrides):
    args = dict(config["model_args"], **overrides)
    if builder_takes(config["model"], "streams"):
        args.setdefault("streams", tuple(s.strip() for s in config["streams"].split(",")))
    elif config["streams"] != "rgb":
        raise UserError(f"Model {config['model']!r} takes one RGB stream only. Received: --streams {config['streams']}")
    if builder_takes(config["model"], "rgb_run") and not args.get("rgb_run"):
        raise UserError(
            f"{config['model']} needs rgb_run=<arm_resnet18 run folder> for its frozen RGB branch (paper 003): train "
            'arm_resnet18 first, then pass --config with {"model_args": {"rgb_run": "runs/<that run>"}}.'
        )
    _check_model_args(config["model"], config["model_args"])
    try:
        return get_model(config["model"], model_input_shape(config, manifest), len(manifest["labels"]), size=config["size"], **args)
    except ValueError as e:  # the builders validate their arguments (STYLE.md 6): a user's choice, said in one line
        raise UserError(f"{config['model']}: {first_line(e)}") from None


def _check_model_args(model, model_args):
    """UserError naming a `model_args` key that `model`'s builder does not take, and those it does."""
    import inspect

    parameters = inspect.signature(get_spec(model).builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    taken = [n for n in parameters if n not in ("input_shape", "num_classes", "batch_size")]
    unknown = sorted(set(model_args) - set(parameters))
    if unknown:
        raise UserError(f"{model} takes no model_args {', '.join(repr(k) for k in unknown)}; it takes: {', '.join(taken)}.")


def make_optimizer(config, steps_per_epoch=None):
    """The optimizer the model's registration names: Adam, or AdaBelief (paper 003 Table 4), at `learning_rate(...)`."""
    rate = learning_rate(config, steps_per_epoch)
    if get_spec(config["model"]).optimizer == "adabelief":
        from fer_keras.training.adabelief import AdaBelief

        return AdaBelief(learning_rate=rate)
    return keras.optimizers.Adam(rate)


def learning_rate(config, steps_per_epoch):
    """`config["learning_rate"]`, or with lr_schedule "cosine" a decay from it to 0 over all the run's steps."""
    if config.get("lr_schedule", "constant") == "cosine":
        if not steps_per_epoch:
            raise ValueError(f"A cosine learning rate needs steps_per_epoch. Received: steps_per_epoch={steps_per_epoch!r}")
        return keras.optimizers.schedules.CosineDecay(config["learning_rate"], decay_steps=config["epochs"] * steps_per_epoch)
    return config["learning_rate"]


def initialise_from(model, config, source_run, *, dataset=None, test_subjects=()):
    """Copies a finished run's weights into `model` (built from `config`) for fine-tuning; returns (copied, kept).

    The source must be a run of the same model and size. Weights are matched in order, and one whose shape
    differs keeps `model`'s initial value: a classifier for another number of classes, a first convolution
    for other input channels. `kept` lists their paths. The optimizer is not copied.

    Subject independence: a source whose weights have seen any of this run's `test_subjects` of `dataset`
    (`people(manifest)`), itself or through the runs it started from, is refused: the test scores would then
    have seen those faces.
    """
    source_run = pathlib.Path(source_run)
    init_source_config(config, source_run)
    if dataset is not None:
        refuse_leak(source_run, f"--init-from {str(source_run)!r}", dataset, test_subjects)
    source = load_model(source_run / "model.keras")
    targets, sources = model.weights, source.weights
    if len(targets) != len(sources):
        raise UserError(
            f"--init-from {str(source_run)!r} holds {len(sources)} weights and this {config['model']} {len(targets)} "
            "(other model arguments or streams?); it cannot start this run."
        )
    copied, kept = 0, []
    for target, weight in zip(targets, sources):
        if tuple(target.shape) == tuple(weight.shape):
            target.assign(weight)
            copied += 1
        else:
            kept.append(f"{target.path} {tuple(target.shape)} (source {tuple(weight.shape)})")
    if not copied:
        raise UserError(f"--init-from {str(source_run)!r}: no weight has the shape this run needs.")
    return copied, kept


MERGED = "merged"  # the people of a `prepare merge` folder: each subject id names its own (`subject_key`)


def people(manifest):
    """Who a dataset's subject ids name. SynthFER draws each identity from (seed, subject id), so two SynthFER sets
    of other seeds are other people under the same ids; in every other dataset an id is one person. A merged folder's
    ids carry their dataset's people (`MERGED`, `subject_key`)."""
    if manifest.get("merged_from"):
        return MERGED
    name = manifest.get("dataset") or manifest.get("name", "")
    if name == "synthfer":
        return f"synthfer seed {manifest.get('params', {}).get('seed', manifest.get('seed'))}"
    return name


def run_data_dir(run_dir, config):
    """The data folder a run was trained on (config.json records it absolute, or relative to the run for --data synth)."""
    data_dir = pathlib.Path(config["dataset"]["dir"])
    return data_dir if data_dir.is_absolute() else pathlib.Path(run_dir) / data_dir


def _run_people(run_dir, config):
    recorded = config.get("dataset", {})
    if recorded.get("people"):
        return recorded["people"]
    try:  # a run from before config.json recorded it
        return people(records.read_manifest(run_data_dir(run_dir, config)))
    except (UserError, KeyError):
        # Its data has moved: by dataset name alone, which for SynthFER counts every seed as the same people.
        name = recorded.get("name", "")
        return name if name != "synthfer" else None


def seen_subjects(run_dir, _visited=None):
    """{(people, subject id)} whose faces a run's weights have learned from: its own training and validation
    subjects, and those of every run its weights started from (--init-from, landmark_arm's rgb_run), all the way
    back. people is `people(manifest)`, or None for a SynthFER run whose seed is unknown (then it matches any seed)."""
    run_dir = pathlib.Path(run_dir).resolve()
    visited = set() if _visited is None else _visited
    if run_dir in visited or not (run_dir / "config.json").is_file():
        return set()
    visited.add(run_dir)
    config = read_run_config(run_dir)
    sides = config.get("split_subjects", {})
    who = _run_people(run_dir, config)
    seen = {subject_key(who, s) for s in (*sides.get("train", ()), *sides.get("val", ()))}
    for source in (config.get("init_from"), (config.get("model_args") or {}).get("rgb_run")):
        if not source:
            continue
        source = pathlib.Path(source)
        source = source.parent if source.is_file() else source  # an rgb_run may name the run's model.keras
        if not (source / "config.json").is_file():
            print(f"Note: {run_dir} started from {source}, which is not there any more: the subjects its weights "
                  "learned from cannot be checked against this test set.", file=sys.stderr)
            continue
        seen |= seen_subjects(source, visited)
    return seen


def subject_key(who, subject):
    """(people, id) of one person: `subject` of data whose people are `who`. A merged folder's id is ``<people>/<id>``
    (`data_prep.merge`), so a person is the same in it and in the folder it was merged from."""
    subject = str(subject)
    if who == MERGED and "/" in subject:
        person, _, subject = subject.partition("/")
        return person, subject
    return who, subject


def leaked_subjects(source_run, who, test_subjects):
    """The `test_subjects` (of people `who`) that `source_run`'s weights, or those it started from, have seen."""
    seen = seen_subjects(source_run)

    def known(key):  # a SynthFER run of unknown seed (people None) counts as every seed
        return key in seen or (key[0] or "").startswith("synthfer") and (None, key[1]) in seen

    return sorted(str(t) for t in test_subjects if known(subject_key(who, t)))


def refuse_leak(source_run, what, who, test_subjects):
    """A UserError when the run `source_run` (whose weights start this run), or any run its weights started from,
    was trained or validated on subjects that this run tests on: the scores would then not be subject-independent.
    `who`: this run's data, as `people(manifest)`."""
    leaked = leaked_subjects(source_run, who, test_subjects)
    if leaked:
        raise UserError(
            f"{what} was trained on {'' if who == MERGED else who.split(' seed ')[0] + ' '}subjects that this run tests on "
            f"({', '.join(leaked[:5])}{' ...' if len(leaked) > 5 else ''}), itself or through the runs its weights "
            "started from, so the scores would not be subject-independent. Start from a run of other subjects, or of "
            "the same split."
        )


def init_source_config(config, source_run):
    """The config of `source_run` after the checks that need no model: a finished run of config's model and size."""
    source_run = pathlib.Path(source_run)
    if not (source_run / "config.json").exists():
        raise UserError(f"--init-from takes a fer-keras run folder; {str(source_run)!r} has no config.json.")
    source_config = read_run_config(source_run)
    for key in ("model", "size"):
        if source_config.get(key) != config[key]:
            raise UserError(
                f"--init-from {str(source_run)!r} is a run of {key} {source_config.get(key)!r}; this run trains "
                f"{key} {config[key]!r}. Fine-tune a run of the same model and size."
            )
    check_version(source_run, source_config)
    if not (source_run / "model.keras").exists():
        raise UserError(f"--init-from {str(source_run)!r} has no model.keras: its training did not finish.")
    return source_config


def _new_run_dir(out, name):
    """Creates out/name; returns it and the folders above it that this call created, deepest first."""
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise UserError(f"--name must be a plain folder name inside --out, without '/'. Received: {name!r}")
    run_dir = pathlib.Path(out) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        checkpoint = latest_checkpoint(run_dir) if (run_dir / "config.json").is_file() else None
        if checkpoint is not None and not (run_dir / "model.keras").exists():  # stopped: removing it loses the epochs
            epoch = json.loads((checkpoint / "state.json").read_text())["epoch"]
            raise UserError(f"Run folder {str(run_dir)!r} holds an unfinished run (epochs 1-{epoch} kept); go on with "
                            f"`fer-keras train --resume {run_dir}`, or choose another --name.")
        raise UserError(f"Run folder {str(run_dir)!r} already exists; choose another --name or remove it.")
    created = [folder for folder in run_dir.parents if not folder.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, created


def _remove_empty(folders):
    """Removes `folders` (deepest first) while they are empty: what a failed run created around itself."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def train(config, *, out="runs", name=None, quiet=False):
    """Trains per `config` (see `training.config.resolve`) and returns the run folder.

    Under `--strategy multiworker` every worker runs this; only the chief writes `out/name`
    (see `training.distribute.worker_run_dir`).
    """
    from fer_keras.training import distribute

    spec = get_spec(config["model"])  # unknown model: fail before creating anything
    if spec.trainer and config.get("init_from"):
        raise UserError(f"{config['model']} trains in stages with its own networks; --init-from cannot start it.")
    if config.get("init_from"):
        init_source_config(config, config["init_from"])  # a wrong source fails before data is generated
    if spec.trainer and config.get("lr_schedule", "constant") != "constant":
        raise UserError(f"{config['model']} trains in stages with its own optimizers; lr_schedule must be 'constant' for it. Received: {config['lr_schedule']!r}")
    strategy = distribute.make_strategy(config["strategy"])  # a bad TF_CONFIG fails before any folder exists
    name = name or f"{config['model']}-{time.strftime('%Y%m%d-%H%M%S')}"
    write_dir, throw_away = distribute.worker_run_dir(pathlib.Path(out) / name, strategy)
    run_dir, created = _new_run_dir(out, name) if distribute.is_chief(strategy) else (pathlib.Path(out) / name, [])
    try:
        _train(config, write_dir, quiet=quiet, strategy=strategy)
        return run_dir
    except BaseException as e:
        # Nothing half-written: a run that did not finish one epoch leaves no folder behind, nor the --out it created.
        if latest_checkpoint(write_dir) is None and distribute.is_chief(strategy):
            shutil.rmtree(write_dir, ignore_errors=True)
            _remove_empty(created)
            if isinstance(e, KeyboardInterrupt):
                raise KeyboardInterrupt(f"no epoch was complete, so {run_dir} was removed") from None
        elif isinstance(e, KeyboardInterrupt):
            raise _kept(run_dir) from None
        raise
    finally:
        if throw_away:
            distribute.remove_worker_dir(write_dir)


def resume(run_dir, *, epochs=None, quiet=False, strategy=None):
    """Continues a killed (or finished, with more `epochs`) run from its last complete epoch.

    `strategy` (default: the run's own) may differ from the one the run began with: a step's
    update does not depend on how the global batch is split.
    """
    run_dir = pathlib.Path(run_dir)
    read_run_config(run_dir)  # not a run folder: said before any lock file is made
    if not _chief_process():  # a multiworker worker other than the chief reads the chief's run, and writes nothing
        return _resume(run_dir, epochs=epochs, quiet=quiet, strategy=strategy)
    with _ResumeLock(run_dir):
        _settle_aside(run_dir)  # what a resume killed outright (SIGKILL) set aside
        return _resume(run_dir, epochs=epochs, quiet=quiet, strategy=strategy)


def _resume(run_dir, *, epochs, quiet, strategy):
    config_path = run_dir / "config.json"
    saved = read_run_config(run_dir)
    check_version(run_dir, saved)
    from fer_keras.training.config import resolve

    from fer_keras.training import distribute

    config = resolve(saved, epochs=epochs, strategy=strategy)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError(f"Run {str(run_dir)!r} has no complete epoch to resume from; delete the folder and train it again.")
    state = json.loads((checkpoint / "state.json").read_text())
    # Staged trainers (vae_swap) count epochs over all their stages and write that total.
    total = state.get("total_epochs", config["epochs"])
    staged = get_spec(config["model"]).trainer
    if staged and epochs is not None and epochs != saved.get("epochs"):
        raise UserError(f"{config['model']} runs resume with their own epochs per stage ({saved.get('epochs')}); --epochs cannot extend them.")
    # A run killed after its last checkpoint but before model.keras just finishes.
    if state["epoch"] >= total and (run_dir / "model.keras").exists():
        extend = ("; a run of staged training cannot be extended" if staged
                  else f"; pass --epochs N (more than {state['epoch']}) to extend it")
        raise UserError(f"Run {str(run_dir)!r} already finished its {state['epoch']} epochs{extend}.")
    if epochs is not None and epochs < state["epoch"]:
        raise UserError(f"Run {str(run_dir)!r} has trained {state['epoch']} epochs; --epochs {epochs} would not extend it.")
    strategy = distribute.make_strategy(config["strategy"])
    # The data this resume trains on, checked before anything of the run is touched: a moved, replaced or damaged
    # folder fails here and leaves a finished run as it was.
    manifest = load_dataset(config, run_dir, quiet=True)
    replaced = _replaced_data(run_dir, saved, manifest)
    if replaced:
        raise UserError(replaced)
    chief = distribute.is_chief(strategy)
    write_dir, throw_away = distribute.worker_run_dir(run_dir, strategy)
    try:
        if chief:
            # Until this resume has trained, the run's model.keras (the shorter run's: an extended run is unfinished
            # until it ends), its evaluation, config.json and history.csv are set aside, and put back if it stops
            # before a new epoch.
            _set_aside(run_dir, state["epoch"], quiet)
            if epochs is not None and epochs != saved.get("epochs"):
                # The run's own record of its length: a later plain --resume, --protocol kfold and --config follow it.
                atomic.write_text(config_path, json.dumps(dict(saved, epochs=epochs), indent=2) + "\n")
        # Every worker reads the chief's checkpoint (a shared folder, or a copy at the same path).
        _train(config, write_dir, quiet=quiet, checkpoint=checkpoint, state=state, strategy=strategy,
               manifest=manifest if write_dir == run_dir else None)  # its shards verified once
    except KeyboardInterrupt:
        if chief and _settle_aside(run_dir):  # put back: the run is as it was
            extend = f" --epochs {epochs}" if epochs is not None and epochs != saved.get("epochs") else ""
            raise KeyboardInterrupt(f"no new epoch was complete, so {run_dir} is as it was ({state['epoch']} epochs); "
                                    f"go on with `fer-keras train --resume {run_dir}{extend}`") from None
        raise _kept(run_dir) from None
    except BaseException:
        if chief:
            _settle_aside(run_dir)
        raise
    finally:
        if throw_away:
            distribute.remove_worker_dir(write_dir)
    if chief:
        _settle_aside(run_dir)
    return run_dir


def _chief_process():
    """Whether this process writes the run folder: `distribute.is_chief`, read from TF_CONFIG before any strategy."""
    try:
        spec = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return True  # make_strategy says what is wrong with it
    task = spec.get("task") or {}
    if not task or task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in (spec.get("cluster") or {})


LOCK = ".resume.lock"  # RUN/.resume.lock: the process id of the resume running on this run


class _ResumeLock:
    """One resume of a run at a time: a second would put back, or set aside, what the first is replacing."""

    def __init__(self, run_dir):
        self.path = pathlib.Path(run_dir) / LOCK

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise UserError(f"Run {str(self.path.parent)!r} is being resumed by process {pid}; wait for it to "
                                    f"end, or stop it first.") from None
                self.path.unlink(missing_ok=True)  # a resume that was killed
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return self
        raise UserError(f"Run {str(self.path.parent)!r} is being resumed by another process; wait for it to end.")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ASIDE = ".before-resume"  # RUN/.before-resume/: what a resume replaces, until it has trained a new epoch


def _set_aside(run_dir, epoch, quiet):
    """Moves the run's model.keras and evaluation (copies of config.json and history.csv) into RUN/.before-resume/.

    moved.json records each path relative to the run folder, so a run moved or copied meanwhile settles in place.
    """
    aside = run_dir / ASIDE
    moved = [name for name in ("model.keras", *EVALUATION_OUTPUTS) if (run_dir / name).exists()]
    if run_dir.parent.name.startswith("kfold-"):  # a fold of a k-fold protocol: its summary no longer holds
        moved += [f"../{n}" for n in ("metrics.json", "confusion_matrix.png", "confusion_matrix_clips.png")
                  if (run_dir.parent / n).exists()]
    copied = [name for name in ("config.json", "history.csv") if (run_dir / name).exists()]  # the resume rewrites them
    entries = [[rel, f"{i}-{pathlib.PurePath(rel).name}", "copy" if rel in copied else "move"]
               for i, rel in enumerate(copied + moved)]
    aside.mkdir()
    atomic.write_text(aside / "moved.json", json.dumps({"epoch": epoch, "entries": entries}) + "\n")  # first: a kill loses nothing
    for rel, name, how in entries:
        (shutil.copy2 if how == "copy" else os.replace)(run_dir / rel, aside / name)
    evaluation = [rel for rel in moved if rel != "model.keras"]
    if evaluation and not quiet:
        names = [rel if not rel.startswith("../") else f"the k-fold summary's {rel[3:]}" for rel in evaluation]
        print(f"Set aside the evaluation of the model before this resume ({', '.join(names)}): it is removed once "
              f"the resume has trained an epoch; run `fer-keras evaluate {run_dir}` again when it has finished.",
              file=sys.stderr)


def _settle_aside(run_dir):
    """RUN/.before-resume/ put back where its resume trained no new epoch, else removed; True when put back."""
    aside = run_dir / ASIDE
    record_path = aside / "moved.json"
    if not record_path.is_file():
        shutil.rmtree(aside, ignore_errors=True)  # killed before it recorded anything: nothing was moved yet
        return False
    record = json.loads(record_path.read_text())
    checkpoint = latest_checkpoint(run_dir)
    trained = checkpoint is not None and json.loads((checkpoint / "state.json").read_text())["epoch"] > record["epoch"]
    if not trained:
        for rel, name, how in record.get("entries", []):
            source, target = aside / name, run_dir / rel
            # A copy replaces what the resume rewrote; a moved file never replaces one written since
            if source.exists() and (how == "copy" or not target.exists()):
                os.replace(source, target)
    shutil.rmtree(aside, ignore_errors=True)
    return not trained


# What `evaluate` (held-out and cross-dataset) and `explain` write into a run folder, of the model it held then.
EVALUATION_OUTPUTS = ("metrics.json", "predictions.csv", "confusion_matrix.png", "confusion_matrix_clips.png", "cross", "explain")


def _kept(run_dir):
    """The KeyboardInterrupt of a stopped run, saying which epochs are kept and how to go on."""
    checkpoint = latest_checkpoint(run_dir)
    epoch = json.loads((checkpoint / "state.json").read_text())["epoch"] if checkpoint else 0
    return KeyboardInterrupt(f"epochs 1-{epoch} are kept in {run_dir}; go on with `fer-keras train --resume {run_dir}`")


def latest_checkpoint(run_dir):
    """The newest complete `checkpoints/epoch-NNNN` folder, or None."""
    folders = sorted((pathlib.Path(run_dir) / "checkpoints").glob("epoch-[0-9][0-9][0-9][0-9]"))
    return folders[-1] if folders else None


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: the full model (weights + optimizer state), the epoch counter and history.csv.

    It must run after the CSVLogger, so the copy of history.csv it commits holds this epoch's
    row: a kill between the two callbacks then cannot lose a row on resume. Each epoch is
    written as ``checkpoints/.epoch-NNNN.tmp`` and renamed to ``epoch-NNNN``: the rename is the
    commit point, so a kill at any moment leaves either the previous or the new
    checkpoint, never a torn one. The two newest are kept. ``best.keras`` (by `monitor`) is
    replaced atomically too.
    """

    def __init__(self, run_dir, monitor, best=None, keep=2):
        super().__init__()
        self.folder = pathlib.Path(run_dir) / "checkpoints"
        self.monitor = monitor
        self.best = best
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite(float((logs or {}).get("loss", 0.0))):
            return  # never checkpoint weights that a NaN/inf loss has already spoiled
        self.folder.mkdir(parents=True, exist_ok=True)
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(value) and (self.best is None or value > self.best):
            self.best = float(value)
            _save_atomic(self.model, self.folder / "best.keras")
        state = {"epoch": epoch + 1, "best": self.best, "monitor": self.monitor}
        history = self.folder.parent / "history.csv"

        def write(tmp):
            self.model.save(tmp / "model.keras")
            if history.exists():
                shutil.copyfile(history, tmp / "history.csv")

        commit_checkpoint(self.folder, epoch + 1, write, state, keep=self.keep)


def commit_checkpoint(folder, epoch, write, state, *, keep=2):
    """Writes ``folder/epoch-NNNN/`` whole or not at all, and keeps the `keep` newest.

    `write(tmp)` fills a temporary folder, `state` goes to its state.json, and one rename
    commits it: a kill or a full disk at any moment leaves the previous checkpoint, never a
    torn one.
    """
    name = f"epoch-{epoch:04d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        (tmp / "state.json").write_text(json.dumps(state) + "\n")
        shutil.rmtree(folder / name, ignore_errors=True)
        os.replace(tmp, folder / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(folder.glob("epoch-[0-9][0-9][0-9][0-9]"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _save_atomic(model, path):
    tmp = path.with_name(path.stem + ".tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _restore_history(run_dir, checkpoint, epochs):
    """Puts back history.csv as the checkpoint saw it: the header and the first `epochs` rows.

    The checkpoint's own copy is used where it has one (the live file may lack the last row, or
    hold rows of an epoch that never committed); the resumed run appends to it.
    """
    path = run_dir / "history.csv"
    source = checkpoint / "history.csv" if (checkpoint / "history.csv").exists() else path
    if source.exists():
        lines = source.read_bytes().splitlines(keepends=True)  # bytes: keep CSVLogger's \r\n as written
        path.write_bytes(b"".join(lines[: 1 + epochs]))


def _train(config, run_dir, *, quiet, checkpoint=None, state=None, strategy=None, manifest=None):
    """Trains (or, from `checkpoint`, resumes) the run in `run_dir`; `manifest`: its data, when the caller read it."""
    from fer_keras.training import distribute

    strategy = strategy or tf.distribute.get_strategy()
    set_seed(config["seed"])
    manifest = manifest or load_dataset(config, run_dir, quiet=quiet)
    split = make_split(config, manifest)
    start_epoch = state["epoch"] if state else 0
    selection = {"split_name": "train"} if split.official else {"subjects": split.train}
    examples = pipeline.count_examples(manifest, clip_length=config["clip_length"], clip_stride=config["clip_stride"], **selection)
    if examples == 0:
        raise UserError(f"The training side of the split ({split.description}) holds no examples.")
    if manifest["kind"] == "sequence":  # a warning, not a summary: printed with --quiet too
        longest = pipeline.longest_sequence(manifest, **selection)
        if config["clip_length"] > longest:
            print(f"Warning: --clip-length {config['clip_length']} is longer than every training sequence (the longest has "
                  f"{longest} frames); each clip is padded by repeating its last frame.", file=sys.stderr)
    if not split.official and manifest["counts_per_subject"] and max(manifest["counts_per_subject"].values()) == 1:
        official = " or --split official, which this dataset has" if manifest.get("official_split") else ""
        print(f"Warning: every subject of {manifest['dataset']} has one sample (no subject ids), so this subject k-fold "
              f"is an image k-fold and its test accuracy is not subject-independent; give subject ids (prepare folder "
              f"--subject-pattern){official}.", file=sys.stderr)
    steps = math.ceil(examples / config["batch_size"])
    train_ds = make_dataset(config, manifest, split, "train", training=True, epochs=config["epochs"], start_epoch=start_epoch)
    val_ds = make_dataset(config, manifest, split, "val")
    if val_ds is not None:
        # A filtered dataset has unknown length: without it Keras warns "Your input ran out of data" after each first validation pass.
        val_selection = {"split_name": "val"} if split.official else {"subjects": split.val}
        val_examples = pipeline.count_examples(manifest, clip_length=config["clip_length"], clip_stride=config["clip_stride"], **val_selection)
        val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(math.ceil(val_examples / config["batch_size"])))
    train_ds, val_ds = distribute.distribute_dataset(train_ds, strategy), distribute.distribute_dataset(val_ds, strategy)
    spec = get_spec(config["model"])
    if checkpoint is None:
        resolved = dict(
            config,
            # absolute: --resume and --config with this file work from any folder
            data=config["data"] if config["data"] == "synth" else os.path.abspath(config["data"]),
            run_name=run_dir.name,
            run_id=uuid.uuid4().hex,  # the run's identity wherever its folder is moved (exports check it)
            dataset={"dir": os.path.relpath(manifest["_dir"], run_dir) if config["data"] == "synth" else os.path.abspath(manifest["_dir"]),
                     "name": manifest["dataset"], "kind": manifest["kind"], "label_set": manifest["label_set"], "labels": manifest["labels"],
                     "flow_bound": manifest.get("flow_bound"), "people": people(manifest), "image": manifest.get("image"),
                     "fingerprint": data_fingerprint(manifest)},
            split_subjects=split.to_dict(),
            init_from=os.path.abspath(config["init_from"]) if config.get("init_from") else None,
            # absolute, as init_from: the leak checks follow it from any folder
            model_args=dict(config["model_args"], **({"rgb_run": os.path.abspath(config["model_args"]["rgb_run"])}
                                                      if config["model_args"].get("rgb_run") else {})),
            version=__import__("fer_keras").__version__,
        )
        (run_dir / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    if spec.trainer:
        from fer_keras.models.registry import resolve_hook

        # The hook builds its networks and optimizers inside the scope; `resume` is the checkpoint folder.
        with strategy.scope():
            resolve_hook(spec.trainer)(config=config, manifest=manifest, split=split, run_dir=run_dir, quiet=quiet, resume=checkpoint)
        return run_dir
    rgb_run = config["model_args"].get("rgb_run")  # landmark_arm's frozen arm_resnet18 branch (or its model.keras)
    if rgb_run and pathlib.Path(rgb_run).is_file():
        rgb_run = str(pathlib.Path(rgb_run).parent)
    if rgb_run and (pathlib.Path(rgb_run) / "config.json").exists():
        refuse_leak(rgb_run, f"rgb_run {str(rgb_run)!r}", people(manifest), split.test)
    with strategy.scope():  # variables, optimizer slots and metrics are created distributed
        if checkpoint is None:
            model = build_model(config, manifest)
            if config.get("init_from"):
                copied, kept = initialise_from(model, config, config["init_from"], dataset=people(manifest),
                                               test_subjects=split.test)
                if not quiet:
                    print(f"Initialised {copied} of {len(model.weights)} weights from {config['init_from']}"
                          + (f"; kept this run's own: {', '.join(kept)}" if kept else ""), file=sys.stderr)
            model.compile(
                optimizer=make_optimizer(config, steps),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=["accuracy"],
            )
        else:
            _register_custom_objects()
            model = keras.saving.load_model(checkpoint / "model.keras", compile=True)
            if config.get("lr_schedule", "constant") != "constant":
                # The same decay when the run resumes; spread over the new total when --epochs extends it.
                model.optimizer.learning_rate = learning_rate(config, steps)
            _restore_history(run_dir, checkpoint, start_epoch)
        if config["strategy"] != "default" and distribute.sync_batch_norm_requested():
            distribute.synchronize_batch_norm(model)
    monitor = "val_accuracy" if val_ds is not None else "accuracy"
    nan_guard = StopOnNaN()
    callbacks = [
        ReseedPerEpoch(config["seed"]),
        keras.callbacks.CSVLogger(run_dir / "history.csv", append=checkpoint is not None),  # before the checkpoint copies it
        EpochCheckpoint(run_dir, monitor, best=state["best"] if state else None),
        keras.callbacks.TensorBoard(run_dir / "logs", write_graph=False, profile_batch=0),
        nan_guard,
    ]
    verbose = 0 if quiet else (1 if os.isatty(2) else 2)
    pretrain = hasattr(model, "pretrain") and checkpoint is None
    if pretrain and config.get("init_from"):
        pretrain = False
        if not quiet:
            print("Greedy layer-wise pretraining skipped: the weights come from --init-from.", file=sys.stderr)
    if pretrain:
        # Staged models (e.g. greedy layer-wise autoencoder pretraining) run their own stage first.
        pretrain_epochs = config.get("pretrain_epochs") or config["epochs"]
        with strategy.scope():
            pretrain_ds = distribute.distribute_dataset(make_dataset(config, manifest, split, "train", training=True), strategy)
            results = model.pretrain(pretrain_ds, epochs=pretrain_epochs, verbose=verbose)
        if results:  # what each layer's autoencoder reached, for the user (and the SAE benchmark)
            summary = [{"layer": r["layer"], "denoising": r["denoising"], "epochs": pretrain_epochs,
                        "loss_before": float(r["loss_before"]), "loss_after": float(r["loss_after"])} for r in results]
            atomic.write_text(run_dir / "pretraining.json", json.dumps(summary, indent=2) + "\n")
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config["epochs"],
        initial_epoch=start_epoch,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=verbose,
    )
    if getattr(nan_guard, "failed_at", None):
        epoch, step = nan_guard.failed_at
        raise UserError(f"Training stopped: the loss became NaN/inf at epoch {epoch + 1}, step {step + 1}. Lower --lr or check the data.")
    best = run_dir / "checkpoints" / "best.keras"
    shutil.copyfile(best if best.exists() else latest_checkpoint(run_dir) / "model.keras", run_dir / "model.keras.tmp")
    os.replace(run_dir / "model.keras.tmp", run_dir / "model.keras")
    return run_dir


def read_run_config(run_dir):
    """config.json of a run folder; one clear line when RUN is not a run folder or its config is damaged."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a fer-keras run folder (no config.json).")
    config = read_json_object(path)
    if "model" not in config:
        raise UserError(f"{path} is not a fer-keras run configuration (it names no model).")
    return config


def load_run(run_dir, *, needs_data=True):
    """(config, manifest, model) of a finished run folder.

    `needs_data=False` (SavedModel export, predict, benchmark, evaluate --data, explain INPUT: they use the data's
    labels, kind and image geometry only): where the data
    folder is gone or damaged (a run copied to another machine), the manifest is what config.json recorded of it.
    A string says why the command needs the data; it ends the error when the data cannot be read.
    """
    run_dir = pathlib.Path(run_dir)
    config = read_run_config(run_dir)
    check_version(run_dir, config)
    model_path = run_dir / "model.keras"
    if not model_path.exists() and (run_dir / ASIDE).exists():
        raise UserError(f"Run {str(run_dir)!r} stopped while it was being resumed: its model is set aside in "
                        f"{ASIDE}/, and `fer-keras train --resume {run_dir}` puts it back or goes on.")
    if not model_path.exists():
        raise UserError(f"Run {str(run_dir)!r} has no model.keras: its training did not finish.")
    data_dir = run_data_dir(run_dir, config)
    try:
        # Commands that read the samples check the shards first: a damaged one is then said to be that (train does too).
        remedy = (regenerate_advice(run_dir, config) if config.get("data") == "synth"
                  else data_remedy(data_dir, (config.get("dataset") or {}).get("fingerprint")))
        manifest = records.read_manifest(data_dir, verify=bool(needs_data), remedy=remedy)
        replaced = _replaced_data(run_dir, config, manifest, remedy)
        if replaced:
            raise UserError(replaced)
    except UserError as e:
        if isinstance(needs_data, str):  # why this command needs the data, for the user whose data folder moved
            raise UserError(f"{e} {needs_data}") from None
        if needs_data:
            raise
        recorded = config["dataset"]
        manifest = {"dataset": recorded["name"], "kind": recorded["kind"], "label_set": recorded["label_set"],
                    "labels": recorded["labels"], "flow_bound": recorded.get("flow_bound"), "image": recorded.get("image") or {},
                    "_dir": str(data_dir)}
    model = load_model(model_path)
    return config, manifest, model


def data_fingerprint(manifest):
    """What identifies a data folder's samples: the sha256 of its shards' sha256s (the same for a copy), or None."""
    import hashlib

    try:
        return hashlib.sha256("".join(s["sha256"] for s in manifest["shards"]).encode()).hexdigest()[:16]
    except (KeyError, TypeError):
        return None


def _replaced_data(run_dir, config, manifest, remedy=None):
    """Why the run's data folder no longer holds the data it was trained on, or None.

    Compared with what config.json recorded: its people, record kind, labels, image size and channels, and the
    fingerprint of its shards (other samples of the same people); a run made before a key was recorded skips it.

    Scoring such a folder as the run's held-out subjects would report other people, or other images under the same
    sample ids, as its result. `remedy`: what to do instead of preparing it again (`data_remedy`).
    """
    recorded = config.get("dataset") or {}
    theirs = {"people": people(manifest), "kind": manifest.get("kind"), "labels": manifest.get("labels"),
              "image": manifest.get("image"), "fingerprint": data_fingerprint(manifest)}
    differ = [k for k in theirs if recorded.get(k) is not None and recorded[k] != theirs[k]]
    if not differ:
        return None
    # the samples themselves (other images of the same people, or fewer subjects) say least: named last, and alone
    what = ", ".join(f"{k} {theirs[k]!r}, not {recorded[k]!r}" for k in differ if k != "fingerprint") or (
        "other samples: its shards' fingerprint differs")
    return (f"Data folder {str(manifest['_dir'])!r} was replaced since run {pathlib.Path(run_dir).name!r} trained on it "
            f"({what}): {remedy[:-1] if remedy else 'prepare it again as it was'}, or score the run on it as another "
            f"dataset with `fer-keras evaluate RUN --data {manifest['_dir']}`.")


def check_version(run_dir, config):
    """Runs are read by the fer-keras major.minor version that wrote them (configs and layers change between)."""
    ours = __import__("fer_keras").__version__
    theirs = str(config.get("version", "unknown"))
    if theirs.split(".")[:2] != ours.split(".")[:2]:
        raise UserError(f"Run {str(run_dir)!r} was made by fer-keras {theirs}; this is {ours}. Retrain it, or use fer-keras {theirs}.")


def load_model(path):
    _register_custom_objects()
    if pathlib.Path(path).is_file() and not zipfile.is_zipfile(path):
        raise UserError(f"{str(path)!r} is not a valid .keras model file (truncated or damaged).")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, TypeError) as e:
        raise UserError(f"Cannot load model {str(path)!r}: {str(e).splitlines()[0]}") from None


def _register_custom_objects():
    """Importing the layer modules registers their classes for deserialisation."""
    from fer_keras.models.registry import list_models

    list_models()


def predict_numpy(model, dataset, progress=None):
    """Runs `model` over a (x, y, meta) dataset; returns probabilities, labels and meta as NumPy.

    `progress`: a tqdm bar, advanced by each batch's size.
    """
    probs, labels, metas = [], [], {}
    for x, y, meta in dataset:
        out = model(x, training=False)
        probs.append((out["probabilities"] if isinstance(out, dict) else out).numpy())
        labels.append(y.numpy())
        if progress is not None:
            progress.update(len(labels[-1]))
        for k, v in meta.items():
            metas.setdefault(k, []).append(v.numpy())
    if not probs:
        raise UserError("The evaluation side of the split is empty.")
    return np.concatenate(probs), np.concatenate(labels), {k: np.concatenate(v) for k, v in metas.items()}
