"""Classification metrics and the per-video majority vote of clip predictions (paper 001)."""

import math

import numpy as np
from sklearn.metrics import confusion_matrix


def classification_report(labels, predictions, class_names):
    """Accuracy, mean class accuracy, per-class accuracy and the confusion matrix (rows: truth)."""
    labels = np.asarray(labels, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    if len(labels):
        cm = confusion_matrix(labels, predictions, labels=np.arange(len(class_names)))
    else:  # sklearn refuses empty input
        cm = np.zeros((len(class_names), len(class_names)), dtype=int)
    support = cm.sum(axis=1)
    per_class = {
        name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)
    }
    present = [v for v in per_class.values() if v is not None]
    # F1 per class from the confusion matrix (0 where a class is never predicted or never right); macro: the mean
    # over the classes present in the test set, weighted: their mean weighted by support.
    right, predicted = np.diag(cm).astype(float), cm.sum(axis=0)
    f1 = np.divide(2 * right, support + predicted, out=np.zeros(len(cm)), where=(support + predicted) > 0)
    seen = support > 0
    return {
        "accuracy": float(np.mean(labels == predictions)) if len(labels) else None,
        "mean_class_accuracy": float(np.mean(present)) if present else None,
        "macro_f1": float(f1[seen].mean()) if seen.any() else None,
        "weighted_f1": float(np.average(f1[seen], weights=support[seen])) if seen.any() else None,
        "per_class_f1": {name: (float(f1[i]) if support[i] else None) for i, name in enumerate(class_names)},
        "per_class_accuracy": per_class,
        "support": {name: int(support[i]) for i, name in enumerate(class_names)},
        "confusion_matrix": cm.tolist(),
        "num_samples": int(len(labels)),
    }


def largest_confusions(cm, class_names, top=3):
    """The `top` largest off-diagonal cells as (truth, predicted, count), largest first."""
    cm = np.asarray(cm)
    cells = [(cm[i, j], class_names[i], class_names[j]) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(t, p, int(n)) for n, t, p in cells[:top]]


def majority_vote(video_ids, probabilities, labels=None):
    """One prediction per video: the most frequent clip argmax; ties go to the larger summed probability.

    Returns (videos, predictions, video_labels): videos in first-seen order; video_labels is
    None when `labels` is None (and must be constant per video otherwise).
    """
    video_ids = np.asarray(video_ids)
    probabilities = np.asarray(probabilities)
    clip_pred = probabilities.argmax(axis=1)
    videos = list(dict.fromkeys(video_ids.tolist()))
    predictions, video_labels = [], []
    for video in videos:
        rows = video_ids == video
        votes = np.bincount(clip_pred[rows], minlength=probabilities.shape[1])
        tied = np.flatnonzero(votes == votes.max())
        summed = probabilities[rows].sum(axis=0)
        predictions.append(int(tied[np.argmax(summed[tied])]))
        if labels is not None:
            values = np.unique(np.asarray(labels)[rows])
            if len(values) != 1:
                raise ValueError(f"video {video!r} has clips with different labels {values.tolist()}")
            video_labels.append(int(values[0]))
    return videos, np.array(predictions), (np.array(video_labels) if labels is not None else None)


def mcnemar_exact(only_first_right, only_second_right):
    """Two-sided exact McNemar p-value of two classifiers scored on the same samples.

    Args:
        only_first_right: samples the first classifier gets right and the second wrong (b).
        only_second_right: the reverse (c).

    Returns:
        The probability, if both were equally accurate, of a split of the b + c discordant
        samples at least as uneven as this one: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2),
        capped at 1 (1 when there is no discordant sample).
    """
    b, c = int(only_first_right), int(only_second_right)
    if b < 0 or c < 0:
        raise ValueError(f"Counts must be >= 0. Received: {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / (1 << n))  # integer true division: exact for any n

