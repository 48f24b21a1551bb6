"""FER2013 -> still records with its official split, label set basic7.

Layout: ``fer2013.csv`` (the Kaggle "Challenges in Representation Learning" file, 35,887 rows)
with the columns ``emotion`` (0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise,
6 neutral), ``pixels`` (2,304 space-separated grey values of a 48 x 48 face) and ``Usage``
(Training / PublicTest / PrivateTest -> the record's ``split`` train / val / test). The later
``icml_face_data.csv`` (same rows, column names with a leading space) is read as well.

FER2013 has no subject ids: each record's subject id is its row number (``row00042``), so a
subject k-fold is an image k-fold; use the official split. Its images are already face crops of
48 px, too small for dlib's HOG detector: the whole image is the face (resized to --size)
unless ``--detect`` is forced.

Example:
    fer-keras prepare fer2013 --root fer2013 --out data/fer2013 --size 48 --grey
"""

import csv

import numpy as np

from fer_keras.data_prep import common
from fer_keras.errors import UserError
from fer_keras.labels import DATASET_CODES

FILES = ("fer2013.csv", "icml_face_data.csv")
SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIDE = 48


def _columns(header):
    names = [h.strip().lower() for h in header]
    try:
        return names.index("emotion"), names.index("pixels"), names.index("usage")
    except ValueError:
        return None


def _csv_problem(error):
    # csv's "... - do you need to open the file in universal-newline mode?" is no help to a user
    return str(error).split(" - ")[0]


def _shown(text, limit=80):
    """`text` quoted on one short printable line (the first line of a binary file can be anything)."""
    return ascii(text[:limit]) + ("..." if len(text) > limit else "")


class FER2013Adapter(common.DatasetAdapter):
    """fer2013.csv rows -> 48 x 48 faces with the Training/PublicTest/PrivateTest split."""

    name = "fer2013"
    title = "FER2013"
    detect_default = False
    official_split = True

    def _csv(self, root):
        if root.is_file():
            common.refuse_archive(root, "the fer2013.csv inside")
            return root
        for name in FILES:
            for path in (root / name, root / "fer2013" / name):
                if path.exists():
                    return path
        raise UserError(
            f"{root} does not look like FER2013: expected {' or '.join(FILES)} in it (or pass the file itself as --root)."
        )

    def list_items(self, root, options):
        path = self._csv(root)
        items, skipped = [], []
        codes = DATASET_CODES["fer2013"]
        with open(path, "rb") as f:
            invalid = f"{path} is not a valid FER2013 CSV"
            first = f.readline().decode("utf-8-sig", "replace")
            if not first.strip():
                raise UserError(f"{invalid} (line 1 is empty; expected the header emotion,pixels,Usage).")
            try:
                header = next(csv.reader([first]), [])
            except csv.Error as e:
                raise UserError(f"{invalid} (line 1: {_csv_problem(e)}).") from None
            columns = _columns(header)
            if columns is None:
                found = _shown(",".join(header))
                raise UserError(f"{invalid} (line 1: expected the columns emotion, pixels, Usage; found {found}).")
            i_emotion, i_pixels, i_usage = columns
            row = -1
            while True:
                offset = f.tell()
                line = f.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                row += 1
                rel = f"{path.name}:row{row:05d}"
                try:
                    fields = next(csv.reader([line.decode("utf-8", "replace")]))
                except csv.Error as e:  # one corrupt row, not the whole file: skipped like a short row
                    skipped.append((rel, f"malformed row: {_csv_problem(e)}"))
                    continue
                if len(fields) <= max(columns):
                    skipped.append((rel, f"malformed row: {len(fields)} columns"))
                    continue
                code, usage = fields[i_emotion].strip(), fields[i_usage].strip()
                if not code:
                    skipped.append((rel, "no label: the emotion column is empty"))
                    continue
                if not (code.isascii() and code.isdigit()) or int(code) not in codes:  # '²' is a digit int() refuses
                    skipped.append((rel, f"unknown FER2013 emotion code {code!r} (known: 0..6)"))
                    continue
                if usage not in SPLITS:
                    skipped.append((rel, f"unknown Usage {usage!r} (known: {', '.join(SPLITS)})"))
                    continue
                items.append({
                    "id": rel, "path": str(path), "offset": offset, "column": i_pixels, "source_path": rel,
                    "subject_id": f"row{row:05d}", "emotion": codes[int(code)], "split": SPLITS[usage],
                })
        return items, skipped

    def load(self, item, options):
        with open(item["path"], "rb") as f:
            f.seek(item["offset"])
            fields = next(csv.reader([f.readline().decode("utf-8", "replace")]))
        try:
            values = np.array([int(v) for v in fields[item["column"]].split()], np.int64)
        except ValueError:
            raise common.Skip("corrupt pixels: not integers") from None
        if values.size != SIDE * SIDE or values.min(initial=0) < 0 or values.max(initial=0) > 255:
            raise common.Skip(f"corrupt pixels: {values.size} values, expected {SIDE * SIDE} in 0..255")
        image = values.astype(np.uint8).reshape(SIDE, SIDE, 1)
        crop, points = common.face_still(image, options)
        return common.still_sample(item, crop, points)
