"""SynthFER: generator speed and dataset difficulty.

Run as ``python benchmarks/synth_benchmark.py``. Writes benchmarks/results/synth.json and the
"synth" section of docs/benchmarks.md.

Speed: frames per second of CPU time at 64 px grey on one core (cv2.setNumThreads(1); CPU time
of this process, so other work on the machine does not count against the generator), for apex
stills and for sequence frames; the best of a few repeats.

Difficulty: a small frame CNN (3 conv blocks) trained on apex stills of 40 subjects (all 8
emotions, several samples per subject and emotion) and tested on 10 other subjects. SynthFER is
tuned so that this lands between 60% and 95%, with the human-like confusions (fear/surprise,
anger/disgust, sadness/neutral) among the largest.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from benchmarks import _report  # noqa: E402
from fer_keras.data import synth  # noqa: E402

SIZE = 64
EMO = synth.EMOTIONS
# The confusions people make too; SynthFER is tuned so that they show in the confusion matrix.
HUMAN_LIKE = (("fear", "surprise"), ("anger", "disgust"), ("sadness", "neutral"))
TRAIN_SUBJECTS = range(0, 40)
TEST_SUBJECTS = range(40, 50)


def measure_speed(n_stills=1500, n_sequences=60, repeats=3, seed=0):
    """Frames per CPU second at 64 px grey on one core: (stills, sequence frames)."""
    cv2.setNumThreads(1)
    subjects = [synth.make_subject(k, seed) for k in range(50)]
    best_still = best_seq = 0.0
    for r in range(repeats):
        t = time.process_time()
        for i in range(n_stills):
            synth.render_still(subjects[i % 50], synth.EMOTIONS[i % 8], sample_index=r * n_stills + i,
                               seed=seed, size=SIZE)
        best_still = max(best_still, n_stills / (time.process_time() - t))
        t, frames = time.process_time(), 0
        for i in range(n_sequences):
            kind = synth.SEQUENCE_KINDS[i % 2]
            seq = synth.render_sequence(subjects[i % 50], synth.EMOTIONS[i % 8], sequence_index=r * n_sequences + i,
                                        seed=seed, size=SIZE, kind=kind)
            frames += len(seq["frames"])
        best_seq = max(best_seq, frames / (time.process_time() - t))
    return best_still, best_seq


def make_split(subjects, samples, seed=0, emotions=synth.EMOTIONS):
    x, y = [], []
    for k in subjects:
        subject = synth.make_subject(k, seed)
        for e, emotion in enumerate(emotions):
            for i in range(samples):
                x.append(synth.render_still(subject, emotion, sample_index=i, seed=seed, size=SIZE)["image"])
                y.append(e)
    return np.stack(x), np.array(y)


def frame_cnn(num_classes):
    """The registered `frame_cnn` baseline (small), with horizontal flips as augmentation."""
    import keras
    from keras import layers

    from fer_keras.models.registry import get_model

    core = get_model("frame_cnn", (SIZE, SIZE, 1), num_classes, size="small")
    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.RandomFlip("horizontal")(inputs)  # expressions (contempt too) may face either way
    return keras.Model(inputs, core(x), name="frame_cnn_flip")


def difficulty(samples=8, epochs=20, seed=0, verbose=0):
    """Trains the frame CNN on 40 subjects, tests on 10 others. Returns a result dict."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    keras.utils.set_random_seed(seed)
    t0 = time.time()
    x_train, y_train = make_split(TRAIN_SUBJECTS, samples, seed)
    x_test, y_test = make_split(TEST_SUBJECTS, samples, seed)
    t_data = time.time() - t0
    model = frame_cnn(len(synth.EMOTIONS))
    steps = epochs * int(np.ceil(len(x_train) / 64))
    lr = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.time()
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=verbose, shuffle=True)
    t_train = time.time() - t0
    pred = model.predict(x_test, batch_size=256, verbose=0).argmax(1)
    n = len(synth.EMOTIONS)
    cm = np.zeros((n, n), int)
    for t, p in zip(y_test, pred):
        cm[t, p] += 1
    off = [(int(cm[i, j] + cm[j, i]), synth.EMOTIONS[i], synth.EMOTIONS[j]) for i in range(n) for j in range(i + 1, n)]
    off.sort(reverse=True)
    directed = [(int(cm[i, j]), synth.EMOTIONS[i], synth.EMOTIONS[j]) for i in range(n) for j in range(n) if i != j]
    directed.sort(reverse=True)
    pair = lambda a, b: int(cm[EMO.index(a), EMO.index(b)] + cm[EMO.index(b), EMO.index(a)])  # noqa: E731
    return {
        "accuracy": float((pred == y_test).mean()),
        "human_like_pairs": {f"{a}/{b}": pair(a, b) for a, b in HUMAN_LIKE},
        "confusion_matrix": cm.tolist(),
        "labels": list(synth.EMOTIONS),
        "top_confused_pairs": [{"pair": [a, b], "count": c} for c, a, b in off[:3]],
        "top_confusions": [{"true": a, "predicted": b, "count": c} for c, a, b in directed[:3]],
        "train_images": int(len(x_train)),
        "test_images": int(len(x_test)),
        "epochs": epochs,
        "render_seconds": round(t_data, 1),
        "train_seconds": round(t_train, 1),
    }


def markdown(speed, diff):
    still, seq = speed
    lines = [
        "## SynthFER generator (`benchmarks/synth_benchmark.py`)",
        "",
        f"Machine: {_report.machine()}. Dataset: SynthFER (seed 0), numbers on SynthFER only.",
        "",
        "| what | value |",
        "|---|---|",
        f"| apex stills, 64 px grey, one core | {still:,.0f} frames/s (CPU time) |",
        f"| sequence frames, 64 px grey, one core | {seq:,.0f} frames/s (CPU time) |",
    ]
    if diff is not None:
        pairs = ", ".join(f"{p['pair'][0]}/{p['pair'][1]} ({p['count']})" for p in diff["top_confused_pairs"])
        lines += [
            f"| frame CNN, 40 train / 10 test subjects, 8 emotions | {100 * diff['accuracy']:.1f}% test accuracy |",
            f"| largest confusions (both directions) | {pairs} |",
            "| human-like pairs (both directions) | "
            + ", ".join(f"{k} ({v})" for k, v in diff["human_like_pairs"].items()) + " |",
            f"| images (train / test), epochs, train time | {diff['train_images']} / {diff['test_images']}, "
            f"{diff['epochs']}, {diff['train_seconds']:.0f} s |",
            "",
            "Confusion matrix (rows true, columns predicted):",
            "",
            "| | " + " | ".join(diff["labels"]) + " |",
            "|---" * (len(diff["labels"]) + 1) + "|",
        ]
        for name, row in zip(diff["labels"], diff["confusion_matrix"]):
            lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
        lines += [
            "",
            "The target band is 60-95%: an easy dataset would make every later comparison meaningless.",
            "Speeds are CPU time of one process (best of 3 runs) on a machine shared with other work;",
            "the training time is wall time on 2 cores.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-difficulty", action="store_true")
    parser.add_argument("--samples", type=int, default=8, help="stills per subject and emotion")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    speed = measure_speed()
    print(f"stills: {speed[0]:.0f} frames/s, sequence frames: {speed[1]:.0f} frames/s (64 px grey, one core)")
    diff = None
    if not args.skip_difficulty:
        diff = difficulty(samples=args.samples, epochs=args.epochs)
        print(f"difficulty: accuracy {diff['accuracy']:.3f}; pairs {diff['top_confused_pairs']}")
        print(np.array(diff["confusion_matrix"]))
        print(f"render {diff['render_seconds']} s, train {diff['train_seconds']} s")
    if not args.no_write:
        data = {"size": SIZE, "grey": True, "stills_per_second": speed[0], "sequence_frames_per_second": speed[1],
                "difficulty": diff}
        print(_report.write_json("synth", data))
        print(_report.write_section("synth", markdown(speed, diff)))


if __name__ == "__main__":
    main()
