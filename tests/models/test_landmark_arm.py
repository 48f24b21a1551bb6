"""landmark_arm (paper 003 sec. 4): frozen RGB branch from an arm_resnet18 run, landmark branch, fused head."""

import json

import keras
import numpy as np
import pytest

from fer_keras.errors import UserError
from fer_keras.models.arm import arm_resnet18
from fer_keras.models.landmark_arm import LandmarkARMClassifier
from fer_keras.models.registry import get_model
from fer_keras.training.adabelief import AdaBelief
from tests.conftest import expect_ok, expect_user_error, invoke

SHAPE = (32, 32, 1)
K = 7
SMALL_ARM = {"upscale_factor": 16, "kernel_size": 8, "strides": 4}


def _landmarks(batch, seed=0):
    from fer_keras.data import synth

    points = [synth.face_landmarks(synth.make_subject(seed + i)) for i in range(batch)]
    return (np.stack(points) * (SHAPE[0] / 64.0)).astype("float32")  # (B, 68, 2), pixels of the 32 px face


def _inputs(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"images": rng.uniform(0, 255, (batch,) + SHAPE).astype("float32"), "landmarks": _landmarks(batch, seed)}


@pytest.fixture(scope="module")
def arm_file(tmp_path_factory):
    """A (randomly initialised, one step trained) arm_resnet18 saved as a run would save it."""
    folder = tmp_path_factory.mktemp("arm_run")
    arm = arm_resnet18(SHAPE, K, **SMALL_ARM)
    arm.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(), run_eagerly=True)
    x = _inputs(8, seed=3)["images"]
    arm.train_on_batch(x, np.arange(8) % K)  # non-trivial BN statistics and ARM moving mean
    arm.save(folder / "model.keras")
    return folder


@pytest.fixture(scope="module")
def model(arm_file):
    return get_model("landmark_arm", SHAPE, K, size="small", rgb_run=str(arm_file))


def test_the_rgb_branch_is_the_run_and_training_starts_from_its_predictions(model, arm_file):
    arm = keras.saving.load_model(arm_file / "model.keras", compile=False)
    x = _inputs(4, seed=1)
    out = model.explain(x)
    expected = np.asarray(arm(x["images"], training=False))
    np.testing.assert_allclose(out["rgb_probabilities"], expected, atol=1e-6)
    # Final classifier starts as the RGB one on F_rgb and 0 on F'_landmark.
    np.testing.assert_allclose(model(x), expected, atol=1e-5)
    assert out["heatmap"].shape == (4, 128, 128, 1) and float(np.asarray(out["heatmap"]).sum()) > 50
    assert out["rgb_stage4"].shape == (4, 1, 1, 512) and out["landmark_conv5"].shape == (4, 4, 4, 512)
    assert not model.network.get_layer("rgb_network").trainable


def test_one_training_step_trains_the_landmark_branch_only_and_sums_both_losses(arm_file):
    model = get_model("landmark_arm", SHAPE, K, size="small", rgb_run=str(arm_file))
    model.compile(optimizer=AdaBelief(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(), run_eagerly=True)
    x, y = _inputs(4, seed=2), np.array([0, 3, 5, 6])
    rgb = model.network.get_layer("rgb_network")
    rgb_before = [w.numpy().copy() for w in rgb.weights]  # trainable and BN/ARM statistics
    cnn_before = [w.numpy().copy() for w in model.network.get_layer("landmark_cnn").weights]
    out = model.explain(x, training=True)  # the same forward pass the step makes (no dropout)
    ce = keras.losses.SparseCategoricalCrossentropy()
    expected = float(ce(y, out["probabilities"]) + ce(y, out["landmark_probabilities"]))  # eq. (3)
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    for before, weight in zip(rgb_before, rgb.weights):
        np.testing.assert_array_equal(before, weight.numpy(), err_msg=weight.path)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(cnn_before, model.network.get_layer("landmark_cnn").weights)]
    assert all(changed)
    assert not any(w.path.startswith("rgb_network") for w in model.trainable_weights)


def test_keras_round_trip_gives_equal_outputs(model, tmp_path):
    x = _inputs(3, seed=4)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert isinstance(loaded, LandmarkARMClassifier)
    ours, theirs = model.explain(x), loaded.explain(x)
    for key in ours:
        np.testing.assert_allclose(np.asarray(ours[key]), np.asarray(theirs[key]), atol=1e-6, err_msg=key)
    assert not loaded.network.get_layer("rgb_network").trainable
    assert loaded.lr_decay == 0.9 and loaded.landmark_loss_weight == 1.0


def test_images_alone_count_as_missing_landmarks(model):
    x = _inputs(2, seed=5)
    alone = model.explain(x["images"])
    assert float(np.asarray(alone["heatmap"]).max()) == 0.0
    zeros = model({"images": x["images"], "landmarks": np.zeros((2, 68, 2), "float32")})
    np.testing.assert_allclose(np.asarray(alone["probabilities"]), np.asarray(zeros), atol=1e-6)


def test_learning_rate_decays_by_0_9_per_epoch_also_after_a_resume():
    model = get_model("landmark_arm", SHAPE, K, size="small")  # random frozen RGB branch: enough here
    model.compile(optimizer=AdaBelief(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(), run_eagerly=True)
    x, y = _inputs(2, seed=6), np.array([1, 2])
    model.fit(x, y, epochs=3, batch_size=2, verbose=0)
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 1e-3 * 0.9**2, rtol=1e-6)
    model.fit(x, y, initial_epoch=3, epochs=4, batch_size=2, verbose=0)  # a new fit call, as a resumed run
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 1e-3 * 0.9**3, rtol=1e-6)


def test_bad_rgb_runs_are_user_errors(arm_file, tmp_path):
    with pytest.raises(UserError, match="takes images"):
        get_model("landmark_arm", (48, 48, 1), K, size="small", rgb_run=str(arm_file))
    with pytest.raises(UserError, match="trained arm_resnet18 run folder"):
        get_model("landmark_arm", SHAPE, K, size="small", rgb_run=str(tmp_path / "nowhere"))
    other = tmp_path / "cnn_run"
    other.mkdir()
    (other / "model.keras").write_bytes((arm_file / "model.keras").read_bytes())
    (other / "config.json").write_text(json.dumps({"model": "frame_cnn"}))
    with pytest.raises(UserError, match="must be an arm_resnet18 run"):
        get_model("landmark_arm", SHAPE, K, size="small", rgb_run=str(other))
    with pytest.raises(ValueError, match="fusion_mode must be one of"):
        get_model("landmark_arm", SHAPE, K, size="small", fusion_mode="sum")


def test_cli_training_without_rgb_run_is_refused(still_data, tmp_path):
    error = expect_user_error(invoke("--quiet", "train", "--model", "landmark_arm", "--data", still_data, "--epochs", 1,
                                     "--image-size", 32, "--out", tmp_path, "--name", "x"))
    assert "rgb_run=<arm_resnet18 run folder>" in error
    assert not (tmp_path / "x").exists()


def test_cli_train_evaluate_explain(landmark_arm_run, arm_run, face_images):
    config = json.loads((landmark_arm_run / "config.json").read_text())
    assert config["model"] == "landmark_arm" and config["model_args"]["rgb_run"] == str(arm_run)
    expect_ok(invoke("--quiet", "evaluate", landmark_arm_run))
    metrics = json.loads((landmark_arm_run / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    result = expect_ok(invoke("explain", landmark_arm_run, "--count", 2))
    assert "Wrote 2 overlays" in result.output
    image = sorted(face_images.glob("*.png"))[0]
    out = landmark_arm_run / "explain_image"
    expect_ok(invoke("--quiet", "explain", landmark_arm_run, image, "--out", out))
    import cv2

    (png,) = sorted(out.glob("*.png"))
    strip = cv2.imread(str(png))
    assert strip.shape[1] == 4 * (strip.shape[1] // 4) and strip.shape[1] >= 4 * 128  # face | RGB | heatmap | landmark


def test_an_rgb_run_trained_on_this_runs_test_subjects_is_refused(arm_run, still_data, tmp_path):
    """arm_run trained on fold 0's training subjects; a landmark_arm run testing on fold 1 would have seen its faces."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model_args": {"rgb_run": str(arm_run)}}))
    line = expect_user_error(invoke("train", "--model", "landmark_arm", "--config", config, "--data", still_data,
                                    "--epochs", 1, "--image-size", 32, "--folds", 2, "--fold", 1,
                                    "--out", tmp_path / "runs", "--name", "leak"))
    assert line.startswith(f"Error: rgb_run {str(arm_run)!r} was trained on synthfer subjects that this run tests on (")
    assert "so the scores would not be subject-independent" in line
    assert not (tmp_path / "runs").exists()
