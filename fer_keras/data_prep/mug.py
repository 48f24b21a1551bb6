"""MUG Facial Expression Database -> sequence records (neutral -> apex -> neutral), or stills; basic7.

Layout of the posed part (``subjects3/`` in the distribution; its parent is accepted too)::

    subjects3/001/anger/take000/img_0001.jpg ... img_0062.jpg
    subjects3/001/session1/happiness/take001/img_0001.jpg      (subjects recorded twice)

Subject folders are three-digit numbers; an optional ``session<N>`` level; emotion folders
anger, disgust, fear, happiness, neutral, sadness, surprise; ``take<NNN>`` folders of JPEG
frames (896 x 896 colour) that start and end neutral. The subject id is the subject folder
(``001``); a record is one take. MUG's 80-point landmark annotation (for some frames only) is
not in the 68-point scheme, so faces come from dlib (or ``--no-detect``).

Protocols:

* ``sequence`` (default): one record per take, every frame.
* ``spread`` (paper 004's training set, sec. 5.1): 8 frames of each take at equal intervals
  (`common.spread_indices`), first and last included, as stills: neutral, onset, apex and offset
  faces, each labelled with the take's emotion (paper 004's model learns from subjects, not labels).
* ``still`` (paper 004's evaluation set): the 3 frames around each take's centre, where MUG's
  apex is, as stills labelled with the take's emotion.

Example (paper 004 uses MUG with CK+): the training set, and the evaluation set beside it
    fer-keras prepare mug --root MUG/subjects3 --out data/mug_spread --size 64 --protocol spread --workers 4
    fer-keras prepare mug --root MUG/subjects3 --out data/mug_apex --size 64 --protocol still --workers 4
"""

import re

from fer_keras.data_prep import common
from fer_keras.errors import UserError
from fer_keras.labels import DATASET_CODES

SUBJECT_PATTERN = re.compile(r"^\d{3}$")
SESSION_PATTERN = re.compile(r"^session\d+$", re.IGNORECASE)
TAKE_PATTERN = re.compile(r"^take\d+$", re.IGNORECASE)
FRAME_PATTERN = re.compile(r"(\d+)\.jpe?g$", re.IGNORECASE)
CENTRE_FRAMES = 3  # the `still` protocol's frames around a take's centre


class MUGAdapter(common.DatasetAdapter):
    """MUG takes -> sequences; subject / [session] / emotion / take / frames."""

    name = "mug"
    title = "MUG"
    protocols = ("sequence", "still", "spread")

    def kind(self, options):
        return "sequence" if options.protocol == "sequence" else "still"

    def _root(self, root):
        if not any(SUBJECT_PATTERN.match(p.name) for p in root.iterdir() if p.is_dir()) and (root / "subjects3").is_dir():
            return root / "subjects3"
        return root

    def list_items(self, root, options):
        base = self._root(root)
        subjects = sorted(p for p in base.iterdir() if p.is_dir() and SUBJECT_PATTERN.match(p.name))
        if not subjects:
            raise UserError(
                f"{root} does not look like MUG: expected subject folders named like 001/ (MUG's subjects3/) "
                "holding <emotion>/take<NNN>/img_NNNN.jpg."
            )
        codes = DATASET_CODES["mug"]
        items, skipped = [], []
        for subject in subjects:
            sessions = sorted(p for p in subject.iterdir() if p.is_dir() and SESSION_PATTERN.match(p.name))
            groups = [("", subject)] + [(s.name, s) for s in sessions]
            for session, folder in groups:
                for emotion_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not SESSION_PATTERN.match(p.name)):
                    rel = common.relative(emotion_dir, root)
                    if emotion_dir.name.lower() not in codes:
                        known = " ".join(sorted(codes))
                        skipped.append((rel, f"unknown MUG emotion folder {emotion_dir.name!r} (known: {known})"))
                        continue
                    emotion = codes[emotion_dir.name.lower()]
                    for take in sorted(p for p in emotion_dir.iterdir() if p.is_dir()):
                        take_rel = common.relative(take, root)
                        if not TAKE_PATTERN.match(take.name):
                            skipped.append((take_rel, "not a take folder (take<NNN>)"))
                            continue
                        frames = sorted(
                            (int(m.group(1)), p) for p in take.iterdir() if p.is_file() and (m := FRAME_PATTERN.search(p.name))
                        )
                        if len(frames) < (2 if options.protocol == "sequence" else 1):
                            skipped.append((take_rel, f"{len(frames)} frames; a sequence needs at least 2"))
                            continue
                        parts = [subject.name] + ([session] if session else []) + [emotion_dir.name.lower(), take.name]
                        item = {
                            "id": take_rel, "source_path": take_rel, "subject_id": subject.name,
                            "sequence_id": "_".join(parts), "emotion": emotion, "session": session,
                            "frames": [str(p) for _, p in frames],
                        }
                        items.extend(self._stills(item, root, options.protocol) if options.protocol != "sequence" else [item])
        return items, skipped

    @staticmethod
    def _stills(take, root, protocol):
        """The `still` or `spread` protocol's frames of one take, one item each."""
        count = len(take["frames"])
        if protocol == "spread":
            indices = common.spread_indices(count)
        else:  # the centre frames, where a take from neutral to neutral has its apex
            first = max(0, (count - CENTRE_FRAMES) // 2)
            indices = list(range(first, min(count, first + CENTRE_FRAMES)))
        return [dict(take, id=common.relative(take["frames"][i], root), source_path=common.relative(take["frames"][i], root),
                     frames=[take["frames"][i]]) for i in indices]

    def load(self, item, options):
        if options.protocol != "sequence":
            crop, points = common.face_still(common.read_image(item["frames"][0]), options)
            return common.still_sample(item, crop, points)
        frames, points = common.face_sequence(common.frame_reader(item["frames"]), len(item["frames"]), options)
        return common.sequence_sample(item, frames, points, options)
