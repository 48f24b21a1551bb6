import numpy as np
import pytest
import tensorflow as tf

from fer_keras.data.heatmaps import (
    align_landmarks,
    alignment_matrix,
    apply_affine,
    draw_heatmap,
    draw_heatmap_tf,
    eye_mouth_points,
    landmark_heatmap,
    target_points,
)


def random_affine(rng):
    angle = rng.uniform(-0.4, 0.4)
    scale = rng.uniform(1.5, 3.0)
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, rng.uniform(-0.1, 0.1)], [0.0, 1.0]])
    return np.concatenate([rot @ shear, rng.uniform(20, 80, size=(2, 1))], axis=1)


def face68(rng):
    """68 iBUG-ordered points of a frontal face in the 100x100 target frame, then warped."""
    pts = rng.uniform(10, 90, size=(68, 2))
    pts[36:42] = [25, 35] + rng.normal(scale=2, size=(6, 2))
    pts[36:42] -= pts[36:42].mean(axis=0) - [25, 35]  # left-eye centre exactly (25, 35)
    pts[42:48] = [75, 35] + rng.normal(scale=2, size=(6, 2))
    pts[42:48] -= pts[42:48].mean(axis=0) - [75, 35]
    pts[48], pts[54] = [38, 75], [62, 75]  # mouth corners, midpoint (50, 75)
    affine = random_affine(rng)
    return pts, apply_affine(pts, affine)


@pytest.mark.parametrize("size", [100, 224, 64])
def test_alignment_68_maps_eyes_and_mouth_to_targets(size):
    rng = np.random.default_rng(0)
    canonical, warped = face68(rng)
    aligned, matrix = align_landmarks(warped, output_size=size, return_matrix=True)
    np.testing.assert_allclose(eye_mouth_points(aligned), target_points(size), atol=1e-8)
    # An affine map fixes every point, not only the three: the whole face comes back.
    np.testing.assert_allclose(aligned, canonical * size / 100.0, atol=1e-8)
    assert matrix.shape == (2, 3)


def test_alignment_5_points_and_37_points_with_5_point_reference():
    rng = np.random.default_rng(1)
    canonical5 = np.array([[25, 35], [75, 35], [50, 55], [40, 75], [60, 75]], float)
    affine = random_affine(rng)
    points5 = apply_affine(canonical5, affine)
    aligned5 = align_landmarks(points5, output_size=224)
    np.testing.assert_allclose(aligned5, canonical5 * 2.24, atol=1e-8)
    np.testing.assert_allclose(target_points(224), [[56, 78.4], [168, 78.4], [112, 168]])
    # Paper 003: the 5 manual points define the map; the 37 automatic points are moved by it.
    canonical37 = rng.uniform(10, 90, size=(37, 2))
    aligned37 = align_landmarks(apply_affine(canonical37, affine), reference_points=points5,
                                output_size=224)
    np.testing.assert_allclose(aligned37, canonical37 * 2.24, atol=1e-8)


def test_37_points_need_indices():
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 100, size=(37, 2))
    with pytest.raises(ValueError, match="37 points"):
        align_landmarks(points)
    indices = {"left_eye": [3, 4], "right_eye": [10], "mouth": [20, 21]}
    aligned = align_landmarks(points, indices=indices, output_size=100)
    np.testing.assert_allclose(eye_mouth_points(aligned, indices), target_points(100), atol=1e-8)


def test_alignment_rejects_degenerate_and_malformed_input():
    collinear = np.array([[0, 0], [10, 0], [5, 0], [3, 0], [7, 0]], float)
    with pytest.raises(ValueError, match="collinear"):
        alignment_matrix(collinear)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        align_landmarks(np.zeros((68, 3)))
    with pytest.raises(ValueError, match="lacks"):
        eye_mouth_points(np.zeros((5, 2)), {"left_eye": [0], "mouth": [1]})


def test_dots_are_at_the_landmarks():
    points = np.array([[3, 4], [10, 2], [15, 15]], float)
    image = draw_heatmap(points, size=16, mode="dots", radius=0)
    assert image.shape == (16, 16, 1) and image.dtype == np.float32
    ys, xs = np.nonzero(image[..., 0])
    assert sorted(zip(xs.tolist(), ys.tolist())) == [(3, 4), (10, 2), (15, 15)]
    disc = draw_heatmap(points[:1], size=16, mode="dots", radius=1.0)[..., 0]
    assert disc.sum() == 5 and disc[4, 3] == 1 and disc[3, 3] == 1 and disc[5, 4] == 0


def test_gaussians_peak_at_the_landmarks():
    points = np.array([[5, 6], [20, 12]], float)
    sigma = 1.5
    image = draw_heatmap(points, size=32, mode="gaussian", sigma=sigma)[..., 0]
    for x, y in points.astype(int):
        assert image[y, x] == pytest.approx(1.0)
        window = image[y - 3:y + 4, x - 3:x + 4]
        assert window.argmax() == 3 * 7 + 3  # the centre of the window
        assert image[y, x + 1] == pytest.approx(np.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert image[31, 0] < 1e-6
    wide = draw_heatmap(points, size=32, mode="gaussian", sigma=4.0)[..., 0]
    assert wide[6, 8] > image[6, 8]  # configurable width


def test_points_outside_or_missing_are_skipped():
    points = np.array([[-5, 3], [40, 40], [np.nan, 2], [2, 2]], float)
    image = draw_heatmap(points, size=8, mode="dots", radius=0)[..., 0]
    assert image.sum() == 1 and image[2, 2] == 1
    assert draw_heatmap(np.array([[np.nan, np.nan]]), size=4).sum() == 0


@pytest.mark.parametrize("kwargs,match", [({"mode": "lines"}, "mode"), ({"size": 0}, "size"),
                                          ({"mode": "gaussian", "sigma": 0}, "sigma")])
def test_draw_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_heatmap(np.zeros((1, 2)), **kwargs)


@pytest.mark.parametrize("mode", ["dots", "gaussian"])
def test_tf_version_matches_numpy_eager_and_in_tf_data(mode):
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.uniform(-2, 34, size=(12, 2)), [[np.nan, 1.0]]]).astype(np.float32)
    expected = draw_heatmap(points, size=32, mode=mode, sigma=1.5, radius=1.5)
    eager = draw_heatmap_tf(points, size=32, mode=mode, sigma=1.5, radius=1.5).numpy()
    np.testing.assert_allclose(eager, expected, atol=1e-6)
    ds = tf.data.Dataset.from_tensors(points).map(
        lambda p: draw_heatmap_tf(p, size=32, mode=mode, sigma=1.5, radius=1.5))
    in_graph = next(iter(ds)).numpy()
    np.testing.assert_allclose(in_graph, expected, atol=1e-6)


def test_landmark_heatmap_end_to_end():
    rng = np.random.default_rng(4)
    _, warped = face68(rng)
    image = landmark_heatmap(warped, size=224, mode="dots", radius=0)
    assert image.shape == (224, 224, 1)
    aligned = align_landmarks(warped, output_size=224)
    for x, y in np.round(aligned[[36, 48, 54]]).astype(int):
        assert image[y, x, 0] == 1.0
