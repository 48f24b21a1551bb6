"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song) -> sequence records, or stills; ravdess8.

Layout: the Video_Speech_Actor_NN.zip and Video_Song_Actor_NN.zip archives unpacked under --root,
at any depth (each holds ``Actor_NN/``)::

    Video_Song_Actor_01/Actor_01/02-02-03-01-01-01-01.mp4
    Actor_01/01-01-05-02-02-01-01.mp4                        (archives unpacked into one folder)

A file name is seven two-digit fields: modality (01 audio-video, 02 video only, 03 audio only),
vocal channel (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
06 fearful, 07 disgust, 08 surprised), intensity (01 normal, 02 strong), statement, repetition and
actor (01-24; 24 actors, 12 female, 12 male). The name is authoritative, whatever folder the file is
in; the subject id is the actor (``Actor_01``). The audio-video and video-only files of one
recording hold the same frames: the video-only one is used, the other listed in skipped.csv. The
audio-only files are not read. The song part has no disgust or surprise, and actor 18 no song.

Labels: ``ravdess8`` (RAVDESS's eight emotions, calm included) by default; with ``--label-set
basic7`` the calm videos go to skipped.csv.

Protocols:

* ``sequence`` (default): one record per video, every frame (30 fps, about 3-5 s). The face is
  detected on the first frame, as for CK+ and MUG (`common.face_sequence`).
* ``spread`` (paper 004's training set, sec. 5.1): 8 frames of each video at equal intervals
  (`common.spread_indices`), first and last included, as stills labelled with the video's emotion.
  Paper 004 uses RAVDESS's song videos for training only: it scores no RAVDESS frames, since no
  frame of a video can be said to show its emotion (there is no ``still`` protocol here for that
  reason).

``--vocal speech|song|both`` picks the vocal channel (default both; paper 004 uses the song videos).

Example (paper 004's training set, with MUG's and CK+'s):
    fer-keras prepare ravdess --root RAVDESS --out data/ravdess_spread --size 64 --protocol spread --vocal song --workers 4
"""

import dataclasses
import os
import re

import cv2

from fer_keras.data_prep import common
from fer_keras.errors import UserError
from fer_keras.labels import DATASET_CODES

EMOTIONS = DATASET_CODES["ravdess"]

NAME_PATTERN = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.mp4$", re.IGNORECASE)
MODALITIES = {"01": "audio-video", "02": "video only"}
VOCAL = {"speech": ("01",), "song": ("02",), "both": ("01", "02")}
VOCAL_CHOICES = tuple(VOCAL)


class RAVDESSAdapter(common.DatasetAdapter):
    """RAVDESS videos -> sequences, or paper 004's spread stills."""

    name = "ravdess"
    title = "RAVDESS"
    protocols = ("sequence", "spread")

    def kind(self, options):
        return "sequence" if options.protocol == "sequence" else "still"

    def label_set(self, options):
        return options.label_set or "ravdess8"

    def check(self, options):
        from fer_keras.labels import LABEL_SETS

        if self.label_set(options) not in LABEL_SETS:
            raise UserError(f"--label-set must be one of {sorted(LABEL_SETS)}. Received: {options.label_set!r}")
        if (options.vocal or "both") not in VOCAL:
            raise UserError(f"--vocal must be one of {list(VOCAL_CHOICES)}. Received: {options.vocal!r}")
        # the defaults spelled out prepare the same folder as the defaults left out
        return dataclasses.replace(options, label_set=None if options.label_set == "ravdess8" else options.label_set,
                                   vocal=None if options.vocal == "both" else options.vocal)

    def list_items(self, root, options):
        recordings, skipped, audio = {}, [], 0
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path.suffix.lower() == ".wav":
                audio += 1
                continue
            match = NAME_PATTERN.match(path.name)
            if match is None:
                if path.suffix.lower() in common._ARCHIVE_SUFFIXES:
                    skipped.append((common.relative(path, root), "an archive: unpack it under --root"))
                elif path.suffix.lower() == ".mp4":
                    skipped.append((common.relative(path, root), "not a RAVDESS video name (NN-NN-NN-NN-NN-NN-NN.mp4)"))
                continue
            modality, vocal, emotion, intensity, statement, repetition, actor = match.groups()
            rel = common.relative(path, root)
            if modality not in MODALITIES or emotion not in EMOTIONS or not 1 <= int(actor) <= 99:
                skipped.append((rel, f"not a RAVDESS video name (modality {modality}, emotion {emotion})"))
                continue
            if vocal not in VOCAL[options.vocal or "both"]:
                continue
            key = (vocal, emotion, intensity, statement, repetition, actor)
            copies = recordings.setdefault(key, {})
            if modality in copies:  # the same file name twice (an archive unpacked into two folders)
                skipped.append((rel, f"the same recording as {copies[modality][1]}"))
                continue
            copies[modality] = (path, rel)
        if not recordings:
            raise self._no_videos(root, audio, options, [path for path, reason in skipped if reason.startswith("an archive")])
        from fer_keras.labels import get_label_set
        from fer_keras.progress import progress

        labels = get_label_set(self.label_set(options))
        items = []
        bar = progress(total=len(recordings) if options.protocol == "spread" else None, desc="RAVDESS videos' frame counts",
                       unit="video", quiet=self.quiet or options.protocol != "spread")
        for key in sorted(recordings):
            bar.update(1)
            copies = recordings[key]
            path, rel = copies.get("02") or copies["01"]
            if "02" in copies and "01" in copies:
                skipped.append((copies["01"][1], f"the same frames as its video-only copy {rel}"))
            vocal, emotion, _, _, _, actor = key
            if EMOTIONS[emotion] not in labels:  # said once per video, not once per spread frame
                skipped.append((rel, f"label {EMOTIONS[emotion]} is not in label set {self.label_set(options)}"))
                continue
            item = {"id": rel, "source_path": rel, "subject_id": f"Actor_{actor}", "sequence_id": path.stem,
                    "emotion": EMOTIONS[emotion], "video": str(path)}
            if options.protocol == "sequence":
                items.append(item)
                continue
            count = _stated_frames(path)
            if not count:
                skipped.append((rel, "not a readable video (OpenCV cannot open it or it states no frames)"))
                continue
            for index in common.spread_indices(count):
                source = f"{rel}#frame={index + 1}"
                items.append(dict(item, id=source, source_path=source, frame=index))
        bar.close()
        return items, skipped

    def _no_videos(self, root, audio, options, archives):
        if archives:
            return UserError(f"{root} holds RAVDESS archives still packed ({archives[0]}{' ...' if len(archives) > 1 else ''}); "
                             "unpack them under --root first.")
        if audio:
            return UserError(f"{root} holds RAVDESS audio files only ({audio} .wav); prepare needs the videos: unpack "
                             "the Video_Speech_Actor_NN.zip and Video_Song_Actor_NN.zip archives under --root.")
        if options.vocal in ("speech", "song"):
            return UserError(f"{root} holds no RAVDESS {options.vocal} videos (file names NN-{VOCAL[options.vocal][0]}-"
                             "NN-NN-NN-NN-NN.mp4); see --vocal.")
        return UserError(f"{root} does not look like RAVDESS: no videos named like 02-01-03-01-01-01-01.mp4 (the "
                         "Actor_NN/ folders of Video_Speech_Actor_NN.zip and Video_Song_Actor_NN.zip) at any depth.")

    def group(self, item):
        return item["video"] if "frame" in item else None  # a video's spread stills: decoded once, in one process

    def load(self, item, options):
        if options.protocol == "sequence":
            count = _decodable_frames(item["video"])
            if count < 2:
                raise common.Skip(f"{count} decodable frames; a sequence needs at least 2")
            with _FrameReader(item["video"]) as read_frame:
                crops, points = common.face_sequence(read_frame, count, options)
            return common.sequence_sample(item, crops, points, options)
        crop, points = common.face_still(_frame(item["video"], item["frame"]), options)
        return common.still_sample(item, crop, points)


def _stated_frames(path):
    """The frame count the video's container states; 0 when OpenCV cannot open it."""
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def _open(path):
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise common.Skip("not a readable video (OpenCV cannot open it)")
    return capture


def _decodable_frames(path):
    """How many frames of the video at `path` decode (a container may state another count)."""
    capture, count = _open(path), 0
    try:
        while capture.grab():
            count += 1
    finally:
        capture.release()
    return count


class _FrameReader:
    """t -> frame t (RGB uint8) of a video, for t = 0, 1, 2 ... in turn: one frame in memory at a time."""

    def __init__(self, path):
        self.capture, self.next = _open(path), 0

    def __call__(self, t):
        if t != self.next:
            raise ValueError(f"frames are read in order; asked for {t} after {self.next - 1}")
        ok, frame = self.capture.read()
        if not ok:
            raise common.Skip(f"frame {t + 1} does not decode")
        self.next += 1
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.capture.release()


_LAST_VIDEO = {}  # {(path, size, mtime): ({index: frame}, decoded count)} of the video read last in this process


def _frame(path, index):
    """Frame `index` of the video at `path`: its spread frames are decoded once and kept for the next items (of the
    same file: a video written again at that path is read again)."""
    try:
        stat = os.stat(path)
    except OSError:
        raise common.Skip("not a readable video (it is gone)") from None
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _LAST_VIDEO:
        _LAST_VIDEO.clear()
        keep = set(common.spread_indices(_stated_frames(path)))
        if not keep:
            raise common.Skip("not a readable video (OpenCV cannot open it or it states no frames)")
        frames, count, capture = {}, 0, _open(path)
        try:
            while count <= max(keep) and capture.grab():
                if count in keep:
                    frames[count] = cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB)
                count += 1
        finally:
            capture.release()
        _LAST_VIDEO[key] = frames, count
    frames, count = _LAST_VIDEO[key]
    if index not in frames:
        raise common.Skip(f"the video ends after {count} decodable frames, before frame {index + 1} its container states")
    return frames[index]
