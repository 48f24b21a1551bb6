"""`fer-keras evaluate RUN --protocol kfold --folds K`: train and test once per subject fold.

The run's own configuration is the template; fold k trains into ``RUN/kfold-K/fold-k/`` and is
evaluated on its test subjects. Folds already evaluated are reused, so an interrupted protocol
continues where it stopped. The summary (mean +- std over folds of image/clip accuracy and, for
clip models, video accuracy by majority vote; per-class accuracy and the confusion matrix summed
over folds) goes to ``RUN/kfold-K/metrics.json`` and ``confusion_matrix.png``.
"""

import json
import os
import pathlib

import numpy as np

from fer_keras.errors import UserError
from fer_keras.evaluation.evaluate import evaluate_run
from fer_keras.evaluation.metrics import largest_confusions
from fer_keras.evaluation.plots import plot_confusion_matrix


def fold_config(run_dir, folds, fold, epochs=None):
    """The run's configuration with the split set to fold `fold` of `folds`."""
    from fer_keras.training.config import resolve

    run_dir = pathlib.Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        raise UserError(f"{str(run_dir)!r} is not a fer-keras run folder (no config.json).")
    saved = json.loads(path.read_text())
    data_dir = pathlib.Path(saved["dataset"]["dir"])
    if not data_dir.is_absolute():
        data_dir = (run_dir / data_dir).resolve()
    return resolve(saved, data=str(data_dir), split="kfold", folds=folds, fold=fold, epochs=epochs)


def _summary(values):
    values = [v for v in values if v is not None]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_fold": values} if values else None


def kfold_protocol(run_dir, *, folds, epochs=None, quiet=False):
    from fer_keras.training.fit import train

    run_dir = pathlib.Path(run_dir)
    root = run_dir / f"kfold-{folds}"
    per_fold = []
    for fold in range(folds):
        config = fold_config(run_dir, folds, fold, epochs)
        fold_dir = root / f"fold-{fold}"
        if (fold_dir / "metrics.json").exists():
            per_fold.append(json.loads((fold_dir / "metrics.json").read_text()))
            continue
        if fold_dir.exists() and not (fold_dir / "model.keras").exists():
            raise UserError(f"{fold_dir} holds an unfinished training; resume it with `fer-keras train --resume {fold_dir}` or remove it.")
        if not fold_dir.exists():
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
        "level": per_fold[0]["level"],
        "accuracy": _summary([m["accuracy"] for m in per_fold]),
        "mean_class_accuracy": _summary([m["mean_class_accuracy"] for m in per_fold]),
    }
    level_reports = {"": per_fold}
    if "video" in per_fold[0]:
        summary["video_accuracy"] = _summary([m["video"]["accuracy"] for m in per_fold])
        level_reports = {"": [m["video"] for m in per_fold]}
    reports = level_reports[""]
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


def kfold_line(summary):
    acc = summary["accuracy"]
    line = (f"{summary['model']} on {summary['dataset']}, {summary['folds']}-fold by subject: "
            f"{summary['level']} accuracy {acc['mean']:.3f} +- {acc['std']:.3f}")
    if "video_accuracy" in summary:
        v = summary["video_accuracy"]
        line += f", video accuracy {v['mean']:.3f} +- {v['std']:.3f}"
    return line
