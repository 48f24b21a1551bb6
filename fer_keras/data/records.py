"""The one TFRecord schema of fer-keras: writer, reader, manifest.

Two record kinds share one set of feature names, defined once below and used by both the
writer and the parser:

* ``still``: a `tf.train.Example` per face image.
* ``sequence``: a `tf.train.SequenceExample` per video, context + one entry per frame.

Optical flow is stored per frame as a 2-channel PNG: each component ``f`` (pixels per frame,
x then y) is clipped to ``[-bound, bound]`` and quantised as
``q = round((f + bound) / (2 * bound) * 255)``; ``dequantize_flow`` inverts it. The bound is
written into every sequence record and the manifest (default 20 px).

A dataset folder holds shards ``<prefix>-NNNNN.tfrecord`` and ``manifest.json`` (dataset, kind,
label set, counts per class and per subject, shard list with sha256, schema version, the
parameters that produced it). Shards are written under a ``.tmp`` name and renamed when
complete, so an interrupted writer never leaves a shard that looks finished.
"""

import hashlib
import json
import os
import pathlib

import numpy as np
import tensorflow as tf

from fer_keras.errors import UserError
from fer_keras.json_files import read_json_object
from fer_keras.labels import get_label_set
from fer_keras.names import printable

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_FLOW_BOUND = 20.0
KINDS = ("still", "sequence")

# Features common to both kinds (Example features / SequenceExample context).
_CONTEXT_SPEC = {
    "schema/version": tf.io.FixedLenFeature([], tf.int64),
    "label/index": tf.io.FixedLenFeature([], tf.int64),
    "label/name": tf.io.FixedLenFeature([], tf.string),
    "label/set": tf.io.FixedLenFeature([], tf.string),
    "subject/id": tf.io.FixedLenFeature([], tf.string),
    "dataset": tf.io.FixedLenFeature([], tf.string),
    "source/path": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "split": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/channels": tf.io.FixedLenFeature([], tf.int64),
    "aus": tf.io.VarLenFeature(tf.float32),
    "aus/ids": tf.io.VarLenFeature(tf.int64),
}
STILL_SPEC = dict(
    _CONTEXT_SPEC,
    **{
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "landmarks/68": tf.io.VarLenFeature(tf.float32),
        "landmarks/5": tf.io.VarLenFeature(tf.float32),
        "landmarks/37": tf.io.VarLenFeature(tf.float32),
    },
)
SEQUENCE_CONTEXT_SPEC = dict(
    _CONTEXT_SPEC,
    **{
        "sequence/id": tf.io.FixedLenFeature([], tf.string),
        "sequence/num_frames": tf.io.FixedLenFeature([], tf.int64),
        "flow/bound": tf.io.FixedLenFeature([], tf.float32, default_value=DEFAULT_FLOW_BOUND),
    },
)
SEQUENCE_FRAME_SPEC = {
    "frames/encoded": tf.io.FixedLenSequenceFeature([], tf.string),
    "landmarks/68": tf.io.VarLenFeature(tf.float32),
    "flow/encoded": tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
}


def _bytes(values):
    values = [printable(v).encode() if isinstance(v, str) else bytes(v) for v in values]  # printable: a non-UTF-8 file name
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, np.int64).ravel()))


def encode_png(image):
    """uint8 (H, W, C) with C in 1..4 -> PNG bytes (lossless, deterministic)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"encode_png expects uint8 (H, W, C) with C in 1..4. Received: dtype={image.dtype}, shape={image.shape}"
        )
    return tf.io.encode_png(image).numpy()


def quantize_flow(flow, bound=DEFAULT_FLOW_BOUND):
    """float (H, W, 2) flow in pixels -> uint8 (H, W, 2), clipped to +-bound."""
    q = (np.clip(flow, -bound, bound) + bound) / (2.0 * bound) * 255.0
    return np.round(q).astype(np.uint8)


def dequantize_flow(q, bound=DEFAULT_FLOW_BOUND):
    """uint8 or float (H, W, 2) quantised flow -> float32 flow in pixels (works on tensors too)."""
    return tf.cast(q, tf.float32) / 255.0 * (2.0 * bound) - bound


def _context_features(sample, label_set, dataset, image_shape):
    names = get_label_set(label_set)
    emotion = sample["emotion"]
    if emotion not in names:
        raise UserError(f"Label {emotion!r} is not in label set {label_set} {list(names)}.")
    height, width, channels = image_shape
    features = {
        "schema/version": _ints([SCHEMA_VERSION]),
        "label/index": _ints([names.index(emotion)]),
        "label/name": _bytes([emotion]),
        "label/set": _bytes([label_set]),
        "subject/id": _bytes([str(sample["subject_id"])]),
        "dataset": _bytes([dataset]),
        "source/path": _bytes([str(sample.get("source_path", ""))]),
        "split": _bytes([str(sample.get("split", ""))]),
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/channels": _ints([channels]),
    }
    aus = sample.get("aus")
    if aus is not None:
        aus = np.asarray(aus, np.float32)
        if aus.ndim == 2:  # a sequence's per-frame AUs: keep the apex (largest total) frame's
            aus = aus[int(np.argmax(aus.sum(axis=1)))]
        features["aus"] = _floats(aus)
        if sample.get("au_ids") is not None:
            features["aus/ids"] = _ints(sample["au_ids"])
    return features


def make_still_example(sample, *, label_set, dataset):
    """A still sample dict -> serialized `tf.train.Example`.

    `sample` keys: ``image`` uint8 (H, W, C), ``emotion`` (canonical name), ``subject_id``;
    optional ``landmarks`` (68, 2), ``landmarks5`` (5, 2), ``landmarks37`` (37, 2), ``aus``,
    ``au_ids``, ``source_path``, ``split``.
    """
    image = np.asarray(sample["image"])
    features = _context_features(sample, label_set, dataset, image.shape)
    features["image/encoded"] = _bytes([encode_png(image)])
    for key, feature, count in (("landmarks", "landmarks/68", 68), ("landmarks5", "landmarks/5", 5), ("landmarks37", "landmarks/37", 37)):
        if sample.get(key) is not None:
            points = np.asarray(sample[key], np.float32)
            if points.shape != (count, 2):
                raise ValueError(f"{key} must have shape ({count}, 2). Received: {points.shape}")
            features[feature] = _floats(points)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def make_sequence_example(sample, *, label_set, dataset, flow=None, flow_bound=DEFAULT_FLOW_BOUND):
    """A sequence sample dict -> serialized `tf.train.SequenceExample`.

    `sample` keys: ``frames`` uint8 (T, H, W, C), ``emotion``, ``subject_id``, ``sequence_id``;
    optional ``landmarks`` (T, 68, 2), ``aus``. `flow`: optional float (T, H, W, 2) in pixels,
    flow[t] from frame t-1 to t (flow[0] = 0), stored quantised with `flow_bound`.
    """
    frames = np.asarray(sample["frames"])
    if frames.ndim != 4:
        raise ValueError(f"frames must be (T, H, W, C). Received shape {frames.shape}")
    context = _context_features(sample, label_set, dataset, frames.shape[1:])
    context["sequence/id"] = _bytes([str(sample["sequence_id"])])
    context["sequence/num_frames"] = _ints([len(frames)])
    context["flow/bound"] = _floats([flow_bound])
    lists = {"frames/encoded": tf.train.FeatureList(feature=[_bytes([encode_png(f)]) for f in frames])}
    if sample.get("landmarks") is not None:
        lists["landmarks/68"] = tf.train.FeatureList(feature=[_floats(p) for p in np.asarray(sample["landmarks"])])
    if flow is not None:
        if len(flow) != len(frames):
            raise ValueError(f"flow must have one entry per frame. Received {len(flow)} for {len(frames)} frames")
        lists["flow/encoded"] = tf.train.FeatureList(
            feature=[_bytes([encode_png(quantize_flow(f, flow_bound))]) for f in flow]
        )
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    )
    # deterministic: the feature maps in key order, so the same sample gives the same bytes in every process
    return example.SerializeToString(deterministic=True)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardedWriter:
    """Writes serialized records into shards of `records_per_shard`, then a manifest.

    Each shard is written as ``<name>.tmp`` and renamed when closed. Use as a context manager;
    `add(record, label, subject)` keeps the counts the manifest reports.

    Example:
        with ShardedWriter(out, kind="still", dataset="synthfer", label_set="basic7") as w:
            w.add(make_still_example(s, label_set="basic7", dataset="synthfer"), s["emotion"], s["subject_id"])
    """

    def __init__(self, out_dir, *, kind, dataset, label_set, records_per_shard=512, prefix="data", params=None, extra=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")
        self.out_dir = pathlib.Path(out_dir)
        self.kind = kind
        self.dataset = dataset
        self.label_set = label_set
        self.records_per_shard = records_per_shard
        self.prefix = prefix
        self.params = params or {}
        self.extra = extra or {}
        self.shards = []
        self.counts_per_class = {name: 0 for name in get_label_set(label_set)}
        self.counts_per_subject = {}
        self._writer = None
        self._in_shard = 0
        self._tmp_path = None

    def __enter__(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self

    def _open(self):
        path = self.out_dir / f"{self.prefix}-{len(self.shards):05d}.tfrecord"
        self._tmp_path = path.with_name(path.name + ".tmp")
        self._writer = tf.io.TFRecordWriter(str(self._tmp_path))
        self._in_shard = 0

    def _close_shard(self):
        if self._writer is None:
            return
        self._writer.close()
        final = self._tmp_path.with_name(self._tmp_path.name[: -len(".tmp")])
        os.replace(self._tmp_path, final)
        self.shards.append({"file": final.name, "num_examples": self._in_shard, "sha256": sha256(final)})
        self._writer = None

    def add(self, record, emotion, subject_id):
        if self._writer is None:
            self._open()
        self._writer.write(record)
        self._in_shard += 1
        self.counts_per_class[emotion] = self.counts_per_class.get(emotion, 0) + 1
        subject = str(subject_id)
        self.counts_per_subject[subject] = self.counts_per_subject.get(subject, 0) + 1
        if self._in_shard >= self.records_per_shard:
            self._close_shard()

    def close(self):
        self._close_shard()
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "dataset": self.dataset,
            "kind": self.kind,
            "label_set": self.label_set,
            "labels": list(get_label_set(self.label_set)),
            "num_examples": sum(s["num_examples"] for s in self.shards),
            "counts_per_class": self.counts_per_class,
            "counts_per_subject": dict(sorted(self.counts_per_subject.items())),
            "shards": self.shards,
            "params": self.params,
            **self.extra,
        }
        tmp = self.out_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, self.out_dir / MANIFEST)
        return manifest

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.close()
            self._tmp_path.unlink(missing_ok=True)
        return False


def read_manifest(data_dir, *, verify=False, remedy=None):
    """Loads and checks ``manifest.json`` of a prepared dataset folder.

    Raises `UserError` with one clear line when the folder is missing or empty, the schema
    version differs, a shard is missing, or (`verify=True`) a shard's sha256 does not match.
    `remedy`: what the user does about a missing or damaged shard, ending that line (default: delete the folder and
    prepare it again, which fits a folder the user prepared; a run's generated SynthFER set says how to regenerate it).
    """
    data_dir = pathlib.Path(data_dir)
    given_remedy = remedy is not None
    remedy = remedy or f"delete {str(data_dir)!r} and prepare it again."
    if not data_dir.is_dir():
        state = "is a file, not a prepared dataset folder" if data_dir.exists() else "does not exist"
        raise UserError(f"Data folder {str(data_dir)!r} {state}" + (f"; {remedy}" if given_remedy else "."))
    path = data_dir / MANIFEST
    if not path.exists():
        if data_dir.name.endswith(".partial") and (data_dir / "progress.json").exists():
            raise UserError(f"{str(data_dir)!r} is an unfinished `fer-keras prepare`: run the same prepare command "
                            f"again to finish it into {data_dir.name[: -len('.partial')]!r}.")
        raise UserError(
            f"{str(data_dir)!r} holds no {MANIFEST}: it is not a prepared dataset (run `fer-keras prepare` first)."
        )
    manifest = read_json_object(path)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(
            f"{path} has schema version {version}; this fer-keras reads version {SCHEMA_VERSION}. Prepare the data again."
        )
    if manifest.get("kind") not in KINDS:
        raise UserError(f"{path} has an unknown record kind {manifest.get('kind')!r}; expected one of {KINDS}.")
    if not manifest.get("shards") or manifest.get("num_examples", 0) == 0:
        raise UserError(f"Dataset {str(data_dir)!r} is empty (its manifest lists no examples).")
    for shard in manifest["shards"]:
        shard_path = data_dir / shard["file"]
        if not shard_path.exists():
            raise UserError(f"Shard {shard['file']} listed in {path} is missing; {remedy}")
        if verify and sha256(shard_path) != shard["sha256"]:
            raise UserError(
                f"Shard {shard_path} is corrupt: its sha256 does not match the manifest (truncated or modified file); "
                f"{remedy}"
            )
    manifest["_dir"] = str(data_dir)
    return manifest


def shard_paths(manifest):
    return [str(pathlib.Path(manifest["_dir"]) / s["file"]) for s in manifest["shards"]]


def _dense_points(sparse, count):
    values = tf.sparse.to_dense(sparse)
    return tf.cond(
        tf.size(values) == count * 2,
        lambda: tf.reshape(values, (count, 2)),
        lambda: tf.zeros((count, 2), tf.float32),
    )


def parse_still(serialized):
    """Serialized still Example -> dict of tensors (image still encoded; see `decode_still`)."""
    f = tf.io.parse_single_example(serialized, STILL_SPEC)
    tf.debugging.assert_equal(f["schema/version"], tf.constant(SCHEMA_VERSION, tf.int64), message="schema version mismatch")
    return {
        "image/encoded": f["image/encoded"],
        "channels": f["image/channels"],
        "label": f["label/index"],
        "label_name": f["label/name"],
        "subject": f["subject/id"],
        "source": f["source/path"],
        "split": f["split"],
        "landmarks": _dense_points(f["landmarks/68"], 68),
        "aus": tf.sparse.to_dense(f["aus"]),
    }


def stills_with_landmarks(manifest, limit=256):
    """How many of the first `limit` still records carry 68 landmarks (all of them, or none, as prepare writes them)."""
    found = 0
    for serialized in tf.data.TFRecordDataset(shard_paths(manifest)).take(limit):
        points = tf.io.parse_single_example(serialized, {"landmarks/68": STILL_SPEC["landmarks/68"]})["landmarks/68"]
        found += int(tf.size(points.values) == 136)
    return found


def parse_sequence(serialized):
    """Serialized SequenceExample -> dict of tensors (frames still encoded)."""
    context, lists = tf.io.parse_single_sequence_example(
        serialized, context_features=SEQUENCE_CONTEXT_SPEC, sequence_features=SEQUENCE_FRAME_SPEC
    )
    tf.debugging.assert_equal(context["schema/version"], tf.constant(SCHEMA_VERSION, tf.int64), message="schema version mismatch")
    num_frames = tf.shape(lists["frames/encoded"])[0]
    points = tf.sparse.to_dense(lists["landmarks/68"])  # (T, 136), or empty when the record has none
    landmarks = tf.cond(
        tf.size(points) == num_frames * 136,
        lambda: tf.reshape(points, (num_frames, 68, 2)),
        lambda: tf.zeros((num_frames, 68, 2), tf.float32),
    )
    return {
        "frames/encoded": lists["frames/encoded"],
        "landmarks": landmarks,
        "flow/encoded": lists["flow/encoded"],
        "flow_bound": context["flow/bound"],
        "channels": context["image/channels"],
        "label": context["label/index"],
        "label_name": context["label/name"],
        "subject": context["subject/id"],
        "video": context["sequence/id"],
        "split": context["split"],
        "num_frames": context["sequence/num_frames"],
    }
