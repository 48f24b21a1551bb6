"""`fer-keras evaluate RUN --protocol kfold --folds K`: train and test once per subject fold.

The run's own configuration is the template; fold k trains into ``RUN/kfold-K/fold-k/`` and is
evaluated on its test subjects. Folds already trained are reused, so an interrupted protocol
continues where it stopped (a fold killed mid-training says to `fer-keras train --resume` it), once
each is checked to be this protocol's fold (split, settings and epochs). A run fine-tuned with
--init-from is refused before any fold trains when its source has seen subjects a fold tests on. The summary (mean +- std over folds of image/clip accuracy and, for
clip models, video accuracy by majority vote; per-class accuracy and the confusion matrix summed
over folds) goes to ``RUN/kfold-K/metrics.json`` and ``confusion_matrix.png``.

Models built on another trained run (``model_args.rgb_run``: `landmark_arm`, whose frozen RGB
branch is an `arm_resnet18` run) would leak if every fold reused the run's one `rgb_run`: that
network was trained on subjects that other folds test on. So for such a model each fold first
trains its own `arm_resnet18` into ``RUN/kfold-K/rgb-fold-k/`` on that fold's training subjects
(the same split, seed, data and image geometry as the fold; epochs, batch size, learning rate,
model size, augmentation and model arguments from the original `rgb_run`'s config when it can
be read, else from the run's), and the fold's model then loads that run as its RGB branch.
"""

import json
import os
import pathlib
import sys

import numpy as np

from fer_keras.errors import UserError
from fer_keras.evaluation.evaluate import evaluate_run
from fer_keras.evaluation.metrics import largest_confusions
from fer_keras.evaluation.plots import plot_confusion_matrix


def fold_config(run_dir, folds, fold, epochs=None):
    """The run's configuration with the split set to fold `fold` of `folds`."""
    from fer_keras.training.config import resolve
    from fer_keras.training.fit import read_run_config, run_data_dir

    saved = read_run_config(run_dir)
    data_dir = run_data_dir(run_dir, saved).resolve()
    return resolve(saved, data=str(data_dir), split="kfold", folds=folds, fold=fold, epochs=epochs)


def uses_rgb_run(config):
    """True for models whose builder takes a trained `rgb_run` (`landmark_arm`)."""
    from fer_keras.models.registry import builder_takes

    return builder_takes(config["model"], "rgb_run")


# What the per-fold RGB run takes from the original rgb_run's config; the rest (data, split,
# seed, image geometry, strategy) comes from the fold's config so both branches see the same split.
_RGB_HYPERPARAMETERS = ("epochs", "batch_size", "learning_rate", "size", "augment", "model_args", "clip_length", "clip_stride")


def rgb_fold_config(run_dir, config, epochs=None):
    """The `arm_resnet18` configuration of a fold: the fold's split, the original rgb_run's hyperparameters."""
    from fer_keras.training.config import resolve

    rgb = dict(config, model="arm_resnet18", model_args={}, init_from=None)  # a landmark_arm run's source is not one
    original = pathlib.Path(str(config["model_args"].get("rgb_run") or ""))
    candidates = [original, pathlib.Path(run_dir) / original] if not original.is_absolute() else [original]
    for candidate in candidates:
        folder = candidate if candidate.is_dir() else candidate.parent
        if str(original) and (folder / "config.json").is_file():
            saved = json.loads((folder / "config.json").read_text())
            if saved.get("model") == "arm_resnet18":
                rgb.update({k: saved[k] for k in _RGB_HYPERPARAMETERS if k in saved})
            break
    return resolve(rgb, epochs=epochs)


def _fold_rgb_run(run_dir, root, config, fold, epochs, quiet):
    """Trains (or reuses) the fold's own arm_resnet18 RGB branch; returns its folder."""
    from fer_keras.training.fit import train

    rgb_dir = root / f"rgb-fold-{fold}"
    if (rgb_dir / "model.keras").exists():
        # its epochs are the original rgb_run's unless --epochs set every training's: checked only then
        _check_reused_fold(rgb_dir, rgb_fold_config(run_dir, config, epochs), run_dir, () if epochs else ("epochs",))
        return rgb_dir
    if rgb_dir.exists() and any(rgb_dir.iterdir()):
        raise UserError(f"{rgb_dir} holds an unfinished training; resume it with `fer-keras train --resume {rgb_dir}` or remove it.")
    train(rgb_fold_config(run_dir, config, epochs), out=root, name=rgb_dir.name, quiet=quiet)
    return rgb_dir


def _check_no_leak(fold_dir, rgb_dir):
    """A fold reused from an earlier call must use its own fold's RGB run (not the run's shared one)."""
    from fer_keras.training.fit import read_run_config

    saved = read_run_config(fold_dir)
    used = pathlib.Path(str(saved.get("model_args", {}).get("rgb_run", "")))
    if used.resolve() != rgb_dir.resolve():
        raise UserError(
            f"{fold_dir} was trained on the RGB run {str(used)!r}, not on its fold's own {str(rgb_dir)!r}: that RGB "
            "branch may have seen this fold's test subjects. Remove the folder and run the protocol again."
        )


def _summary(values):
    """Mean, population std (ddof 0), sample std (ddof 1, what papers usually report) and the per-fold values."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    sample_std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "sample_std": sample_std, "per_fold": values}


# What a fold reused from an earlier call must share with the fold this protocol would train (model_args too, less
# landmark_arm's per-fold rgb_run, which `_check_no_leak` checks).
_FOLD_KEYS = ("model", "size", "data", "split", "folds", "fold", "epochs", "pretrain_epochs", "batch_size",
              "learning_rate", "lr_schedule", "seed", "image_size", "channels", "clip_length", "clip_stride", "streams",
              "augment", "init_from")


def _protocol_args(config):
    args = {k: config.get(k) for k in _FOLD_KEYS}
    args["model_args"] = {k: v for k, v in (config.get("model_args") or {}).items() if k != "rgb_run"}
    return args


def _check_reused_fold(fold_dir, expected, run_dir, ignore=()):
    """A fold folder from an earlier call must be the fold this protocol trains: same split and settings (but the
    keys in `ignore`)."""
    from fer_keras.training.fit import read_run_config

    saved = read_run_config(fold_dir)
    want, got = _protocol_args(expected), _protocol_args(saved)
    for key in ignore:
        want.pop(key), got.pop(key)
    if read_run_config(run_dir).get("data") == "synth":
        # data generated into the run folder: it moves with the run, and with it the folds' absolute paths
        want.pop("data"), got.pop("data")
    else:
        got["data"] = str(pathlib.Path(got["data"]).resolve()) if got.get("data") else got.get("data")
        want["data"] = str(pathlib.Path(want["data"]).resolve())
    differ = [k for k in want if want[k] != got[k]]
    if differ:
        shown = ", ".join(f"{k} {got[k]!r} (expected {want[k]!r})" for k in differ[:3])
        raise UserError(f"{fold_dir} is not this protocol's fold: {shown}. Remove it (or the whole {fold_dir.parent}) "
                        "and run the protocol again.")


def _reused_epochs(root, folds):
    """The epochs of the folds already trained under `root` (None when there are none); a mixture is refused."""
    from fer_keras.training.fit import read_run_config

    found = {k: read_run_config(root / f"fold-{k}")["epochs"] for k in range(folds)
             if (root / f"fold-{k}" / "config.json").is_file()}
    if len(set(found.values())) > 1:
        listed = ", ".join(f"fold {k}: {e}" for k, e in found.items())
        raise UserError(f"The folds in {root} were trained for different numbers of epochs ({listed}); remove the "
                        "ones that differ, or the whole folder, and run the protocol again.")
    return next(iter(found.values()), None)


def _refuse_init_leak(run_dir, folds):
    """A run fine-tuned with --init-from: every fold's test subjects are checked before any fold trains."""
    from fer_keras.data import records
    from fer_keras.training.fit import leaked_subjects, make_split, people, read_run_config, run_data_dir

    config = read_run_config(run_dir)
    source = config.get("init_from")
    if not source:
        return
    manifest = records.read_manifest(run_data_dir(run_dir, config))
    for fold in range(folds):
        test = make_split(fold_config(run_dir, folds, fold), manifest).test
        leaked = leaked_subjects(source, people(manifest), test)
        if leaked:
            raise UserError(
                f"{run_dir} was fine-tuned from {source}, whose weights have seen subjects that fold {fold + 1} of "
                f"{folds} tests on ({', '.join(leaked[:5])}{' ...' if len(leaked) > 5 else ''}), so its k-fold would not "
                "be subject-independent. Run the k-fold protocol on a run trained from scratch, or fine-tuned from "
                "another dataset.")


def kfold_protocol(run_dir, *, folds, epochs=None, quiet=False):
    from fer_keras.models.registry import get_spec
    from fer_keras.training.fit import read_run_config, train

    run_dir = pathlib.Path(run_dir)
    model = read_run_config(run_dir)["model"]
    if get_spec(model).evaluator:
        raise UserError(f"{model!r} is scored by its own evaluator (`fer-keras evaluate {run_dir}`), not by class labels; "
                        "the k-fold protocol takes classifier runs.")
    _refuse_init_leak(run_dir, folds)
    root = run_dir / f"kfold-{folds}"
    asked = epochs
    if epochs is None:
        epochs = _reused_epochs(root, folds)  # a fold trained now matches the folds already there
    per_fold = []
    rgb_runs = []
    for fold in range(folds):
        config = fold_config(run_dir, folds, fold, epochs)
        fold_dir = root / f"fold-{fold}"
        if uses_rgb_run(config):
            # Never the run's own rgb_run: it was trained on subjects that this fold may test on.
            rgb_dir = _fold_rgb_run(run_dir, root, fold_config(run_dir, folds, fold, asked), fold, asked, quiet)
            config["model_args"] = dict(config["model_args"], rgb_run=str(rgb_dir.resolve()))
            rgb_runs.append(str(rgb_dir.relative_to(root)))
            if (fold_dir / "config.json").exists():
                _check_no_leak(fold_dir, rgb_dir)
        if epochs is not None and (fold_dir / "config.json").exists() and read_run_config(fold_dir)["epochs"] != epochs:
            trained = read_run_config(fold_dir)["epochs"]
            raise UserError(f"{fold_dir} was trained for {trained} epochs, not the {epochs} asked for; remove "
                            f"{root} to train every fold again, or leave out --epochs to use the folds as they are.")
        if (fold_dir / "config.json").exists():
            _check_reused_fold(fold_dir, config, run_dir)
        if (fold_dir / "metrics.json").exists():
            per_fold.append(json.loads((fold_dir / "metrics.json").read_text()))
            continue
        if fold_dir.exists() and not (fold_dir / "model.keras").exists():
            raise UserError(f"{fold_dir} holds an unfinished training; resume it with `fer-keras train --resume {fold_dir}` or remove it.")
        if not fold_dir.exists():
            if not quiet:
                print(f"Fold {fold + 1} of {folds}: training {root / f'fold-{fold}'}", file=sys.stderr)
            train(config, out=root, name=f"fold-{fold}", quiet=quiet)
        per_fold.append(evaluate_run(fold_dir))

    names = list(per_fold[0]["per_class_accuracy"])
    summary = {
        "run": run_dir.name,
        "model": per_fold[0]["model"],
        "dataset": per_fold[0]["dataset"],
        "label_set": per_fold[0]["label_set"],
        "protocol": f"subject {folds}-fold cross-validation (fold = rank of sorted subject id mod {folds})",
        "folds": folds,
        "epochs_per_fold": [read_run_config(root / f"fold-{fold}")["epochs"] for fold in range(folds)],
        "std_definition": "std: population standard deviation over the folds (ddof 0); sample_std: ddof 1",
        "level": per_fold[0]["level"],
        "num_samples": sum(m["num_samples"] for m in per_fold),  # every subject once, so every sample once
        "accuracy": _summary([m["accuracy"] for m in per_fold]),
        "mean_class_accuracy": _summary([m["mean_class_accuracy"] for m in per_fold]),
    }
    if rgb_runs:
        summary["rgb_runs"] = rgb_runs  # per fold, relative to kfold-K/: each trained on that fold's training subjects
    level_reports = {"": per_fold}
    if "video" in per_fold[0]:
        summary["video_accuracy"] = _summary([m["video"]["accuracy"] for m in per_fold])
        level_reports = {"": [m["video"] for m in per_fold]}
    reports = level_reports[""]
    # accuracy, mean_class_accuracy and num_samples are at `level` (clips for clip models); the summed confusion
    # matrix and what is read from it at `summed_level` (videos for clip models, as their held-out figure)
    summary["summed_level"] = "video" if "video" in per_fold[0] else per_fold[0]["level"]
    if "video" in per_fold[0]:
        summary["clip_confusion_matrix"] = np.sum([np.asarray(m["confusion_matrix"]) for m in per_fold], axis=0).tolist()
    cm = np.sum([np.asarray(r["confusion_matrix"]) for r in reports], axis=0)
    support = cm.sum(axis=1)
    summary["per_class_accuracy"] = {n: (float(cm[i, i] / support[i]) if support[i] else None) for i, n in enumerate(names)}
    summary["confusion_matrix"] = cm.tolist()
    summary["largest_confusions"] = largest_confusions(cm, names)
    level = "video level" if "video" in per_fold[0] else per_fold[0]["level"] + " level"
    plot_confusion_matrix(cm, names, root / "confusion_matrix.png",
                          f"{summary['model']} on {summary['dataset']}, {folds}-fold, {level}, summed over folds")
    tmp = root / "metrics.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, root / "metrics.json")
    return summary


def _spread(summary):
    """'mean +- s' with s the sample standard deviation over the folds (ddof 1, what papers report)."""
    s = summary.get("sample_std")
    return f"{summary['mean']:.3f} +- {s:.3f}" if s is not None else f"{summary['mean']:.3f}"


def kfold_line(summary):
    line = (f"{summary['model']} on {summary['dataset']}, {summary['folds']}-fold by subject: "
            f"{summary['level']} accuracy {_spread(summary['accuracy'])}")
    if "video_accuracy" in summary:
        line += f", video accuracy {_spread(summary['video_accuracy'])}"
    return line + " (+- sample standard deviation over the folds)"
