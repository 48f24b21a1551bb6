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
