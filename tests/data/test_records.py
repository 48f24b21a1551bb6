"""The TFRecord schema: writer -> shards + manifest -> parser, and read_manifest's checks.

Every parse function is run both eagerly and inside `tf.data.Dataset.map` (STYLE.md 9).
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from fer_keras.data import records
from fer_keras.errors import UserError
from fer_keras.labels import get_label_set

LABEL_SET = "basic7"
NAMES = get_label_set(LABEL_SET)


def parse_all(parse, serialized, mode):
    """`parse` over a list of serialized records, eagerly or inside tf.data.map; NumPy dicts."""
    if mode == "eager":
        outputs = [parse(tf.constant(s)) for s in serialized]
    else:
        outputs = list(tf.data.Dataset.from_tensor_slices(serialized).map(parse))
    return [{k: v.numpy() for k, v in out.items()} for out in outputs]


def read_shards(manifest):
    return [r.numpy() for r in tf.data.TFRecordDataset(records.shard_paths(manifest))]


def still_sample(rng, emotion, subject, channels=1, size=12):
    return {
        "image": rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8),
        "emotion": emotion,
        "subject_id": subject,
        "landmarks": rng.uniform(0, size, size=(68, 2)).astype(np.float32),
        "aus": rng.uniform(0, 1, size=5).astype(np.float32),
        "au_ids": [1, 2, 4, 6, 12],
        "source_path": f"mem://{subject}/{emotion}",
        "split": "train",
    }


def sequence_sample(rng, emotion, subject, video, frames=5, size=10, channels=3):
    return {
        "frames": rng.integers(0, 256, size=(frames, size, size, channels), dtype=np.uint8),
        "emotion": emotion,
        "subject_id": subject,
        "sequence_id": video,
        "landmarks": rng.uniform(0, size, size=(frames, 68, 2)).astype(np.float32),
        "aus": rng.uniform(0, 1, size=(frames, 3)).astype(np.float32),
    }


def write_stills(out, samples, records_per_shard=2):
    with records.ShardedWriter(out, kind="still", dataset="unit", label_set=LABEL_SET, records_per_shard=records_per_shard) as w:
        for s in samples:
            w.add(records.make_still_example(s, label_set=LABEL_SET, dataset="unit"), s["emotion"], s["subject_id"])
    return w


@pytest.fixture
def still_set(tmp_path):
    rng = np.random.default_rng(0)
    plan = [("happiness", "s01"), ("anger", "s01"), ("happiness", "s02"), ("neutral", "s03"), ("happiness", "s03")]
    samples = [still_sample(rng, e, s) for e, s in plan]
    out = tmp_path / "still"
    write_stills(out, samples)
    return out, samples


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "map"])
@pytest.mark.parametrize("channels", [1, 3])
def test_still_round_trip(tmp_path, mode, channels):
    rng = np.random.default_rng(channels)
    samples = [still_sample(rng, e, f"s{i % 2}", channels=channels) for i, e in enumerate(["surprise", "neutral", "fear"])]
    write_stills(tmp_path, samples)
    parsed = parse_all(records.parse_still, read_shards(records.read_manifest(tmp_path, verify=True)), mode)
    assert len(parsed) == len(samples)
    for s, p in zip(samples, parsed):
        image = tf.io.decode_png(p["image/encoded"], channels=channels).numpy()
        np.testing.assert_array_equal(image, s["image"])  # lossless: the same pixels
        assert p["channels"] == channels
        assert p["label"] == NAMES.index(s["emotion"])
        assert p["label_name"].decode() == s["emotion"]
        assert p["subject"].decode() == s["subject_id"]
        assert p["source"].decode() == s["source_path"]
        assert p["split"].decode() == "train"
        np.testing.assert_allclose(p["landmarks"], s["landmarks"], rtol=0, atol=0)
        np.testing.assert_allclose(p["aus"], s["aus"])


def test_still_without_landmarks_parses_to_zeros(tmp_path):
    sample = still_sample(np.random.default_rng(1), "anger", "s1")
    del sample["landmarks"]
    parsed = parse_all(records.parse_still, [records.make_still_example(sample, label_set=LABEL_SET, dataset="unit")], "map")
    np.testing.assert_array_equal(parsed[0]["landmarks"], np.zeros((68, 2), np.float32))


def write_sequences(out, samples, flows, bound=records.DEFAULT_FLOW_BOUND):
    with records.ShardedWriter(out, kind="sequence", dataset="unit", label_set=LABEL_SET, records_per_shard=1) as w:
        for s, f in zip(samples, flows):
            w.add(records.make_sequence_example(s, label_set=LABEL_SET, dataset="unit", flow=f, flow_bound=bound),
                  s["emotion"], s["subject_id"])
    return records.read_manifest(out, verify=True)


@pytest.mark.parametrize("mode", ["eager", "map"])
def test_sequence_round_trip_with_flow(tmp_path, mode):
    rng = np.random.default_rng(2)
    bound = 20.0
    samples = [sequence_sample(rng, "disgust", "s1", "s1_a", frames=5), sequence_sample(rng, "sadness", "s2", "s2_b", frames=3)]
    # Flow beyond the bound on purpose: it must come back clipped to +-bound.
    flows = [rng.uniform(-1.5 * bound, 1.5 * bound, size=s["frames"].shape[:3] + (2,)).astype(np.float32) for s in samples]
    manifest = write_sequences(tmp_path, samples, flows, bound)
    parsed = parse_all(records.parse_sequence, read_shards(manifest), mode)
    for s, f, p in zip(samples, flows, parsed):
        t = len(s["frames"])
        assert p["num_frames"] == t
        assert p["video"].decode() == s["sequence_id"]
        assert p["subject"].decode() == s["subject_id"]
        assert p["label"] == NAMES.index(s["emotion"])
        assert p["label_name"].decode() == s["emotion"]
        assert p["channels"] == 3
        assert p["flow_bound"] == pytest.approx(bound)
        frames = np.stack([tf.io.decode_png(e, channels=3).numpy() for e in p["frames/encoded"]])
        np.testing.assert_array_equal(frames, s["frames"])
        assert len(p["flow/encoded"]) == t
        q = np.stack([tf.io.decode_png(e).numpy() for e in p["flow/encoded"]])  # 2-channel PNG (decode_png has no channels=2)
        assert q.shape == f.shape
        flow = records.dequantize_flow(q, p["flow_bound"]).numpy()
        assert np.max(np.abs(flow - np.clip(f, -bound, bound))) <= bound / 255 + 1e-4


@pytest.mark.parametrize("mode", ["eager", "map"])
def test_sequence_round_trip_keeps_landmarks(tmp_path, mode):
    """Per-frame landmarks are written into every sequence record; the parser must give them back."""
    rng = np.random.default_rng(3)
    sample = sequence_sample(rng, "fear", "s1", "v1", frames=4)
    manifest = write_sequences(tmp_path, [sample], [None])
    parsed = parse_all(records.parse_sequence, read_shards(manifest), mode)[0]
    assert "landmarks" in parsed, f"parse_sequence drops the stored landmarks/68; keys: {sorted(parsed)}"
    np.testing.assert_allclose(np.reshape(parsed["landmarks"], (4, 68, 2)), sample["landmarks"])


@pytest.mark.parametrize("mode", ["eager", "map"])
def test_sequence_without_flow_has_no_flow_frames(tmp_path, mode):
    sample = sequence_sample(np.random.default_rng(4), "anger", "s1", "v1", frames=3)
    manifest = write_sequences(tmp_path, [sample], [None])
    parsed = parse_all(records.parse_sequence, read_shards(manifest), mode)[0]
    assert len(parsed["flow/encoded"]) == 0
    assert len(parsed["frames/encoded"]) == 3


@pytest.mark.parametrize("mode", ["eager", "map"])
def test_parse_rejects_another_schema_version(mode):
    sample = still_sample(np.random.default_rng(5), "anger", "s1")
    example = tf.train.Example.FromString(records.make_still_example(sample, label_set=LABEL_SET, dataset="unit"))
    example.features.feature["schema/version"].int64_list.value[:] = [records.SCHEMA_VERSION + 1]
    with pytest.raises(tf.errors.InvalidArgumentError, match="schema version"):
        parse_all(records.parse_still, [example.SerializeToString()], mode)


def test_flow_quantisation_is_within_half_a_step():
    bound = 20.0
    flow = np.linspace(-bound, bound, 1001, dtype=np.float32).reshape(-1, 1, 1).repeat(2, axis=2)  # (1001, 1, 2)
    q = records.quantize_flow(flow, bound)
    assert q.dtype == np.uint8
    back = records.dequantize_flow(q, bound).numpy()
    assert np.max(np.abs(back - flow)) <= bound / 255 + 1e-5
    np.testing.assert_array_equal(records.quantize_flow(np.array([-bound, 0.0, bound, 3 * bound, -3 * bound]), bound),
                                  [0, 128, 255, 255, 0])


# --- writer and manifest --------------------------------------------------------------------------


def test_manifest_counts_and_shard_digests(still_set):
    out, samples = still_set
    manifest = json.loads((out / records.MANIFEST).read_text())
    assert manifest["schema_version"] == records.SCHEMA_VERSION
    assert manifest["kind"] == "still"
    assert manifest["labels"] == list(NAMES)
    assert manifest["num_examples"] == 5
    expected_classes = {name: 0 for name in NAMES} | {"happiness": 3, "anger": 1, "neutral": 1}
    assert manifest["counts_per_class"] == expected_classes
    assert manifest["counts_per_subject"] == {"s01": 2, "s02": 1, "s03": 2}
    assert [s["file"] for s in manifest["shards"]] == [f"data-{i:05d}.tfrecord" for i in range(3)]
    assert [s["num_examples"] for s in manifest["shards"]] == [2, 2, 1]
    for shard in manifest["shards"]:
        assert shard["sha256"] == records.sha256(out / shard["file"])
        assert sum(1 for _ in tf.data.TFRecordDataset(str(out / shard["file"]))) == shard["num_examples"]
    assert sorted(p.name for p in out.iterdir()) == sorted([records.MANIFEST] + [s["file"] for s in manifest["shards"]])


def test_shards_are_renamed_only_when_complete(tmp_path):
    rng = np.random.default_rng(6)
    with records.ShardedWriter(tmp_path, kind="still", dataset="unit", label_set=LABEL_SET, records_per_shard=2) as w:
        s = still_sample(rng, "fear", "s1")
        w.add(records.make_still_example(s, label_set=LABEL_SET, dataset="unit"), "fear", "s1")
        # The open shard only exists under its .tmp name, and there is no manifest yet.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data-00000.tfrecord.tmp"]
        w.add(records.make_still_example(s, label_set=LABEL_SET, dataset="unit"), "fear", "s1")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data-00000.tfrecord"]
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / records.MANIFEST).exists()


def test_writer_interrupted_leaves_no_tmp_and_no_manifest(tmp_path):
    rng = np.random.default_rng(7)
    with pytest.raises(RuntimeError):
        with records.ShardedWriter(tmp_path, kind="still", dataset="unit", label_set=LABEL_SET, records_per_shard=4) as w:
            s = still_sample(rng, "fear", "s1")
            w.add(records.make_still_example(s, label_set=LABEL_SET, dataset="unit"), "fear", "s1")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_label_outside_the_label_set_raises_user_error():
    rng = np.random.default_rng(8)
    with pytest.raises(UserError, match="contempt"):  # canonical, but not in basic7
        records.make_still_example(still_sample(rng, "contempt", "s1"), label_set="basic7", dataset="unit")
    with pytest.raises(UserError, match="happy"):  # not a canonical name at all
        records.make_still_example(still_sample(rng, "happy", "s1"), label_set="basic7", dataset="unit")
    with pytest.raises(UserError, match="neutral"):  # ckplus7 has no neutral
        records.make_sequence_example(sequence_sample(rng, "neutral", "s1", "v"), label_set="ckplus7", dataset="unit")


def test_bad_arrays_raise_value_error():
    rng = np.random.default_rng(9)
    sample = still_sample(rng, "anger", "s1")
    with pytest.raises(ValueError, match="uint8"):
        records.make_still_example(dict(sample, image=sample["image"].astype(np.float32)), label_set=LABEL_SET, dataset="unit")
    with pytest.raises(ValueError, match="landmarks"):
        records.make_still_example(dict(sample, landmarks=np.zeros((5, 2))), label_set=LABEL_SET, dataset="unit")
    seq = sequence_sample(rng, "anger", "s1", "v", frames=3)
    with pytest.raises(ValueError, match="one entry per frame"):
        records.make_sequence_example(seq, label_set=LABEL_SET, dataset="unit", flow=np.zeros((2, 10, 10, 2)))
    with pytest.raises(ValueError, match="kind"):
        records.ShardedWriter("unused", kind="video", dataset="unit", label_set=LABEL_SET)


# --- read_manifest errors ---------------------------------------------------------------------------


def test_read_manifest_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        records.read_manifest(tmp_path / "nowhere")


def test_read_manifest_folder_without_manifest(tmp_path):
    with pytest.raises(UserError, match="manifest.json"):
        records.read_manifest(tmp_path)


def test_read_manifest_schema_version_mismatch(still_set):
    out, _ = still_set
    manifest = json.loads((out / records.MANIFEST).read_text())
    manifest["schema_version"] = records.SCHEMA_VERSION + 1
    (out / records.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="schema version"):
        records.read_manifest(out)


def test_read_manifest_invalid_json(still_set):
    out, _ = still_set
    (out / records.MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        records.read_manifest(out)


def test_read_manifest_missing_shard(still_set):
    out, _ = still_set
    (out / "data-00001.tfrecord").unlink()
    with pytest.raises(UserError, match="data-00001.tfrecord.*missing"):
        records.read_manifest(out)


def test_read_manifest_truncated_shard_with_verify(still_set):
    out, _ = still_set
    shard = out / "data-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    records.read_manifest(out)  # without verify only presence is checked
    with pytest.raises(UserError, match="data-00002.tfrecord is corrupt"):
        records.read_manifest(out, verify=True)


def test_read_manifest_returns_its_folder(still_set):
    out, _ = still_set
    manifest = records.read_manifest(out, verify=True)
    assert manifest["_dir"] == str(out)
    assert records.shard_paths(manifest) == [str(out / f"data-{i:05d}.tfrecord") for i in range(3)]
