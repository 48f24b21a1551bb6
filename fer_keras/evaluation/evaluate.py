"""`fer-keras evaluate RUN`: the run's model on its held-out test subjects.

Writes ``metrics.json`` and ``confusion_matrix.png`` into the run folder. Clip models are scored
per clip and per video (majority vote over a video's clips, paper 001 section 3).
"""

import json
import os
import pathlib

from fer_keras.evaluation.metrics import classification_report, largest_confusions, majority_vote
from fer_keras.evaluation.plots import plot_confusion_matrix
from fer_keras.data.splits import Split
from fer_keras.models.registry import get_spec, resolve_hook
from fer_keras.training import fit


def evaluate_run(run_dir, *, side="test"):
    run_dir = pathlib.Path(run_dir)
    config, manifest, model = fit.load_run(run_dir)
    split = Split.from_dict(config["split_subjects"])
    spec = get_spec(config["model"])
    if spec.evaluator:
        metrics = resolve_hook(spec.evaluator)(run_dir=run_dir, config=config, manifest=manifest, split=split)
        _write_metrics(run_dir, metrics)
        return metrics
    dataset = fit.make_dataset(config, manifest, split, side, with_meta=True)
    probabilities, labels, meta = fit.predict_numpy(model, dataset)
    names = manifest["labels"]
    dataset_name = "SynthFER" if manifest["dataset"] == "synthfer" else manifest["dataset"]
    report = classification_report(labels, probabilities.argmax(axis=1), names)
    metrics = {
        "run": run_dir.name,
        "model": config["model"],
        "dataset": dataset_name,
        "label_set": manifest["label_set"],
        "protocol": split.description,
        "side": side,
        "subjects": len(getattr(split, side)) if not split.official else None,
        "level": "clip" if "video" in meta else "image",
        **report,
        "largest_confusions": largest_confusions(report["confusion_matrix"], names),
    }
    title = f"{config['model']} on {dataset_name} ({split.description})"
    if "video" in meta:
        _, video_pred, video_labels = majority_vote(meta["video"], probabilities, labels)
        video = classification_report(video_labels, video_pred, names)
        metrics["video"] = video
        metrics["video"]["largest_confusions"] = largest_confusions(video["confusion_matrix"], names)
        plot_confusion_matrix(video["confusion_matrix"], names, run_dir / "confusion_matrix.png", title + ", video level")
        plot_confusion_matrix(report["confusion_matrix"], names, run_dir / "confusion_matrix_clips.png", title + ", clip level")
    else:
        plot_confusion_matrix(report["confusion_matrix"], names, run_dir / "confusion_matrix.png", title)
    _write_metrics(run_dir, metrics)
    return metrics


def _write_metrics(run_dir, metrics):
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, run_dir / "metrics.json")


def summary_line(metrics):
    """One human line: accuracy (and video accuracy) with dataset and protocol."""
    if "summary" in metrics:  # an evaluator hook's own line (e.g. vae_swap's k-means accuracy)
        return metrics["summary"]
    line = (
        f"{metrics['model']}: {metrics['level']} accuracy {metrics['accuracy']:.3f}, mean class accuracy "
        f"{metrics['mean_class_accuracy']:.3f} on {metrics['num_samples']} {metrics['level']}s of {metrics['dataset']} "
        f"({metrics['protocol']})"
    )
    if "video" in metrics:
        line += f"; video accuracy {metrics['video']['accuracy']:.3f} over {metrics['video']['num_samples']} videos"
    return line
