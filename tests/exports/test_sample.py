"""The calibration and parity samples of an export are drawn from the whole split, not its first samples."""

import numpy as np
import pytest
import tensorflow as tf

from fer_keras.exports.tflite import sample, sample_videos, video_agreement


def _ordered(n, batch=64, as_dict=False):
    """A batched (x, y) dataset in a fixed order, as a subject-ordered split reads: x = y = the sample's index."""
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(n)
    return tf.data.Dataset.from_tensor_slices(({"images": x, "flow": -x} if as_dict else x, y)).batch(batch)


def test_the_sample_spans_the_whole_dataset_in_its_order():
    x, y = sample(_ordered(2000), 200)
    assert x.shape == (200, 3) and y.shape == (200,)
    assert len(set(y.tolist())) == 200 and np.all(np.diff(y) > 0)  # no repeats, in the dataset's order
    np.testing.assert_array_equal(x[:, 0], y)  # inputs stay with their labels
    # Uniform over the 2000: each quarter holds about 50 of the 200 (binomial sd 6).
    counts = np.bincount(y // 500, minlength=4)
    assert counts.min() >= 25 and counts.max() <= 75, counts


def test_the_sample_is_the_same_every_time_and_changes_with_the_seed():
    first, again, other = sample(_ordered(1000), 50)[1], sample(_ordered(1000), 50)[1], sample(_ordered(1000), 50, seed=1)[1]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_small_dataset_gives_every_sample():
    x, y = sample(_ordered(30, batch=8), 200)
    np.testing.assert_array_equal(y, np.arange(30))


def test_several_inputs_are_sampled_together():
    x, y = sample(_ordered(500, as_dict=True), 40)
    assert set(x) == {"images", "flow"} and x["images"].shape == (40, 3)
    np.testing.assert_array_equal(x["images"][:, 0], y)
    np.testing.assert_array_equal(x["flow"][:, 0], -y)


def test_an_empty_dataset_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        sample(_ordered(0), 10)


def test_a_byte_budget_caps_the_sample():
    x, y = sample(_ordered(1000), 500, max_bytes=100 * 3 * 4)  # 100 samples of three float32 values
    assert x.shape == (100, 3) and len(set(y.tolist())) == 100
    assert y.max() >= 500  # still drawn from the whole dataset


def _videos(sizes, batch=7, as_dict=False):
    """A batched (x, y, meta) dataset of clips grouped by video, as an unshuffled clip split reads.

    Video i has sizes[i] clips; every clip's x is its running index, y its video's label (i % 7).
    """
    index = np.arange(sum(sizes), dtype=np.float32)
    video = np.repeat(np.arange(len(sizes)), sizes)
    x = index[:, None] * np.ones((1, 3), np.float32)
    meta = {"video": np.array([f"v{v:04d}".encode() for v in video]), "start": np.zeros(len(video), np.int32)}
    inputs = {"rgb": x, "flow": -x} if as_dict else x
    return tf.data.Dataset.from_tensor_slices((inputs, (video % 7).astype(np.int32), meta)).batch(batch)


def test_whole_videos_are_drawn_from_the_whole_split_within_the_clip_budget():
    sizes = [3 + (i % 9) for i in range(400)]  # 2,780 clips, videos cut across batches of 7
    x, y, videos = sample_videos(_videos(sizes), 600)
    assert len(x) == len(y) == len(videos) <= 600
    assert len(x) >= 600 - max(sizes)  # filled up to the budget, less at most one video
    ids = [int(v.decode()[1:]) for v in videos]
    chosen = sorted(set(ids))
    for v in chosen:  # every clip of every chosen video, and nothing else
        assert ids.count(v) == sizes[v]
    np.testing.assert_array_equal(x[:, 0], np.sort(x[:, 0]))  # in the dataset's order
    np.testing.assert_array_equal(y, np.array(ids) % 7)  # labels stay with their clips
    # Spread over the split: each quarter of the 400 videos gives about a quarter of the ~86 chosen.
    counts = np.bincount(np.array(chosen) // 100, minlength=4)
    assert counts.min() >= len(chosen) / 8, counts


def test_the_video_draw_is_the_same_every_time_and_changes_with_the_seed():
    sizes = [5] * 200
    first, again = sample_videos(_videos(sizes), 100)[2], sample_videos(_videos(sizes), 100)[2]
    other = sample_videos(_videos(sizes), 100, seed=1)[2]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_video_draw_takes_several_inputs_and_a_byte_budget():
    x, y, videos = sample_videos(_videos([4] * 100, as_dict=True), 1000, max_bytes=40 * 3 * 4 * 2)
    assert set(x) == {"rgb", "flow"} and len(y) == 40  # 40 clips of two three-value float32 inputs
    np.testing.assert_array_equal(x["flow"][:, 0], -x["rgb"][:, 0])
    with pytest.raises(ValueError, match="empty"):
        sample_videos(_videos([]), 10)


def test_a_video_longer_than_the_budget_is_still_measured():
    x, y, videos = sample_videos(_videos([50]), 10)
    assert len(videos) == 50 and set(videos.tolist()) == {b"v0000"}


def test_video_agreement_compares_the_majority_votes():
    videos = np.array(["a"] * 3 + ["b"] * 3 + ["c"] * 2)
    ref = np.eye(3)[[0, 0, 1, 2, 2, 2, 1, 1]]
    # Video a: one clip flips (1 -> 2) but the vote stays 0; b: two of three flip to 0, the vote with them;
    # c: its two clips agree. So clips agree 5/8 and videos 2/3.
    got = np.eye(3)[[0, 0, 2, 0, 0, 2, 1, 1]]
    result = video_agreement(ref, got, videos)
    assert result["videos"] == 3 and result["top1_agreement"] == pytest.approx(2 / 3)
    low, high = result["top1_agreement_95ci"]
    assert low < 2 / 3 < high
