"""tf.data pipelines over prepared TFRecords.

interleave shards -> parse -> select (subjects or official split) -> decode -> resize ->
augment (training with `augment`; a clip's frames all get the same jitter) -> batch -> prefetch.

Images leave the pipeline as float32 pixel values in [0, 255]; each model rescales inside
itself, so exported models take the same raw pixels an app has.

Sequences are cut into clip windows of `clip_length` frames with `clip_stride` between starts
(defaults 8 and 2: consecutive clips overlap by 6 frames, paper 001 section 3). A sequence
shorter than one clip is padded by repeating its last frame. Every clip carries its video id
so clip predictions can be majority-voted per video.
"""

import numpy as np
import tensorflow as tf

from fer_keras.data import records

AUTOTUNE = tf.data.AUTOTUNE
# Training jitter, shared by stills (`augment_image`) and clips (`augment_clip`).
BRIGHTNESS_DELTA = 20.0  # grey levels, +-
CONTRAST_RANGE = (0.8, 1.2)


def _select_predicate(subjects=None, split_name=None):
    """A tf predicate on a parsed record: its subject is in `subjects` or its split is `split_name`."""
    if split_name is not None:
        name = tf.constant(split_name)
        return lambda r: tf.equal(r["split"], name)
    if subjects is None:
        return None
    if len(subjects) == 0:
        raise ValueError("subjects is empty: nothing to select")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(sorted(subjects)), tf.ones(len(subjects), tf.int64)),
        default_value=0,
    )
    return lambda r: tf.equal(table.lookup(r["subject"]), 1)


def _records(manifest, *, shuffle, seed):
    """Interleaved records of all shards; `seed` may be a tensor (one shuffle order per epoch)."""
    files = records.shard_paths(manifest)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
    return ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(4, len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def _epoch_seed(seed, epoch):
    """One seed per (run seed, epoch): epoch e's order never depends on epochs before it."""
    return int(seed) * 100003 + int(epoch)


def _over_epochs(one_epoch, training, epochs, start_epoch):
    """Epochs start_epoch..epochs-1 back to back, each built by `one_epoch(epoch)` (batched).

    A resumed run (start_epoch > 0) therefore sees exactly the batches an uninterrupted run
    sees from that epoch on. Without `epochs` the dataset is one pass (epoch 0's order).
    """
    if not training or epochs is None:
        return one_epoch(0)
    # Concatenated in Python: tf.data's shuffle takes its seed as a Python int, not a tensor.
    ds = one_epoch(start_epoch)
    for epoch in range(start_epoch + 1, epochs):
        ds = ds.concatenate(one_epoch(epoch))
    return ds


def decode_image(encoded, channels, image_size):
    """PNG/JPEG bytes -> float32 (S, S, channels) in [0, 255]."""
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, (image_size, image_size, channels))


def augment_image(image, seed):
    """Light photometric and geometric jitter; `seed` is a (2,) int tensor (stateless ops)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    image = tf.image.stateless_random_brightness(image, BRIGHTNESS_DELTA, seeds[1])
    image = tf.image.stateless_random_contrast(image, *CONTRAST_RANGE, seeds[2])
    size = tf.shape(image)[0]
    pad = _shift_pad(size)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seeds[3])
    return tf.clip_by_value(image, 0.0, 255.0)


def _shift_pad(size):
    """Reflect border of the random shift: 1/16 of the side, at least one pixel."""
    return tf.maximum(size // 16, 1)


def augment_clip(frames, seed, flow=None):
    """`augment_image`'s jitter for a clip: drawn once from `seed` and applied to every frame alike.

    A flip or shift that changed from frame to frame would add motion the face does not make.
    The flow stream, when given, follows the geometry: flipped (its x component negated) and
    shifted with the frames; brightness and contrast touch the pixels only.

    Args:
        frames: (T, S, S, C) float32 pixels in [0, 255].
        seed: (2,) int tensor (stateless ops).
        flow: optional (T, S, S, 2) float32 flow (dx, dy) in pixels per frame.

    Returns:
        The jittered frames, in [0, 255], or (frames, flow) when `flow` is given.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    pad = _shift_pad(tf.shape(frames)[1])
    flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
    delta = tf.random.stateless_uniform([], seeds[1], -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    factor = tf.random.stateless_uniform([], seeds[2], *CONTRAST_RANGE)
    offset = tf.random.stateless_uniform([2], seeds[3], minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    return transform_clip(frames, flip=flip, delta=delta, factor=factor, offset=offset, pad=pad, flow=flow)


def transform_clip(frames, *, flip, delta, factor, offset, pad, flow=None):
    """One jitter on every frame: mirror, brightness + `delta`, contrast x `factor`, shift within a `pad` reflect border.

    `offset` (row, column) in [0, 2 * pad] picks the crop of the padded frames; `pad` is the
    offset of no shift. See `augment_clip`.
    """
    size = tf.shape(frames)[1]

    def shift(x):
        padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        return padded[:, offset[0] : offset[0] + size, offset[1] : offset[1] + size]

    frames = tf.cond(flip, lambda: tf.reverse(frames, [2]), lambda: frames)
    frames = tf.image.adjust_contrast(frames + delta, factor)  # contrast about each frame's own mean
    frames = tf.clip_by_value(shift(frames), 0.0, 255.0)
    if flow is None:
        return frames
    flow = tf.cond(flip, lambda: tf.reverse(flow, [2]) * tf.constant([-1.0, 1.0]), lambda: flow)
    return frames, shift(flow)


def still_dataset(
    manifest,
    *,
    image_size,
    channels,
    batch_size,
    subjects=None,
    split_name=None,
    training=False,
    seed=0,
    with_meta=False,
    epochs=None,
    start_epoch=0,
    with_landmarks=False,
    augment=True,
):
    """Batches of (image, label), or (image, label, meta) with `with_meta`.

    Args:
        manifest: from `records.read_manifest`, kind "still".
        image_size, channels: output size; grey sources become RGB and back as asked.
        subjects: keep only these subject ids (or `split_name`: records whose split field equals it).
        training: shuffle, and augment when `augment` is true (`augment_image`).
        with_landmarks: the image becomes {"images": image, "landmarks": (68, 2) points} (zeros where
            a record has none); the landmarks are not augmented (landmark_arm aligns them anyway).
        epochs, start_epoch: with `training`, one stream of epochs start_epoch..epochs-1 whose
            order and augmentation depend only on (seed, epoch); pass steps_per_epoch to fit.
    """
    keep = _select_predicate(subjects, split_name)

    def one_epoch(epoch):
        epoch_seed = _epoch_seed(seed, epoch)
        ds = _records(manifest, shuffle=training, seed=epoch_seed).map(records.parse_still, num_parallel_calls=AUTOTUNE)
        if keep is not None:
            ds = ds.filter(keep)
        if training:
            ds = ds.shuffle(2048, seed=epoch_seed, reshuffle_each_iteration=False)

        def to_example(index, r):
            image = decode_image(r["image/encoded"], channels, image_size)
            if training and augment:
                image = augment_image(image, tf.stack([tf.constant(epoch_seed, tf.int64), index]))
            label = tf.cast(r["label"], tf.int32)
            if with_landmarks:
                image = {"images": image, "landmarks": r["landmarks"]}
            if with_meta:
                return image, label, {"subject": r["subject"], "source": r["source"]}
            return image, label

        ds = ds.enumerate().map(to_example, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=False)

    return _over_epochs(one_epoch, training, epochs, start_epoch).prefetch(AUTOTUNE)


def clip_starts(num_frames, clip_length, clip_stride):
    """Start indices of the clip windows of a sequence (tf); one window when it is too short."""
    last = tf.maximum(num_frames - clip_length, 0)
    return tf.range(0, last + 1, clip_stride)


def clip_starts_np(num_frames, clip_length, clip_stride):
    """NumPy twin of `clip_starts`, for reports and tests."""
    return np.arange(0, max(num_frames - clip_length, 0) + 1, clip_stride)


def _decode_frames(encoded, channels, image_size):
    return tf.map_fn(
        lambda e: decode_image(e, channels, image_size),
        encoded,
        fn_output_signature=tf.TensorSpec((image_size, image_size, channels), tf.float32),
    )


def clip_dataset(
    manifest,
    *,
    image_size,
    channels,
    batch_size,
    clip_length=8,
    clip_stride=2,
    subjects=None,
    split_name=None,
    training=False,
    seed=0,
    with_meta=False,
    streams=("rgb",),
    epochs=None,
    start_epoch=0,
    augment=True,
):
    """Batches of clips (B, T, S, S, C) and labels; with `with_meta` also {"video", "subject", "start"}.

    `streams` ("rgb", "flow"): with "flow" the input is a dict {"rgb": clips, "flow": (B, T, S, S, 2)}
    with the flow dequantised to pixels per frame. `training` shuffles, and with `augment` jitters
    each clip (`augment_clip`: one flip, brightness, contrast and shift for all its frames and its
    flow), drawn from (seed, epoch, position in the epoch) like the stills.
    """
    if clip_length < 1 or clip_stride < 1:
        raise ValueError(f"clip_length and clip_stride must be >= 1. Received: {clip_length}, {clip_stride}")
    keep = _select_predicate(subjects, split_name)
    use_flow = "flow" in streams

    def to_clips(r):
        frames = _decode_frames(r["frames/encoded"], channels, image_size)  # (N, S, S, C)
        n = tf.shape(frames)[0]
        pad = tf.maximum(clip_length - n, 0)
        frames = tf.concat([frames, tf.repeat(frames[-1:], pad, axis=0)], axis=0)
        starts = clip_starts(n, clip_length, clip_stride)
        windows = tf.map_fn(lambda s: frames[s : s + clip_length], starts, fn_output_signature=tf.float32)
        inputs = {"rgb": windows}
        if use_flow:
            encoded = r["flow/encoded"]
            tf.debugging.assert_equal(
                tf.shape(encoded)[0], n, message="this dataset has no optical flow; prepare it with --flow"
            )
            def decode_flow(e):
                # decode_png takes channels 0/1/3/4 only: 0 keeps the stored two (grey + alpha).
                q = tf.ensure_shape(tf.io.decode_png(e, channels=0), (None, None, 2))
                flow = records.dequantize_flow(q, r["flow_bound"])
                # Flow is in pixels of the stored frame: rescale the vectors with the frame.
                scale = tf.cast(image_size, tf.float32) / tf.cast(tf.shape(q)[1], tf.float32)
                return tf.image.resize(flow, (image_size, image_size)) * scale

            flow = tf.map_fn(decode_flow, encoded, fn_output_signature=tf.TensorSpec((image_size, image_size, 2), tf.float32))
            flow = tf.concat([flow, tf.repeat(flow[-1:], pad, axis=0)], axis=0)
            inputs["flow"] = tf.map_fn(lambda s: flow[s : s + clip_length], starts, fn_output_signature=tf.float32)
        count = tf.shape(starts)[0]
        labels = tf.fill([count], tf.cast(r["label"], tf.int32))
        meta = {"video": tf.fill([count], r["video"]), "subject": tf.fill([count], r["subject"]), "start": starts}
        return tf.data.Dataset.from_tensor_slices((inputs, labels, meta))

    def one_epoch(epoch):
        epoch_seed = _epoch_seed(seed, epoch)
        ds = _records(manifest, shuffle=training, seed=epoch_seed).map(records.parse_sequence, num_parallel_calls=AUTOTUNE)
        if keep is not None:
            ds = ds.filter(keep)
        ds = ds.flat_map(to_clips)
        if training:
            ds = ds.shuffle(1024, seed=epoch_seed, reshuffle_each_iteration=False)
        ds = ds.enumerate().map(
            lambda index, example: finish(*example, seed=tf.stack([tf.constant(epoch_seed, tf.int64), index])),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        return ds.batch(batch_size)

    def finish(inputs, label, meta, seed):
        inputs = {
            k: tf.ensure_shape(v, (clip_length, image_size, image_size, channels if k == "rgb" else 2))
            for k, v in inputs.items()
        }
        if training and augment:
            if use_flow:
                inputs["rgb"], inputs["flow"] = augment_clip(inputs["rgb"], seed, flow=inputs["flow"])
            else:
                inputs["rgb"] = augment_clip(inputs["rgb"], seed)
        x = inputs if use_flow else inputs["rgb"]
        return (x, label, meta) if with_meta else (x, label)

    return _over_epochs(one_epoch, training, epochs, start_epoch).prefetch(AUTOTUNE)


def count_examples(manifest, *, subjects=None, split_name=None, clip_length=8, clip_stride=2):
    """Examples one epoch yields: images for still data, clip windows for sequences."""
    if manifest["kind"] == "still" and split_name is None:
        counts = manifest["counts_per_subject"]
        return sum(counts.get(s, 0) for s in subjects) if subjects is not None else manifest["num_examples"]
    keep = _select_predicate(subjects, split_name)
    parse = records.parse_still if manifest["kind"] == "still" else records.parse_sequence
    ds = _records(manifest, shuffle=False, seed=0).map(parse, num_parallel_calls=AUTOTUNE)
    if keep is not None:
        ds = ds.filter(keep)
    if manifest["kind"] == "still":
        return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    sizes = ds.map(lambda r: tf.cast(tf.size(clip_starts(tf.cast(r["num_frames"], tf.int32), clip_length, clip_stride)), tf.int64))
    return int(sizes.reduce(tf.constant(0, tf.int64), lambda n, k: n + k))


def longest_sequence(manifest, *, subjects=None, split_name=None):
    """Frames in the longest sequence of the selection (0 when it holds none)."""
    keep = _select_predicate(subjects, split_name)
    ds = _records(manifest, shuffle=False, seed=0).map(records.parse_sequence, num_parallel_calls=AUTOTUNE)
    if keep is not None:
        ds = ds.filter(keep)
    lengths = ds.map(lambda r: tf.cast(r["num_frames"], tf.int64))
    return int(lengths.reduce(tf.constant(0, tf.int64), tf.maximum))


def official_subjects(manifest):
    """{split name: sorted subject ids} of a dataset's own split, read from its records (images not decoded)."""
    parse = records.parse_still if manifest["kind"] == "still" else records.parse_sequence
    pairs = _records(manifest, shuffle=False, seed=0).map(parse, num_parallel_calls=AUTOTUNE).map(
        lambda r: (r["split"], r["subject"]))
    sides = {}
    for split, subject in pairs.as_numpy_iterator():
        sides.setdefault(split.decode(), set()).add(subject.decode())
    return {name: sorted(subjects) for name, subjects in sides.items()}


def subjects_of(manifest):
    return sorted(manifest["counts_per_subject"])
