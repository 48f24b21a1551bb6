"""dlib face detection, 68 landmarks and similarity alignment, on a real photograph (no mocks)."""

import numpy as np
import pytest
import skimage.data

from fer_keras.data_prep import faces
from fer_keras.errors import UserError


@pytest.fixture(scope="module")
def astronaut():
    image = skimage.data.astronaut()  # 512 x 512 RGB, one frontal face
    boxes = faces.detect_faces(image)
    return image, boxes, faces.face_landmarks(image, boxes[0])


def test_predictor_model_is_found():
    path = faces.predictor_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 1_000_000


def test_astronaut_face_is_detected_with_68_landmarks_in_its_box(astronaut):
    image, boxes, points = astronaut
    assert len(boxes) >= 1
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)  # largest first
    x0, y0, x1, y1 = boxes[0]
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert x1 - x0 > 50  # the astronaut's face, not a speck
    assert points.shape == (68, 2) and points.dtype == np.float32
    # dlib's box is tight around the inner face; the jaw and brows may reach a little past it.
    margin = 0.15 * (x1 - x0)
    assert np.all(points[:, 0] >= x0 - margin) and np.all(points[:, 0] <= x1 + margin)
    assert np.all(points[:, 1] >= y0 - margin) and np.all(points[:, 1] <= y1 + margin)
    right_eye, left_eye, mouth = faces.anchor_points(points)
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left
    assert max(right_eye[1], left_eye[1]) < mouth[1]  # eyes above the mouth
    assert x0 <= mouth[0] <= x1


def test_grey_image_gives_the_same_face(astronaut):
    image, boxes, _ = astronaut
    grey = image.mean(axis=-1).astype(np.uint8)
    assert faces.detect_faces(grey)[0] == boxes[0]


@pytest.mark.parametrize("size, channels", [(64, 3), (48, 1), (112, 3)])
def test_align_face_returns_a_crop_of_the_requested_size(astronaut, size, channels):
    image, _, points = astronaut
    crop, mapped = faces.align_face(image, points, size, channels=channels)
    assert crop.shape == (size, size, channels) and crop.dtype == np.uint8
    assert mapped.shape == (68, 2)
    # Eyes and mouth land near the template: as near as a similarity (no shear) allows for this face.
    np.testing.assert_allclose(faces.anchor_points(mapped), faces.TEMPLATE * size, atol=0.1 * size)
    assert crop.std() > 10  # a face, not a flat border


def test_alignment_does_not_depend_on_the_output_size(astronaut):
    """The same face aligned at 48, 64 and 112 px must be the same crop up to scale.

    With only three anchor points a robust estimator (LMEDS) fits two of them exactly and may pick
    a different pair at each size; a least-squares similarity fit does not.
    """
    image, _, points = astronaut
    normalised = [faces.align_face(image, points, size)[1] / size for size in (48, 64, 112)]
    for other in normalised[1:]:
        np.testing.assert_allclose(other, normalised[0], atol=0.005)


def test_alignment_undoes_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    canonical = rng.uniform(0.2, 0.8, size=(68, 2)).astype(np.float32)
    # Place the anchors on the template so the canonical face aligns exactly.
    canonical[36:42] += faces.TEMPLATE[0] - canonical[36:42].mean(0)
    canonical[42:48] += faces.TEMPLATE[1] - canonical[42:48].mean(0)
    canonical[48:60] += faces.TEMPLATE[2] - canonical[48:60].mean(0)
    angle, scale, shift = 0.3, 250.0, np.array([120.0, 40.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    image_points = (canonical @ rotation.T + shift).astype(np.float32)
    image = np.full((480, 480, 3), 128, np.uint8)
    _, mapped = faces.align_face(image, image_points, 100)
    np.testing.assert_allclose(mapped, canonical * 100, atol=1e-2)


def test_degenerate_landmarks_raise_user_error():
    with pytest.raises(UserError, match="degenerate"):
        faces.alignment_matrix(np.zeros((68, 2), np.float32), 64)


def test_no_face_in_a_blank_image():
    assert faces.detect_faces(np.zeros((120, 120), np.uint8)) == []


def test_to_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = faces.to_rgb(grey)
    assert rgb.shape == (3, 4, 3) and np.all(rgb[..., 0] == grey) and np.all(rgb[..., 2] == grey)
    assert faces.to_rgb(grey[..., None]).shape == (3, 4, 3)
    assert faces.to_rgb(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)
