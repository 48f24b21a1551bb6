"""Shared machinery of the real-dataset adapters: options, the face pipeline, the worker pool,
resumable sharded writing and ``skipped.csv``.

An adapter (`DatasetAdapter` subclass, one per dataset module) does two things:

* ``list_items(root, options)`` (parent process): parses the dataset's layout and labels into a
  deterministic list of items (JSON-able dicts: ``id``, ``emotion``, ``subject_id``,
  ``source_path``, optional ``split`` / ``sequence_id`` and whatever `load` needs), plus the
  entries it already knows to skip (unknown label code, missing label file ...). A wrong folder
  layout raises `UserError` naming what was expected.
* ``load(item, options)`` (worker process): reads the images, finds and aligns the face,
  computes optical flow, and returns a sample dict for `fer_keras.data.records`; raises `Skip`
  for an item that cannot be used (no face, corrupt file ...).

Workers never import TensorFlow: they run NumPy, OpenCV, Pillow and dlib only, in processes
forked from a fresh forkserver (or spawned, where there is none), and send plain arrays back.
The parent serialises them with `fer_keras.data.records` (the one schema) and writes the
shards in item order, so the output does not depend on the number of workers. As with any
multiprocessing code, a script that calls this with workers > 1 needs the
``if __name__ == "__main__":`` guard.

Resumption. Items are split, in list order, into planned shards of ``items_per_shard`` items;
shard ``k`` is always ``data-<k>.tfrecord`` and always holds the records of the same items.
The output is built in ``<out>.partial/``; when a shard is complete it is renamed from ``.tmp``
and recorded, with its sha256, counts and skipped items, in ``<out>.partial/progress/<k>.json``;
``<out>.partial/progress.json`` holds a fingerprint of everything that determines the output
(dataset, options, raw root, item list, code versions; not the number of workers). A re-run
with the same arguments keeps every recorded shard whose checksum still matches and prepares only the rest; a run with
other arguments starts afresh. When every shard is done, ``skipped.csv`` and ``manifest.json``
are written and the folder is renamed to ``<out>``; a later run with the same arguments finds
the finished folder and returns its manifest. A run in which every item is skipped removes
``<out>.partial/`` and raises `UserError` with the first skip reasons: no empty dataset is left.
"""

import collections
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import pathlib
import re
import shutil

import cv2
import numpy as np

from fer_keras.data_prep import faces
from fer_keras.data_prep.flow import sequence_flow
from fer_keras.errors import UserError
from fer_keras.names import printable

PROGRESS = "progress.json"
PROGRESS_DIR = "progress"
LOCK = ".lock"  # flock'ed by the run writing <out>.partial/, so a second run into the same --out is refused
SKIPPED = "skipped.csv"
SHARD_PREFIX = "data"
LANDMARK_CHOICES = ("dlib", "dataset")
# dlib's HOG detector finds faces of about 80 px and more; large frames are searched at this
# size (then upsampled if nothing is found), and the box is scaled back to the full image.
DETECT_MAX_SIDE = 640


class Skip(Exception):
    """An item that cannot be used; its message is the reason written to skipped.csv."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything that determines the prepared output (the number of workers does not).

    Args:
        size: side of the square face crop in pixels.
        grey: one channel instead of RGB.
        flow: store Farneback optical flow per frame (sequence datasets).
        landmarks: "dlib" (detect, 68 dlib landmarks, align) or "dataset" (the dataset's own
            landmarks align the face and are stored).
        detect: False takes the whole image as the face, resized to `size` (no dlib).
        angles: KDEF camera angles to keep.
        protocol: dataset-specific ("sequence" or "still" for CK+).
        items_per_shard: items per planned shard (fixed, so shards can be resumed).
        label_set: the folder adapter's label set (default basic7).
        subject_pattern: the folder adapter's regular expression for subject ids.
        vocal: RAVDESS's vocal channel, "speech", "song" or "both" (None: both).
        dataset_name: the folder adapter's dataset name (None: the root folder's name).
    """

    size: int = 112
    grey: bool = False
    flow: bool = False
    landmarks: str = "dlib"
    detect: bool = True
    angles: tuple = ("S",)
    protocol: str = None
    items_per_shard: int = 512
    label_set: str = None
    subject_pattern: str = None
    vocal: str = None
    dataset_name: str = None

    @property
    def channels(self):
        return 1 if self.grey else 3

    @property
    def dataset_landmarks(self):
        return self.landmarks == "dataset"

    def params(self):
        d = dataclasses.asdict(self)
        d["angles"] = list(self.angles)
        # the folder's and RAVDESS's; unset for the others, so that their fingerprints stay as they were
        for key in ("label_set", "subject_pattern", "vocal", "dataset_name"):
            if d[key] is None:
                del d[key]
        return d


# --- images and points (worker side: no TensorFlow) ----------------------------------------


def read_image(path):
    """uint8 (H, W, 1) grey or (H, W, 3) RGB; `Skip` for a missing, corrupt or truncated file.

    Pillow is used rather than cv2.imread, which decodes a truncated JPEG without complaint. A
    photo's EXIF orientation is applied, so a phone picture stored sideways is read upright, as
    every image viewer shows it.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = str(path)
    try:
        with warnings.catch_warnings(), Image.open(path) as opened:
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like: the pixels are what counts
            opened.load()
            im = ImageOps.exif_transpose(opened)
            if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey -> 8-bit
                array = np.asarray(im, np.float64)
                array = np.clip(array / (257.0 if array.max() > 255 else 1.0), 0, 255).astype(np.uint8)
            elif im.mode in ("L", "RGB"):
                array = np.asarray(im)
            else:  # palette, alpha, CMYK, 1-bit ...
                array = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise Skip("image file is missing") from None
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        message = str(e).replace(path, os.path.basename(path))
        raise Skip(f"corrupt or unreadable image ({message})") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise Skip(f"corrupt or unreadable image (shape {array.shape})")
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise Skip(f"image too small ({array.shape[1]}x{array.shape[0]} px)")
    return np.ascontiguousarray(array, dtype=np.uint8)


def read_points(path, count, what="landmark file"):
    """The first `count` (x, y) pairs of a whitespace-separated text file -> float32 (count, 2)."""
    try:
        text = pathlib.Path(path).read_text(errors="strict")
    except FileNotFoundError:
        raise Skip(f"{what} {pathlib.Path(path).name} is missing") from None
    except (OSError, UnicodeDecodeError):
        raise Skip(f"{what} {pathlib.Path(path).name} is unreadable") from None
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise Skip(f"{what} {pathlib.Path(path).name} does not hold numbers") from None
    if len(values) < 2 * count or not np.all(np.isfinite(values[: 2 * count])):
        raise Skip(f"{what} {pathlib.Path(path).name} holds {len(values)} numbers; expected {count} (x, y) points")
    return np.asarray(values[: 2 * count], np.float32).reshape(count, 2)


def to_channels(image, channels):
    """uint8 (H, W, 1|3) -> (H, W, channels)."""
    if channels == 3:
        return faces.to_rgb(image)
    if image.shape[-1] == 1:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)[..., None]


def resize_face(image, size, channels):
    """The whole image as the face (--no-detect): resized to (size, size), aspect not kept."""
    h, w = image.shape[:2]
    interpolation = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interpolation)
    if resized.ndim == 2:
        resized = resized[..., None]
    return to_channels(resized, channels)


def scale_points(points, from_shape, size):
    """Points of an (H, W) image -> points of that image resized to (size, size)."""
    h, w = from_shape[:2]
    return (np.asarray(points, np.float32) * np.array([size / w, size / h], np.float32)).astype(np.float32)


def find_face(image):
    """The largest dlib HOG face box (x0, y0, x1, y1) in full-image pixels, or `Skip`.

    Searched on a copy scaled down to DETECT_MAX_SIDE, without upsampling first (fast, finds
    faces of 80 px and more), then upsampled once (twice for images under 200 px).
    """
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if small.ndim == 2:
        small = small[..., None]
    for upsample in (0, 1, 2) if max(small.shape[:2]) < 200 else (0, 1):
        boxes = faces.detect_faces(small, upsample=upsample)
        if boxes:
            return tuple(int(round(v / scale)) for v in boxes[0])
    raise Skip("no face found by dlib")


def _matrix(reference, size):
    try:
        return faces.alignment_matrix(reference, size)
    except UserError as e:  # degenerate landmarks: this item, not the run, is at fault
        raise Skip(str(e)) from None


def _apply(matrix, points):
    return (np.asarray(points, np.float32) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def face_still(image, options, landmarks=None):
    """One image -> (crop uint8 (size, size, C), 68 landmarks in the crop or None).

    * ``detect`` False: the whole image resized; `landmarks` (dataset points) scaled with it.
    * `landmarks` given (``--landmarks dataset``): similarity alignment on them, no dlib.
    * otherwise: dlib detection, 68 dlib landmarks, similarity alignment (`faces.align_face`).
    """
    if not options.detect:
        crop = resize_face(image, options.size, options.channels)
        return crop, None if landmarks is None else scale_points(landmarks, image.shape, options.size)
    image = faces.to_rgb(image)  # once, not in each of the dlib and warp calls
    if landmarks is None:
        landmarks = faces.face_landmarks(image, find_face(image))
    _matrix(landmarks, options.size)  # Skip (not UserError) for degenerate points
    return faces.align_face(image, landmarks, options.size, channels=options.channels)


def frame_reader(paths):
    """t -> `read_image(paths[t])`, a `Skip` naming the frame's file: the `read_frame` of a sequence stored as image files."""

    def read_frame(t):
        try:
            return read_image(paths[t])
        except Skip as e:
            raise Skip(f"frame {os.path.basename(paths[t])}: {e}") from None

    return read_frame


def face_sequence(read_frame, count, options, landmarks=None):
    """A sequence -> (frames uint8 (T, size, size, C), landmarks (T, 68, 2) in the crops or None).

    One alignment for the whole sequence, from the first frame's landmarks (the neutral face
    of an onset-apex or neutral-apex-neutral sequence), so the expression's own motion
    (an opening mouth, raised brows) is kept rather than aligned away, and optical flow between
    frames measures it. With dlib the face is detected once, on the first frame, and the 68
    landmarks are predicted in every frame inside that box.

    Args:
        read_frame: t -> uint8 image (frames are read one at a time to bound memory).
        count: number of frames T.
        landmarks: dataset landmarks (T, 68, 2) for ``--landmarks dataset``, else None.
    """
    size, channels = options.size, options.channels
    frames = np.empty((count, size, size, channels), np.uint8)
    points = None if landmarks is None and not options.detect else np.empty((count, 68, 2), np.float32)
    box = matrix = first_shape = None
    for t in range(count):
        image = read_frame(t)
        first_shape = first_shape or image.shape[:2]
        if image.shape[:2] != first_shape and options.detect:
            # one alignment for the whole sequence, made on the first frame: it would misplace frames of another size
            raise Skip(f"frames of different sizes ({first_shape[1]}x{first_shape[0]} px first, "
                       f"{image.shape[1]}x{image.shape[0]} px at frame {t + 1} of {count})")
        if options.detect:
            image = faces.to_rgb(image)  # once, not in each of the dlib and warp calls below
        else:
            frames[t] = resize_face(image, size, channels)
            if landmarks is not None:
                points[t] = scale_points(landmarks[t], image.shape, size)
            continue
        if landmarks is not None:
            frame_points = landmarks[t]
        else:
            if box is None:
                box = find_face(image)
            frame_points = faces.face_landmarks(image, box)
        if matrix is None:
            reference = frame_points
            matrix = _matrix(reference, size)
        frames[t] = faces.align_face(image, reference, size, channels=channels)[0]
        points[t] = _apply(matrix, frame_points)
    return frames, points


# --- adapters -------------------------------------------------------------------------------


class DatasetAdapter:
    """Base of the per-dataset adapters; subclasses set the attributes and two methods.

    Attributes:
        name: registry name and the manifest's ``dataset``.
        title: the dataset's usual spelling, for messages.
        version: bump when the same input and options give different records (invalidates
            resumption of older partial runs).
        has_landmarks: the dataset ships landmarks usable with ``--landmarks dataset``.
        detect_default: dlib detection unless the user says otherwise.
        protocols: accepted ``--protocol`` values, the first is the default.
        official_split: records carry the dataset's own split (manifest "official_split").
        items_per_shard: default planned shard size (None: 512 stills or 16 sequences).
    """

    name = ""
    title = ""
    version = 1
    has_landmarks = False
    detect_default = True
    protocols = (None,)
    official_split = False
    items_per_shard = None
    quiet = True  # no progress bar in list_items; `run` sets it from its own

    def kind(self, options):
        return "still"

    def label_set(self, options):
        return "basic7"

    def resolve(self, *, size=112, grey=False, flow=False, landmarks="dlib", detect=None, angles=("S",),
                protocol=None, items_per_shard=None, label_set=None, subject_pattern=None, vocal=None,
                dataset_name=None):
        """Checks the options for this dataset and fills in its defaults -> `Options`."""
        if not isinstance(size, int) or not 16 <= size <= 1024:
            raise UserError(f"--size must be an integer in 16..1024. Received: size={size!r}")
        if landmarks not in LANDMARK_CHOICES:
            raise UserError(f"--landmarks must be one of {LANDMARK_CHOICES}. Received: landmarks={landmarks!r}")
        if landmarks == "dataset" and not self.has_landmarks:
            raise UserError(f"{self.title} ships no landmarks usable here; use --landmarks dlib.")
        if protocol is None:
            protocol = self.protocols[0]
        if protocol not in self.protocols:
            accepted = [p for p in self.protocols if p is not None]
            raise UserError(
                f"--protocol {protocol!r} does not apply to {self.title}"
                + (f"; expected one of {accepted}." if accepted else " (it has one protocol).")
            )
        if isinstance(angles, str):  # "S,HL" from the command line
            angles = [a.strip() for a in angles.split(",") if a.strip()]
        if items_per_shard is None:
            items_per_shard = self.items_per_shard
        if items_per_shard is not None and (not isinstance(items_per_shard, int) or items_per_shard < 1):
            raise UserError(f"items_per_shard must be a positive integer. Received: {items_per_shard!r}")
        options = Options(
            size=size,
            grey=bool(grey),
            flow=bool(flow),
            landmarks=landmarks,
            detect=self.detect_default if detect is None else bool(detect),
            angles=tuple(angles) if angles is not None else (),
            protocol=protocol,
            items_per_shard=items_per_shard or 1,
            label_set=label_set,
            subject_pattern=subject_pattern,
            vocal=vocal,
            dataset_name=dataset_name,
        )
        if items_per_shard is None:
            options = dataclasses.replace(options, items_per_shard=16 if self.kind(options) == "sequence" else 512)
        if options.flow and self.kind(options) != "sequence":
            raise UserError(f"--flow needs sequence records; {self.title} ({protocol or 'default'} protocol) gives stills.")
        return self.check(options)

    def check(self, options):
        """Dataset-specific option checks; returns the (possibly adjusted) options."""
        return options

    def list_items(self, root, options):
        """-> (items, skipped): items in a deterministic order; skipped (path, reason) pairs."""
        raise NotImplementedError

    def load(self, item, options):
        """-> sample dict for `records.make_still_example` / `make_sequence_example` (+ "flow")."""
        raise NotImplementedError

    def manifest_extra(self, options):
        return {}

    def group(self, item):
        """Items of one group that follow each other are prepared in one worker process; None: each on its own."""
        return None


def still_sample(item, crop, points=None, **extra):
    sample = {
        "image": crop,
        "emotion": item["emotion"],
        "subject_id": item["subject_id"],
        "source_path": item["source_path"],
        "split": item.get("split", ""),
        "landmarks": points,
    }
    sample.update(extra)
    return sample


def sequence_sample(item, frames, points, options):
    return {
        "frames": frames,
        "landmarks": points,
        "emotion": item["emotion"],
        "subject_id": item["subject_id"],
        "sequence_id": item["sequence_id"],
        "source_path": item["source_path"],
        "split": item.get("split", ""),
        "flow": sequence_flow(frames) if options.flow else None,
    }


# Paper 004 (sec. 5.1) samples its training images "at equal intervals" along each sequence and gives no count; 8 a
# sequence is about its 29,085 images over the MUG, CK+ and RAVDESS sequences it names.
SPREAD_FRAMES = 8


def spread_indices(count, frames=SPREAD_FRAMES):
    """Up to `frames` indices at equal intervals over `count` frames, first and last included (paper 004 sec. 5.1)."""
    import numpy as np

    return sorted({int(i) for i in np.linspace(0, count - 1, min(frames, count)).round()})


def relative(path, root):
    """POSIX path of `path` relative to `root` (for records and skipped.csv)."""
    try:
        return pathlib.Path(path).relative_to(root).as_posix()
    except ValueError:
        return pathlib.Path(path).as_posix()


def require(root, *parts, what):
    """`root`/parts, or a `UserError` saying which part of the layout is missing, and where a --root one or two
    folders up has it (the user pointed into the dataset) or an archive of it is there still packed."""
    root = pathlib.Path(root)
    path = pathlib.Path(root, *parts)
    if path.exists():
        return path
    hint = ""
    for above in list(root.parents)[:2]:
        if pathlib.Path(above, *parts).exists():
            hint = f"; it is under {str(above)!r}: pass that folder as --root"
            break
    else:
        packed = [p for p in (path.with_name(path.name + ext) for ext in _ARCHIVE_SUFFIXES) if p.exists()]
        if packed:
            hint = f"; {str(packed[0])!r} is there: unpack it first"
    raise UserError(f"{root} does not look like {what}: {'/'.join(parts)} is missing{hint}.")


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".rar")
_ARCHIVE_MAGIC = ((b"\x1f\x8b", "a gzip archive"), (b"PK\x03\x04", "a zip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"),
                  (b"Rar!", "a RAR archive"), (b"BZh", "a bzip2 archive"), (b"\xfd7zXZ", "an xz archive"))


def refuse_archive(path, inside):
    """A `UserError` when the file `path` is a packed archive, not the file the dataset needs (`inside`)."""
    with open(path, "rb") as f:
        head = f.read(262)
    kind = next((k for magic, k in _ARCHIVE_MAGIC if head.startswith(magic)), None)
    if kind is None and head[257:262] == b"ustar":
        kind = "a tar archive"
    if kind:
        raise UserError(f"--root {str(path)!r} is {kind}; unpack it and give {inside}.")


# --- worker pool ----------------------------------------------------------------------------


def _init_worker():
    cv2.setNumThreads(1)  # one process per core is the parallelism


def _work(adapter, item, options):
    try:
        return "ok", adapter.load(item, options)
    except Skip as e:
        return "skip", str(e)
    except UserError:
        raise
    except Exception as e:  # a bug: stop, saying which item
        raise RuntimeError(f"preparing {item['source_path']} failed: {type(e).__name__}: {e}") from e


def _work_group(adapter, items, options):
    """`_work` of each of `items`, in one process (items that share a file: RAVDESS's stills of one video)."""
    return [_work(adapter, item, options) for item in items]


def _grouped_results(adapter, items, options, workers, uses_dlib):
    """`_work` of each item of `items` [(shard index, item)], in order: runs of consecutive items of one
    `adapter.group(item)` within a shard go to one process together, so that what they share (a decoded video) is
    read once; a group ends with its shard, so that a stop loses no finished shard."""
    def groups():
        batch, key = [], None
        for shard, item in items:
            this = adapter.group(item)
            this = None if this is None else (shard, this)
            if batch and (this is None or this != key):
                yield (adapter, batch, options)
                batch = []
            batch.append(item)
            key = this
        if batch:
            yield (adapter, batch, options)

    results = _ordered_results(groups(), workers, uses_dlib, work=_work_group)
    try:
        for group in results:
            yield from group
    finally:
        results.close()


def _context(uses_dlib):
    """'forkserver' where the platform has it, else 'spawn'.

    Neither forks the parent, which has imported TensorFlow: the forkserver is a fresh
    interpreter that imports only this package's TensorFlow-free modules (and, when the run uses
    dlib, loads its models once, so forked workers share them); 'spawn' starts each worker fresh.
    The forkserver starts with the first pool of this process and keeps its preloads after.
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["fer_keras.data_prep.adapters"] + (["fer_keras.data_prep._dlib_preload"] if uses_dlib else [])
    )
    return context


def _ordered_results(jobs, workers, uses_dlib=True, work=_work):
    """Yields `work(*job)` for each job, in order, computed by `workers` processes."""
    if workers <= 1:  # in this process, leaving its OpenCV threads as they are
        for job in jobs:
            yield work(*job)
        return
    import concurrent.futures

    executor = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=_context(uses_dlib), initializer=_init_worker
    )
    pending = collections.deque()
    jobs = iter(jobs)

    def broken():
        return UserError(f"A worker process died (killed, or out of memory with --workers {workers}); run the same "
                         "command again to go on from the finished shards, with fewer --workers if memory is short.")

    try:
        try:
            for job in itertools.islice(jobs, 2 * workers + 2):
                pending.append(executor.submit(work, *job))
        except concurrent.futures.process.BrokenProcessPool:
            raise broken() from None
        while pending:
            try:  # a result, or the submit after it, finds the pool broken
                result = pending.popleft().result()
                job = next(jobs, None)
                if job is not None:
                    pending.append(executor.submit(work, *job))
            except concurrent.futures.process.BrokenProcessPool:
                raise broken() from None
            yield result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# --- resumable sharded writing (parent side) ------------------------------------------------


def _write_json(path, data):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _file_stamps(items):
    """{path: [size, mtime_ns]} of every existing file an item names (images, frames, label and landmark files).

    Part of the fingerprint, so that a re-run after the raw data changed starts afresh rather than
    returning, or resuming, records made from the old files.
    """
    stamps = {}

    def visit(value):
        if isinstance(value, str):
            if value not in stamps and os.path.isabs(value):
                try:
                    stat = os.stat(value)
                except OSError:
                    return
                stamps[value] = [stat.st_size, stat.st_mtime_ns]
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)

    visit(items)
    return stamps


def fingerprint(adapter, root, options, items, skipped):
    """sha256 of everything that determines the output folder's content, the raw files' sizes and times included."""
    from fer_keras import __version__
    from fer_keras.data import records

    blob = json.dumps(
        {
            "dataset": adapter.name,
            "adapter_version": adapter.version,
            "fer_keras": __version__,
            "schema_version": records.SCHEMA_VERSION,
            "root": str(root),
            "options": options.params(),
            "items": items,
            "files": _file_stamps(items),
            "skipped": skipped,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _shard_name(index):
    return f"{SHARD_PREFIX}-{index:05d}.tfrecord"


def _serialize(sample, kind, label_set, dataset):
    from fer_keras.data import records

    if kind == "still":
        return records.make_still_example(sample, label_set=label_set, dataset=dataset)
    flow = sample.pop("flow", None)
    return records.make_sequence_example(sample, label_set=label_set, dataset=dataset, flow=flow)


def _finished_manifest(out, fp):
    """The manifest of a finished `out` prepared with the same fingerprint, else None."""
    path = out / "manifest.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if manifest.get("params", {}).get("fingerprint") != fp:
        return None
    from fer_keras.data import records

    return records.read_manifest(out, verify=True)


def _load_progress(partial, fp):
    """Finished shards of a previous partial run with the same fingerprint (checksums verified).

    ``progress.json`` holds the fingerprint; each finished shard has its own small record in
    ``progress/NNNNN.json`` (written atomically after the shard), so recording a shard costs the
    same however many came before it.
    """
    from fer_keras.data import records

    path = partial / PROGRESS
    progress = None
    if path.exists():
        try:
            progress = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            progress = None
    if not progress or progress.get("fingerprint") != fp:
        for child in partial.iterdir():  # another run's leftovers: start afresh
            if child.name != LOCK:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return {}
    done = {}
    records_dir = partial / PROGRESS_DIR
    for record in sorted(records_dir.glob("*.json")) if records_dir.is_dir() else []:
        try:
            shard = json.loads(record.read_text())
            index = int(record.stem)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            continue
        file = shard.get("file")
        if file is None or ((partial / file).exists() and records.sha256(partial / file) == shard["sha256"]):
            done[index] = shard
    keep = {s["file"] for s in done.values() if s["file"]} | {PROGRESS, PROGRESS_DIR, LOCK}
    for child in partial.iterdir():  # unfinished .tmp shards, shards with a wrong checksum
        if child.name not in keep:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for record in records_dir.iterdir() if records_dir.is_dir() else []:
        if not (record.suffix == ".json" and record.stem.isdigit() and int(record.stem) in done):
            record.unlink()
    return done


def run(adapter, root, out, options, *, workers=1, quiet=False, on_shard_done=None):
    """Prepares `root` into `out` with `adapter` (see the module docstring); returns the manifest.

    Args:
        on_shard_done: optional callback(index, num_shards) after each shard is recorded
            (progress reporting; tests use it to interrupt a run).
    """
    from fer_keras.labels import get_label_set

    if not isinstance(workers, int) or workers < 1:
        raise UserError(f"--workers must be a positive integer. Received: workers={workers!r}")
    root = pathlib.Path(root).expanduser().resolve()
    if not root.exists():
        raise UserError(f"--root {str(root)!r} does not exist.")
    out = pathlib.Path(out).expanduser().absolute()
    if out.is_symlink():  # a link to the folder to fill: filled where it points (OUT.partial beside that), the link kept
        out = out.resolve()
    if out.resolve() == root or root in out.resolve().parents:
        raise UserError(f"--out {str(out)!r} is inside --root {str(root)!r}; write the prepared dataset outside the raw one.")
    if not (out / "manifest.json").exists():  # said now, not after the listing: OUT.partial is made beside OUT
        from fer_keras import atomic

        atomic.check_writable(out.parent, f"--out {str(out)!r}: its folder")
    kind, label_set = adapter.kind(options), adapter.label_set(options)
    labels = get_label_set(label_set)

    adapter.quiet = quiet  # for a listing that takes long enough to show a bar (RAVDESS's videos)
    listed, skipped = adapter.list_items(root, options)
    skipped = [list(s) for s in skipped]
    items = []
    for item in listed:  # e.g. CK+ code 0 (neutral) has no class in ckplus7
        if item["emotion"] in labels:
            items.append(item)
        else:
            skipped.append([item["source_path"], f"label {item['emotion']} is not in label set {label_set}"])
    if not items:
        raise _nothing_usable(adapter, root, skipped)
    fp = fingerprint(adapter, root, options, items, skipped)

    finished = _finished_manifest(out, fp)
    if finished is not None:
        finished["_already"] = True  # prepared before with these arguments and these raw files: nothing written
        return finished
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"Output folder {str(out)!r} already exists and is not a finished preparation with these arguments "
            "and these raw files; choose another --out or delete it."
        )
    partial = out.with_name(out.name + ".partial")
    if partial.exists() and (not partial.is_dir() or (
            not (partial / PROGRESS).exists() and any(child.name != LOCK for child in partial.iterdir()))):
        raise UserError(f"{str(partial)!r} exists and was not left by fer-keras prepare; move it away or choose another --out.")
    partial.mkdir(parents=True, exist_ok=True)
    lock = _lock(partial)
    try:
        return _write(adapter, root, out, partial, options, kind, label_set, labels, items, skipped, fp, workers,
                      quiet, on_shard_done)
    finally:
        lock.close()


def _lock(partial):
    """An exclusive lock on `partial` for this run (released when the returned file is closed, or the process dies)."""
    import fcntl

    handle = open(partial / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(f"Another fer-keras prepare is writing {str(partial)!r}; wait for it to finish or choose another --out.") from None
    return handle


def _write(adapter, root, out, partial, options, kind, label_set, labels, items, skipped, fp, workers, quiet, on_shard_done):
    """The shards of `run`, in `partial` (locked), then the manifest; `partial` is renamed to `out` when complete."""
    from fer_keras.data import records
    from fer_keras.progress import progress as progress_bar

    done = _load_progress(partial, fp)

    n = options.items_per_shard
    plan = [items[i : i + n] for i in range(0, len(items), n)]
    _write_json(partial / PROGRESS, {"fingerprint": fp, "num_shards": len(plan)})
    (partial / PROGRESS_DIR).mkdir(exist_ok=True)
    shards = dict(done)
    todo = [k for k in range(len(plan)) if k not in done]

    import tensorflow as tf

    bar = progress_bar(total=len(items), desc=f"{adapter.title} {kind}s", unit="item", quiet=quiet)
    bar.update(sum(len(plan[k]) for k in done))
    uses_dlib = options.detect and not options.dataset_landmarks
    results = _grouped_results(adapter, ((k, item) for k in todo for item in plan[k]), options, workers, uses_dlib)
    writer = tmp = None
    try:
        for k in todo:
            counts_class, counts_subject, counts_split, shard_skipped, num = {}, {}, {}, [], 0
            tmp = partial / (_shard_name(k) + ".tmp")
            for item in plan[k]:
                status, payload = next(results)
                if status == "skip":
                    shard_skipped.append([item["source_path"], payload])
                else:
                    record = _serialize(payload, kind, label_set, adapter.name)
                    if writer is None:
                        writer = tf.io.TFRecordWriter(str(tmp))
                    writer.write(record)
                    num += 1
                    counts_class[item["emotion"]] = counts_class.get(item["emotion"], 0) + 1
                    subject = str(item["subject_id"])
                    counts_subject[subject] = counts_subject.get(subject, 0) + 1
                    if item.get("split"):
                        counts_split[item["split"]] = counts_split.get(item["split"], 0) + 1
                bar.update(1)
            entry = {"file": None, "sha256": None, "num_examples": 0}
            if writer is not None:
                writer.close()
                writer = None
                final = partial / _shard_name(k)
                os.replace(tmp, final)
                entry = {"file": final.name, "sha256": records.sha256(final), "num_examples": num}
            entry.update(counts_per_class=counts_class, counts_per_subject=counts_subject,
                         counts_per_split=counts_split, skipped=shard_skipped)
            shards[k] = entry
            _write_json(partial / PROGRESS_DIR / f"{k:05d}.json", entry)
            if on_shard_done is not None:
                on_shard_done(k, len(plan))
    except BaseException as e:
        if writer is not None:
            writer.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        finished = sum(k in shards for k in range(len(plan)))
        if not finished:  # nothing to resume from: leave nothing behind
            _remove_partial(partial)
        elif isinstance(e, KeyboardInterrupt):
            raise KeyboardInterrupt(f"{finished} of {len(plan)} shards are finished in {partial}; "
                                    "the same command goes on from them") from None
        raise
    finally:
        results.close()
        bar.close()

    work_skipped = [s for k in range(len(plan)) for s in shards[k]["skipped"]]
    if not any(shards[k]["num_examples"] for k in range(len(plan))):  # every item skipped in the image work
        _remove_partial(partial)
        # the image work's reasons first: a missing landmark file says more than CK+'s unlabelled sequences
        raise _nothing_usable(adapter, root, work_skipped + skipped)
    manifest = _manifest(adapter, root, options, kind, label_set, labels, plan, shards, skipped, fp)
    _write_skipped(partial / SKIPPED, skipped + work_skipped)
    _write_json(partial / records.MANIFEST, manifest)
    (partial / PROGRESS).unlink()
    shutil.rmtree(partial / PROGRESS_DIR)
    (partial / LOCK).unlink()  # the lock holds on the open file until `run` closes it
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(partial, out)
    return records.read_manifest(out)


def _remove_partial(partial):
    """Deletes this run's `partial` folder; its lock file goes first, so the folder is gone in one step for other runs."""
    (partial / LOCK).unlink(missing_ok=True)
    shutil.rmtree(partial, ignore_errors=True)


def _nothing_usable(adapter, root, skipped):
    """The `UserError` of a run that has no item left to write: its three commonest skip reasons, with counts and an example."""
    if not skipped:
        return UserError(f"No usable {adapter.title} items in {root}: none were found.")
    by_reason = {}  # reasons that differ only in a file name count as one: "landmark file <file> is missing"
    for path, reason in skipped:
        reason = " ".join(str(reason).split())
        key = re.sub(r"[^\s'(]+\.[A-Za-z][A-Za-z0-9]{1,4}\b", "<file>", reason)
        by_reason.setdefault(key, []).append((path, reason))
    common_reasons = sorted(by_reason.values(), key=len, reverse=True)
    shown = "; ".join(f"{len(group)} x {group[0][1]} (e.g. {group[0][0]})" for group in common_reasons[:3])
    others = len(common_reasons) - 3
    more = f"; and {others} other reason{'s' if others > 1 else ''}" if others > 0 else ""
    return UserError(f"No usable {adapter.title} items in {root}: all {len(skipped)} were skipped: {shown}{more}.")


def _write_skipped(path, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows([printable(value) for value in row] for row in rows)  # a file name that is not UTF-8
    path.write_text(buffer.getvalue())


def read_skipped(out):
    """skipped.csv of a prepared folder -> list of (path, reason)."""
    with open(pathlib.Path(out) / SKIPPED, newline="") as f:
        return [tuple(row) for row in list(csv.reader(f))[1:]]


def _manifest(adapter, root, options, kind, label_set, labels, plan, entries, skipped, fp):
    """The manifest: the keys `records.ShardedWriter` writes, plus this preparation's own."""
    from fer_keras.data import records

    counts_class = {name: 0 for name in labels}
    counts_subject, counts_split, shards = {}, {}, []
    num_skipped = len(skipped)
    for k in range(len(plan)):
        entry = entries[k]
        for name, c in entry["counts_per_class"].items():
            counts_class[name] += c
        for name, c in entry["counts_per_subject"].items():
            counts_subject[name] = counts_subject.get(name, 0) + c
        for name, c in entry["counts_per_split"].items():
            counts_split[name] = counts_split.get(name, 0) + c
        num_skipped += len(entry["skipped"])
        if entry["file"]:
            shards.append({"file": entry["file"], "num_examples": entry["num_examples"], "sha256": entry["sha256"]})
    params = {"dataset": adapter.name, "root": str(root), **options.params(), "fingerprint": fp}
    manifest = {
        "schema_version": records.SCHEMA_VERSION,
        "dataset": adapter.name,
        "kind": kind,
        "label_set": label_set,
        "labels": list(labels),
        "num_examples": sum(s["num_examples"] for s in shards),
        "counts_per_class": counts_class,
        "counts_per_subject": dict(sorted(counts_subject.items())),
        "shards": shards,
        "params": params,
        "image": {"size": options.size, "channels": options.channels},
        "flow_bound": records.DEFAULT_FLOW_BOUND if options.flow else None,
        "official_split": adapter.official_split,
        "num_items": sum(len(p) for p in plan) + len(skipped),
        "num_skipped": num_skipped,
        "skipped_file": SKIPPED,
    }
    if adapter.official_split:
        manifest["counts_per_split"] = dict(sorted(counts_split.items()))
    manifest.update(adapter.manifest_extra(options))
    return manifest
