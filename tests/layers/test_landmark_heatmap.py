"""LandmarkHeatmap: peaks at the landmarks, the NumPy drawing after alignment, missing landmarks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_keras.data import synth
from fer_keras.data.heatmaps import align_landmarks, draw_heatmap, landmark_heatmap
from fer_keras.layers.landmark_heatmap import LandmarkHeatmap


def _face_landmarks(seed):
    rng = np.random.default_rng(seed)
    points = np.asarray(synth.face_landmarks(synth.make_subject(seed)), np.float64)
    # A random similarity + shear of the face, as in a photo.
    angle, scale = rng.uniform(-0.3, 0.3), rng.uniform(0.5, 3.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    return (points @ rotation.T + rng.uniform(-20, 80, 2)).astype(np.float32)


def test_unaligned_dots_light_exactly_the_given_pixels():
    points = np.array([[[3.0, 5.0], [10.0, 2.0], [0.0, 15.0]]], np.float32)  # (1, 3, 2) (x, y)
    image = np.asarray(LandmarkHeatmap(size=16, radius=0.0, align=False)(points))[0, :, :, 0]
    lit = sorted(zip(*np.nonzero(image)))  # (row, col)
    assert lit == [(2, 10), (5, 3), (15, 0)]


def test_unaligned_gaussians_peak_at_the_landmarks():
    points = np.array([[[4.0, 4.0], [12.0, 9.0]]], np.float32)
    image = np.asarray(LandmarkHeatmap(size=16, mode="gaussian", sigma=1.5, align=False)(points))[0, :, :, 0]
    np.testing.assert_allclose(image[4, 4], 1.0)
    np.testing.assert_allclose(image[9, 12], 1.0)
    np.testing.assert_allclose(image[4, 5], np.exp(-1.0 / (2 * 1.5**2)), rtol=1e-6)
    assert image[0, 15] < 1e-3
    np.testing.assert_allclose(image, draw_heatmap(points[0], 16, mode="gaussian", sigma=1.5)[..., 0], atol=0.012)


@pytest.mark.parametrize("radius", [0.0, 1.0, 2.5])
def test_aligned_dots_equal_the_numpy_drawing(radius):
    points = np.stack([_face_landmarks(seed) for seed in range(3)])  # (3, 68, 2)
    ours = np.asarray(LandmarkHeatmap(size=128, radius=radius)(points))
    for i in range(3):
        expected = landmark_heatmap(points[i], size=128, radius=radius)
        mismatch = int((ours[i] != expected).sum())
        assert mismatch <= 2, mismatch  # float32 vs float64 rounding at .5
        assert expected.sum() > 20


def test_eyes_and_mouth_land_on_the_section_4_4_targets():
    points = _face_landmarks(7)[None]
    layer = LandmarkHeatmap(size=100)
    layer.build(points.shape)
    linear, translation, valid = layer.alignment(tf.constant(points))
    aligned = points[0] @ np.asarray(linear[0]).T + np.asarray(translation[0])
    np.testing.assert_allclose(aligned, align_landmarks(points[0], output_size=100), atol=1e-3)
    np.testing.assert_allclose(aligned[36:42].mean(0), [25, 35], atol=1e-3)
    np.testing.assert_allclose(aligned[42:48].mean(0), [75, 35], atol=1e-3)
    np.testing.assert_allclose((aligned[48] + aligned[54]) / 2, [50, 75], atol=1e-3)
    assert bool(valid[0])


def test_the_heatmap_does_not_depend_on_the_landmarks_frame():
    points = _face_landmarks(3)
    moved = points * 0.37 + np.array([5.0, -3.0], np.float32)  # the same face in a smaller crop
    layer = LandmarkHeatmap(size=128)
    a, b = np.asarray(layer(np.stack([points, moved])))
    assert (a != b).sum() <= 2


def test_missing_landmarks_give_a_black_image_without_nans():
    zeros = np.zeros((1, 68, 2), np.float32)  # what records without landmarks hold
    nans = np.full((1, 68, 2), np.nan, np.float32)
    for mode in ("dots", "gaussian"):
        out = np.asarray(LandmarkHeatmap(size=128, mode=mode)(np.concatenate([zeros, nans])))
        assert np.isfinite(out).all() and out.max() == 0.0


def test_graph_mode_and_tf_data_match_eager():
    points = np.stack([_face_landmarks(s) for s in range(2)])
    layer = LandmarkHeatmap(size=128)
    eager = np.asarray(layer(points))
    graph = np.asarray(tf.function(layer)(tf.constant(points)))
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(points).batch(2).map(layer)))
    np.testing.assert_array_equal(eager, graph)
    np.testing.assert_array_equal(eager, np.asarray(mapped))


def test_config_round_trip_and_validation(tmp_path):
    layer = LandmarkHeatmap(size=130, mode="gaussian", sigma=3.0, radius=2.0, indices={"left_eye": [0], "right_eye": [1], "mouth": [3, 4]})
    clone = LandmarkHeatmap.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    five = np.array([[[30, 40], [70, 40], [50, 55], [38, 75], [62, 75]]], np.float32)
    inputs = keras.Input((5, 2))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(model(five)), np.asarray(loaded(five)))
    with pytest.raises(ValueError, match="mode must be one of"):
        LandmarkHeatmap(mode="stars")
    with pytest.raises(ValueError, match="No built-in eye/mouth indices for 37"):
        LandmarkHeatmap()(np.zeros((1, 37, 2), np.float32))
