"""`fer-keras compare RUN...`: evaluations side by side, one table per test set."""

import csv
import json
import pathlib
import shutil

import numpy as np
import pytest

from tests.conftest import DATA_SIZE, expect_ok, expect_user_error, invoke


@pytest.fixture(scope="module")
def evaluated(still_run, still_metrics, clip_run, clip_metrics, tmp_path_factory):
    """still_run held out and on another SynthFER set (cross-dataset); clip_run held out and 2-fold."""
    other = tmp_path_factory.mktemp("compare") / "other_stills"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", other, "--kind", "still", "--subjects", 2,
                     "--samples-per-emotion", 1, "--size", DATA_SIZE, "--grey", "--seed", 9))
    expect_ok(invoke("--quiet", "evaluate", still_run, "--data", other))
    expect_ok(invoke("--quiet", "evaluate", clip_run, "--protocol", "kfold", "--folds", 2, "--epochs", 1))
    return still_run, clip_run


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_each_evaluation_is_a_row_in_the_table_of_its_test_set(evaluated, tmp_path):
    still_run, clip_run = evaluated
    result = expect_ok(invoke("compare", still_run, clip_run, "--out", tmp_path / "cmp.csv"))
    # The session's runs are shared: other modules may have added evaluations of their own (cross/<other>/).
    rows = [r for r in _csv_rows(tmp_path / "cmp.csv") if not r["evaluation"].startswith("cross-dataset") or r["data"].endswith("other_stills")]
    by_kind = {(r["run"], r["evaluation"].split(" (")[0]): r for r in rows}
    assert set(by_kind) == {(str(still_run), "held-out"), (str(still_run), "cross-dataset"),
                            (str(clip_run), "held-out"), (str(clip_run), "k-fold")}
    held_out = json.loads((still_run / "metrics.json").read_text())
    row = by_kind[(str(still_run), "held-out")]
    assert float(row["accuracy"]) == held_out["accuracy"] and int(row["samples"]) == held_out["num_samples"]
    kfold = json.loads((clip_run / "kfold-2" / "metrics.json").read_text())
    assert json.loads(by_kind[(str(clip_run), "k-fold")]["accuracy"]) == kfold["accuracy"]
    fold_samples = [json.loads((clip_run / "kfold-2" / f"fold-{k}" / "metrics.json").read_text())["num_samples"] for k in (0, 1)]
    assert int(by_kind[(str(clip_run), "k-fold")]["samples"]) == kfold["num_samples"] == sum(fold_samples)
    cross = json.loads((still_run / "cross" / "other_stills" / "metrics.json").read_text())
    assert float(by_kind[(str(still_run), "cross-dataset")]["accuracy"]) == cross["accuracy"]
    # Four test sets, four tables: the run's own split, the other folder, the clips' split, the clips' 2 folds.
    assert len({(r["data"], r["protocol"]) for r in rows}) == 4
    assert result.output.count("### SynthFER") >= 4
    assert f"{100 * held_out['accuracy']:.1f} %" in result.output
    assert f"{100 * kfold['accuracy']['mean']:.1f} ± {100 * kfold['accuracy']['sample_std']:.1f} %" in result.output
    assert "k-fold rows: mean ± sample standard deviation (ddof 1) over the folds." in result.output


def test_a_run_not_yet_evaluated_is_named(evaluated, tmp_path):
    still_run, _ = evaluated
    fresh = tmp_path / "fresh_run"
    shutil.copytree(still_run, fresh, ignore=shutil.ignore_patterns("metrics.json", "cross", "kfold-*"))
    result = expect_ok(invoke("compare", still_run, fresh, "--out", tmp_path / "cmp.json"))
    assert f"Not evaluated yet (run `fer-keras evaluate RUN`): {fresh}" in result.output
    written = json.loads((tmp_path / "cmp.json").read_text())
    assert written["not_evaluated"] == [str(fresh)] and {e["run"] for e in written["evaluations"]} == {str(still_run)}
    assert "has been evaluated" in expect_user_error(invoke("compare", fresh))
    # A run whose training has not finished (no model.keras) is told to resume, not to evaluate.
    unfinished = tmp_path / "unfinished_run"
    shutil.copytree(fresh, unfinished, ignore=shutil.ignore_patterns("model.keras"))
    result = expect_ok(invoke("compare", still_run, fresh, unfinished))
    assert f"Training not finished (go on with `fer-keras train --resume RUN`): {unfinished}" in result.output
    assert f"Not evaluated yet (run `fer-keras evaluate RUN`): {fresh}\n" in result.output
    assert "has finished training" in expect_user_error(invoke("compare", unfinished))


def test_a_kfold_summary_written_without_a_sample_count_gets_it_from_its_folds(evaluated, tmp_path):
    _, clip_run = evaluated
    old = tmp_path / "old_run"
    shutil.copytree(clip_run, old, ignore=shutil.ignore_patterns("cross"))
    summary = json.loads((old / "kfold-2" / "metrics.json").read_text())
    expected = summary.pop("num_samples")
    (old / "kfold-2" / "metrics.json").write_text(json.dumps(summary))
    expect_ok(invoke("compare", old, "--out", tmp_path / "cmp.csv"))
    row = next(r for r in _csv_rows(tmp_path / "cmp.csv") if r["evaluation"] == "k-fold")
    assert int(row["samples"]) == expected


def test_bad_arguments_are_one_line_errors(still_run, tmp_path):
    assert "one or more run folders" in expect_user_error(invoke("compare"))
    assert "not a fer-keras run folder" in expect_user_error(invoke("compare", still_run, tmp_path))
    assert "must end in .md, .csv or .json" in expect_user_error(invoke("compare", still_run, "--out", tmp_path / "x.txt"))
    assert not (tmp_path / "x.txt").exists()


def test_out_inside_a_run_and_a_metrics_file_that_is_no_evaluation_are_refused(still_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(still_run, run, ignore=shutil.ignore_patterns("cross", "kfold-*"))
    before = (run / "metrics.json").read_text()
    for out in (run / "metrics.json", run / "sub" / "cmp.md"):
        line = expect_user_error(invoke("compare", still_run, run, "--out", out))
        assert line == f"Error: --out {str(out)!r} is inside run {str(run)!r}; write the comparison outside the runs."
    assert (run / "metrics.json").read_text() == before and not (run / "sub").exists()
    (run / "metrics.json").write_text(json.dumps({"tables": []}))  # a comparison written there by an older fer-keras
    line = expect_user_error(invoke("compare", run))
    assert line == (f"Error: {run / 'metrics.json'} is not an evaluation of fer-keras (no accuracy in it); run "
                    "`fer-keras evaluate` again.")


def test_evaluate_writes_one_prediction_per_test_unit(evaluated):
    still_run, clip_run = evaluated
    for run, level, report in ((still_run, "image", lambda m: m), (clip_run, "video", lambda m: m["video"])):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["predictions"] == {"file": "predictions.csv", "level": level, "count": report(metrics)["num_samples"]}
        rows = _csv_rows(run / "predictions.csv")
        assert len(rows) == len({r["sample"] for r in rows}) == report(metrics)["num_samples"]
        assert sum(r["label"] == r["predicted"] for r in rows) / len(rows) == pytest.approx(report(metrics)["accuracy"])
        assert {r["label"] for r in rows} <= set(metrics["support"])
        # each unit's subject and class probabilities (a video's: the mean over its clips), for paired analyses
        names = list(metrics["support"])
        assert all(r["subject"].startswith("synth") for r in rows)
        for r in rows:
            probs = [float(r[f"p_{n}"]) for n in names]
            assert sum(probs) == pytest.approx(1.0, abs=1e-4)
            if level == "image":
                assert names[int(np.argmax(probs))] == r["predicted"]


def test_runs_on_the_same_test_images_are_paired_with_mcnemar(evaluated, arm_run, tmp_path):
    from fer_keras.evaluation.metrics import mcnemar_exact

    still_run, _ = evaluated
    expect_ok(invoke("--quiet", "evaluate", arm_run))
    result = expect_ok(invoke("compare", still_run, arm_run, "--out", tmp_path / "cmp.json"))
    rows = json.loads((tmp_path / "cmp.json").read_text())["evaluations"]
    held_out = [r for r in rows if r["evaluation"] == "held-out"]
    assert len({(r["data"], r["protocol"]) for r in held_out}) == 1  # one test set, one table
    best, other = held_out  # best first
    assert best["accuracy"] >= other["accuracy"] and best["vs_best"] is None
    test = other["vs_best"]
    assert test["best"] == best["run"]
    # Paired counts agree with the two accuracies: N (acc_best - acc_other) = b - c.
    assert test["only_best_right"] - test["only_this_right"] == round(best["samples"] * (best["accuracy"] - other["accuracy"]))
    assert test["p"] == mcnemar_exact(test["only_best_right"], test["only_this_right"])
    assert f"{test['p']:.2g} ({test['only_best_right']} vs {test['only_this_right']})" in result.output
    cross = [r for r in rows if r["evaluation"].startswith("cross-dataset") and r["data"].endswith("other_stills")]
    assert cross and all(r["vs_best"] is None for r in cross)  # alone in its table


def test_k_fold_protocols_are_paired_over_all_their_folds(evaluated, tmp_path):
    _, clip_run = evaluated
    twin = tmp_path / "twin_run"  # the same run again: every video paired, none discordant
    shutil.copytree(clip_run, twin, ignore=shutil.ignore_patterns("cross"))
    expect_ok(invoke("--quiet", "compare", clip_run, twin, "--out", tmp_path / "cmp.json"))
    rows = json.loads((tmp_path / "cmp.json").read_text())["evaluations"]
    kfold = [r for r in rows if r["evaluation"] == "k-fold"]
    assert len(kfold) == 2 and len(kfold[0]["predictions"]) == 2  # fold-0 and fold-1
    videos = sum(len(_csv_rows(f)) for f in kfold[0]["predictions"])
    summary = json.loads((clip_run / "kfold-2" / "metrics.json").read_text())
    assert videos == sum(map(sum, summary["confusion_matrix"]))  # every subject's videos, once (video level)
    assert kfold[1]["vs_best"] == {"best": kfold[0]["run"], "only_best_right": 0, "only_this_right": 0, "p": 1.0}


def test_compare_without_runs_is_a_usage_error():
    line = expect_user_error(invoke("compare"), exit_code=2)
    assert line.startswith("Error: Give one or more run folders to compare.")


def test_cross_dataset_rows_of_runs_trained_apart_share_the_table_of_their_test_samples(evaluated, arm_run, tmp_path):
    """Runs trained on other data or splits but scored on the same target samples are one table, tested together."""
    still_run, _ = evaluated
    other = pathlib.Path(json.loads((still_run / "cross" / "other_stills" / "metrics.json").read_text())["data"])
    expect_ok(invoke("--quiet", "evaluate", arm_run, "--data", other))
    assert expect_ok(invoke("--quiet", "compare", still_run, arm_run, "--out", tmp_path / "cmp.json")).output == ""
    rows = [r for r in json.loads((tmp_path / "cmp.json").read_text())["evaluations"] if r["data"] == str(other)]
    assert len(rows) == 2 and {r["protocol"] for r in rows} == {"cross-dataset, every sample"}
    assert all(r["evaluation"] == "cross-dataset (trained on SynthFER)" for r in rows)
    assert rows[0]["vs_best"] is None and rows[1]["vs_best"]["best"] == rows[0]["run"]


def test_a_run_given_twice_is_one_row_and_a_missing_test_says_why(evaluated, tmp_path):
    still_run, _ = evaluated
    result = expect_ok(invoke("compare", still_run, f"{still_run}/", "--out", tmp_path / "cmp.json"))
    rows = json.loads((tmp_path / "cmp.json").read_text())["evaluations"]
    assert len([r for r in rows if r["evaluation"] == "held-out"]) == 1
    bare = tmp_path / "no_predictions"
    shutil.copytree(still_run, bare, ignore=shutil.ignore_patterns("cross", "predictions.csv"))
    metrics = json.loads((bare / "metrics.json").read_text())
    (bare / "metrics.json").write_text(json.dumps(dict(metrics, accuracy=-1.0)))  # ranked below still_run
    result = expect_ok(invoke("compare", still_run, bare))
    assert "n/a (no predictions.csv: evaluate the run again)" in result.output
    twice = tmp_path / "twice"  # the best run's file names a sample twice: evaluating it again would not help
    shutil.copytree(still_run, twice, ignore=shutil.ignore_patterns("cross"))
    lines = (twice / "predictions.csv").read_text().splitlines()
    (twice / "predictions.csv").write_text("\n".join(lines + lines[-1:]) + "\n")
    (twice / "metrics.json").write_text(json.dumps(dict(metrics, accuracy=2.0)))  # ranked first
    result = expect_ok(invoke("compare", twice, still_run))
    assert "n/a (the best run's predictions.csv names a sample twice or cannot be read)" in result.output
    (twice / "metrics.json").write_text(json.dumps(dict(metrics, accuracy=-2.0)))  # ranked last
    result = expect_ok(invoke("compare", still_run, twice))
    assert "n/a (its predictions.csv names a sample twice or cannot be read)" in result.output


def test_clip_runs_rank_by_the_units_mcnemar_pairs(evaluated, tmp_path):
    """Clip models' predictions.csv holds videos: the best row is the best on videos, not on clips."""
    from fer_keras.evaluation.compare import compare

    _, clip_run = evaluated
    runs = []
    for name, clip_accuracy, video_accuracy in (("more_clips", 0.9, 0.2), ("more_videos", 0.1, 0.8)):
        run = tmp_path / name
        shutil.copytree(clip_run, run, ignore=shutil.ignore_patterns("cross", "kfold-*"))
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["accuracy"], metrics["video"]["accuracy"] = clip_accuracy, video_accuracy
        (run / "metrics.json").write_text(json.dumps(metrics))
        runs.append(run)
    groups, _ = compare(runs)
    (rows,) = [rows for rows in groups.values() if rows[0]["evaluation"] == "held-out"]
    assert [pathlib.Path(r["run"]).name for r in rows] == ["more_videos", "more_clips"]


def test_the_same_samples_in_another_folder_share_a_table_and_runs_keep_their_order(evaluated, still_data, tmp_path):
    """Two --data synth runs generate the same set into their own folders: one table, tested against each other."""
    from fer_keras.evaluation.compare import compare

    still_run, _ = evaluated
    shutil.copytree(still_data, tmp_path / "data_copy")
    twin = tmp_path / "twin"
    shutil.copytree(still_run, twin, ignore=shutil.ignore_patterns("cross", "kfold-*"))
    config = json.loads((twin / "config.json").read_text())
    config["dataset"]["dir"] = str(tmp_path / "data_copy")
    (twin / "config.json").write_text(json.dumps(config))
    groups, _ = compare([twin, still_run, twin])
    (rows,) = [rows for rows in groups.values() if rows[0]["evaluation"] == "held-out"]
    assert [r["run"] for r in rows] == [str(twin), str(still_run)]  # a tie keeps the order given; each run once
    assert rows[1]["vs_best"]["only_best_right"] == rows[1]["vs_best"]["only_this_right"] == 0


def test_a_data_folder_replaced_after_training_is_refused_and_kept_apart(evaluated, still_data, tmp_path):
    """Other people under the same sample ids: evaluate must not score them as the run's held-out subjects, and
    compare must not pair an evaluation of the old samples with one of the new."""
    from fer_keras.evaluation.compare import compare
    from fer_keras.training import fit

    still_run, _ = evaluated
    data = tmp_path / "data"
    shutil.copytree(still_data, data)
    old = tmp_path / "old"
    shutil.copytree(still_run, old, ignore=shutil.ignore_patterns("cross", "kfold-*"))
    config = json.loads((old / "config.json").read_text())
    config["dataset"]["dir"] = str(data)
    (old / "config.json").write_text(json.dumps(config))
    expect_ok(invoke("--quiet", "evaluate", old))
    fingerprint = json.loads((old / "metrics.json").read_text())["data_fingerprint"]
    assert fingerprint and fingerprint == config["dataset"]["fingerprint"]

    shutil.rmtree(data)  # the same command with another seed: other people, the same sample ids
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", data, "--kind", "still", "--subjects", 6,
                     "--samples-per-emotion", 5, "--size", DATA_SIZE, "--grey", "--seed", 1))
    line = expect_user_error(invoke("evaluate", old))
    assert line == (f"Error: Data folder {str(data)!r} was replaced since run 'old' trained on it (people 'synthfer seed "
                    f"1', not 'synthfer seed 0'): prepare it again as it was, or score the run on it as another dataset "
                    f"with `fer-keras evaluate RUN --data {data}`.")
    assert json.loads((old / "metrics.json").read_text())["data_fingerprint"] == fingerprint  # kept as it was

    new = tmp_path / "new"  # a run trained on the new data (its weights do not matter for the tables)
    shutil.copytree(old, new)
    manifest = json.loads((data / "manifest.json").read_text())
    config["dataset"].update(people="synthfer seed 1", fingerprint=fit.data_fingerprint(manifest))
    (new / "config.json").write_text(json.dumps(config))
    expect_ok(invoke("--quiet", "evaluate", new))
    groups, _ = compare([old, new])
    held_out = [rows for rows in groups.values() if rows[0]["evaluation"] == "held-out"]
    assert sorted(len(rows) for rows in held_out) == [1, 1]  # two tables, no McNemar test across them


def test_a_data_folder_prepared_again_at_another_size_is_refused(still_run, still_data, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(still_run, run, ignore=shutil.ignore_patterns("cross", "kfold-*"))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, dataset=dict(config["dataset"], dir=str(data)))))
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", data, "--kind", "still", "--subjects", 6,
                     "--samples-per-emotion", 5, "--size", DATA_SIZE + 16, "--grey"))
    line = expect_user_error(invoke("evaluate", run))
    assert f"was replaced since run 'run' trained on it (image {{'size': {DATA_SIZE + 16}" in line


def test_a_data_folder_with_other_samples_of_the_same_people_is_refused(still_run, tmp_path):
    """Fewer samples (or fewer subjects) under the same seed: the same people, other test images."""
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(still_run, run, ignore=shutil.ignore_patterns("cross", "kfold-*"))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, dataset=dict(config["dataset"], dir=str(data)))))
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", data, "--kind", "still", "--subjects", 6,
                     "--samples-per-emotion", 4, "--size", DATA_SIZE, "--grey"))
    line = expect_user_error(invoke("evaluate", run))
    assert "was replaced since run 'run' trained on it (other samples: its shards' fingerprint differs)" in line
    assert "was replaced" in expect_user_error(invoke("train", "--resume", run, "--epochs", config["epochs"] + 1))
    assert (run / "model.keras").exists() and not (run / ".before-resume").exists()
