"""`sequence_clips` follows one face through a sequence, and cuts clips only from frames in a row that show it."""

import cv2
import numpy as np

from fer_keras.data import synth
from fer_keras.data_prep.flow import sequence_flow
from fer_keras.evaluation.explain import sequence_clips
from fer_keras.inference.predictor import crop_faces
from tests.conftest import CLIP_LENGTH, MODEL_SIZE
from tests.inference.test_predict_tracking import SIZE as TRACKING_SIZE
from tests.inference.test_predict_tracking import _slots

SIZE = TRACKING_SIZE  # dlib's HOG detector finds SynthFER faces at this size, and at 0.8 of it (`_slots` draws them)
SHAPE = (CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)


def _faces(subject, emotion, count):
    return synth.render_sequence(synth.make_subject(subject), emotion, size=SIZE, grey=False, num_frames=count)["frames"]


def _folder(path, frames):
    """`frames` written as the PNG frames of one sequence (lossless: the crops equal those of the frames in memory)."""
    path.mkdir(parents=True)
    for t, frame in enumerate(frames):
        cv2.imwrite(str(path / f"{t}.png"), frame[..., ::-1])
    return path


def _crop(frame, place=None):
    """The aligned crop of the face of `frame`, or of the face in `place` of a two-face frame."""
    found = crop_faces(frame, MODEL_SIZE, 1)
    if place is None:
        (face,) = found
    else:
        (face,) = [f for f in found if f[0][0] // SIZE == place]
    return face[2]


def test_the_clips_follow_the_largest_face_of_the_first_frame_and_not_another_person(tmp_path, capsys):
    count = 2 * CLIP_LENGTH + 2
    left, right = _faces(2, "surprise", count), _faces(3, "happiness", count)
    frames = []
    for t in range(count):
        big, small = (1.0, 0.8) if t % 2 == 0 else (0.8, 1.0)  # the largest face changes side every frame
        if t in (4, 5):  # the left face gone: the right one alone is someone else, not the face followed
            frames.append(_slots({1: (right[t], big)}, slots=2))
        else:
            frames.append(_slots({0: (left[t], big), 1: (right[t], small)}, slots=2))
    x, ids = sequence_clips(_folder(tmp_path / "two", frames), SHAPE, 8, quiet=True)
    assert ids == ["two_f0", "two_f6"]
    expected = np.stack([_crop(frames[t], place=0) for t in (0, 1, 2, 3, 6, 7, 8, 9)])
    assert np.array_equal(x.reshape(expected.shape), expected)
    note = capsys.readouterr().err
    assert "shows more than one face (from frame 0)" in note and "follow one, the largest in frame 0" in note


def test_a_clip_never_spans_frames_without_the_face(tmp_path, capsys):
    faces = _faces(4, "anger", 16)
    blank = np.full_like(faces[0], 128)
    gaps = (5, 6, 9)  # runs of frames with the face: 0-4 (one clip), 7-8 (too short for one), 10-15 (one clip)
    frames = [blank if t in gaps else face for t, face in enumerate(faces)]
    folder = _folder(tmp_path / "gaps", frames)
    x, ids = sequence_clips(folder, SHAPE, 8, flow_bound=5.0, quiet=True)
    # each run's clips counted back from its last frame, as a whole sequence's are from its apex
    assert ids == ["gaps_f1", "gaps_f12"]
    crops = [None if t in gaps else _crop(f) for t, f in enumerate(frames)]
    assert np.array_equal(x["rgb"], np.stack([crops[1:5], crops[12:16]]))
    # the flow of a run: zeros on its first frame, as predict feeds it after a frame without a face
    first, last = (np.clip(sequence_flow(np.uint8(np.stack(crops[a:b]))), -5.0, 5.0) for a, b in ((0, 5), (10, 16)))
    assert np.allclose(x["flow"], np.stack([first[1:], last[2:]]), atol=1e-5)
    assert np.abs(x["flow"][:, 0]).max() > 0  # each clip's first flow comes from the frame before it, in its run
    assert "more than one face" not in capsys.readouterr().err

    _, ids = sequence_clips(folder, SHAPE, 1, quiet=True)
    assert ids == ["gaps_f12"]


def test_without_a_run_as_long_as_a_clip_the_longest_run_is_padded(tmp_path):
    faces = _faces(1, "happiness", 8)
    blank = np.full_like(faces[0], 128)
    frames = [blank if t in (2, 6) else face for t, face in enumerate(faces)]  # runs 0-1, 3-5, 7
    x, ids = sequence_clips(_folder(tmp_path / "short", frames), SHAPE, 8, flow_bound=5.0, quiet=True)
    assert ids == ["short_f3"]
    crops = [_crop(frames[t]) for t in (3, 4, 5)]
    assert np.array_equal(x["rgb"][0], np.stack(crops + crops[-1:]))  # its last frame repeated, as training pads
    flow = np.clip(sequence_flow(np.uint8(np.stack(crops))), -5.0, 5.0)
    assert np.allclose(x["flow"][0], np.concatenate([flow, flow[-1:]]), atol=1e-5)


def test_without_any_face_the_whole_frames_are_explained(tmp_path, capsys):
    frames = [np.full((SIZE, SIZE, 3), 60 * t, np.uint8) for t in range(3)]
    x, ids = sequence_clips(_folder(tmp_path / "none", frames), SHAPE, 8, quiet=True)
    assert ids == ["none_f0"] and x.shape == (1,) + SHAPE
    assert [float(f.mean()) for f in x[0]] == [0.0, 60.0, 120.0, 120.0]
    assert "dlib found no face in " in capsys.readouterr().err


def test_a_face_lost_for_a_clips_length_gives_way_to_the_largest_face_seen_then(tmp_path, capsys):
    """One wrong first face (here: a face that leaves after 3 frames) does not cost the rest of the video."""
    count = 3 + 2 * CLIP_LENGTH
    left, right = _faces(2, "surprise", count), _faces(3, "happiness", count)
    frames = [_slots({0: (left[t], 1.0)}, slots=2) if t < 3 else _slots({1: (right[t], 1.0)}, slots=2)
              for t in range(count)]
    x, ids = sequence_clips(_folder(tmp_path / "leaves", frames), SHAPE, 8, quiet=True)
    first_right = 3 + CLIP_LENGTH  # the right face, someone else, is taken once the left one is lost for T frames
    assert ids == [f"leaves_f{first_right}"]
    expected = np.stack([_crop(frames[t]) for t in range(first_right, first_right + CLIP_LENGTH)])
    np.testing.assert_array_equal(x[0], expected.astype(np.float32))
    note = capsys.readouterr().err
    assert "loses its face;" in note and "more than one face" not in note  # never two faces in one frame
    assert f"it gives way to the largest face seen then, another or the same one elsewhere (from frame {first_right})" in note
