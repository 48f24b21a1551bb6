"""`fer-keras compare RUN...`: the evaluations of several runs side by side, grouped by test set.

Each run contributes one row per evaluation it holds: its held-out split (``metrics.json``), a
subject k-fold protocol (``kfold-K/metrics.json``, mean +- std over the folds) and each
cross-dataset evaluation (``cross/<name>/metrics.json``). Rows are grouped by dataset, label set,
data (its shards' content) and protocol, because only numbers on the same test samples compare: a SynthFER
number is never put in one table with a CK+ one. Within a table, each run is tested against the most accurate one
with the exact McNemar test on their paired predictions (``predictions.csv``).
"""

import csv
import io
import json
import pathlib

from fer_keras import atomic
from fer_keras.errors import UserError

COLUMNS = ("run", "model", "size", "params", "evaluation", "level", "samples", "accuracy", "mean_class_accuracy",
           "video_accuracy", "vs_best")


def run_rows(run_dir):
    """The rows of one run folder: one per evaluation it holds (none when it was not evaluated)."""
    from fer_keras.training import fit

    run_dir = pathlib.Path(run_dir)
    config = fit.read_run_config(run_dir)
    common = {"run": str(run_dir), "model": config["model"], "size": config.get("size"), "params": _params(run_dir)}
    own_data = fit.run_data_dir(run_dir, config) if (config.get("dataset") or {}).get("dir") else (
        run_dir / "data" if config["data"] == "synth" else pathlib.Path(config["data"]))
    recorded = (config.get("dataset") or {}).get("fingerprint")
    rows = []
    sources = [("held-out", run_dir / "metrics.json")]
    sources += [("k-fold", p) for p in sorted(run_dir.glob("kfold-*/metrics.json"))]
    sources += [("cross-dataset", p) for p in sorted(run_dir.glob("cross/*/metrics.json"))
                if not p.parent.name.endswith(".old")]  # one set aside while evaluate replaced it
    for kind, path in sources:
        if not path.is_file():
            continue
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"Cannot read {path}: {e}") from None
        if not isinstance(metrics, dict) or not ("accuracy" in metrics or "summary" in metrics):
            raise UserError(f"{path} is not an evaluation of fer-keras (no accuracy in it); run `fer-keras evaluate` again.")
        data = metrics["data"] if kind == "cross-dataset" and metrics.get("data") else own_data
        if kind == "k-fold" and "num_samples" not in metrics:  # written before k-fold summaries counted them
            metrics["num_samples"] = _fold_samples(path.parent, metrics.get("folds") or 0)
        # The samples the evaluation saw: recorded by evaluate (a data folder may be replaced afterwards), else those
        # the run trained on, else the folder as it is now.
        seen = metrics.get("data_fingerprint") or (None if kind == "cross-dataset" else recorded)
        rows.append(dict(common, data=str(pathlib.Path(data).resolve()), data_id=f"shards {seen}" if seen else _data_id(data),
                         **_row(kind, metrics), predictions=_predictions_files(kind, path, metrics)))
    return rows


def _data_id(data_dir):
    """What identifies a data folder's samples: the sha256 of its shards (two runs generating the same SynthFER set
    into their own folders, or a copied dataset, hold the same samples), else its path."""
    from fer_keras.training import fit

    try:
        fingerprint = fit.data_fingerprint(json.loads((pathlib.Path(data_dir) / "manifest.json").read_text()))
    except (OSError, ValueError):
        fingerprint = None
    return f"shards {fingerprint}" if fingerprint else str(pathlib.Path(data_dir).resolve())


def _fold_samples(root, folds):
    """The test samples of a k-fold protocol's folds together, or None where a fold's metrics.json is missing."""
    paths = [root / f"fold-{k}" / "metrics.json" for k in range(folds)]
    if not paths or not all(p.is_file() for p in paths):
        return None
    try:
        return sum(json.loads(p.read_text())["num_samples"] for p in paths)
    except (OSError, ValueError, KeyError):
        return None


def _predictions_files(kind, path, metrics):
    """The predictions.csv files behind one metrics.json (a k-fold's: every fold's), or None where one is missing."""
    if kind == "k-fold":
        folds = metrics.get("folds") or 0
        files = [path.parent / f"fold-{k}" / "predictions.csv" for k in range(folds)]
    else:
        files = [path.parent / metrics["predictions"]["file"]] if metrics.get("predictions") else []
    return [str(f) for f in files] if files and all(f.is_file() for f in files) else None


def _row(kind, metrics):
    """Table fields of one metrics.json: k-fold ones carry {"mean", "std"} dicts, the others numbers.

    A cross-dataset row's test set is the target's samples of the run's classes, whatever the run was trained on:
    runs trained on other data or splits share its table (the training source goes in the evaluation column).
    """
    video = metrics.get("video_accuracy") if kind == "k-fold" else (metrics.get("video") or {}).get("accuracy")
    label_set, protocol, evaluation = metrics.get("label_set"), metrics.get("protocol"), kind
    if kind == "cross-dataset":
        label_set = metrics.get("target_label_set", label_set)
        left_out = sorted(metrics.get("left_out") or {})
        protocol = "cross-dataset, every sample" + (f" but {', '.join(left_out)}" if left_out else "")
        evaluation = f"cross-dataset (trained on {metrics.get('trained_on')})"
    if metrics.get("evaluation_set"):  # vae_swap on its evaluation set: the run's own subjects, another folder
        protocol, evaluation = metrics.get("protocol"), f"evaluation set {metrics['evaluation_set']}"
    return {
        "evaluation": evaluation,
        "dataset": metrics.get("dataset"),
        "label_set": label_set,
        "protocol": protocol,
        "level": metrics.get("level"),
        "samples": metrics.get("num_samples"),
        "accuracy": metrics.get("accuracy"),
        "mean_class_accuracy": metrics.get("mean_class_accuracy"),
        "video_accuracy": video,
        "summary": metrics.get("summary"),
    }


def _params(run_dir):
    """Parameter count of the run's model, or None when it has no model file."""
    from fer_keras.training import fit

    path = pathlib.Path(run_dir) / "model.keras"
    if not path.is_file():
        return None
    return int(fit.load_model(path).count_params())


def compare(runs):
    """(groups, waiting): groups maps (dataset, label set, data (its shards' hash), protocol) to its rows, best first;
    waiting names the runs without a row: {"unfinished": [...] (no model.keras yet), "not_evaluated": [...]}.

    The data is part of the key, by its shards' content: two SynthFER sets, or a CK+ folder prepared twice with
    other options, are other test samples even under the same name and protocol; the same set generated into
    two runs' own folders (`--data synth`) is the same samples.
    """
    if not runs:
        raise UserError("Give one or more run folders to compare.")
    groups, waiting = {}, {"unfinished": [], "not_evaluated": []}
    first = {}
    for run in runs:  # each run once, where it was first given
        first.setdefault(str(pathlib.Path(run).resolve()), run)
    runs = list(first.values())
    for run in runs:
        rows = run_rows(run)  # a one-line error for a folder that is not a run
        if not rows:
            finished = (pathlib.Path(run) / "model.keras").is_file()
            waiting["not_evaluated" if finished else "unfinished"].append(str(run))
        for row in rows:
            groups.setdefault((row["dataset"], row["label_set"], row["data_id"], row["protocol"]), []).append(row)
    if not groups:
        if len(waiting["unfinished"]) == len(runs):
            raise UserError(f"None of the {len(runs)} runs has finished training; resume one with "
                            "`fer-keras train --resume RUN`, then `fer-keras evaluate RUN`.")
        raise UserError(f"None of the {len(runs)} runs has been evaluated yet; run `fer-keras evaluate RUN` first.")
    for rows in groups.values():
        rows.sort(key=_rank)
        _paired_tests(rows)
    return groups, waiting


def _rank(row):
    """Best first, on the units the McNemar test pairs: videos for clip models (their predictions.csv holds one
    row per video), images otherwise; a row without an accuracy last."""
    value = _value(row["video_accuracy"]) if row["video_accuracy"] is not None else _value(row["accuracy"])
    return -value if value is not None else 1.0


def _paired_tests(rows):
    """Sets each row's "vs_best": the exact McNemar test against the table's most accurate row.

    It pairs the two runs' predictions.csv sample by sample (images, or videos for clip models; a
    k-fold protocol's folds together, so every subject once); it is left out (None) where either
    run has no predictions file or the two hold other samples.
    """
    from fer_keras.evaluation.metrics import mcnemar_exact

    for row in rows:
        row["vs_best"] = None
        row["no_test"] = (None if row["predictions"] else "no predictions.csv: evaluate the run again"
                          if row["accuracy"] is not None else "not scored by class labels")
    best = _read_predictions(rows[0]["predictions"]) if rows and rows[0]["predictions"] else None
    if best is None:
        why = ("the best run's predictions.csv names a sample twice or cannot be read" if rows and rows[0]["predictions"]
               else "the best run has no predictions.csv: evaluate it again")
        for row in rows[1:]:
            row["no_test"] = row["no_test"] or why
        return
    for row in rows[1:]:
        other = _read_predictions(row["predictions"]) if row["predictions"] else None
        if other is None and row["predictions"]:
            row["no_test"] = row["no_test"] or "its predictions.csv names a sample twice or cannot be read"
            continue
        if other is None or other.keys() != best.keys() or any(other[k][0] != best[k][0] for k in best):
            row["no_test"] = row["no_test"] or "other test samples than the best run"
            continue
        b = sum(1 for k, (label, p) in best.items() if p == label and other[k][1] != label)
        c = sum(1 for k, (label, p) in best.items() if p != label and other[k][1] == label)
        row["vs_best"] = {"best": rows[0]["run"], "only_best_right": b, "only_this_right": c, "p": mcnemar_exact(b, c)}


def _read_predictions(paths):
    """{sample: (label, predicted)} of predictions.csv files (a k-fold's folds together), or None when a
    sample repeats or a file cannot be read."""
    records = []
    try:
        for path in paths:
            with open(path, newline="") as f:
                records += [(r["sample"], r["label"], r["predicted"]) for r in csv.DictReader(f)]
    except (OSError, KeyError, csv.Error):
        return None
    found = {sample: (label, predicted) for sample, label, predicted in records}
    return found if len(found) == len(records) else None


def _value(x):
    """A number for sorting: a k-fold {"mean", "std"} gives its mean."""
    return x.get("mean") if isinstance(x, dict) else x


def _cell(x):
    if x is None:
        return "–"
    if isinstance(x, dict):  # k-fold: mean ± sample standard deviation over the folds
        spread = x.get("sample_std")
        return f"{100 * x['mean']:.1f} ± {100 * spread:.1f} %" if spread is not None else f"{100 * x['mean']:.1f} %"
    if isinstance(x, float):
        return f"{100 * x:.1f} %"
    return str(x)


def _test_cell(row, best):
    if row is best:
        return "best"
    test = row.get("vs_best")
    if not test:
        return f"n/a ({row['no_test']})" if row.get("no_test") else None
    return f"{test['p']:.2g} ({test['only_best_right']} vs {test['only_this_right']})"


def markdown(groups, waiting):
    """The groups as markdown tables, one per test set, with a heading naming its dataset."""
    lines = []
    header = ("run", "model", "size", "params", "evaluation", "level", "samples", "accuracy", "mean class acc.",
              "video acc.", "vs best: McNemar p")
    for (dataset, label_set, _, protocol), rows in groups.items():
        data = rows[0]["data"] + (" (and the same samples elsewhere)" if len({r["data"] for r in rows}) > 1 else "")
        lines += [f"### {dataset} ({label_set}, {data}): {protocol}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for r in rows:
            cells = [r["run"], r["model"], r["size"], f"{r['params']:,}" if r["params"] is not None else None,
                     r["evaluation"], r["level"], r["samples"], r["accuracy"], r["mean_class_accuracy"], r["video_accuracy"],
                     _test_cell(r, rows[0])]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            if r.get("summary") and r["accuracy"] is None:
                lines.append(f"|  | {r['summary']} |" + " |" * (len(header) - 2))
        lines.append("")
    if any(r.get("vs_best") for rows in groups.values() for r in rows):
        lines += ["McNemar p: exact two-sided test against the table's best run on the same test units (images, or "
                  "videos for clip models, which are also what ranks them); in brackets, the units only the best run "
                  "gets right vs only this one.", ""]
    if any(isinstance(r["accuracy"], dict) for rows in groups.values() for r in rows):
        lines += ["k-fold rows: mean ± sample standard deviation (ddof 1) over the folds.", ""]
    if waiting["not_evaluated"]:
        lines.append("Not evaluated yet (run `fer-keras evaluate RUN`): " + ", ".join(waiting["not_evaluated"]))
    if waiting["unfinished"]:
        lines.append("Training not finished (go on with `fer-keras train --resume RUN`): " + ", ".join(waiting["unfinished"]))
    return "\n".join(lines).rstrip() + "\n"


def write(groups, waiting, out):
    """Writes the comparison to `out`: .md (the tables), .csv (one row per evaluation) or .json."""
    out = pathlib.Path(out)
    suffix = out.suffix.lower()
    rows = [r for group in groups.values() for r in group]
    if suffix == ".md":
        text = markdown(groups, waiting)
    elif suffix == ".json":
        text = json.dumps({"evaluations": rows, **waiting}, indent=2) + "\n"
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        fields = ("dataset", "label_set", "data", "protocol") + COLUMNS
        writer.writerow(fields)
        for r in rows:
            writer.writerow([json.dumps(r[f]) if isinstance(r[f], dict) else ("" if r[f] is None else r[f]) for f in fields])
        text = buffer.getvalue()
    else:
        raise UserError(f"--out must end in .md, .csv or .json. Received: {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(out, text)
