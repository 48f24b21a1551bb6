"""Any dataset laid out as one folder per emotion -> still or sequence records.

For the user's own data and for datasets without an adapter of their own (AffectNet, ExpW,
FER+ as image folders ...)::

    ROOT/happy/img001.jpg ...                      stills (--kind still, the default)
    ROOT/happy/S005/img001.jpg ...                 stills in subject folders: the folder is the subject
    ROOT/train/happy/img001.jpg, ROOT/test/...      stills with the dataset's own split
    ROOT/happy/S005_001/frame01.png ...            sequences (--kind sequence): one folder per sequence

Emotion folders are matched by name, case-insensitively, to the canonical emotions: the
canonical names and the usual adjectives (happy, angry, sad, surprised, disgusted, fearful,
afraid, scared, contemptuous, joy). Top-level folders named train, val (validation) and test
make the split official (manifest "official_split"; train with ``--split official``). Frames
of a sequence are taken in the order of the numbers in their names.

Subjects: ``--subject-pattern REGEX`` is searched in the file name (stills), the subject folder's
name (stills in subject folders) or the sequence folder's name (sequences); its first group, or
else the whole match, is the subject id, and an item it does not match is skipped. Without it
every still is its own subject (as in RAF-DB), so a k-fold is an image k-fold, a subject folder
is one subject, and every sequence folder is its own subject.

Every entry the layout does not use (a loose file beside the emotion folders, a folder that is
not an emotion, a non-image file) is listed in ``skipped.csv`` with the reason.

Example:
    fer-keras prepare folder --root my_faces --out data/my_faces --subject-pattern '^(S\\d+)_'
"""

import os
import re

from fer_keras.data_prep import common
from fer_keras.errors import UserError
from fer_keras.inference.images import IMAGE_SUFFIXES
from fer_keras.names import natural_key, printable, safe_name

SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
EMOTION_NAMES = {
    "neutral": "neutral", "anger": "anger", "angry": "anger", "contempt": "contempt", "contemptuous": "contempt",
    "disgust": "disgust", "disgusted": "disgust", "fear": "fear", "fearful": "fear", "afraid": "fear",
    "scared": "fear", "happiness": "happiness", "happy": "happiness", "joy": "happiness", "sadness": "sadness",
    "sad": "sadness", "surprise": "surprise", "surprised": "surprise",
}


def _visible(paths):
    return [p for p in paths if not p.name.startswith(".")]


class FolderAdapter(common.DatasetAdapter):
    """ROOT/[split/]emotion/(image | sequence folder/frames); subjects from --subject-pattern."""

    name = "folder"
    title = "emotion-folder dataset"
    protocols = ("still", "sequence")  # --kind

    def kind(self, options):
        return options.protocol

    def label_set(self, options):
        return options.label_set or "basic7"

    def check(self, options):
        from fer_keras.labels import LABEL_SETS

        if self.label_set(options) not in LABEL_SETS:
            raise UserError(f"--label-set must be one of {sorted(LABEL_SETS)}. Received: {options.label_set!r}")
        name = options.dataset_name
        if name is not None and (not name.strip() or "/" in name or "\\" in name or not name.isprintable()):
            # a merged subject id is <people>/<id> (`fit.subject_key`): a name must not hold the separator
            raise UserError(f"--name must be a non-empty name without '/' or '\\'. Received: {name!r}")
        if options.subject_pattern is not None:
            try:
                re.compile(options.subject_pattern)
            except re.error as e:
                raise UserError(f"--subject-pattern {options.subject_pattern!r} is not a regular expression: {e}") from None
        return options

    def list_items(self, root, options):
        folders = _visible(sorted(p for p in root.iterdir() if p.is_dir()))
        split_folders = [p for p in folders if p.name.lower() in SPLITS]
        if split_folders:
            groups = [(SPLITS[p.name.lower()], p) for p in split_folders]
        else:
            groups = [("", root)]
        self.official_split = bool(split_folders)
        self.dataset_name = root.name
        pattern = re.compile(options.subject_pattern) if options.subject_pattern else None
        items, skipped, emotion_folders = [], [], 0
        if split_folders:  # what lies beside the split folders is not used
            for entry in _visible(sorted(root.iterdir())):
                if entry not in split_folders:
                    skipped.append((common.relative(entry, root), "beside the train/val/test folders: not used"))
        for split, base in groups:
            for entry in _visible(sorted(p for p in base.iterdir() if not p.is_dir())):
                skipped.append((common.relative(entry, root), "a file outside the emotion folders: not used"))
            for folder in _visible(sorted(p for p in base.iterdir() if p.is_dir())):
                rel = common.relative(folder, root)
                emotion = EMOTION_NAMES.get(folder.name.lower())
                if emotion is None:
                    skipped.append((rel, f"not an emotion folder name (known: {' '.join(sorted(EMOTION_NAMES))})"))
                    continue
                emotion_folders += 1
                entries = _visible(sorted(folder.iterdir(), key=lambda p: natural_key(p.name)))
                for entry in entries:
                    if options.protocol == "still" and entry.is_dir():  # a subject folder
                        inside = _visible(sorted(entry.iterdir(), key=lambda p: natural_key(p.name)))
                        if not inside:
                            skipped.append((common.relative(entry, root), "an empty folder"))
                        for image in inside:
                            found = self._item(image, root, emotion, split, options, pattern, subject_folder=entry)
                            (items if isinstance(found, dict) else skipped).append(found)
                        continue
                    found = self._item(entry, root, emotion, split, options, pattern)
                    (items if isinstance(found, dict) else skipped).append(found)
        if not emotion_folders:
            seen = ", ".join(p.name for p in folders[:6]) or "none"
            raise UserError(
                f"{root} does not look like an emotion-folder dataset: expected ROOT/<emotion>/ folders (happy, sad, "
                f"... or ROOT/train|test/<emotion>/); its folders: {seen}."
            )
        return items, skipped

    def _item(self, entry, root, emotion, split, options, pattern, subject_folder=None):
        """One item dict, or a (path, reason) pair to skip; `subject_folder`: the still's subject folder, if any."""
        rel = common.relative(entry, root)
        if options.protocol == "sequence":
            if not entry.is_dir():
                return rel, "not a sequence folder (with --kind sequence each sequence is a folder of frames)"
            frames = sorted((p for p in _visible(entry.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                            key=lambda p: natural_key(p.name))
            if len(frames) < 2:
                return rel, f"{len(frames)} frames; a sequence needs at least 2"
        elif not (entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES):
            if entry.is_symlink() and not entry.exists():
                return rel, f"a broken link (to {printable(os.readlink(entry))})"
            what = "a folder inside a subject folder" if entry.is_dir() else "not an image file"
            return rel, what
        named = subject_folder or entry
        subject = rel if subject_folder is None else subject_folder.name
        if pattern is not None:
            match = pattern.search(named.name)
            if match is None:
                return rel, f"no subject: {named.name!r} does not match --subject-pattern {pattern.pattern!r}"
            subject = match.group(1) if pattern.groups else match.group(0)
            if not subject:
                return rel, f"no subject: --subject-pattern {pattern.pattern!r} matched {named.name!r} with an empty subject"
        item = {"id": rel, "source_path": rel, "subject_id": subject, "emotion": emotion, "split": split}
        if options.protocol == "sequence":
            item.update(sequence_id=safe_name(rel, "sequence"), frames=[str(p) for p in frames])
        else:
            item["path"] = str(entry)
        return item

    def load(self, item, options):
        if options.protocol == "still":
            crop, points = common.face_still(common.read_image(item["path"]), options)
            return common.still_sample(item, crop, points)

        frames, points = common.face_sequence(common.frame_reader(item["frames"]), len(item["frames"]), options)
        return common.sequence_sample(item, frames, points, options)

    def manifest_extra(self, options):
        """The manifest names the data by --name or its folder ("folder:my_faces"), so metrics name it too, and the
        subject-leak checks take two folders of one name for the same people."""
        return {"dataset": f"folder:{options.dataset_name or self.dataset_name}"}
