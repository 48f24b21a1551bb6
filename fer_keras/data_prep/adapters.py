"""The registry of real-dataset adapters and the one entry point, `prepare_dataset`.

``fer-keras prepare DATASET --root RAW --out DIR`` calls `prepare_dataset`; see
``docs/datasets.md`` for where to request each dataset, its layout and the papers' protocols.
"""

from fer_keras.data_prep import common
from fer_keras.data_prep.ckplus import CKPlusAdapter
from fer_keras.data_prep.fer2013 import FER2013Adapter
from fer_keras.data_prep.folder import FolderAdapter
from fer_keras.data_prep.jaffe import JAFFEAdapter
from fer_keras.data_prep.kdef import KDEFAdapter
from fer_keras.data_prep.mug import MUGAdapter
from fer_keras.data_prep.rafdb import RAFDBAdapter
from fer_keras.data_prep.ravdess import RAVDESSAdapter
from fer_keras.errors import UserError

ADAPTERS = {
    "ckplus": CKPlusAdapter(),
    "rafdb": RAFDBAdapter(),
    "mug": MUGAdapter(),
    "ravdess": RAVDESSAdapter(),
    "jaffe": JAFFEAdapter(),
    "kdef": KDEFAdapter(),
    "fer2013": FER2013Adapter(),
    "folder": FolderAdapter(),
}


def get_adapter(name):
    if name not in ADAPTERS:
        raise UserError(f"Unknown dataset {name!r}. Expected one of {sorted(ADAPTERS)} (or `synth`).")
    return ADAPTERS[name]


def prepare_dataset(
    name,
    root,
    out,
    *,
    size=112,
    grey=False,
    flow=False,
    landmarks="dlib",
    workers=1,
    detect=None,
    angles=("S",),
    protocol=None,
    items_per_shard=None,
    label_set=None,
    subject_pattern=None,
    vocal=None,
    dataset_name=None,
    quiet=False,
    on_shard_done=None,
):
    """Prepares raw dataset `name` found under `root` into sharded TFRecords in `out`.

    Args:
        name: one of `ADAPTERS` (ckplus, rafdb, mug, ravdess, jaffe, kdef, fer2013, folder).
        root: the dataset's folder as distributed (see docs/datasets.md).
        out: output folder; built as ``<out>.partial`` and renamed when complete. Re-running
            with the same arguments resumes an interrupted run, or returns the finished one.
        size: side of the square face crop.
        grey: one channel instead of RGB.
        flow: store optical flow per frame (sequence datasets: ckplus, mug, ravdess).
        landmarks: "dlib" (detect, 68 dlib landmarks, align) or "dataset" (the dataset's own
            landmarks: CK+ 68 points, RAF-DB 5 manual + 37 automatic points).
        workers: worker processes for the image work (1: in this process).
        detect: False takes the whole image as the face, resized; None is the dataset's
            default (True, except FER2013 whose 48 px images are already face crops).
        angles: KDEF camera angles (S, HL, HR, FL, FR); ignored by the other datasets.
        protocol: CK+ "sequence" (default; onset -> apex, ckplus7) or "still" (last three
            frames as the emotion, first frame as neutral; ckplus8); folder: "still" (default)
            or "sequence", the kind of records; MUG "sequence", "still" or "spread"; RAVDESS "sequence"
            or "spread".
        items_per_shard: items per shard (default 512 for stills, 16 for sequences).
        label_set: folder: the label set (default basic7); RAVDESS: default ravdess8 (basic7 skips calm).
        subject_pattern: folder: regular expression whose first group is the subject id.
        vocal: RAVDESS: "speech", "song" or "both" (default).
        dataset_name: folder: the dataset's name (default: the root folder's), which says who its subject ids are: two
            folders of one name hold the same people under the same ids, for the subject-leak checks.
        quiet: no progress bar.
        on_shard_done: optional callback(index, num_shards) after each finished shard.

    Returns:
        The manifest (`records.read_manifest`), with ``num_skipped`` and ``skipped_file``.
    """
    adapter = get_adapter(name)
    options = adapter.resolve(
        size=size, grey=grey, flow=flow, landmarks=landmarks, detect=detect, angles=angles,
        protocol=protocol, items_per_shard=items_per_shard, label_set=label_set, subject_pattern=subject_pattern,
        vocal=vocal, dataset_name=dataset_name,
    )
    return common.run(adapter, root, out, options, workers=workers, quiet=quiet, on_shard_done=on_shard_done)


def summary(manifest):
    """One line for the CLI: what was prepared and what was skipped."""
    subjects = len(manifest["counts_per_subject"])
    line = (
        f"{'Already prepared' if manifest.get('_already') else 'Prepared'} {manifest['num_examples']} {manifest['kind']} record{'s' * (manifest['num_examples'] != 1)} of "
        f"{subjects} subject{'s' * (subjects != 1)} ({manifest['dataset']}, label set {manifest['label_set']}) in "
        f"{manifest['_dir']}"
    )
    if manifest.get("num_skipped"):
        line += (f"; skipped {manifest['num_skipped']} item{'s' * (manifest['num_skipped'] != 1)} "
                 f"(see {manifest['_dir']}/{manifest['skipped_file']})")
    if subjects == 1 and not manifest.get("official_split"):
        line += (". Note: one subject only, and a subject-independent split needs several: was --root one folder "
                 "of the dataset instead of its top folder?")
    return line
