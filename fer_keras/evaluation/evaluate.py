"""`fer-keras evaluate RUN`: the run's model on its held-out test subjects.

Writes ``metrics.json``, ``confusion_matrix.png`` and ``predictions.csv`` (one row per image, or
per video for clip models: what `fer-keras compare` pairs runs on) into the run folder. Clip
models are scored per clip and per video (majority vote over a video's clips, paper 001 section 3).

`evaluate_cross` scores a run on every sample of another prepared dataset (cross-dataset
evaluation: train on RAF-DB, test on CK+ or JAFFE), into ``RUN/cross/<dataset folder>/``.
"""

import csv
import io
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

from fer_keras import atomic
from fer_keras.data import pipeline, records
from fer_keras.errors import UserError
from fer_keras.evaluation.metrics import classification_report, largest_confusions, majority_vote
from fer_keras.evaluation.plots import plot_confusion_matrix
from fer_keras.data.splits import Split
from fer_keras.models.registry import get_spec, resolve_hook
from fer_keras.names import safe_name
from fer_keras.progress import progress
from fer_keras.training import fit

PREDICTIONS = "predictions.csv"


def evaluate_run(run_dir, *, side="test", quiet=True):
    run_dir = pathlib.Path(run_dir)
    config, manifest, model = fit.load_run(run_dir)
    split = Split.from_dict(config["split_subjects"])
    spec = get_spec(config["model"])
    if spec.evaluator:
        metrics = resolve_hook(spec.evaluator)(run_dir=run_dir, config=config, manifest=manifest, split=split, model=model,
                                               quiet=quiet)
        _write_metrics(run_dir, metrics)
        return metrics
    dataset = fit.make_dataset(config, manifest, split, side, with_meta=True)
    # A total (and so a time left) where the manifest gives it for free: stills of a subject split
    total = (pipeline.count_examples(manifest, subjects=getattr(split, side))
             if manifest["kind"] == "still" and not split.official else None)
    with progress(total=total, desc=f"evaluate {run_dir.name}", unit="image" if total else "sample", quiet=quiet) as bar:
        probabilities, labels, meta = fit.predict_numpy(model, dataset, progress=bar)
    names = manifest["labels"]
    dataset_name = _dataset_name(manifest)
    report = classification_report(labels, probabilities.argmax(axis=1), names)
    metrics = {
        "run": run_dir.name,
        "model": config["model"],
        "dataset": dataset_name,
        "label_set": manifest["label_set"],
        "protocol": split.description,
        "data_fingerprint": fit.data_fingerprint(manifest),  # which samples: compare groups rows by it
        "side": side,
        "subjects": len(getattr(split, side)) or None,
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
    text, metrics["predictions"] = predictions_csv(meta, probabilities, labels, names)
    atomic.write_text(run_dir / PREDICTIONS, text)
    _write_metrics(run_dir, metrics)
    return metrics


def evaluate_cross(run_dir, data_dir, *, quiet=False):
    """Scores a run on every sample of another prepared dataset; returns the metrics.

    Labels are matched by emotion name, so label sets in another order (RAF-DB's basic7, CK+'s
    ckplus7) compare correctly. Samples of an emotion the run does not predict (contempt for a
    basic7 run) are left out and counted in "left_out"; the run's emotions the dataset lacks get
    no support. Writes ``metrics.json`` and the confusion matrix (per video too for clip models)
    into ``RUN/cross/<dataset folder name>/``, all or nothing.
    """
    run_dir, data_dir = pathlib.Path(run_dir), pathlib.Path(data_dir)
    config, manifest, model = fit.load_run(run_dir, needs_data=False)  # the other dataset is the one read
    spec = get_spec(config["model"])
    target = records.read_manifest(data_dir, verify=True)
    if spec.evaluator:
        return _evaluation_set(run_dir, data_dir, config, manifest, target, spec, model, quiet)
    if target["kind"] != manifest["kind"]:
        raise UserError(f"{str(data_dir)!r} holds {target['kind']} records; {config['model']!r} was trained on "
                        f"{manifest['kind']} records.")
    if "flow" in config["streams"] and not target.get("flow_bound"):
        raise UserError(f"{str(data_dir)!r} has no optical flow, which this two-stream run takes; prepare it with --flow.")
    # One person in both: the same dataset and subject id (SynthFER: the same generator seed, too; its ids do not carry
    # it), seen by this run or by any run its weights started from (--init-from, rgb_run).
    shared = fit.leaked_subjects(run_dir, fit.people(target), target.get("counts_per_subject", {}))
    if shared:
        raise UserError(f"{str(data_dir)!r} holds {len(shared)} subjects this run trained or validated on, itself or "
                        f"through the runs its weights started from ({', '.join(shared[:3])}{' ...' if len(shared) > 3 else ''}): "
                        f"it is not another dataset. `fer-keras evaluate {run_dir}` scores the run on its held-out subjects.")
    names = manifest["labels"]
    to_run = np.array([names.index(n) if n in names else -1 for n in target["labels"]], dtype=int)
    if (to_run < 0).all():
        raise UserError(f"{str(data_dir)!r} has none of the run's emotions ({', '.join(names)}).")
    # The run's input geometry (image size, channels) and clip settings, on the other dataset's records.
    size, channels = fit.input_geometry(config, manifest)
    cross_config = dict(config, image_size=size, channels=channels)
    everyone = Split(test=tuple(pipeline.subjects_of(target)), description="every sample")
    dataset = fit.make_dataset(cross_config, target, everyone, "test", with_meta=True)
    total = target["num_examples"] if target["kind"] == "still" else None
    with progress(total=total, desc=f"evaluate on {data_dir.name}", unit="image" if total else "clip", quiet=quiet) as bar:
        probabilities, labels, meta = fit.predict_numpy(model, dataset, progress=bar)
    mapped = to_run[np.asarray(labels, dtype=int)]
    kept = mapped >= 0
    left_out = {}
    for name in np.asarray(target["labels"])[np.asarray(labels, dtype=int)[~kept]]:
        left_out[str(name)] = left_out.get(str(name), 0) + 1
    dataset_name = _dataset_name(target)
    trained_on = _dataset_name(manifest)
    report = classification_report(mapped[kept], probabilities[kept].argmax(axis=1), names)
    protocol = f"cross-dataset: trained on {trained_on} ({Split.from_dict(config['split_subjects']).description}), tested on every sample"
    metrics = {
        "run": run_dir.name,
        "model": config["model"],
        "dataset": dataset_name,
        "data": str(data_dir.resolve()),
        "data_fingerprint": fit.data_fingerprint(target),
        "trained_on": trained_on,
        "label_set": manifest["label_set"],
        "target_label_set": target["label_set"],
        "protocol": protocol,
        "side": "all",
        "subjects": len({str(s) for s in np.asarray(meta["subject"])[kept]}) if "subject" in meta else None,
        "level": "clip" if "video" in meta else "image",
        "left_out": left_out,
        **report,
        "largest_confusions": largest_confusions(report["confusion_matrix"], names),
    }
    out = run_dir / "cross" / safe_name(data_dir.resolve().name, "data")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = out.with_name(out.name + ".old")
    try:
        title = f"{config['model']} (trained on {trained_on}) on {dataset_name}"
        if "video" in meta:
            _, video_pred, video_labels = majority_vote(np.asarray(meta["video"])[kept], probabilities[kept], mapped[kept])
            metrics["video"] = classification_report(video_labels, video_pred, names)
            metrics["video"]["largest_confusions"] = largest_confusions(metrics["video"]["confusion_matrix"], names)
            plot_confusion_matrix(metrics["video"]["confusion_matrix"], names, staging / "confusion_matrix.png", title + ", video level")
            plot_confusion_matrix(report["confusion_matrix"], names, staging / "confusion_matrix_clips.png", title + ", clip level")
        else:
            plot_confusion_matrix(report["confusion_matrix"], names, staging / "confusion_matrix.png", title)
        text, metrics["predictions"] = predictions_csv(
            {k: np.asarray(v)[kept] for k, v in meta.items()}, probabilities[kept], mapped[kept], names)
        (staging / PREDICTIONS).write_text(text)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        # The old evaluation is moved aside, not deleted, until the new one is in place; put back if that fails.
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    metrics["_dir"] = str(out)
    return metrics


def _evaluation_set(run_dir, data_dir, config, manifest, target, spec, model, quiet):
    """A run scored by its own evaluator (vae_swap) on another folder of its own dataset: paper 004's evaluation set.

    Paper 004 (sec. 5.1) trains on frames sampled along whole sequences and scores the stills that show the labelled
    expression (MUG's centre frames, CK+'s last ones), of its training and test subjects alike: `prepare mug|ckplus
    --protocol spread` and `--protocol still` make the two folders. The run's own split picks the subjects.
    """
    recorded = (config.get("dataset") or {}).get("people") or manifest["dataset"]
    split = Split.from_dict(config["split_subjects"])
    theirs = fit.people(target)
    keys = {side: [fit.subject_key(recorded, s) for s in getattr(split, side)] for side in ("train", "val", "test")}
    if recorded == fit.MERGED and theirs != fit.MERGED and any(p == theirs for side in keys.values() for p, _ in side):
        # one of the datasets merged, on its own (MUG's apex stills): the run's subjects of it, under its own ids
        split = Split(**{side: tuple(s for p, s in keys[side] if p == theirs) for side in keys},
                      description=f"{split.description}, its {theirs} subjects", official=split.official)
        missing = [side for side in ("train", "test") if not getattr(split, side)]
        if missing:
            raise UserError(f"{str(run_dir)!r} has no {' or '.join(missing)} subjects of {theirs} ({split.description}): "
                            f"score it on a merge of its datasets' evaluation sets instead.")
        recorded = theirs
    if target["kind"] != "still" or theirs != recorded:
        whose = ("the datasets it was merged from, e.g. a `prepare merge` of their --protocol still folders"
                 + " or the still folder of one of them" if recorded == fit.MERGED
                 else f"{recorded}, e.g. `prepare mug --protocol still`")
        raise UserError(f"{config['model']!r} is scored by its own evaluator: --data takes its evaluation set, stills of "
                        f"the people it trained on ({whose}); "
                        f"{str(data_dir)!r} holds {target['kind']}s of {theirs}.")
    if recorded == fit.MERGED:  # the people of the datasets merged, each of them one the run trained on
        ours = {p for side in keys.values() for p, _ in side}
        others = sorted({fit.subject_key(recorded, s)[0] for s in target["counts_per_subject"]} - ours)
        if others:
            raise UserError(f"{str(data_dir)!r} holds people of {', '.join(others)}, which {str(run_dir)!r} did not "
                            "train on: its evaluation set is a merge of the same datasets' --protocol still folders.")
    sources = [target.get("params", {})] + target.get("merged_from", [])
    if any(source.get("protocol") == "spread" for source in sources):
        raise UserError(f"{str(data_dir)!r} is paper 004's training set (--protocol spread): its evaluation set is the same "
                        f"dataset prepared with --protocol still.")
    # At the run's own input size and channels, whatever the folder's (as cross-dataset evaluation does)
    size, channels = fit.input_geometry(config, manifest)
    metrics = resolve_hook(spec.evaluator)(run_dir=run_dir, config=dict(config, image_size=size, channels=channels),
                                           manifest=target, split=split, model=model, quiet=quiet)
    metrics.update(data=str(data_dir.resolve()), data_fingerprint=fit.data_fingerprint(target),
                   trained_on=_dataset_name(manifest), target_label_set=target["label_set"],
                   evaluation_set=data_dir.name, protocol=f"evaluation set {data_dir.name}: {split.description}",
                   summary=metrics["summary"] + f"; on the evaluation set {data_dir.name}")
    out = run_dir / "cross" / safe_name(data_dir.resolve().name, "data")
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_files([(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())])
    metrics["_dir"] = str(out)
    return metrics


def predictions_csv(meta, probabilities, labels, names):
    """(CSV text, its description) of one evaluation's predictions, for paired tests between runs.

    One row per independent test unit: per image for still models, per video (the majority vote
    over its clips) for clip models, whose overlapping clips are not independent. Columns:
    sample (the image's source, or the video id), subject, label, predicted (emotion names), then
    one probability per class (p_<name>: the image's, or the mean over the video's clips).
    """
    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    subjects = np.asarray(meta["subject"]) if "subject" in meta else None
    if "video" in meta:
        samples, predicted, truth = majority_vote(meta["video"], probabilities, labels)
        videos = np.asarray(meta["video"])
        rows = [videos == v for v in samples]
        unit_probabilities = [probabilities[r].mean(axis=0) for r in rows]
        unit_subjects = [subjects[r][0] for r in rows] if subjects is not None else [""] * len(samples)
        level = "video"
    else:
        samples = meta["source"] if "source" in meta else np.arange(len(labels))
        predicted, truth, level = probabilities.argmax(axis=1), labels, "image"
        unit_probabilities = probabilities
        unit_subjects = subjects if subjects is not None else [""] * len(labels)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sample", "subject", "label", "predicted"] + [f"p_{name}" for name in names])
    for sample, subject, t, p, probs in zip(samples, unit_subjects, truth, predicted, unit_probabilities):
        writer.writerow([text(sample), text(subject), names[int(t)], names[int(p)]] + [f"{float(v):.6f}" for v in probs])
    return buffer.getvalue(), {"file": PREDICTIONS, "level": level, "count": len(truth)}


def _dataset_name(manifest):
    return "SynthFER" if manifest["dataset"] == "synthfer" else manifest["dataset"]


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
