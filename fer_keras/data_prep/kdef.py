"""KDEF (Karolinska Directed Emotional Faces) -> still records, label set basic7.

Layout: ``KDEF/<session><gender><id>/<name>.JPG`` (562 x 762 colour), 70 actors photographed
twice (sessions A and B), 7 expressions, 5 angles. ``AF01ANS.JPG`` = session A, female, actor 01,
expression AN, angle S. Expressions: AF (afraid) AN DI HA NE SA SU. Angles: S straight, HL/HR
half left/right, FL/FR full left/right profile.

The subject id is gender + actor number (``F01``): sessions A and B are the same person, so both
always fall on the same side of a subject split. Only frontal images (S) are kept unless
``--angles`` says otherwise; dlib's frontal detector does not find full profiles (FL, FR),
which then go to skipped.csv (use ``--no-detect`` for them).

Example:
    fer-keras prepare kdef --root KDEF --out data/kdef --size 64 --grey
"""

import re

from fer_keras.data_prep import common
from fer_keras.errors import UserError
from fer_keras.labels import DATASET_CODES

ANGLES = ("S", "HL", "HR", "FL", "FR")
NAME_PATTERN = re.compile(r"^([AB])([FM])(\d{2})([A-Z]{2})(S|HL|HR|FL|FR)\.JPE?G$", re.IGNORECASE)


class KDEFAdapter(common.DatasetAdapter):
    """KDEF file names -> (subject, emotion, angle); dlib faces; basic7."""

    name = "kdef"
    title = "KDEF"

    def check(self, options):
        angles = tuple(a.upper() for a in options.angles)
        unknown = [a for a in angles if a not in ANGLES]
        if not angles or unknown:
            raise UserError(f"--angles must be among {list(ANGLES)}. Received: {list(options.angles)}")
        import dataclasses

        return dataclasses.replace(options, angles=tuple(a for a in ANGLES if a in angles))

    def list_items(self, root, options):
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
        if not files:
            raise UserError(
                f"{root} does not look like KDEF: expected .JPG images named like AF01ANS.JPG in folders such as AF01/."
            )
        items, skipped = [], []
        codes = DATASET_CODES["kdef"]
        for path in files:
            rel = common.relative(path, root)
            match = NAME_PATTERN.match(path.name)
            if not match:
                skipped.append((rel, "no label: the file name does not follow KDEF's AF01ANS.JPG"))
                continue
            session, gender, actor, code, angle = (g.upper() for g in match.groups())
            if angle not in options.angles:
                continue  # not asked for: neither an item nor a problem
            if code not in codes:
                skipped.append((rel, f"unknown KDEF expression code {code!r} (known: {' '.join(sorted(codes))})"))
                continue
            items.append({
                "id": rel, "path": str(path), "source_path": rel, "subject_id": f"{gender}{actor}",
                "emotion": codes[code], "session": session, "angle": angle,
            })
        return items, skipped

    def load(self, item, options):
        crop, points = common.face_still(common.read_image(item["path"]), options)
        return common.still_sample(item, crop, points)
