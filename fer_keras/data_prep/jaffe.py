"""JAFFE (Japanese Female Facial Expression) -> still records, label set basic7.

Layout: 213 grey 256 x 256 TIFF images of 10 subjects in one folder (``jaffe/`` or
``jaffedbase/`` in the usual archives), named ``SUBJECT.EXPRn.ID.tiff``, e.g. ``KA.AN1.39.tiff``:
subject initials (KA, KL, KM, KR, MK, NA, NM, TM, UY, YM), expression code (AN DI FE HA NE SA
SU) with the take number, and the image id. The subject id of a record is the initials.

Example:
    fer-keras prepare jaffe --root jaffe --out data/jaffe --size 64 --grey
"""

import re

from fer_keras.data_prep import common
from fer_keras.errors import UserError
from fer_keras.labels import DATASET_CODES

NAME_PATTERN = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})(\d+)\.(\d+)\.tiff?$", re.IGNORECASE)


class JAFFEAdapter(common.DatasetAdapter):
    """JAFFE file names -> (subject, emotion); dlib (or whole-image) faces; basic7."""

    name = "jaffe"
    title = "JAFFE"

    def list_items(self, root, options):
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise UserError(
                f"{root} does not look like JAFFE: expected .tiff images named like KA.AN1.39.tiff in it or a subfolder."
            )
        items, skipped = [], []
        codes = DATASET_CODES["jaffe"]
        for path in files:
            rel = common.relative(path, root)
            match = NAME_PATTERN.match(path.name)
            if not match:
                skipped.append((rel, "no label: the file name does not follow JAFFE's SUBJECT.EXPRn.ID.tiff"))
                continue
            subject, code = match.group(1).upper(), match.group(2).upper()
            if code not in codes:
                skipped.append((rel, f"unknown JAFFE expression code {code!r} (known: {' '.join(sorted(codes))})"))
                continue
            items.append({"id": rel, "path": str(path), "source_path": rel, "subject_id": subject, "emotion": codes[code]})
        return items, skipped

    def load(self, item, options):
        crop, points = common.face_still(common.read_image(item["path"]), options)
        return common.still_sample(item, crop, points)
