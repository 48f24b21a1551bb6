import json
import math

import cv2
import keras
import numpy as np

from fer_keras.evaluation.explain import attention_maps, gradcam_plus_plus, overlay, write_clip_strips, write_image_overlays
from fer_keras.models.registry import get_model


def _quadrant_model():
    """Class 0's score reads only the top-left quadrant of its last feature map."""
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(2, 1, kernel_initializer="ones", bias_initializer="zeros", name="features")(inputs)
    mask = np.zeros((1, 8, 8, 2), "float32")
    mask[:, :4, :4] = 1.0
    masked = keras.layers.Lambda(lambda f: f * mask)(features)
    pooled = keras.layers.GlobalAveragePooling2D()(masked)
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.Constant([[1.0, -1.0], [1.0, -1.0]]))(pooled)
    return keras.Model(inputs, outputs)


def test_gradcam_plus_plus_lights_up_the_region_the_class_reads():
    model = _quadrant_model()
    x = np.random.default_rng(0).uniform(0.5, 1.0, (2, 8, 8, 1)).astype("float32")
    cam = gradcam_plus_plus(model, x, class_index=0)
    assert cam.shape == (2, 8, 8)
    assert cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6
    assert cam[:, :4, :4].mean() > 0.5
    np.testing.assert_allclose(cam[:, 4:, :], 0.0, atol=1e-6)
    np.testing.assert_allclose(cam[:, :, 4:], 0.0, atol=1e-6)


def test_ram_attention_maps_lie_in_unit_interval_and_strips_are_images(tmp_path):
    model = get_model("econvlstm_ram", (4, 32, 32, 1), 7, size="small")
    clips = np.random.default_rng(1).uniform(0, 255, (2, 4, 32, 32, 1)).astype("float32")
    maps = attention_maps(model, clips)
    assert maps.shape[:2] == (2, 4) and maps.ndim == 4
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    paths = write_clip_strips(clips, maps, ["a", "b"], tmp_path, labels=["true x / predicted y"] * 2)
    for path in paths:
        image = cv2.imread(str(path))
        assert image is not None and image.shape[1] >= 4 * 32


def test_overlays_keep_the_image_size(tmp_path):
    image = np.full((16, 16, 1), 128, np.float32)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    out = overlay(image, heat)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[15, 15])  # the hot corner is coloured differently
    (path,) = write_image_overlays(image[None], heat[None], ["x"], tmp_path)
    assert cv2.imread(str(path)).shape == (16, 32, 3)


def test_landmark_gradcam_maps_both_branches():
    from fer_keras.data import synth
    from fer_keras.evaluation.explain import landmark_gradcam, write_landmark_overlays

    model = get_model("landmark_arm", (32, 32, 1), 7, size="small")
    rng = np.random.default_rng(2)
    landmarks = np.stack([synth.face_landmarks(synth.make_subject(i)) for i in range(2)]).astype("float32") / 2
    x = {"images": rng.uniform(0, 255, (2, 32, 32, 1)).astype("float32"), "landmarks": landmarks}
    maps = landmark_gradcam(model, x)
    assert maps["rgb"].shape == (2, 1, 1)  # ResNet-18 stage 4 of a 32 px face
    assert maps["landmark"].shape == (2, 4, 4)  # the landmark CNN's 5th conv on a 128 px heatmap
    assert maps["heatmap"].shape == (2, 128, 128) and maps["heatmap"].max() == 1.0
    for key in ("rgb", "landmark"):
        assert maps[key].min() >= 0.0 and maps[key].max() <= 1.0 + 1e-6
        np.testing.assert_allclose(maps[key].reshape(2, -1).max(axis=1), 1.0, rtol=1e-5)  # normalised, not all zero
    np.testing.assert_allclose(maps["probabilities"], np.asarray(model(x)), atol=1e-6)


def test_gradcam_closed_form_lights_the_one_cell_with_gradient():
    """alpha = g^2 / (2 g^2 + sum(A) g^3) is nonzero only where g is: one cell -> a one-hot map."""
    from fer_keras.evaluation.explain import _gradcam_map

    features = np.zeros((1, 4, 4, 2), "float32")
    features[0, 1, 2] = [1.0, 2.0]
    grads = np.zeros_like(features)
    grads[0, 1, 2] = [0.5, 0.5]
    cam = _gradcam_map(features, grads)
    assert cam.shape == (1, 4, 4) and cam[0, 1, 2] == 1.0 and cam.sum() == 1.0


def test_sae_saliency_thresholds_the_first_layer_weights(tmp_path):
    from fer_keras.evaluation.explain import sae_saliency, write_saliency_overlays
    from fer_keras.models.sae import first_layer_saliency

    model = get_model("sae", (16, 16, 1), 7, size="small")
    kernel = np.zeros((256, 256), "float32")
    kernel[[5, 17, 200], 3] = [-2.0, 1.0, 0.5]  # three pixels feed hidden unit 3
    model.get_layer("hidden1").kernel.assign(kernel)
    strength, mask = sae_saliency(model, quantile=0.99)
    np.testing.assert_allclose(strength.reshape(-1)[[5, 17, 200]], [1.0, 0.5, 0.25])  # |W1| / max
    assert sorted(np.flatnonzero(mask.reshape(-1))) == [5, 17, 200]  # row-major, as the flattening
    np.testing.assert_array_equal(first_layer_saliency(model, threshold=0.0), mask)
    faces = np.full((2, 16, 16, 1), 100.0, "float32")
    paths = write_saliency_overlays(faces, strength, mask, ["a", "b"], tmp_path)
    strip = cv2.imread(str(paths[0]))[..., ::-1]  # RGB
    assert strip.shape == (16, 48, 3)
    assert tuple(strip[0, 32 + 5]) != (100, 100, 100) and tuple(strip[0, 32 + 6]) == (100, 100, 100)  # pixel 5 in red


def test_cli_explain_writes_sae_saliency_and_explains_an_image(still_data, runs_dir, face_images):
    from tests.conftest import expect_ok, invoke

    expect_ok(invoke("--quiet", "train", "--model", "sdae", "--data", still_data, "--epochs", 1, "--pretrain-epochs", 2,
                     "--batch-size", 16, "--image-size", 32, "--folds", 2, "--fold", 0, "--out", runs_dir,
                     "--name", "sdae_explain_run"))
    run = runs_dir / "sdae_explain_run"
    # --pretrain-epochs is its own count, and the run records what each layer's autoencoder reached.
    pretraining = json.loads((run / "pretraining.json").read_text())
    assert [(r["layer"], r["denoising"], r["epochs"]) for r in pretraining] == [
        ("hidden1", True, 2), ("hidden2", True, 2), ("hidden3", False, 2), ("hidden4", False, 2)]
    assert all(math.isfinite(r["loss_before"]) and math.isfinite(r["loss_after"]) for r in pretraining)
    result = expect_ok(invoke("explain", run, "--count", 3))
    assert "Wrote 3 overlays" in result.output
    image = sorted(face_images.glob("*.png"))[0]
    expect_ok(invoke("--quiet", "explain", run, image, "--out", run / "one"))
    (png,) = sorted((run / "one").glob("*.png"))
    strip = cv2.imread(str(png))
    scale = strip.shape[1] // (3 * 32)  # three 32 px panels, enlarged by whole pixels so that the caption fits
    assert strip.shape[1] == 3 * 32 * scale and strip.shape[0] == 14 + 32 * scale


def test_gradcam_reaches_into_a_nested_backbone():
    """arm_resnet18 calls ResNet-18 as a nested model: its stage-4 map is the feature map, read in the outer graph."""
    model = get_model("arm_resnet18", (64, 64, 1), 7, size="small")
    x = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 1)).astype("float32")
    cam = gradcam_plus_plus(model, x)
    assert cam.shape == (2, 2, 2)  # ResNet-18 stage 4 of a 64 px face
    assert cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6


def test_a_caption_longer_than_a_small_face_is_not_cut(tmp_path):
    from fer_keras.evaluation.explain import _caption

    text = "true surprise / predicted happiness"
    (width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    captioned = _caption(np.zeros((48, 96, 3), np.uint8), text)
    assert captioned.shape[1] >= width + 4 and captioned.shape[1] % 96 == 0  # enlarged by whole pixels to fit


def test_test_samples_are_spread_over_classes_and_a_second_call_replaces_the_first(still_run, clip_run, tmp_path):
    import csv

    from tests.conftest import expect_ok, invoke

    out = tmp_path / "ex"
    result = expect_ok(invoke("explain", still_run, "--count", 7, "--out", out))
    with open(out / "explain.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and len({r["label"] for r in rows}) == 7  # one per class of basic7, not one subject's first 7
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in out.glob("*.png"))
    (out / "notes.txt").write_text("mine")
    expect_ok(invoke("--quiet", "explain", still_run, "--count", 2, "--out", out))
    assert len(list(out.glob("*.png"))) == 2 and (out / "notes.txt").read_text() == "mine"
    result = expect_ok(invoke("explain", still_run, "--count", 256, "--out", out))
    assert "fewer than the 256 asked for" in result.output
    # clips: one per video (the window ending at the apex), so no two overlays of one video
    expect_ok(invoke("--quiet", "explain", clip_run, "--count", 4, "--out", tmp_path / "clips"))
    with open(tmp_path / "clips" / "explain.csv", newline="") as f:
        files = [r["file"] for r in csv.DictReader(f)]
    videos = [name.rsplit("_t", 1)[0] for name in files]
    assert len(files) == 4 and len(set(videos)) == 4
