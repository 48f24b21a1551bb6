"""Helpers for the adapter tests: image files from SynthFER and from a real photograph, broken
files, reading records back.

Where a test needs dlib's detector to find a face it uses the real photograph (skimage's
astronaut), so the test does not depend on how SynthFER happens to draw a face; SynthFER faces
serve with dataset landmarks or --no-detect, where their exact landmarks are the point.
"""

import pathlib

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image

from fer_keras.data import records, synth


def save(path, image, quality=95):
    """uint8 (H, W, 1|3) -> an image file whose format follows the suffix."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    kwargs = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    image_format = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), "TIFF")
    Image.fromarray(image).save(path, format=image_format, **kwargs)
    return path


def truncate(path, keep=0.4):
    """Cuts a valid image file short: a corrupt file that still starts like an image."""
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[: int(len(data) * keep)])
    return path


def still(subject, emotion, size=96, grey=False, index=0):
    return synth.render_still(synth.make_subject(subject), emotion, sample_index=index, size=size, grey=grey)


def sequence(subject, emotion, size=64, grey=False, frames=5, kind="onset_apex"):
    return synth.render_sequence(synth.make_subject(subject), emotion, size=size, grey=grey, num_frames=frames, kind=kind)


def photo():
    """A 300 x 300 crop of skimage's astronaut around her face (the full image also holds a hand
    that dlib's detector takes for a second face when upsampling)."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[0:300, 70:370])


def photo_variant(kind):
    """The photograph flipped, scaled, rotated, grey or small: different real faces for dlib."""
    image = photo()
    if kind == "flip":
        return np.ascontiguousarray(image[:, ::-1])
    if kind == "grey":
        return np.repeat(image.mean(-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    if kind == "small":
        return cv2.resize(image, (160, 160), interpolation=cv2.INTER_AREA)
    angle, scale, shift = {"scaled": (0.0, 0.8, (20, 10)), "rotated": (6.0, 1.0, (0, 0))}[kind]
    return moved(image, angle, scale, shift)


def moved(image, angle=0.0, scale=1.0, shift=(0, 0)):
    matrix = cv2.getRotationMatrix2D((152, 126), angle, scale)  # about the face
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


def photo_sequence(frames):
    """The photograph with a slow head motion (rotation and drift), `frames` (300, 300, 3) frames."""
    image = photo()
    return np.stack([moved(image, 0.8 * t, 1.0, (1.5 * t, -1.0 * t)) for t in range(frames)])


def write_points(path, points, extra_lines=()):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"   {x:.7e}   {y:.7e}" for x, y in np.asarray(points, np.float64)]
    path.write_text("\n".join(lines + [str(v) for v in extra_lines]) + "\n")
    return path


def read_raw(out):
    """Every serialized record of a prepared folder, shard order."""
    manifest = records.read_manifest(out, verify=True)
    return manifest, [r.numpy() for r in tf.data.TFRecordDataset(records.shard_paths(manifest))]


def read_stills(out):
    """-> manifest, list of dicts: image (H, W, C) uint8, label, label_name, subject, split, source,
    landmarks (68, 2) or zeros, landmarks5 / landmarks37 (N, 2) or None."""
    manifest, raw = read_raw(out)
    result = []
    for serialized in raw:
        f = records.parse_still(serialized)
        full = tf.io.parse_single_example(serialized, records.STILL_SPEC)
        extra = {}
        for key, name, count in (("landmarks5", "landmarks/5", 5), ("landmarks37", "landmarks/37", 37)):
            values = tf.sparse.to_dense(full[name]).numpy()
            extra[key] = values.reshape(count, 2) if values.size else None
        result.append(dict(
            image=tf.io.decode_png(f["image/encoded"]).numpy(),
            label=int(f["label"]), label_name=f["label_name"].numpy().decode(), subject=f["subject"].numpy().decode(),
            split=f["split"].numpy().decode(), source=f["source"].numpy().decode(),
            landmarks=f["landmarks"].numpy(), has_landmarks=bool(tf.size(full["landmarks/68"].values) > 0), **extra,
        ))
    return manifest, result


def read_sequences(out):
    """-> manifest, list of dicts: frames (T, H, W, C) uint8, flow (T, H, W, 2) float or None,
    landmarks (T, 68, 2) or None, label, label_name, subject, video, num_frames."""
    manifest, raw = read_raw(out)
    result = []
    for serialized in raw:
        f = records.parse_sequence(serialized)
        _, lists = tf.io.parse_single_sequence_example(
            serialized, context_features=records.SEQUENCE_CONTEXT_SPEC, sequence_features=records.SEQUENCE_FRAME_SPEC
        )
        lm = tf.sparse.to_dense(lists["landmarks/68"]).numpy()
        flow = f["flow/encoded"].numpy()
        result.append(dict(
            frames=np.stack([tf.io.decode_png(x).numpy() for x in f["frames/encoded"].numpy()]),
            flow=np.stack([records.dequantize_flow(tf.io.decode_png(x)).numpy() for x in flow]) if len(flow) else None,
            landmarks=lm.reshape(len(lm), 68, 2) if lm.size else None,
            label=int(f["label"]), label_name=f["label_name"].numpy().decode(), subject=f["subject"].numpy().decode(),
            video=f["video"].numpy().decode(), num_frames=int(f["num_frames"]), split=f["split"].numpy().decode(),
        ))
    return manifest, result
