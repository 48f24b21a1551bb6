"""CK+ (Extended Cohn-Kanade) -> sequence records (onset -> apex, ckplus7) or stills (ckplus8).

Layout (the folders of the distribution, side by side under --root)::

    cohn-kanade-images/S005/001/S005_001_00000001.png ... S005_001_00000011.png
    Emotion/S005/001/S005_001_00000011_emotion.txt     one float code (0 neutral, 1 anger,
                                                       2 contempt, 3 disgust, 4 fear, 5 happy,
                                                       6 sadness, 7 surprise), for 327 of the
                                                       593 sequences; named after the apex frame
    Landmarks/S005/001/S005_001_00000001_landmarks.txt 68 (x y) points per frame (AAM)

Protocols:

* ``sequence`` (default; papers 000 and 001): each labelled sequence from its first (neutral)
  frame to the labelled apex frame, one record, label set ckplus7 (no neutral).
* ``still``: the last three frames of each labelled sequence as its emotion and the first frame
  as neutral, label set ckplus8 (neutral + the seven); paper 004's evaluation set uses CK+'s
  last frames so.
* ``spread`` (paper 004's training set, sec. 5.1): 8 frames of each labelled sequence at equal
  intervals from its first frame to the apex (`common.spread_indices`), as stills labelled with
  the sequence's emotion (the first ones look neutral: paper 004's model learns from subjects,
  not labels), label set ckplus7.

The subject id is the CK+ subject (``S005``); the 10-fold subject split is made at train time
(`fer_keras.data.splits`). Sequences without an emotion file are unlabelled in CK+ and are
listed in skipped.csv.

Example (papers 000/001):
    fer-keras prepare ckplus --root CK+ --out data/ckplus --size 64 --flow
"""

import math
import re

from fer_keras.data_prep import common
from fer_keras.errors import UserError
from fer_keras.labels import DATASET_CODES

SUBJECT_PATTERN = re.compile(r"^S\d+$", re.IGNORECASE)
FRAME_PATTERN = re.compile(r"^(S\d+)_(\d+)_(\d+)\.png$", re.IGNORECASE)
EMOTION_PATTERN = re.compile(r"^(S\d+)_(\d+)_(\d+)_emotion\.txt$", re.IGNORECASE)
STILL_APEX_FRAMES = 3


class CKPlusAdapter(common.DatasetAdapter):
    """CK+ sequences and their emotion and landmark files."""

    name = "ckplus"
    title = "CK+"
    has_landmarks = True
    protocols = ("sequence", "still", "spread")

    def kind(self, options):
        return "sequence" if options.protocol == "sequence" else "still"

    def label_set(self, options):
        return "ckplus8" if options.protocol == "still" else "ckplus7"

    def _folder(self, root, name, what="CK+ (cohn-kanade-images/, Emotion/, Landmarks/)"):
        """`root`/name, also when an archive was unzipped into a folder of its own
        (``Emotion_labels/Emotion``, ``cohn-kanade-images/cohn-kanade-images``)."""
        candidates = [root / name, root / name / name] + sorted(root.glob(f"*/{name}"))
        for path in candidates:
            if path.is_dir() and any(SUBJECT_PATTERN.match(p.name) for p in path.iterdir() if p.is_dir()):
                return path
        return common.require(root, name, what=what)

    def _sequences(self, images):
        for subject in sorted(p for p in images.iterdir() if p.is_dir() and SUBJECT_PATTERN.match(p.name)):
            for sequence in sorted(p for p in subject.iterdir() if p.is_dir()):
                yield subject.name, sequence.name, sequence

    def list_items(self, root, options):
        images, emotions = self._folder(root, "cohn-kanade-images"), self._folder(root, "Emotion")
        if options.dataset_landmarks:
            landmark_root = self._folder(root, "Landmarks", what="CK+ with --landmarks dataset")
        codes = DATASET_CODES["ckplus"]
        items, skipped = [], []
        found = False
        for subject, number, folder in self._sequences(images):
            found = True
            rel = common.relative(folder, root)
            frames = sorted(
                (int(m.group(3)), p) for p in folder.iterdir() if (m := FRAME_PATTERN.match(p.name)) and p.is_file()
            )
            if not frames:
                skipped.append((rel, "no frames (S###_###_########.png)"))
                continue
            emotion_dir = emotions / subject / number
            label_files = sorted(p for p in emotion_dir.glob("*_emotion.txt")) if emotion_dir.is_dir() else []
            if not label_files:
                skipped.append((rel, "no label: CK+ has no emotion file for this sequence"))
                continue
            label_path = label_files[-1]
            try:
                value = float(label_path.read_text().split()[0])
            except (IndexError, ValueError, OSError):
                skipped.append((rel, f"unreadable emotion file {label_path.name}"))
                continue
            if not math.isfinite(value) or value != int(value) or int(value) not in codes:  # nan, inf: skipped too
                skipped.append((rel, f"unknown CK+ emotion code {value:g} (known: 0..7)"))
                continue
            match = EMOTION_PATTERN.match(label_path.name)
            apex = int(match.group(3)) if match else frames[-1][0]
            if apex not in {i for i, _ in frames}:
                skipped.append((rel, f"the apex frame {apex:08d} its emotion file names is missing"))
                continue
            frames = [(i, p) for i, p in frames if i <= apex]
            if options.protocol == "sequence" and len(frames) < 2:
                skipped.append((rel, f"{len(frames)} frame up to the apex; a sequence needs at least 2"))
                continue
            paths = [str(p) for _, p in frames]
            landmarks = [
                str(landmark_root / subject / number / f"{p.stem}_landmarks.txt") if options.dataset_landmarks else ""
                for _, p in frames
            ]
            emotion = codes[int(value)]
            base = {"subject_id": subject, "sequence_id": f"{subject}_{number}"}
            if options.protocol == "sequence":
                items.append(dict(base, id=rel, source_path=rel, emotion=emotion, frames=paths, landmarks=landmarks))
                continue
            if options.protocol == "spread":
                chosen = [(i, emotion) for i in common.spread_indices(len(paths))]
            else:  # still protocol: first frame neutral, last frames the emotion (no frame used twice)
                last = list(range(max(1, len(paths) - STILL_APEX_FRAMES), len(paths)))
                chosen = [(0, "neutral")] + [(i, emotion) for i in last]
            for index, label in chosen:
                frame_rel = common.relative(paths[index], root)
                items.append(dict(base, id=frame_rel, source_path=frame_rel, emotion=label,
                                  frames=[paths[index]], landmarks=[landmarks[index]]))
        if not found:
            raise UserError(f"{images} holds no S###/### sequence folders: {root} does not look like CK+.")
        return items, skipped

    def load(self, item, options):
        landmarks = None
        if options.dataset_landmarks:
            import numpy as np

            landmarks = np.stack([common.read_points(p, 68, "landmark file") for p in item["landmarks"]])
        if options.protocol != "sequence":
            crop, points = common.face_still(common.read_image(item["frames"][0]), options,
                                             None if landmarks is None else landmarks[0])
            return common.still_sample(item, crop, points)

        frames, points = common.face_sequence(common.frame_reader(item["frames"]), len(item["frames"]), options, landmarks)
        return common.sequence_sample(item, frames, points, options)
