"""`fer-keras benchmark`: a .tflite (still and streaming), a SavedModel and a run folder timed for real at batch 1,
and every bad input refused in one line with no --out file left behind.

Timings are only checked to be positive: the machine is shared, so no value beyond that is stable.
"""

import json
import pathlib
import sys

import pytest

from fer_keras.training import fit
from tests.conftest import MODEL_SIZE, expect_ok, expect_user_error, invoke
from tests.exports.streaming_runs import streaming_export

ROOT = pathlib.Path(__file__).resolve().parents[1]
FEW = ("--runs", 3, "--warmup", 1)


def benchmark(target, out_dir, *options, quiet=True):
    """Runs `fer-keras benchmark TARGET --runs 3 --warmup 1 OPTIONS --out out_dir/result.json`: (its JSON, its output)."""
    out = out_dir / "result.json"
    result = expect_ok(invoke(*(["--quiet"] if quiet else []), "benchmark", target, *FEW, *options, "--out", out))
    assert sorted(p.name for p in out_dir.iterdir()) == ["result.json"]  # no temporary file left beside it
    return json.loads(out.read_text()), result.output


def check_timings(got, threads):
    assert [t["threads"] for t in got["timings"]] == threads
    for t in got["timings"]:
        assert t["median_ms"] > 0 and t["p90_ms"] >= t["median_ms"] and t["runs"] == 3


@pytest.fixture(scope="module")
def still_model(still_run):
    return fit.load_run(still_run)[2]


def test_tflite_is_timed_per_thread_count(still_tflite, still_model, tmp_path):
    path = still_tflite["none"]
    got, output = benchmark(path, tmp_path, quiet=False)
    check_timings(got, [1, 2])
    assert got["kind"] == "tflite" and got["model"] == "frame_cnn" and got["quantize"] == "none"
    assert got["file_bytes"] == path.stat().st_size
    assert [i["shape"] for i in got["inputs"]] == [[1, *still_model.inputs[0].shape[1:]]] == [[1, MODEL_SIZE, MODEL_SIZE, 1]]
    assert got["inputs"][0]["dtype"] == "float32"
    assert not got["streaming"] and got["per_call"] == "image"
    assert got["machine"]["cores"] >= 1 and got["machine"]["cpu"]
    assert "median ms" in output and "p90 ms" in output


def test_streaming_tflite_is_timed_per_frame(clip_run, exports_dir, tmp_path):
    path = streaming_export(clip_run, exports_dir)
    meta = json.loads(path.with_suffix(".json").read_text())
    got, output = benchmark(path, tmp_path, "--threads", "2,1,2", quiet=False)
    check_timings(got, [2, 1])  # in the order given, each once
    assert got["streaming"] and got["per_call"] == "frame" and "per frame" in output
    expected = {f["name"]: f["shape"] for f in meta["frame_inputs"]} | {s["name"]: s["shape"] for s in meta["states"]}
    assert {i["name"]: i["shape"] for i in got["inputs"]} == expected
    assert got["inputs"][0]["shape"] == [1, MODEL_SIZE, MODEL_SIZE, 1]  # the frame first
    assert got["file_bytes"] == path.stat().st_size


def test_savedmodel_serving_default_is_timed_at_batch_1(still_savedmodels, tmp_path):
    version = still_savedmodels["versions"][0]
    got, output = benchmark(version, tmp_path)
    assert output == ""  # -q with --out: the result is in the file
    check_timings(got, [None])
    assert got["kind"] == "savedmodel" and got["target"] == str(version) and got["model"] == "frame_cnn"
    assert got["inputs"] == [{"name": "images", "shape": [1, MODEL_SIZE, MODEL_SIZE, 1], "dtype": "float32"}]
    assert "TensorFlow's own threads" in got["threads_note"]


def test_run_folder_times_the_keras_model_with_a_progress_bar(still_run, still_model, tmp_path):
    got, output = benchmark(still_run, tmp_path, quiet=False)
    check_timings(got, [None])
    assert got["kind"] == "run" and got["parameters"] == still_model.count_params() > 0
    assert [i["shape"] for i in got["inputs"]] == [[1, *still_model.inputs[0].shape[1:]]]
    assert "3/3" in output  # the bar over the timed calls; --quiet (the other tests) has none


def _bad_target(case, still_tflite, tmp_path):
    if case == "missing":
        return tmp_path / "missing.tflite"
    if case == "not a model":
        path = tmp_path / "notes.txt"
        path.write_text("not a model\n")
        return path
    if case == "folder of nothing":
        (tmp_path / "folder").mkdir()
        return tmp_path / "folder"
    data = still_tflite["none"].read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 2])  # a download cut off half way
    return path


@pytest.mark.parametrize("case", ["missing", "not a model", "folder of nothing", "cut .tflite"])
def test_error_bad_target(case, still_tflite, tmp_path):
    target = _bad_target(case, still_tflite, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    line = expect_user_error(invoke("benchmark", target, *FEW, "--out", out_dir / "result.json"), exit_code=1)
    assert target.name in line
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("options, exit_code, says", [
    (("--runs", 0), 2, "--runs"),
    (("--threads", 0), 2, "--threads"),
    (("--threads", "x"), 2, "--threads"),
    (("--threads", "1,,2"), 2, "--threads"),
])
def test_error_bad_option(options, exit_code, says, still_tflite, tmp_path):
    line = expect_user_error(invoke("benchmark", still_tflite["none"], *options, "--out", tmp_path / "result.json"),
                             exit_code=exit_code)
    assert says in line
    assert list(tmp_path.iterdir()) == []


def test_error_threads_for_a_run_folder_and_out_that_cannot_be_written(still_run, still_tflite, tmp_path):
    line = expect_user_error(invoke("benchmark", still_run, *FEW, "--threads", 1, "--out", tmp_path / "result.json"), exit_code=2)
    assert "TensorFlow's own threads" in line
    line = expect_user_error(invoke("benchmark", still_tflite["none"], *FEW, "--out", tmp_path / "missing" / "result.json"))
    assert "does not exist" in line
    assert list(tmp_path.iterdir()) == []
    line = expect_user_error(invoke("benchmark", still_tflite["none"], *FEW, "--out", "/proc/result.json"))
    assert line.startswith("Error: --out '/proc/result.json': the folder '/proc' cannot be written")
    target = still_tflite["none"]
    before = target.read_bytes()
    expect_user_error(invoke("benchmark", target, *FEW, "--out", target))
    assert target.read_bytes() == before
    metadata = target.with_suffix(".json")
    before = metadata.read_bytes()
    assert "metadata" in expect_user_error(invoke("benchmark", target, *FEW, "--out", metadata))
    assert metadata.read_bytes() == before


def test_latency_script_times_with_the_package_helpers(still_tflite):
    sys.path.insert(0, str(ROOT))
    from benchmarks import latency
    from fer_keras import benchmark as package

    assert latency.median_ms is package.median_ms
    assert latency.random_input_interpreter is package.random_input_interpreter
    times, fastest, runs = latency.litert_latency({"float32": still_tflite["none"]}, runs=4, warmup=1, rounds=2)
    assert runs == 4 and all(times["float32"][n] > 0 and fastest["float32"][n] > 0 for n in (1, 2))
    ms, calls = latency.median_ms(lambda: sum(range(1000)), 3, 1)
    assert ms > 0 and calls == 3
