"""tf.data pipelines: decode, select subjects, clip windows, flow stream, metadata.

Small hand-written record sets make the expected values exact (a frame t filled with one grey
level tells which frames a clip holds); the session's prepared SynthFER sets check the real
thing end to end. Functions are run eagerly and inside tf.data.map (STYLE.md 9).
"""

import numpy as np
import pytest
import tensorflow as tf

from fer_keras.data import pipeline, records
from fer_keras.labels import get_label_set

LABEL_SET = "basic7"
NAMES = get_label_set(LABEL_SET)


def frame_value(t):
    return 10 * t + 5


def write_still_set(out, plan, size=10, channels=1, seed=0):
    """plan: [(emotion, subject), ...] -> manifest; returns (manifest, images)."""
    rng = np.random.default_rng(seed)
    images = []
    with records.ShardedWriter(out, kind="still", dataset="unit", label_set=LABEL_SET, records_per_shard=3) as w:
        for i, (emotion, subject) in enumerate(plan):
            image = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
            images.append(image)
            sample = {"image": image, "emotion": emotion, "subject_id": subject, "source_path": f"img{i}.png",
                      "split": "test" if i % 2 else "train"}
            w.add(records.make_still_example(sample, label_set=LABEL_SET, dataset="unit"), emotion, subject)
    return records.read_manifest(out), images


def write_sequence_set(out, plan, size=8, flow=False, bound=20.0):
    """plan: [(emotion, subject, video, num_frames)]; frame t is filled with grey level 10 t + 5 and,
    with `flow`, its flow is the constant vector (t - 2, -t / 2) pixels."""
    with records.ShardedWriter(out, kind="sequence", dataset="unit", label_set=LABEL_SET, records_per_shard=2) as w:
        for emotion, subject, video, n in plan:
            frames = np.stack([np.full((size, size, 1), frame_value(t), np.uint8) for t in range(n)])
            flows = np.stack([np.broadcast_to(np.array([t - 2.0, -t / 2.0], np.float32), (size, size, 2)) for t in range(n)]) if flow else None
            sample = {"frames": frames, "emotion": emotion, "subject_id": subject, "sequence_id": video}
            w.add(records.make_sequence_example(sample, label_set=LABEL_SET, dataset="unit", flow=flows, flow_bound=bound),
                  emotion, subject)
    return records.read_manifest(out)


def all_batches(ds):
    """Concatenates every batch of a (x, y[, meta]) dataset into NumPy."""
    parts = list(ds.as_numpy_iterator())
    def cat(items):
        if isinstance(items[0], dict):
            return {k: cat([i[k] for i in items]) for k in items[0]}
        return np.concatenate(items)
    return tuple(cat([p[i] for p in parts]) for i in range(len(parts[0])))


# --- decode / augment: eager == tf.data.map -------------------------------------------------------


@pytest.mark.parametrize("channels_in, channels_out", [(1, 1), (1, 3), (3, 3), (3, 1)])
def test_decode_image_eager_and_in_map_agree(channels_in, channels_out):
    image = np.random.default_rng(0).integers(0, 256, size=(12, 12, channels_in), dtype=np.uint8)
    encoded = tf.io.encode_png(image)
    eager = pipeline.decode_image(encoded, channels_out, 12).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(encoded).map(lambda e: pipeline.decode_image(e, channels_out, 12)))).numpy()
    np.testing.assert_array_equal(eager, mapped)
    assert eager.dtype == np.float32 and eager.shape == (12, 12, channels_out)
    if channels_in == channels_out:
        np.testing.assert_array_equal(eager, image.astype(np.float32))  # same size: the same pixels
    small = pipeline.decode_image(encoded, channels_out, 7).numpy()
    assert small.shape == (7, 7, channels_out) and small.min() >= 0 and small.max() <= 255


def test_augment_image_eager_and_in_map_agree():
    image = tf.constant(np.random.default_rng(1).uniform(0, 255, size=(16, 16, 3)).astype(np.float32))
    seed = tf.constant([3, 7], tf.int64)
    eager = pipeline.augment_image(image, seed).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors((image, seed)).map(pipeline.augment_image))).numpy()
    np.testing.assert_allclose(eager, mapped, atol=1e-4)
    assert eager.shape == (16, 16, 3) and eager.min() >= 0 and eager.max() <= 255
    other = pipeline.augment_image(image, tf.constant([4, 7], tf.int64)).numpy()
    assert not np.allclose(eager, other)  # the seed matters


# --- still_dataset -----------------------------------------------------------------------------


PLAN = [("happiness", "a"), ("anger", "b"), ("fear", "c"), ("neutral", "a"), ("surprise", "c"), ("sadness", "b"), ("disgust", "a")]


def test_still_dataset_shapes_dtypes_and_values(tmp_path):
    manifest, images = write_still_set(tmp_path, PLAN)
    ds = pipeline.still_dataset(manifest, image_size=10, channels=1, batch_size=4)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [4, 3]
    for x, y in batches:
        assert x.dtype == tf.float32 and y.dtype == tf.int32
        assert x.shape[1:] == (10, 10, 1)
    x, y, meta = all_batches(pipeline.still_dataset(manifest, image_size=10, channels=1, batch_size=4, with_meta=True))
    assert x.min() >= 0 and x.max() <= 255 and x.max() > 1  # raw pixels, not rescaled to [0, 1]
    # Shards are interleaved, so records are matched back by their source path.
    order = [int(s[3:-4]) for s in meta["source"].astype(str)]
    assert sorted(order) == list(range(len(PLAN)))
    np.testing.assert_array_equal(x, np.stack([images[i] for i in order]).astype(np.float32))
    np.testing.assert_array_equal(y, [NAMES.index(PLAN[i][0]) for i in order])


def test_still_dataset_resizes_and_converts_channels(tmp_path):
    manifest, _ = write_still_set(tmp_path, PLAN, size=20, channels=1)
    x, _ = all_batches(pipeline.still_dataset(manifest, image_size=16, channels=3, batch_size=8))
    assert x.shape == (len(PLAN), 16, 16, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grey source -> three equal channels


@pytest.mark.parametrize("subjects", [["a"], ["a", "c"], ["b", "c", "zz"]])
def test_still_dataset_keeps_only_requested_subjects(tmp_path, subjects):
    manifest, images = write_still_set(tmp_path, PLAN)
    x, y, meta = all_batches(pipeline.still_dataset(manifest, image_size=10, channels=1, batch_size=3, subjects=subjects, with_meta=True))
    order = [int(s[3:-4]) for s in meta["source"].astype(str)]
    assert sorted(order) == [i for i, (_, s) in enumerate(PLAN) if s in subjects]
    assert list(meta["subject"].astype(str)) == [PLAN[i][1] for i in order]
    np.testing.assert_array_equal(y, [NAMES.index(PLAN[i][0]) for i in order])
    np.testing.assert_array_equal(x, np.stack([images[i] for i in order]).astype(np.float32))


def test_still_dataset_selects_an_official_split(tmp_path):
    manifest, _ = write_still_set(tmp_path, PLAN)
    _, y, meta = all_batches(pipeline.still_dataset(manifest, image_size=10, channels=1, batch_size=8, split_name="test",
                                                    with_meta=True))
    assert sorted(meta["source"].astype(str)) == [f"img{i}.png" for i in range(1, len(PLAN), 2)]
    assert sorted(y.tolist()) == sorted(NAMES.index(PLAN[i][0]) for i in range(1, len(PLAN), 2))


def test_still_dataset_training_augments_but_keeps_shape_and_range(tmp_path):
    manifest, images = write_still_set(tmp_path, PLAN, size=16)
    x, y = all_batches(pipeline.still_dataset(manifest, image_size=16, channels=1, batch_size=8, training=True, seed=3))
    assert x.shape == (len(PLAN), 16, 16, 1)
    assert x.min() >= 0 and x.max() <= 255
    assert sorted(y.tolist()) == sorted(NAMES.index(e) for e, _ in PLAN)


def test_empty_subject_list_is_refused(tmp_path):
    manifest, _ = write_still_set(tmp_path, PLAN)
    with pytest.raises(ValueError, match="empty"):
        pipeline.still_dataset(manifest, image_size=10, channels=1, batch_size=2, subjects=[])


def test_still_dataset_on_prepared_synthfer(still_data):
    manifest = records.read_manifest(still_data)
    subjects = pipeline.subjects_of(manifest)
    assert subjects == [f"synth{k:04d}" for k in range(6)]
    x, y, meta = all_batches(pipeline.still_dataset(manifest, image_size=32, channels=1, batch_size=64,
                                                    subjects=subjects[:2], with_meta=True))
    assert x.shape == (2 * 35, 32, 32, 1)
    assert set(meta["subject"].astype(str)) == set(subjects[:2])
    assert np.bincount(y, minlength=7).tolist() == [10] * 7


# --- clips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, t, stride, expected", [
    (8, 8, 2, [0]), (13, 8, 2, [0, 2, 4]), (14, 8, 2, [0, 2, 4, 6]), (20, 8, 2, list(range(0, 13, 2))),
    (5, 8, 2, [0]), (1, 8, 2, [0]), (10, 4, 3, [0, 3, 6]), (9, 1, 1, list(range(9))),
])
def test_clip_starts(n, t, stride, expected):
    assert pipeline.clip_starts_np(n, t, stride).tolist() == expected
    assert pipeline.clip_starts(tf.constant(n), t, stride).numpy().tolist() == expected
    mapped = next(iter(tf.data.Dataset.from_tensors(tf.constant(n)).map(lambda k: pipeline.clip_starts(k, t, stride))))
    assert mapped.numpy().tolist() == expected


SEQUENCES = [("happiness", "a", "a_happy", 14), ("anger", "b", "b_angry", 5), ("fear", "c", "c_fear", 9)]


def test_clip_windows_hold_consecutive_frames(tmp_path):
    manifest = write_sequence_set(tmp_path, SEQUENCES)
    x, y, meta = all_batches(pipeline.clip_dataset(manifest, image_size=8, channels=1, batch_size=3, clip_length=8,
                                                   clip_stride=2, with_meta=True))
    videos = meta["video"].astype(str)
    expected_starts = {"a_happy": [0, 2, 4, 6], "b_angry": [0], "c_fear": [0]}
    for video, starts in expected_starts.items():  # every clip names its video; a video's clips come in order
        assert meta["start"][videos == video].tolist() == starts
    assert len(videos) == 6
    assert x.shape == (len(videos), 8, 8, 8, 1)
    for clip, video, start, label, subject in zip(x, videos, meta["start"], y, meta["subject"].astype(str)):
        emotion, subj, _, n = next(s for s in SEQUENCES if s[2] == video)
        assert subject == subj and label == NAMES.index(emotion)
        frames = [min(start + i, n - 1) for i in range(8)]  # short sequences repeat their last frame
        np.testing.assert_array_equal(clip[:, 0, 0, 0], [frame_value(f) for f in frames])
        assert np.all(clip == clip[:, :1, :1, :])  # each frame is one grey level


def test_short_sequence_gives_one_padded_clip(tmp_path):
    manifest = write_sequence_set(tmp_path, [("anger", "b", "short", 3)])
    x, y, meta = all_batches(pipeline.clip_dataset(manifest, image_size=8, channels=1, batch_size=4, clip_length=8,
                                                   clip_stride=2, with_meta=True))
    assert x.shape == (1, 8, 8, 8, 1)
    np.testing.assert_array_equal(x[0, :, 0, 0, 0], [frame_value(t) for t in (0, 1, 2, 2, 2, 2, 2, 2)])
    assert meta["video"].astype(str).tolist() == ["short"]


def test_longest_sequence_of_a_selection(tmp_path):
    manifest = write_sequence_set(tmp_path, [("anger", "a", "v1", 3), ("fear", "a", "v2", 9), ("anger", "b", "v3", 5)])
    assert pipeline.longest_sequence(manifest) == 9
    assert pipeline.longest_sequence(manifest, subjects=["b"]) == 5
    assert pipeline.longest_sequence(manifest, subjects=["c"]) == 0


def test_clip_dataset_without_meta_and_subject_selection(tmp_path):
    manifest = write_sequence_set(tmp_path, SEQUENCES)
    batch = next(iter(pipeline.clip_dataset(manifest, image_size=6, channels=3, batch_size=8, clip_length=4, clip_stride=4,
                                           subjects=["a", "c"])))
    assert len(batch) == 2
    x, y = batch
    assert x.shape == (3 + 2, 4, 6, 6, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert sorted(y.numpy().tolist()) == sorted([NAMES.index("happiness")] * 3 + [NAMES.index("fear")] * 2)


def test_clip_dataset_refuses_bad_window():
    with pytest.raises(ValueError, match="clip_length"):
        pipeline.clip_dataset({}, image_size=8, channels=1, batch_size=1, clip_length=0)


def test_flow_stream_shapes_and_values(tmp_path):
    bound = 20.0
    manifest = write_sequence_set(tmp_path, [("surprise", "a", "v", 6)], flow=True, bound=bound)
    x, y, meta = all_batches(pipeline.clip_dataset(manifest, image_size=8, channels=1, batch_size=4, clip_length=4,
                                                   clip_stride=2, streams=("rgb", "flow"), with_meta=True))
    assert set(x) == {"rgb", "flow"}
    assert x["rgb"].shape == (2, 4, 8, 8, 1)
    assert x["flow"].shape == (2, 4, 8, 8, 2) and x["flow"].dtype == np.float32
    for clip, start in zip(x["flow"], meta["start"]):
        for i, frame in enumerate(clip):
            t = start + i
            np.testing.assert_allclose(frame[..., 0], t - 2.0, atol=bound / 255 + 1e-4)
            np.testing.assert_allclose(frame[..., 1], -t / 2.0, atol=bound / 255 + 1e-4)


def test_flow_stream_on_prepared_synthfer(sequence_data):
    manifest = records.read_manifest(sequence_data)
    ds = pipeline.clip_dataset(manifest, image_size=32, channels=1, batch_size=4, clip_length=8, clip_stride=2,
                               streams=("rgb", "flow"), subjects=["synth0000"])
    x, y = next(iter(ds))
    assert x["rgb"].shape == (4, 8, 32, 32, 1)
    assert x["flow"].shape == (4, 8, 32, 32, 2)
    flow = x["flow"].numpy()
    assert np.all(np.abs(flow) <= manifest["flow_bound"] + 1e-3)


def test_flow_stream_without_flow_fails_loudly(tmp_path):
    manifest = write_sequence_set(tmp_path, [("surprise", "a", "v", 6)], flow=False)
    ds = pipeline.clip_dataset(manifest, image_size=8, channels=1, batch_size=4, clip_length=4, streams=("rgb", "flow"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="--flow"):
        next(iter(ds))


def test_clip_dataset_on_prepared_synthfer_counts_clips(sequence_data):
    manifest = records.read_manifest(sequence_data)
    x, y, meta = all_batches(pipeline.clip_dataset(manifest, image_size=16, channels=1, batch_size=64, clip_length=8,
                                                   clip_stride=2, subjects=["synth0001"], with_meta=True))
    videos = meta["video"].astype(str)
    assert len(set(videos)) == 7 and all(v.startswith("synth0001_") for v in videos)
    # Per video: one clip per start 0, 2, ... <= num_frames - 8, in order.
    for video in set(videos):
        starts = meta["start"][videos == video]
        assert starts[0] == 0 and np.all(np.diff(starts) == 2)
        assert len(set(y[videos == video])) == 1
    assert x.shape[1:] == (8, 16, 16, 1)


# --- training streams of epochs (what `train` and `train --resume` feed to fit) ------------------


def epoch_batches(ds, batches_per_epoch):
    batches = list(ds.as_numpy_iterator())
    assert len(batches) % batches_per_epoch == 0
    return [batches[i : i + batches_per_epoch] for i in range(0, len(batches), batches_per_epoch)]


def test_still_training_stream_covers_every_epoch_and_resumes_exactly(tmp_path):
    manifest, _ = write_still_set(tmp_path, PLAN, size=12)
    common = dict(image_size=12, channels=1, batch_size=3, training=True, seed=5, with_meta=True, epochs=3)
    full = epoch_batches(pipeline.still_dataset(manifest, **common), 3)  # ceil(7 / 3) batches per epoch
    assert len(full) == 3
    for epoch in full:
        assert sorted(s for b in epoch for s in b[2]["source"].astype(str)) == [f"img{i}.png" for i in range(len(PLAN))]
    order = [[s for b in epoch for s in b[2]["source"].astype(str)] for epoch in full]
    pixels = [np.concatenate([b[0] for b in epoch]) for epoch in full]
    assert order[0] != order[1] or not np.array_equal(pixels[0], pixels[1])  # each epoch is shuffled/augmented anew
    resumed = epoch_batches(pipeline.still_dataset(manifest, **common, start_epoch=1), 3)
    assert len(resumed) == 2
    for a, b in zip(full[1:], resumed):  # a resumed run sees exactly the batches of an uninterrupted one
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x[0], y[0])
            np.testing.assert_array_equal(x[1], y[1])


def test_clip_training_stream_resumes_exactly(tmp_path):
    manifest = write_sequence_set(tmp_path, SEQUENCES)
    common = dict(image_size=8, channels=1, batch_size=2, clip_length=4, clip_stride=2, training=True, seed=1,
                  with_meta=True, epochs=2)
    # Clips per epoch: 14 frames -> 6, 5 frames -> 1, 9 frames -> 3; 10 clips in 5 batches.
    full = epoch_batches(pipeline.clip_dataset(manifest, **common), 5)
    assert len(full) == 2
    for epoch in full:
        assert sorted(v for b in epoch for v in b[2]["video"].astype(str)) == sorted(["a_happy"] * 6 + ["b_angry"] + ["c_fear"] * 3)
    resumed = epoch_batches(pipeline.clip_dataset(manifest, **common, start_epoch=1), 5)
    for x, y in zip(full[1], resumed[0]):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[2]["video"], y[2]["video"])


# --- augmentation: one jitter per clip, the flow following the frames; `augment=False` turns it off --------


def _clip_and_flow(t=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.uniform(40, 200, size=(t, size, size, 1)).astype(np.float32)
    flow = rng.uniform(-3, 3, size=(t, size, size, 2)).astype(np.float32)
    return frames, flow


def test_transform_clip_mirrors_frames_and_negates_the_flow_x():
    frames, flow = _clip_and_flow()
    pad = tf.constant(1)
    got, got_flow = pipeline.transform_clip(frames, flip=tf.constant(True), delta=0.0, factor=1.0,
                                            offset=tf.constant([1, 1]), pad=pad, flow=flow)  # offset = pad: no shift
    np.testing.assert_allclose(got.numpy(), frames[:, :, ::-1], atol=1e-4)
    np.testing.assert_allclose(got_flow.numpy()[..., 0], -flow[:, :, ::-1, 0], atol=1e-6)
    np.testing.assert_allclose(got_flow.numpy()[..., 1], flow[:, :, ::-1, 1], atol=1e-6)


def test_transform_clip_shifts_frames_and_flow_together_and_jitters_pixels_only():
    frames, _ = _clip_and_flow()
    flow = np.concatenate([frames, -frames], axis=-1) / 100.0  # the flow carries the frames' pattern
    got, got_flow = pipeline.transform_clip(frames, flip=tf.constant(False), delta=0.0, factor=1.0,
                                            offset=tf.constant([0, 2]), pad=tf.constant(1), flow=flow)
    np.testing.assert_allclose(got_flow.numpy()[..., :1] * 100.0, got.numpy(), atol=1e-3)
    np.testing.assert_allclose(got.numpy()[:, 1:, :-1], frames[:, :-1, 1:], atol=1e-4)  # one row down, one column left
    bright, bright_flow = pipeline.transform_clip(frames, flip=tf.constant(False), delta=10.0, factor=1.0,
                                                  offset=tf.constant([1, 1]), pad=tf.constant(1), flow=flow)
    np.testing.assert_allclose(bright.numpy(), frames + 10.0, atol=1e-3)
    np.testing.assert_allclose(bright_flow.numpy(), flow, atol=1e-6)


def test_augment_clip_gives_every_frame_the_same_jitter():
    frame = np.random.default_rng(1).uniform(0, 255, size=(1, 16, 16, 1)).astype(np.float32)
    clip = np.repeat(frame, 5, axis=0)
    changed = 0
    for s in range(6):
        got = pipeline.augment_clip(clip, tf.constant([s, 7], tf.int64)).numpy()
        assert got.shape == clip.shape and got.min() >= 0 and got.max() <= 255
        np.testing.assert_allclose(got, np.repeat(got[:1], 5, axis=0), atol=1e-4)  # the same on every frame
        changed += not np.allclose(got, clip, atol=1e-3)
    assert changed >= 5


def test_augment_clip_eager_and_in_map_agree():
    frames, flow = _clip_and_flow(size=16)
    seed = tf.constant([3, 9], tf.int64)
    eager = pipeline.augment_clip(frames, seed, flow=flow)
    mapped = next(iter(tf.data.Dataset.from_tensors((frames, seed, flow)).map(
        lambda f, s, fl: pipeline.augment_clip(f, s, flow=fl))))
    for a, b in zip(eager, mapped):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)


def _clips_by_key(x, meta):
    keys = [f"{v}/{s}" for v, s in zip(meta["video"].astype(str), meta["start"])]
    return {k: c for k, c in zip(keys, x)}


@pytest.mark.parametrize("use_flow", [False, True])
def test_clip_training_augments_unless_augment_is_false(tmp_path, use_flow):
    manifest = write_sequence_set(tmp_path, SEQUENCES, size=16, flow=use_flow)
    common = dict(image_size=16, channels=1, batch_size=4, clip_length=4, clip_stride=2, with_meta=True,
                  streams=("rgb", "flow") if use_flow else ("rgb",))
    plain_x, _, plain_meta = all_batches(pipeline.clip_dataset(manifest, **common))
    off_x, _, off_meta = all_batches(pipeline.clip_dataset(manifest, **common, training=True, seed=2, augment=False))
    on_x, _, on_meta = all_batches(pipeline.clip_dataset(manifest, **common, training=True, seed=2))
    for key in (["rgb", "flow"] if use_flow else [None]):
        pick = (lambda x: x[key]) if key else (lambda x: x)
        plain, off, on = (_clips_by_key(pick(x), m) for x, m in ((plain_x, plain_meta), (off_x, off_meta), (on_x, on_meta)))
        assert set(plain) == set(off) == set(on)
        for k in plain:
            np.testing.assert_array_equal(off[k], plain[k])  # augment=False: shuffled, not jittered
        if key != "flow":
            assert sum(not np.allclose(on[k], plain[k]) for k in plain) >= len(plain) // 2


def test_still_training_without_augment_gives_the_decoded_images(tmp_path):
    manifest, images = write_still_set(tmp_path, PLAN, size=12)
    x, _, meta = all_batches(pipeline.still_dataset(manifest, image_size=12, channels=1, batch_size=3, training=True,
                                                    augment=False, seed=4, with_meta=True))
    for image, source in zip(x, meta["source"].astype(str)):
        np.testing.assert_array_equal(image, images[int(source[3:-4])].astype(np.float32))
