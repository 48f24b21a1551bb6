"""SavedModel export in TF Serving's layout: versions, signature, and loading in a fresh process."""

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fer_keras.errors import UserError
from fer_keras.exports.savedmodel import export_savedmodel, next_version
from fer_keras.training import fit
from tests.conftest import MODEL_SIZE, expect_user_error, invoke

FRESH_PROCESS = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    path, inputs, outputs = sys.argv[1:4]
    fn = tf.saved_model.load(path).signatures["serving_default"]
    (name, spec), = fn.structured_input_signature[1].items()
    result = fn(**{name: tf.constant(np.load(inputs))})
    report = {"input_name": name, "input_shape": [-1 if d is None else d for d in spec.shape],
              "input_dtype": spec.dtype.name,
              "dtypes": {k: v.dtype.name for k, v in result.items()},
              "probabilities": result["probabilities"].numpy().tolist(),
              "label_index": result["label_index"].numpy().tolist(),
              "label_name": [n.decode() for n in result["label_name"].numpy()]}
    with open(outputs, "w") as f:
        json.dump(report, f)
    assert not any(m == "fer_keras" or m.startswith("fer_keras.") for m in sys.modules), "fer_keras was imported"
    """
)


def versions_in(base):
    """Version folders of a TF Serving base path (the TFLite export may share it with a tflite/ folder)."""
    return sorted(p.name for p in base.iterdir() if p.name.isdigit())


def test_versions_count_up_and_are_never_overwritten(still_savedmodels):
    base = still_savedmodels["base"]
    assert versions_in(base) == ["1", "2"]
    assert not [p for p in base.iterdir() if p.name.startswith(".")]  # no .<version>.tmp left beside them
    for version in still_savedmodels["versions"]:
        assert (version / "saved_model.pb").is_file()
        assert (version / "variables").is_dir()
    assert still_savedmodels["v1_digest_before"] == still_savedmodels["v1_digest_after"]
    assert next_version(base) == 3


def test_export_to_an_existing_version_is_refused(still_run, still_savedmodels):
    out = still_savedmodels["base"].parent
    with pytest.raises(UserError, match="already exists"):
        export_savedmodel(still_run, out=out, version=1)
    assert versions_in(still_savedmodels["base"]) == ["1", "2"]


def test_next_version_ignores_non_numeric_folders(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    (tmp_path / "3").mkdir()
    (tmp_path / ".4.tmp").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert next_version(tmp_path) == 4


def test_assets_extra_describe_the_model(still_run, still_savedmodels):
    info = json.loads((still_savedmodels["versions"][0] / "assets.extra" / "fer_keras.json").read_text())
    labels = json.loads((still_run / "config.json").read_text())["dataset"]["labels"]
    assert info["labels"] == labels
    assert info["input"] == "images"
    assert info["input_shape"] == [None, MODEL_SIZE, MODEL_SIZE, 1]
    assert info["model"] == "frame_cnn" and info["run"] == still_run.name
    # which run and which data: a SynthFER model says so, and cannot pass for one trained on CK+
    assert info["run_id"] == json.loads((still_run / "config.json").read_text())["run_id"]
    assert "run_path" not in info  # a shipped model does not carry the trainer's folders
    assert info["dataset"] == "SynthFER (synthetic faces)" and info["label_set"] == "basic7"
    # the outputs, as TF Serving returns them
    assert info["outputs"] == {"serving_default": [
        {"name": "label_index", "shape": [None], "dtype": "int64"}, {"name": "label_name", "shape": [None], "dtype": "string"},
        {"name": "probabilities", "shape": [None, len(labels)], "dtype": "float32"}]}


def test_another_run_of_the_same_name_cannot_export_into_its_folder(still_run, still_savedmodels, tmp_path):
    """runs/a/x and runs/b/x would share exports/x: versions and .tflite files of two models mixed up."""
    base = still_savedmodels["versions"][0].parent
    namesake = tmp_path / "elsewhere" / still_run.name
    shutil.copytree(still_run, namesake)
    config = json.loads((namesake / "config.json").read_text())
    run_id = config["run_id"]
    (namesake / "config.json").write_text(json.dumps(dict(config, run_id="another-run")))  # trained apart, same name
    before = sorted(p.name for p in base.iterdir())
    for fmt in ("savedmodel", "tflite"):
        line = expect_user_error(invoke("export", namesake, "--format", fmt, "--out", base.parent))
        assert line == (f"Error: {str(base)!r} holds the exports of another run (run id {run_id}); give another --out, "
                        "or rename the run folder.")
    assert sorted(p.name for p in base.iterdir()) == before


def test_a_moved_run_goes_on_exporting_into_its_folder(still_run, still_savedmodels, tmp_path):
    """The same run (config.json's run_id) at another path is not "another run"; a namesake with another id is."""
    base = still_savedmodels["versions"][0].parent
    moved = tmp_path / "moved" / still_run.name
    shutil.copytree(still_run, moved, ignore=shutil.ignore_patterns("cross", "kfold-*"))
    assert json.loads((still_run / "config.json").read_text())["run_id"]
    path = export_savedmodel(moved, out=base.parent)
    assert json.loads((path / "assets.extra" / "fer_keras.json").read_text())["run_id"] == \
        json.loads((still_run / "config.json").read_text())["run_id"]
    shutil.rmtree(path)  # leave the shared exports as the other tests expect them


def test_loads_in_a_fresh_process_without_fer_keras(still_run, still_savedmodels, tmp_path):
    _, manifest, model = fit.load_run(still_run)
    x = np.random.default_rng(0).uniform(0, 255, size=(3, MODEL_SIZE, MODEL_SIZE, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script), str(still_savedmodels["versions"][1]), str(tmp_path / "x.npy"), str(tmp_path / "y.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    y = json.loads((tmp_path / "y.json").read_text())
    assert y["input_name"] == "images"
    assert y["input_shape"] == [-1, MODEL_SIZE, MODEL_SIZE, 1]
    assert y["input_dtype"] == "float32"
    assert y["dtypes"] == {"probabilities": "float32", "label_index": "int64", "label_name": "string"}
    probabilities = np.array(y["probabilities"])
    assert probabilities.shape == (3, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities, np.asarray(model(x, training=False)), atol=1e-5)
    assert y["label_index"] == probabilities.argmax(axis=1).tolist()
    assert y["label_name"] == [manifest["labels"][i] for i in y["label_index"]]


def test_clip_model_signature_takes_frames(clip_run, tmp_path):
    import tensorflow as tf

    path = export_savedmodel(clip_run, out=tmp_path)
    assert path == tmp_path / clip_run.name / "1"
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    (name, spec), = fn.structured_input_signature[1].items()
    assert name == "frames"
    assert spec.shape.as_list() == [None, 4, MODEL_SIZE, MODEL_SIZE, 1]
    x = np.random.default_rng(1).uniform(0, 255, size=(2, 4, MODEL_SIZE, MODEL_SIZE, 1)).astype(np.float32)
    out = fn(frames=tf.constant(x))
    _, _, model = fit.load_run(clip_run)
    np.testing.assert_allclose(out["probabilities"].numpy(), np.asarray(model(x, training=False)), atol=1e-5)
    assert out["label_index"].shape == (2,)
    # A clip model also streams: one frame and its ConvLSTM2D states per call.
    step = tf.saved_model.load(str(path)).signatures["stream_step"]
    assert sorted(step.structured_input_signature[1]) == ["convlstm_c", "convlstm_h1", "frame"]
    states = {"convlstm_h1": tf.zeros((2, MODEL_SIZE // 4, MODEL_SIZE // 4, 32)), "convlstm_c": tf.zeros((2, MODEL_SIZE // 4, MODEL_SIZE // 4, 32))}
    for t in range(4):
        y = step(frame=tf.constant(x[:, t]), **states)
        states = {n: y[f"{n}_next"] for n in states}
    np.testing.assert_allclose(y["probabilities"].numpy(), out["probabilities"].numpy(), atol=1e-4)


def test_saved_model_cli_lists_the_serving_signature(still_savedmodels):
    """TF Serving reads the same MetaGraph that `saved_model_cli show --all` prints."""
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    done = subprocess.run([str(cli), "show", "--all", "--dir", str(still_savedmodels["versions"][0])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "signature_def['serving_default']" in out
    for name in ("inputs['images']", "outputs['probabilities']", "outputs['label_index']", "outputs['label_name']"):
        assert name in out
    assert "DT_STRING" in out and "DT_INT64" in out


FRESH_RAM_PROCESS = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    path, inputs, outputs = sys.argv[1:4]
    loaded = tf.saved_model.load(path)
    clips = np.load(inputs)
    attention = loaded.signatures["attention"](frames=tf.constant(clips))
    step = loaded.signatures["stream_step"]
    specs = step.structured_input_signature[1]
    states = {n: tf.zeros([len(clips)] + s.shape.as_list()[1:]) for n, s in specs.items() if n != "frame"}
    for t in range(clips.shape[1]):
        out = step(frame=tf.constant(clips[:, t]), **states)
        states = {n: out[n + "_next"] for n in states}
    report = {"attention_outputs": sorted(attention),
              "attention_maps": attention["attention_maps"].numpy().tolist(),
              "probabilities": attention["probabilities"].numpy().tolist(),
              "step_inputs": {n: [-1 if d is None else d for d in s.shape] for n, s in specs.items()},
              "step_probabilities": out["probabilities"].numpy().tolist(),
              "step_attention_map": out["attention_map"].numpy().tolist()}
    with open(outputs, "w") as f:
        json.dump(report, f)
    assert not any(m == "fer_keras" or m.startswith("fer_keras.") for m in sys.modules), "fer_keras was imported"
    """
)


@pytest.fixture(scope="module")
def ram_savedmodel(sequence_data, runs_dir, tmp_path_factory):
    from tests.exports.streaming_runs import ram_run

    run = ram_run(sequence_data, runs_dir)
    return run, export_savedmodel(run, out=tmp_path_factory.mktemp("ram_exports"))


def test_ram_attention_and_stream_step_signatures_in_a_fresh_process(ram_savedmodel, tmp_path):
    """RAM models add `attention` (frames -> maps M_t, probabilities); clip models add `stream_step`."""
    from tests.conftest import CLIP_LENGTH

    run, path = ram_savedmodel
    info = json.loads((path / "assets.extra" / "fer_keras.json").read_text())
    assert info["signatures"] == ["serving_default", "attention", "stream_step"]
    assert [s["name"] for s in info["stream_step"]["states"]][-3:] == ["ram_h1", "ram_c", "ram_h2"]
    _, _, model = fit.load_run(run)
    x = np.random.default_rng(4).uniform(0, 255, size=(2, CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "attention.py"
    script.write_text(FRESH_RAM_PROCESS)
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    y = json.loads((tmp_path / "y.json").read_text())
    assert y["attention_outputs"] == ["attention_logits", "attention_maps", "probabilities"]
    assert [o["name"] for o in info["outputs"]["attention"]] == y["attention_outputs"]
    assert next(o for o in info["outputs"]["attention"] if o["name"] == "attention_maps")["shape"] == [
        None, CLIP_LENGTH, MODEL_SIZE // 8, MODEL_SIZE // 8, 1]
    step_outputs = {o["name"] for o in info["outputs"]["stream_step"]}
    assert step_outputs == set(info["stream_step"]["outputs"]) | {s["feed_back_from"] for s in info["stream_step"]["states"]}
    expected = model.explain(x, training=False)
    maps = np.array(y["attention_maps"])
    assert maps.shape == (2, CLIP_LENGTH, MODEL_SIZE // 8, MODEL_SIZE // 8, 1) and 0 <= maps.min() and maps.max() <= 1
    np.testing.assert_allclose(maps, np.asarray(expected["attention_maps"]), atol=1e-5)
    np.testing.assert_allclose(y["probabilities"], np.asarray(expected["probabilities"]), atol=1e-5)
    assert y["step_inputs"]["frame"] == [-1, MODEL_SIZE, MODEL_SIZE, 1]
    assert y["step_inputs"]["rgb_rnn1_h2"] == [-1, MODEL_SIZE // 2, MODEL_SIZE // 2, 8]
    # stream_step run over the T frames of each clip gives the clip model's output and last map.
    np.testing.assert_allclose(y["step_probabilities"], np.asarray(expected["probabilities"]), atol=1e-4)
    np.testing.assert_allclose(y["step_attention_map"], np.asarray(expected["attention_maps"])[:, -1], atol=1e-4)


def test_saved_model_cli_lists_the_ram_signatures(ram_savedmodel):
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    done = subprocess.run([str(cli), "show", "--all", "--dir", str(ram_savedmodel[1])], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("signature_def['attention']", "signature_def['stream_step']", "outputs['attention_maps']",
                 "inputs['ram_h2']", "outputs['ram_h2_next']", "outputs['attention_map']"):
        assert name in done.stdout, name


def test_two_exports_racing_for_one_version_never_mix(tmp_path):
    """Each export writes its own temporary folder; the one that finishes second is told, and overwrites nothing."""
    import pathlib

    from fer_keras.exports.savedmodel import write_version

    final = tmp_path / "run" / "1"

    class RacedArchive:
        def write_out(self, path, verbose=False):
            pathlib.Path(path).mkdir()
            (pathlib.Path(path) / "saved_model.pb").write_bytes(b"mine")
            final.mkdir(parents=True)  # meanwhile, another export completes version 1
            (final / "saved_model.pb").write_bytes(b"theirs")

    with pytest.raises(UserError, match="was written by another export meanwhile"):
        write_version(RacedArchive(), final, {"model": "frame_cnn"})
    assert (final / "saved_model.pb").read_bytes() == b"theirs"
    assert sorted(p.name for p in final.parent.iterdir()) == ["1"]  # no temporary folder left
