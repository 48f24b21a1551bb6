"""A SynthFER face sequence written as an .mp4, the video the predict tests read."""

import cv2

from fer_keras.data import synth
from fer_keras.inference.predictor import crop_faces


def write_synth_video(path, *, subject, emotion, size, frames):
    """Renders `frames` frames of `subject` showing `emotion` at `size` px and writes them to `path` (mp4v, 10 fps)."""
    sequence = synth.render_sequence(synth.make_subject(subject), emotion, size=size, grey=False, num_frames=frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
    for frame in sequence["frames"]:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def video_crops(path, size, detect):
    """The first face's aligned crop of every frame of `path`, as predict makes it (`size` px, grey); None without a face."""
    capture = cv2.VideoCapture(str(path))
    crops = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        faces = crop_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size, 1, detect)
        crops.append(faces[0][2] if faces else None)
    capture.release()
    return crops
