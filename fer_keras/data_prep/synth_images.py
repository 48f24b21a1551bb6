"""`fer-keras synth generate`: SynthFER faces as image files plus a labels.csv of ground truth.

Useful for trying `predict` on files, or for building fake raw-dataset trees in tests.
"""

import contextlib
import csv
import pathlib

import cv2
import numpy as np

from fer_keras.data import synth
from fer_keras.data_prep.output import staged_output
from fer_keras.data_prep.synth import subject_name
from fer_keras.labels import EMOTIONS
from fer_keras.progress import progress


def write_images(out, *, subjects=4, per_emotion=1, size=128, grey=False, seed=0, capture="wild", quiet=False):
    with staged_output(out) as tmp, contextlib.closing(
        progress(total=subjects * len(EMOTIONS) * per_emotion, desc="SynthFER images", unit="image", quiet=quiet)
    ) as bar:
        with open(tmp / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "subject", "emotion", "intensity"])
            for k in range(subjects):
                subject = synth.make_subject(k, seed=seed)
                for emotion in EMOTIONS:
                    for i in range(per_emotion):
                        s = synth.render_still(subject, emotion, sample_index=i, seed=seed, size=size, grey=grey,
                                               capture=capture)
                        name = f"{subject_name(k)}_{emotion}_{i}.png"
                        image = s["image"]
                        image = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                        cv2.imwrite(str(tmp / name), np.ascontiguousarray(image))
                        writer.writerow([name, subject_name(k), emotion, f"{s['intensity']:.3f}"])
                        bar.update(1)
    return pathlib.Path(out) / "labels.csv"
