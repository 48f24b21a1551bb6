"""Classification report, largest confusions and the per-video majority vote, on hand-made cases."""

import numpy as np
import pytest

from fer_keras.evaluation.metrics import classification_report, largest_confusions, majority_vote

NAMES = ["anger", "fear", "happiness", "surprise"]


def test_classification_report_hand_made():
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2]
    predictions = [0, 0, 1, 2, 1, 1, 2, 0, 2]
    report = classification_report(labels, predictions, NAMES)
    assert report["num_samples"] == 9
    assert report["accuracy"] == pytest.approx(6 / 9)
    assert report["per_class_accuracy"] == {
        "anger": pytest.approx(0.5), "fear": pytest.approx(1.0), "happiness": pytest.approx(2 / 3), "surprise": None
    }
    # Mean over the classes that occur: surprise has no samples and is left out, not counted as 0.
    assert report["mean_class_accuracy"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert report["support"] == {"anger": 4, "fear": 2, "happiness": 3, "surprise": 0}
    assert report["confusion_matrix"] == [
        [2, 1, 1, 0],
        [0, 2, 0, 0],
        [1, 0, 2, 0],
        [0, 0, 0, 0],
    ]


def test_classification_report_rows_are_truth():
    report = classification_report([0, 0, 0], [3, 3, 3], NAMES)
    assert report["confusion_matrix"][0][3] == 3 and report["confusion_matrix"][3][0] == 0
    assert report["accuracy"] == 0.0


def test_classification_report_is_plain_json_types():
    import json

    report = classification_report(np.array([1, 2]), np.array([1, 1]), NAMES)
    assert json.loads(json.dumps(report)) == report


def test_classification_report_empty():
    report = classification_report([], [], NAMES)
    assert report["accuracy"] is None and report["mean_class_accuracy"] is None and report["num_samples"] == 0


def test_largest_confusions_ordering():
    cm = [
        [9, 2, 5, 0],
        [3, 7, 0, 5],
        [0, 1, 8, 0],
        [3, 0, 0, 4],
    ]
    # Largest count first; equal counts ordered by truth name, then predicted name; diagonal and zeros never.
    assert largest_confusions(cm, NAMES, top=3) == [("anger", "happiness", 5), ("fear", "surprise", 5), ("fear", "anger", 3)]
    everything = largest_confusions(cm, NAMES, top=100)
    assert everything == [
        ("anger", "happiness", 5), ("fear", "surprise", 5), ("fear", "anger", 3), ("surprise", "anger", 3),
        ("anger", "fear", 2), ("happiness", "fear", 1),
    ]
    assert all(type(n) is int for _, _, n in everything)


def test_largest_confusions_none_when_perfect():
    assert largest_confusions(np.diag([3, 1, 2, 5]), NAMES) == []


def test_majority_vote_hand_made():
    video_ids = ["v2", "v2", "v2", "v1", "v1", "v3"]
    probabilities = np.array([
        [0.7, 0.1, 0.1, 0.1],  # v2: votes 0, 0, 2 -> 0
        [0.6, 0.2, 0.1, 0.1],
        [0.0, 0.0, 1.0, 0.0],
        [0.1, 0.6, 0.2, 0.1],  # v1: votes 1, 3 -> tie; summed probability 0.7 (class 1) < 1.0 (class 3) -> 3
        [0.1, 0.1, 0.0, 0.8],
        [0.2, 0.3, 0.4, 0.1],  # v3: one clip -> 2
    ])
    labels = [0, 0, 0, 3, 3, 1]
    videos, predictions, video_labels = majority_vote(video_ids, probabilities, labels)
    assert videos == ["v2", "v1", "v3"]  # first-seen order
    assert predictions.tolist() == [0, 3, 2]
    assert video_labels.tolist() == [0, 3, 1]


def test_majority_vote_tie_goes_to_larger_summed_probability_not_lower_index():
    # Two clips vote 0, two vote 2; class 2 has the larger summed probability although 0 < 2.
    probabilities = np.array([
        [0.40, 0.35, 0.25, 0.0],
        [0.40, 0.30, 0.30, 0.0],
        [0.05, 0.05, 0.90, 0.0],
        [0.30, 0.05, 0.65, 0.0],
    ])
    _, predictions, video_labels = majority_vote(["v"] * 4, probabilities)
    assert predictions.tolist() == [2]
    assert video_labels is None
    # The most-voted class wins even when another class has a larger summed probability.
    probabilities = np.array([[0.5, 0.4, 0.1, 0.0], [0.5, 0.4, 0.1, 0.0], [0.0, 1.0, 0.0, 0.0]])
    _, predictions, _ = majority_vote(["v"] * 3, probabilities)
    assert predictions.tolist() == [0]


def test_majority_vote_rejects_mixed_labels_in_a_video():
    with pytest.raises(ValueError, match="different labels"):
        majority_vote(["v", "v"], np.eye(4)[:2], labels=[0, 1])


def test_majority_vote_accepts_byte_video_ids():
    """Clip datasets give video ids as bytes (tf.string -> NumPy)."""
    ids = np.array([b"a", b"b", b"a"], dtype=object)
    videos, predictions, _ = majority_vote(ids, np.eye(4)[[1, 2, 1]])
    assert videos == [b"a", b"b"] and predictions.tolist() == [1, 2]


def test_mcnemar_exact_is_the_two_sided_binomial_tail():
    from fer_keras.evaluation.metrics import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence either way
    assert mcnemar_exact(5, 0) == mcnemar_exact(0, 5) == 2 / 2**5
    assert mcnemar_exact(10, 3) == pytest.approx(2 * (1 + 13 + 78 + 286) / 2**13)  # C(13, 0..3)
    assert mcnemar_exact(4, 4) == 1.0  # the two-sided tail of an even split is capped at 1
    assert 0.0 < mcnemar_exact(3000, 2500) < 1e-9  # thousands of test images: no float overflow
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_f1_scores_match_sklearn_on_the_classes_present():
    from sklearn.metrics import f1_score

    from fer_keras.evaluation.metrics import classification_report

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 200)  # class 5 of 6 never occurs in the test set
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 6, 200))
    report = classification_report(labels, predictions, [f"c{i}" for i in range(6)])
    present = np.arange(5)
    assert report["macro_f1"] == pytest.approx(f1_score(labels, predictions, labels=present, average="macro"))
    assert report["weighted_f1"] == pytest.approx(f1_score(labels, predictions, labels=present, average="weighted"))
    assert report["per_class_f1"]["c5"] is None
    assert report["per_class_f1"]["c0"] == pytest.approx(f1_score(labels, predictions, labels=[0], average="macro"))
