"""vae_swap training (paper 004 eqs. 1-5): loss terms, stage data, frozen encoder, gradients, tiny runs, CLI."""

import json
import shutil
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_keras.models.registry import get_model
from fer_keras.training import vae_swap as T
from tests.conftest import expect_ok, expect_user_error, invoke

TINY = dict(encoder_filters=(4, 4, 8, 8), decoder_filters=(8, 4, 4, 4), latent_dim=4)


def _tiny(**kw):
    return get_model("vae_swap", (32, 32, 1), 7, **dict(TINY, **kw))


def _images(n=12, subjects=3, seed=0):
    rng = np.random.default_rng(seed)
    # Each subject a distinct brightness, so identity is learnable; noise on top.
    base = np.repeat(np.linspace(40, 200, subjects), n // subjects)[:, None, None, None]
    return (base + rng.normal(0, 20, (n, 32, 32, 1))).clip(0, 255).astype("float32"), np.repeat(np.arange(subjects), n // subjects)


def test_kl_against_hand_computed():
    mu = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    log_var = np.array([[0.0, math.log(4.0)], [0.0, 0.0]], "float32")
    # Row 1: 0.5 * (1 + 0 - 0) + 0.5 * (4 - 1 - ln 4); row 2: 0.5 * 4.
    expected = np.mean([0.5 * 1.0 + 0.5 * (4.0 - 1.0 - math.log(4.0)), 0.5 * 4.0])
    np.testing.assert_allclose(float(T.kl_divergence(mu, log_var)), expected, rtol=1e-6)


def test_reconstruction_and_switch_against_hand_computed():
    target = np.array([[[[1.0]], [[0.0]]]], "float32")  # (1, 2, 1, 1)
    output = np.array([[[[0.5]], [[0.5]]]], "float32")
    np.testing.assert_allclose(float(T.reconstruction_error(target, output)), 0.25, rtol=1e-6)
    z_i, z_i2 = np.array([[1.0, 2.0]], "float32"), np.array([[1.0, 0.0]], "float32")  # MSE = 2
    z_e, z_e2 = np.array([[0.0, 0.0]], "float32"), np.array([[3.0, 1.0]], "float32")  # MSE = 5
    np.testing.assert_allclose(float(T.switch_loss(z_i, z_i2, z_e, z_e2)), 7.0, rtol=1e-6)


def test_gan_losses_against_hand_computed():
    real, recon, prior = np.array([[0.0]], "float32"), np.array([[math.log(3.0)]], "float32"), np.array([[0.0]], "float32")
    # D(x) = 0.5, D(x') = 0.75, D(x_p) = 0.5.
    d = -(math.log(0.5) + math.log(1 - 0.75) + math.log(1 - 0.5))
    g = -(math.log(0.75) + math.log(0.5))
    np.testing.assert_allclose(float(T.discriminator_loss(real, recon, prior)), d, rtol=1e-5)
    np.testing.assert_allclose(float(T.generator_gan_loss(recon, prior)), g, rtol=1e-5)


def test_stage1_target_is_another_image_of_the_same_subject():
    subjects = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    images = np.arange(9, dtype="float32")[:, None, None, None] * np.ones((1, 4, 4, 1), "float32")
    ds = T.pair_dataset(images, subjects, batch_size=4, epochs=3, seed=0)
    seen = 0
    for x, target in ds:
        i, j = x.numpy()[:, 0, 0, 0].astype(int), target.numpy()[:, 0, 0, 0].astype(int)
        assert np.all(i != j) and np.all(subjects[i] == subjects[j])
        seen += len(i)
    assert seen == 27


def test_switch_donors_are_other_subjects():
    subjects = tf.constant([0, 0, 1, 1, 1, 2])
    donor = T._other_subject_index(subjects, 6).numpy()
    assert np.all(subjects.numpy()[donor] != subjects.numpy())


def _step(stage_cls, vae, batch):
    opts = T.make_optimizers(vae)
    stage = stage_cls(vae, opts)
    stage.compile(run_eagerly=True)
    return stage.train_on_batch(*batch, return_dict=True)


def test_identity_encoder_is_frozen_in_stage2_and_others_move():
    vae = _tiny()
    x, s = _images()
    before = {n: [w.copy() for w in getattr(vae, n).get_weights()] for n in ("identity_encoder", "expression_encoder", "decoder", "discriminator")}
    logs = _step(T.ExpressionStage, vae, (x, s))
    assert set(logs) >= {"loss", "kl", "rec", "gan_g", "gan_d", "switch"}
    for name, weights in before.items():
        after = getattr(vae, name).get_weights()
        same = all(np.array_equal(a, b) for a, b in zip(weights, after))
        assert same == (name == "identity_encoder"), name


def test_gradients_reach_the_expression_encoder_through_the_switch_loss():
    vae = _tiny()
    x, s = _images()
    stage = T.ExpressionStage(vae, T.make_optimizers(vae))
    with tf.GradientTape() as tape:
        mu, _ = vae.expression_encoder(x)
        loss = stage._switch(tf.constant(x), mu, tf.constant(s))
    variables = vae.expression_encoder.trainable_variables
    grads = tape.gradient(loss, variables)
    # Every weight but the log-variance head (the switch loss reads encoder means) gets a gradient.
    assert all((g is None) == ("fc_log_var" in v.path) for v, g in zip(variables, grads))
    grads = [g for g in grads if g is not None]
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0


@pytest.mark.parametrize("stage", ["identity", "expression"])
def test_a_tiny_run_of_each_stage_lowers_its_loss(stage):
    keras.utils.set_random_seed(0)  # initial weights and shuffling independent of the tests that ran before
    vae = _tiny(gan=False, switch=False)
    x, s = _images(24, 3)
    rows = []
    T.run_stage(vae, stage, (x, s.astype("int32")), epochs=8, optimizers=T.make_optimizers(vae),
                counts={n: 0 for n in ("identity_encoder", "expression_encoder", "decoder", "discriminator")},
                rows=rows, batch_size=8)
    assert rows[-1]["rec"] < rows[0]["rec"]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_learning_rate_decays_per_epoch():
    vae = _tiny(gan=False, switch=False)
    x, s = _images(8, 2)
    opts = T.make_optimizers(vae)
    counts = {n: 0 for n in opts}
    T.run_stage(vae, "identity", (x, s.astype("int32")), epochs=3, optimizers=opts, counts=counts, rows=[], batch_size=8)
    assert counts["identity_encoder"] == 3 and counts["expression_encoder"] == 0
    np.testing.assert_allclose(float(opts["decoder"].learning_rate), 5e-4 * 0.95 ** 2, rtol=1e-5)


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory):
    """`fer-keras train --model vae_swap --data synth`: 6 subjects, 48 px, 1 epoch per stage, 1 round."""
    out = tmp_path_factory.mktemp("vae_runs")
    config = out / "config.json"
    config.write_text(json.dumps({"model_args": dict(TINY, encoder_filters=[4, 4, 8, 8], decoder_filters=[8, 4, 4, 4], rounds=1),
                                  "synth": {"samples_per_emotion": 1, "size": 48}}))
    expect_ok(invoke("--quiet", "train", "--model", "vae_swap", "--data", "synth", "--synth-subjects", 6, "--epochs", 1,
                     "--batch-size", 8, "--folds", 3, "--config", config, "--out", out, "--name", "run"))
    return out / "run"


def test_cli_train_evaluate_generate(vae_run, tmp_path):
    assert (vae_run / "model.keras").exists()
    history = (vae_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("stage") and len(history) == 3  # stage 1 + stage 2, 1 epoch each
    times = json.loads((vae_run / "stage_times.json").read_text())
    assert "identity" in times and "expression" in times
    result = expect_ok(invoke("evaluate", vae_run))
    assert "k-means++ (k=9, 100 trials)" in result.output
    metrics = json.loads((vae_run / "metrics.json").read_text())
    assert 0.0 <= metrics["kmeans_test"]["mean"] <= 1.0 and "swap" in metrics
    swap_png, strip_png = tmp_path / "swap.png", tmp_path / "strip.png"
    expect_ok(invoke("--quiet", "generate", "swap", vae_run, "--out", swap_png))
    expect_ok(invoke("--quiet", "generate", "interpolate", vae_run, "happiness", "sadness", "--out", strip_png))
    for command in (("swap", vae_run), ("interpolate", vae_run, "happiness", "sadness")):  # a name PIL cannot write
        line = expect_user_error(invoke("generate", *command, "--out", tmp_path / "x.txt"))
        assert line == "Error: --out must end in .png or .jpg. Received: x.txt"
    from PIL import Image

    grid = Image.open(swap_png)
    assert grid.size[0] > 48 * 2 and grid.size[1] > 48 * 7  # header row + 7 donors
    assert Image.open(strip_png).size[0] > 48 * 9  # A + 8 steps + B


def test_benchmark_of_the_run_says_to_benchmark_the_exported_encoder(vae_run):
    line = expect_user_error(invoke("benchmark", vae_run, "--runs", 1))
    assert "is not one classifier network" in line and "--format tflite" in line


def test_kfold_is_refused_before_any_fold_trains(vae_run):
    line = expect_user_error(invoke("evaluate", vae_run, "--protocol", "kfold", "--folds", 2, "--epochs", 1))
    assert "scored by its own evaluator" in line and "k-fold protocol takes classifier runs" in line
    assert not (vae_run / "kfold-2").exists()


def test_evaluation_set_scores_the_runs_subjects_on_another_folder(vae_run, tmp_path):
    """Paper 004 scores apex stills of its training and test subjects: `evaluate RUN --data EVALSET` for vae_swap."""
    evalset = tmp_path / "apex"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", evalset, "--kind", "still", "--subjects", 6, "--size", 48))
    result = expect_ok(invoke("evaluate", vae_run, "--data", evalset))
    metrics = json.loads((vae_run / "cross" / "apex" / "metrics.json").read_text())
    assert metrics["evaluation_set"] == "apex" and metrics["data"] == str(evalset.resolve())
    assert metrics["kmeans_train"]["images"] > 0 and metrics["kmeans_test"]["images"] > 0
    assert metrics["protocol"].startswith("evaluation set apex: ") and "on the evaluation set apex" in result.output
    assert "k-means++ trials" in result.output and "Largest confusions" not in result.output  # a bar; no classes
    own = json.loads((vae_run / "metrics.json").read_text()) if (vae_run / "metrics.json").exists() else None
    assert own is None or own.get("data") is None  # the run's own evaluation is untouched
    table = expect_ok(invoke("compare", vae_run)).output
    assert "evaluation set apex" in table
    sequences = tmp_path / "seq"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", sequences, "--kind", "sequence", "--subjects", 3, "--size", 48))
    line = expect_user_error(invoke("evaluate", vae_run, "--data", sequences))
    assert "--data takes its evaluation set, stills of the people it trained on (synthfer seed 0" in line
    assert "holds sequences of synthfer seed 0" in line
    others = tmp_path / "others"  # the same subject ids, other people
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", others, "--kind", "still", "--subjects", 6, "--size", 48, "--seed", 3))
    assert "holds stills of synthfer seed 3" in expect_user_error(invoke("evaluate", vae_run, "--data", others))
    larger = tmp_path / "larger"  # another size and RGB: scored at the run's own input size and channels
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", larger, "--kind", "still", "--subjects", 6, "--size", 64, "--rgb"))
    expect_ok(invoke("--quiet", "evaluate", vae_run, "--data", larger))
    assert json.loads((vae_run / "cross" / "larger" / "metrics.json").read_text())["kmeans_test"]["images"] > 0
    spread = tmp_path / "spread"  # paper 004's training set, as prepare mug|ckplus --protocol spread records it
    shutil.copytree(evalset, spread)
    manifest = json.loads((spread / "manifest.json").read_text())
    (spread / "manifest.json").write_text(json.dumps(dict(manifest, params=dict(manifest["params"], protocol="spread"))))
    assert "is paper 004's training set (--protocol spread)" in expect_user_error(invoke("evaluate", vae_run, "--data", spread))


def test_evaluate_loads_the_run_model_once(vae_run, tmp_path, monkeypatch):
    """The evaluator hook scores the model `load_run` loaded, on the run's own data and on an evaluation set."""
    from fer_keras.training import fit

    run = tmp_path / "run"
    shutil.copytree(vae_run, run, ignore=shutil.ignore_patterns("cross", "metrics.json"))
    evalset = tmp_path / "apex"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", evalset, "--kind", "still", "--subjects", 6, "--size", 48))
    loaded, load_model = [], fit.load_model

    def counting_load_model(path):  # the real loader: the hook still gets the trained VAE
        loaded.append(str(path))
        return load_model(path)

    monkeypatch.setattr(fit, "load_model", counting_load_model)
    for extra in ((), ("--data", evalset)):
        loaded.clear()
        expect_ok(invoke("--quiet", "evaluate", run, *extra))
        assert loaded == [str(run / "model.keras")], extra
    assert json.loads((run / "metrics.json").read_text())["kmeans_test"]["images"] > 0


def _train_tiny(out, model, name):
    """`fer-keras train --model MODEL --data synth` at the smallest size that trains: 6 subjects, 48 px, 1 epoch."""
    config = out / "config.json"
    config.write_text(json.dumps({"model_args": dict(encoder_filters=[4, 4, 8, 8], decoder_filters=[8, 4, 4, 4], latent_dim=8),
                                  "synth": {"samples_per_emotion": 1, "size": 48}}))
    expect_ok(invoke("--quiet", "train", "--model", model, "--data", "synth", "--synth-subjects", 6, "--epochs", 1,
                     "--batch-size", 8, "--folds", 3, "--config", config, "--out", out, "--name", name))


def test_a_plain_vae_interpolates_but_does_not_swap(tmp_path):
    """The plain VAE's identity latent is zero: a "swap" grid would show no target's identity."""
    _train_tiny(tmp_path, "vae", "plain")
    line = expect_user_error(invoke("generate", "swap", tmp_path / "plain"))
    assert "is a plain VAE" in line and "generate interpolate" in line
    assert not (tmp_path / "plain" / "generate").exists()
    expect_ok(invoke("--quiet", "generate", "interpolate", tmp_path / "plain", "0", "1"))


def test_the_cvae_trains_and_evaluates_from_the_cli(tmp_path):
    """The C-VAE has no identity encoder: finishing the run must not ask it for z_i without subject indices."""
    _train_tiny(tmp_path, "cvae", "cvae")
    assert (tmp_path / "cvae" / "model.keras").is_file()
    expect_ok(invoke("--quiet", "evaluate", tmp_path / "cvae"))
    assert json.loads((tmp_path / "cvae" / "metrics.json").read_text())["kmeans_train"]["images"] > 0


def test_generate_rejects_unknown_expression(vae_run):
    from tests.conftest import expect_user_error

    assert "neither an image index" in expect_user_error(invoke("generate", "interpolate", vae_run, "joy", "happiness"))


def test_export_signatures_and_tflite_parity(vae_run, tmp_path):
    from fer_keras.exports.tflite import LiteRTModel
    from fer_keras.exports.vae_swap import export_expression_tflite, export_savedmodel

    path = export_savedmodel(vae_run, out=tmp_path)
    loaded = tf.saved_model.load(str(path))
    assert {"encode_expression", "encode_identity", "decode", "swap"} <= set(loaded.signatures)
    x = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 1)).astype("float32")
    z_e = loaded.signatures["encode_expression"](images=x)["z_e"]
    z_i = loaded.signatures["encode_identity"](images=x)["z_i"]
    decoded = loaded.signatures["decode"](z_i=z_i, z_e=z_e)["images"].numpy()
    swapped = loaded.signatures["swap"](identity_images=x, expression_images=x)["images"].numpy()
    np.testing.assert_allclose(decoded, swapped, atol=1e-3)
    _, meta = export_expression_tflite(vae_run, out=tmp_path, samples=4)
    assert meta["parity"]["max_abs_diff"] < 1e-4
    # The metadata names every tensor, as an app calls it, and how to cut the face.
    info = json.loads((path / "assets.extra" / "fer_keras.json").read_text())
    assert sorted(info["signatures"]) == sorted(loaded.signatures) and info["serving_default"] == "encode_expression"
    for name, fn in loaded.signatures.items():
        described = info["serving_default"] if name == "serving_default" else name
        assert sorted(i["name"] for i in info["inputs"][described]) == sorted(fn.structured_input_signature[1])
        assert sorted(o["name"] for o in info["outputs"][described]) == sorted(fn.structured_outputs)
    assert info["outputs"]["encode_expression"] == [{"name": "z_e", "shape": [None, 4], "dtype": "float32"}]
    assert "face_alignment" in info and "RGB channel order" in info["normalisation"]
    lite = LiteRTModel(str(tmp_path / vae_run.name / "tflite" / "expression_encoder.tflite"))
    (input_name,), (output_name,) = lite.inputs, lite.outputs
    assert meta["input"]["name"] == input_name and meta["output"]["name"] == output_name == "z_e"
    assert meta["output"]["shape"] == [1, 4] and "face_alignment" in meta
    assert lite.interpreter.get_input_details()[meta["input"]["position"]]["index"] == lite.inputs[input_name]["index"]
    assert lite.interpreter.get_output_details()[meta["output"]["position"]]["index"] == lite.outputs["z_e"]["index"]


def test_cli_export_dispatches_to_the_vae_swap_exporter(vae_run, tmp_path):
    result = expect_ok(invoke("export", vae_run, "--format", "savedmodel", "--out", tmp_path))
    assert "encode_expression" in result.output
    assert (tmp_path / vae_run.name / "1" / "saved_model.pb").is_file()
    result = expect_ok(invoke("export", vae_run, "--format", "tflite", "--out", tmp_path))
    assert list((tmp_path / vae_run.name).rglob("*.tflite"))
    assert "float32 TFLite only" in expect_user_error(invoke("export", vae_run, "--format", "tflite", "--quantize", "int8", "--out", tmp_path),
                                                      exit_code=2)


@pytest.mark.parametrize("make", ["pair_dataset", "image_dataset"])
def test_a_stage_resumed_at_an_epoch_sees_the_batches_of_the_uninterrupted_stage(make):
    """10 images in batches of 4: each epoch is 3 batches (4, 4, 2), never one that straddles two epochs."""
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((1, 4, 4, 1), np.float32)
    subjects = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], np.int32)
    build = getattr(T, make)
    whole = [tuple(np.asarray(t) for t in b) for b in build(images, subjects, batch_size=4, epochs=3, seed=7)]
    resumed = [tuple(np.asarray(t) for t in b) for b in build(images, subjects, batch_size=4, epochs=3, seed=7, start_epoch=2)]
    assert [len(b[0]) for b in whole] == [4, 4, 2] * 3
    assert len(resumed) == 3
    for got, expected in zip(resumed, whole[6:]):
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
