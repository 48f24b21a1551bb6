"""A training run's configuration: defaults, overrides from a file and the CLI, validation.

The resolved configuration is written to ``runs/<name>/config.json`` so a run can be repeated
exactly with ``fer-keras train --config runs/<name>/config.json``.
"""

import json
import os
import pathlib

from fer_keras.errors import UserError
from fer_keras.json_files import read_json_object

# The label sets SynthFER draws (every emotion in them is one of `labels.EMOTIONS`; ravdess8's calm is not).
SYNTH_LABEL_SETS = ("basic7", "ckplus7", "ckplus8")

LR_SCHEDULES = ("constant", "cosine")

DEFAULTS = {
    "model": "frame_cnn",
    "size": "small",
    "data": "synth",
    "epochs": 10,
    # Greedy layer-wise pretraining epochs per layer of the SAE models (null: the same as epochs).
    "pretrain_epochs": None,
    "batch_size": 32,
    "learning_rate": 1e-3,
    # constant | cosine: from learning_rate down to 0 at the last step of the last epoch (cosine decay,
    # Loshchilov and Hutter's SGDR without restarts). Constant is the default (the README says which recorded runs used cosine).
    "lr_schedule": "constant",
    "folds": 5,
    "fold": 0,
    "split": "kfold",  # kfold | official
    "seed": 0,
    "image_size": None,  # None: the dataset's own size
    "channels": None,  # None: the dataset's own channels
    "clip_length": 8,
    "clip_stride": 2,
    "streams": "rgb",
    "augment": True,
    # A finished run folder whose weights start this run (fine-tuning), or null. Weights whose shape differs
    # (another number of classes, other input channels) keep their fresh initial values.
    "init_from": None,
    "model_args": {},
    # default | mirrored (this machine's GPUs) | multiworker (TF_CONFIG); batch_size is the global batch.
    "strategy": "default",
    # Used when data == "synth": the SynthFER set generated into the run folder. Only then kept in the resolved
    # configuration (and config.json); an old run's config.json may hold it with other data, and is read as before.
    "synth": {
        "subjects": 30,
        "samples_per_emotion": 4,
        "sequences_per_emotion": 1,
        "size": 64,
        "grey": True,
        "label_set": "basic7",
        "flow": False,
        "seed": 0,
        "capture": "wild",  # wild | lab (one session per subject, CK+-like)
    },
}


def load_config_file(path):
    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"Config file {str(path)!r} does not exist.")
    return read_json_object(path, "Config file ")


def resolve(file_config=None, **cli):
    """Defaults <- config file <- CLI options that were given (not None); "synth" only where data is "synth"."""
    config = json.loads(json.dumps(DEFAULTS))
    file_config = dict(file_config or {})
    recorded = file_config.get("dataset", {}).get("dir") if isinstance(file_config.get("dataset"), dict) else None
    if recorded and os.path.isabs(recorded) and file_config.get("data") not in (None, "synth"):
        # a run's config.json from before data was stored absolute: its data folder as the run recorded it
        file_config["data"] = recorded
    for source in (file_config, {k: v for k, v in cli.items() if v is not None}):
        for key, value in source.items():
            if key in ("run_name", "run_id", "version", "split_subjects", "dataset"):
                continue  # written by a previous run; harmless when a config.json is reused
            if key not in config:
                raise UserError(f"Unknown config key {key!r}. Known keys: {', '.join(sorted(config))}.")
            if key == "synth":
                unknown = sorted(set(value) - set(config["synth"]))
                if unknown:
                    raise UserError(f"Unknown synth config keys {unknown}. Known: {sorted(config['synth'])}.")
                config["synth"].update(value)
            else:
                config[key] = value
    if cli.get("synth") and config["data"] != "synth":
        raise UserError(f"--synth-subjects applies to --data synth only (SynthFER generated into the run); "
                        f"{config['data']!r} is a prepared folder, whose subjects are its own.")
    _validate(config)
    if config["data"] != "synth":
        # No SynthFER is generated for a prepared folder (its manifest's params say how it was made): config.json,
        # written from this, would show the generator settings as if they had made the run's data.
        del config["synth"]
    return config


def _validate(c):
    numbers = {"learning_rate": (int, float), "image_size": (int, type(None)), "channels": (int, type(None)),
               "seed": (int,), "fold": (int,), "augment": (bool,), "model_args": (dict,), "synth": (dict,)}
    for key, types in numbers.items():
        if not isinstance(c[key], types) or (isinstance(c[key], bool) and bool not in types):
            expected = " or ".join(t.__name__ for t in types).replace("NoneType", "null")
            raise UserError(f"{key} must be {expected}. Received: {key}={c[key]!r}")
    if c["init_from"] is not None and not isinstance(c["init_from"], str):
        raise UserError(f"init_from must be a run folder path or null. Received: init_from={c['init_from']!r}")
    positive = ("epochs", "batch_size", "clip_length", "clip_stride", "folds")
    for key in positive:
        if not isinstance(c[key], int) or isinstance(c[key], bool) or c[key] < 1:
            raise UserError(f"{key} must be a positive integer. Received: {key}={c[key]!r}")
    if c["pretrain_epochs"] is not None and (
            not isinstance(c["pretrain_epochs"], int) or isinstance(c["pretrain_epochs"], bool) or c["pretrain_epochs"] < 1):
        raise UserError(f"pretrain_epochs must be a positive integer or null. Received: pretrain_epochs={c['pretrain_epochs']!r}")
    if c["strategy"] not in ("default", "mirrored", "multiworker"):
        raise UserError(f"strategy must be 'default', 'mirrored' or 'multiworker'. Received: strategy={c['strategy']!r}")
    if c["split"] not in ("kfold", "official"):
        raise UserError(f"split must be 'kfold' or 'official'. Received: split={c['split']!r}")
    if c["lr_schedule"] not in LR_SCHEDULES:
        raise UserError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}. Received: lr_schedule={c['lr_schedule']!r}")
    if c["learning_rate"] <= 0:
        raise UserError(f"learning_rate must be > 0. Received: {c['learning_rate']}")
    streams = tuple(s.strip() for s in str(c["streams"]).split(","))
    if not set(streams) <= {"rgb", "flow"} or "rgb" not in streams:
        raise UserError(f"streams must be 'rgb' or 'rgb,flow'. Received: streams={c['streams']!r}")
    if c["image_size"] is not None and not 16 <= int(c["image_size"]) <= 512:
        raise UserError(f"image_size must be in 16..512. Received: {c['image_size']}")
    if c["channels"] not in (None, 1, 3):
        raise UserError(f"channels must be 1 or 3. Received: {c['channels']}")
    if c["split"] == "kfold" and not 0 <= c["fold"] < c["folds"]:
        raise UserError(f"--fold must be in 0..{c['folds'] - 1} for {c['folds']} folds. Received: fold={c['fold']}")
    # The model and its size, before any data is generated or read.
    from fer_keras.models.registry import get_spec

    spec = get_spec(c["model"])
    if c["size"] not in spec.sizes:
        raise UserError(f"Model {c['model']!r} has no size {c['size']!r}. Sizes: {', '.join(sorted(spec.sizes))}.")
    if c["data"] == "synth":  # a prepared folder's run drops the block unread (`resolve`)
        _validate_synth(c["synth"])


def _validate_synth(s):
    """The generator settings of a --data synth run, as `fer-keras prepare synth` takes them: a damaged RUN/data is
    regenerated with that command (`fit.regenerate_advice`)."""
    for key, low, high in (("subjects", 2, 100000), ("samples_per_emotion", 1, 1000), ("sequences_per_emotion", 1, 100),
                           ("size", 48, 224), ("seed", 0, 2**31 - 1)):
        if not isinstance(s.get(key), int) or isinstance(s[key], bool) or not low <= s[key] <= high:
            raise UserError(f"synth.{key} must be an integer in {low}..{high}. Received: {s.get(key)!r}")
    for key in ("grey", "flow"):
        if not isinstance(s.get(key), bool):
            raise UserError(f"synth.{key} must be true or false. Received: {s.get(key)!r}")
    if s.get("label_set") not in SYNTH_LABEL_SETS:
        raise UserError(f"synth.label_set must be one of {list(SYNTH_LABEL_SETS)} (SynthFER draws no other emotion). "
                        f"Received: {s.get('label_set')!r}")
    if s.get("capture", "wild") not in ("wild", "lab"):
        raise UserError(f"synth.capture must be 'wild' or 'lab'. Received: {s.get('capture')!r}")
