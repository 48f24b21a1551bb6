"""RAF-DB (basic emotions) -> still records with its official split, label set basic7.

Layout (the ``basic/`` folder of the distribution; its parent is accepted too)::

    EmoLabel/list_patition_label.txt     "train_00001.jpg 5" per line (codes 1 surprise .. 7 neutral)
    Image/aligned/train_00001_aligned.jpg   100 x 100, eyes and mouth centre at fixed points
    Image/original/train_00001.jpg          the whole photograph (not used)
    Annotation/manual/train_00001_manu_attri.txt   5 points (x y): eye centres, nose tip,
                                                   mouth corners; then gender, race, age
    Annotation/auto/train_00001_auto_attri.txt     37 points (Face++), one (x y) per line

The ``train_``/``test_`` prefix is the official split, written to each record's ``split``
(manifest ``"official_split": true``). RAF-DB has no subject ids: each record's subject id is
its image id (``train_00001``), so a subject k-fold is an image k-fold; use the official split.

Faces are the aligned images, as in paper 003 and its baseline:

* ``--landmarks dataset`` (the points paper 003 draws): the aligned image resized to --size; the
  5 manual and 37 automatic points, given in original-image coordinates, are mapped into it as
  paper 003 section 4.4 does: the affine map taking the left eye, right eye and mouth centre
  (midpoint of the mouth corners) of the 5 manual points to (25, 35), (75, 35), (50, 75) of a
  100 x 100 frame (scaled to --size) is applied to both point sets (`fer_keras.data.heatmaps`).
  They go to the records' ``landmarks/5`` and ``landmarks/37``, for study: `landmark_arm` draws
  dlib's 68 points (which `predict` can compute on a new photo; see its module docstring) and
  refuses data without them.
* ``--landmarks dlib`` (default): the aligned image resized, with dlib's 68 landmarks
  predicted in it. There is no detection: the aligned frame (eyes at 25 % and 75 % of the
  width) is where dlib's detector puts the box of a face aligned this way, and the detector
  itself misses many faces in such tight 100 px crops (checked on a real photograph aligned
  the same way: 1.4 px mean landmark error in the 100 px frame with the frame as the box).
* ``--no-detect``: the aligned image resized, no landmarks.

Example (paper 003's 224 px; arm_resnet18 and landmark_arm train on it):
    fer-keras prepare rafdb --root RAF-DB/basic --out data/rafdb --size 224
"""

import re

from fer_keras.data_prep import common, faces
from fer_keras.errors import UserError
from fer_keras.labels import DATASET_CODES

LABEL_FILES = ("list_patition_label.txt", "list_partition_label.txt")  # the distributed name has the typo
LINE_PATTERN = re.compile(r"^(\S+)\s+(\S+)$")
NAME_PATTERN = re.compile(r"^(train|test)_\d+$")


class RAFDBAdapter(common.DatasetAdapter):
    """RAF-DB basic: aligned images, official train/test split, 5 + 37 dataset landmarks."""

    name = "rafdb"
    title = "RAF-DB"
    has_landmarks = True
    official_split = True

    def _root(self, root):
        if not (root / "EmoLabel").exists() and (root / "basic" / "EmoLabel").exists():
            return root / "basic"
        return root

    def list_items(self, root, options):
        base = self._root(root)
        what = "RAF-DB basic (EmoLabel/, Image/aligned/, Annotation/)"
        label_dir = common.require(base, "EmoLabel", what=what)
        aligned_dir = common.require(base, "Image", "aligned", what=what)
        label_file = next((label_dir / n for n in LABEL_FILES if (label_dir / n).exists()), None)
        if label_file is None:
            raise UserError(f"{base} does not look like {what}: EmoLabel/{LABEL_FILES[0]} is missing.")
        if options.dataset_landmarks:
            common.require(base, "Annotation", "manual", what=what)
            common.require(base, "Annotation", "auto", what=what)
        codes = DATASET_CODES["rafdb"]
        labelled, skipped = {}, []
        for number, line in enumerate(label_file.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            match = LINE_PATTERN.match(line.strip())
            if not match:
                skipped.append((f"{label_file.name}:line{number}", "malformed label line (expected: NAME.jpg CODE)"))
                continue
            labelled[match.group(1)] = match.group(2)
        images = {p.name[: -len("_aligned.jpg")] + ".jpg": p for p in aligned_dir.iterdir()
                  if p.name.lower().endswith("_aligned.jpg")}  # .JPG too, as the other adapters take any case
        items = []
        for name in sorted(set(labelled) | set(images)):
            stem = name.rsplit(".", 1)[0]
            rel = common.relative(images.get(name, aligned_dir / f"{stem}_aligned.jpg"), root)
            if name not in labelled:
                skipped.append((rel, f"no label: {name} is not in {label_file.name}"))
                continue
            if name not in images:
                skipped.append((rel, "image file is missing"))
                continue
            code = labelled[name]
            if not (code.isascii() and code.isdigit()) or int(code) not in codes:  # '²' is a digit int() refuses
                skipped.append((rel, f"unknown RAF-DB emotion code {code!r} (known: 1..7)"))
                continue
            match = NAME_PATTERN.match(stem)
            if not match:
                skipped.append((rel, "no split: the name does not start with train_ or test_"))
                continue
            item = {
                "id": stem, "path": str(images[name]), "source_path": rel, "subject_id": stem,
                "emotion": codes[int(code)], "split": match.group(1),
            }
            if options.dataset_landmarks:
                item["manual"] = str(base / "Annotation" / "manual" / f"{stem}_manu_attri.txt")
                item["auto"] = str(base / "Annotation" / "auto" / f"{stem}_auto_attri.txt")
            items.append(item)
        return items, skipped

    def load(self, item, options):
        image = common.read_image(item["path"])
        crop = common.resize_face(image, options.size, options.channels)
        if not options.dataset_landmarks:
            points = None
            if options.detect:  # the aligned frame is the face box (module docstring)
                height, width = image.shape[:2]
                points = faces.face_landmarks(image, (0, 0, width, height))
                points = common.scale_points(points, image.shape, options.size)
            return common.still_sample(item, crop, points)
        manual = common.read_points(item["manual"], 5, "manual annotation")
        auto = common.read_points(item["auto"], 37, "automatic annotation")
        matrix = section_4_4_matrix(manual, options.size)
        return common.still_sample(
            item, crop, None, landmarks5=map_points(manual, matrix), landmarks37=map_points(auto, matrix)
        )


def section_4_4_matrix(manual5, size):
    """Paper 003 section 4.4: the affine map from original-image coordinates to the aligned
    image of side `size`, exact on the eyes and mouth centre of the 5 manual points
    (`fer_keras.data.heatmaps.alignment_matrix`)."""
    from fer_keras.data import heatmaps

    try:
        return heatmaps.alignment_matrix(manual5, size)
    except ValueError:
        raise common.Skip("manual annotation: the eyes and the mouth centre are collinear") from None


def map_points(points, matrix):
    import numpy as np

    return (np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
