"""The shared adapter machinery: resumption, workers, manifest, skipped.csv, image reading, faces."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_keras.data import records
from fer_keras.data_prep import common, faces
from fer_keras.data_prep.adapters import ADAPTERS, prepare_dataset
from fer_keras.errors import UserError
from tests.data_prep import synth_trees as trees
from tests.data_prep.test_jaffe import make_tree

ARGS = dict(size=32, grey=True, detect=False, items_per_shard=2, quiet=True)  # 13 items (1 corrupt) -> 7 shards


class Interrupt(Exception):
    pass


def stop_after(count):
    def callback(index, total):
        if index + 1 >= count:
            raise Interrupt(f"stopped after shard {index} of {total}")

    return callback


def shard_state(out):
    """{file: (sha256, inode, mtime_ns)} of the shards in a folder."""
    return {p.name: (records.sha256(p), p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.glob("data-*.tfrecord"))}


def comparable(manifest):
    return {k: v for k, v in manifest.items() if k != "_dir"}


@pytest.fixture(scope="module")
def jaffe_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("common_raw")
    make_tree(root)
    return root


@pytest.fixture(scope="module")
def reference(jaffe_root, tmp_path_factory):
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "jaffe"
    return out, prepare_dataset("jaffe", jaffe_root, out, **ARGS)


def test_interrupted_run_resumes_to_the_same_output(jaffe_root, reference, tmp_path):
    ref_out, ref_manifest = reference
    out = tmp_path / "jaffe"
    partial = tmp_path / "jaffe.partial"
    with pytest.raises(Interrupt):
        prepare_dataset("jaffe", jaffe_root, out, on_shard_done=stop_after(2), **ARGS)
    assert not out.exists() and (partial / common.PROGRESS).exists()
    assert json.loads((partial / common.PROGRESS).read_text())["num_shards"] == 7
    recorded = sorted(p.name for p in (partial / common.PROGRESS_DIR).iterdir())
    assert recorded == ["00000.json", "00001.json"]
    before = shard_state(partial)
    assert list(before) == ["data-00000.tfrecord", "data-00001.tfrecord"]
    assert not list(partial.glob("*.tmp"))  # the unfinished shard was removed
    (partial / "data-00002.tfrecord.tmp").write_bytes(b"half a shard")  # as a killed run leaves it

    finished = []
    manifest = prepare_dataset("jaffe", jaffe_root, out, on_shard_done=lambda k, n: finished.append(k), **ARGS)
    assert finished == [2, 3, 4, 5, 6]  # the two recorded shards were not prepared again
    after = shard_state(out)
    for name, state in before.items():
        assert after[name] == state  # same file: not rewritten (inode and mtime kept)
    assert comparable(manifest) == comparable(ref_manifest)
    assert {n: s[0] for n, s in after.items()} == {n: s[0] for n, s in shard_state(ref_out).items()}
    assert (out / common.SKIPPED).read_text() == (ref_out / common.SKIPPED).read_text()
    assert not partial.exists() and not (out / common.PROGRESS).exists() and not (out / common.PROGRESS_DIR).exists()


def test_a_recorded_shard_with_a_wrong_checksum_is_prepared_again(jaffe_root, reference, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "jaffe"
    with pytest.raises(Interrupt):
        prepare_dataset("jaffe", jaffe_root, out, on_shard_done=stop_after(3), **ARGS)
    shard = tmp_path / "jaffe.partial" / "data-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated on disk
    finished = []
    prepare_dataset("jaffe", jaffe_root, out, on_shard_done=lambda k, n: finished.append(k), **ARGS)
    assert finished == [1, 3, 4, 5, 6]
    assert {n: s[0] for n, s in shard_state(out).items()} == {n: s[0] for n, s in shard_state(ref_out).items()}


def test_other_arguments_discard_a_partial_run(jaffe_root, tmp_path):
    out = tmp_path / "jaffe"
    with pytest.raises(Interrupt):
        prepare_dataset("jaffe", jaffe_root, out, on_shard_done=stop_after(2), **ARGS)
    finished = []
    prepare_dataset("jaffe", jaffe_root, out, on_shard_done=lambda k, n: finished.append(k), **dict(ARGS, size=40))
    assert finished == [0, 1, 2, 3, 4, 5, 6]
    assert records.read_manifest(out)["image"]["size"] == 40


def test_finished_output_is_returned_and_other_arguments_refused(jaffe_root, reference):
    out, manifest = reference
    state = shard_state(out)
    again = prepare_dataset("jaffe", jaffe_root, out, on_shard_done=lambda k, n: pytest.fail("re-prepared"), **ARGS)
    assert again.pop("_already") is True and "_already" not in manifest
    assert comparable(again) == comparable(manifest) and shard_state(out) == state
    with pytest.raises(UserError, match="already exists"):
        prepare_dataset("jaffe", jaffe_root, out, **dict(ARGS, size=40))


def test_two_worker_processes_write_the_same_shards(jaffe_root, reference, tmp_path):
    ref_out, ref_manifest = reference
    manifest = prepare_dataset("jaffe", jaffe_root, tmp_path / "jaffe", workers=2, **ARGS)
    assert comparable(manifest) == comparable(ref_manifest)  # workers is not part of the output
    assert {n: s[0] for n, s in shard_state(tmp_path / "jaffe").items()} == {n: s[0] for n, s in shard_state(ref_out).items()}


def test_manifest_has_every_key_the_sharded_writer_writes(reference, tmp_path):
    _, manifest = reference
    with records.ShardedWriter(tmp_path, kind="still", dataset="unit", label_set="basic7") as writer:
        sample = {"image": np.zeros((8, 8, 1), np.uint8), "emotion": "anger", "subject_id": "s"}
        writer.add(records.make_still_example(sample, label_set="basic7", dataset="unit"), "anger", "s")
    written = json.loads((tmp_path / records.MANIFEST).read_text())
    assert set(written) <= set(manifest)
    for key in ("schema_version", "kind", "label_set", "labels", "num_examples", "counts_per_class", "counts_per_subject"):
        assert type(manifest[key]) is type(written[key]), key
    assert set(manifest["shards"][0]) == set(written["shards"][0])
    assert sum(s["num_examples"] for s in manifest["shards"]) == manifest["num_examples"] == 12
    assert manifest["num_items"] == manifest["num_examples"] + manifest["num_skipped"]


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_an_empty_root_is_a_user_error_naming_the_layout(name, tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(UserError, match="does not look like|is missing|no S###"):
        prepare_dataset(name, tmp_path / "raw", tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_a_run_in_which_every_item_is_skipped_leaves_no_folder(tmp_path):
    folder = tmp_path / "raw" / "jaffe"
    trees.save(folder / "KA.XX1.91.tiff", trees.still(0, "anger", size=64, grey=True)["image"])  # skipped when listed
    for name in ("KA.AN1.39.tiff", "KL.HA2.40.tiff", "KM.NE1.41.tiff"):  # skipped in the image work (2 shards)
        (folder / name).write_bytes(np.random.default_rng(0).bytes(999))
    out = tmp_path / "jaffe"
    for _ in range(2):  # a second run finds nothing left over and fails the same way
        with pytest.raises(UserError) as error:
            prepare_dataset("jaffe", tmp_path / "raw", out, **ARGS)
        message = str(error.value)
        # the reasons counted, those that differ only in a file name as one, commonest first, each with an example
        assert message == (
            f"No usable JAFFE items in {tmp_path / 'raw'}: all 4 were skipped: "
            "3 x corrupt or unreadable image (cannot identify image file 'KA.AN1.39.tiff') (e.g. jaffe/KA.AN1.39.tiff); "
            "1 x unknown JAFFE expression code 'XX' (known: AN DI FE HA NE SA SU) (e.g. jaffe/KA.XX1.91.tiff)."), message
        assert not out.exists() and not (tmp_path / "jaffe.partial").exists()


def test_option_checks():
    with pytest.raises(UserError, match="--size"):
        ADAPTERS["jaffe"].resolve(size=8)
    with pytest.raises(UserError, match="--landmarks"):
        ADAPTERS["ckplus"].resolve(landmarks="mediapipe")
    with pytest.raises(UserError, match="--protocol 'apex' does not apply to MUG; expected one of"):
        ADAPTERS["mug"].resolve(protocol="apex")
    with pytest.raises(UserError, match="--protocol 'still' does not apply to JAFFE"):
        ADAPTERS["jaffe"].resolve(protocol="still")
    with pytest.raises(UserError, match="--flow needs sequence records; MUG"):
        ADAPTERS["mug"].resolve(protocol="spread", flow=True)
    with pytest.raises(UserError, match="--angles"):
        ADAPTERS["kdef"].resolve(angles=("S", "UP"))
    assert ADAPTERS["kdef"].resolve(angles="hl, S").angles == ("S", "HL")
    assert ADAPTERS["ckplus"].resolve().items_per_shard == 16
    assert ADAPTERS["ckplus"].resolve(protocol="still").items_per_shard == 512
    assert ADAPTERS["fer2013"].resolve().detect is False and ADAPTERS["kdef"].resolve().detect is True
    with pytest.raises(UserError, match="--workers"):
        common.run(ADAPTERS["jaffe"], ".", "out", ADAPTERS["jaffe"].resolve(), workers=0)


def test_read_image_skips_corrupt_files_and_reads_16_bit(tmp_path):
    image = trees.still(1, "happiness", size=48)["image"]
    good = trees.save(tmp_path / "a.jpg", image)
    assert common.read_image(good).shape == (48, 48, 3)
    for name, keep in (("b.jpg", 0.5), ("c.png", 0.5)):
        trees.truncate(trees.save(tmp_path / name, image), keep)
        with pytest.raises(common.Skip, match="corrupt or unreadable"):
            common.read_image(tmp_path / name)
    (tmp_path / "d.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(common.Skip, match="corrupt or unreadable"):
        common.read_image(tmp_path / "d.png")
    with pytest.raises(common.Skip, match="missing"):
        common.read_image(tmp_path / "none.png")
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(tmp_path / "e.png")
    grey = common.read_image(tmp_path / "e.png")
    assert grey.shape == (64, 64, 1) and grey.dtype == np.uint8 and grey.max() > 200


def test_face_still_with_dataset_landmarks_is_faces_align_face():
    s = trees.still(2, "surprise", size=96)
    options = ADAPTERS["ckplus"].resolve(size=48, landmarks="dataset", protocol="still")
    crop, points = common.face_still(s["image"], options, s["landmarks"])
    expected, expected_points = faces.align_face(s["image"], s["landmarks"], 48, channels=3)
    np.testing.assert_array_equal(crop, expected)
    np.testing.assert_allclose(points, expected_points)
    no_detect = ADAPTERS["ckplus"].resolve(size=48, landmarks="dataset", detect=False, protocol="still")
    crop, points = common.face_still(s["image"], no_detect, s["landmarks"])
    assert crop.shape == (48, 48, 3)
    np.testing.assert_allclose(points, s["landmarks"] * 0.5, atol=1e-5)
    degenerate = np.zeros((68, 2), np.float32)
    with pytest.raises(common.Skip):
        common.face_still(s["image"], options, degenerate)


def test_face_sequence_keeps_one_alignment_for_the_whole_sequence():
    q = trees.sequence(3, "surprise", size=96, frames=6)
    options = ADAPTERS["ckplus"].resolve(size=64, landmarks="dataset")
    frames, points = common.face_sequence(lambda t: q["frames"][t], 6, options, q["landmarks"])
    assert frames.shape == (6, 64, 64, 3) and points.shape == (6, 68, 2)
    anchors = faces.anchor_points(points[0])  # a similarity cannot fit all three anchors of every face
    np.testing.assert_allclose(anchors[:2], faces.TEMPLATE[:2] * 64, atol=0.08 * 64)
    assert abs(anchors[2, 0] - 32) < 0.08 * 64 and anchors[2, 1] > 40
    matrix = faces.alignment_matrix(q["landmarks"][0], 64)
    for t in range(6):
        np.testing.assert_allclose(points[t], q["landmarks"][t] @ matrix[:, :2].T + matrix[:, 2], atol=1e-3)
        np.testing.assert_array_equal(frames[t], faces.align_face(q["frames"][t], q["landmarks"][0], 64)[0])
    # The expression moves the mouth (surprise opens it): not aligned away.
    assert np.linalg.norm(points[-1][57] - points[0][57]) > 1.0


def test_workers_do_not_import_tensorflow():
    """Workers (and their forkserver) import the adapters' modules; none may pull in TensorFlow."""
    import subprocess
    import sys

    code = (
        "import sys; import fer_keras.data_prep.adapters, fer_keras.data_prep.common, fer_keras.data_prep._dlib_preload; "
        "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if m.startswith('tensorflow'))[:3]"
    )
    import fer_keras

    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(fer_keras.__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_second_run_into_the_same_out_is_refused_while_the_first_writes(jaffe_root, tmp_path):
    """Two runs writing one <out>.partial would delete each other's unfinished shards: the second is refused."""
    import fcntl

    out = tmp_path / "jaffe"
    partial = tmp_path / "jaffe.partial"
    partial.mkdir()
    with open(partial / common.LOCK, "a") as held:  # what a running prepare holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="Another fer-keras prepare is writing"):
            prepare_dataset("jaffe", jaffe_root, out, **ARGS)
    assert not out.exists()
    manifest = prepare_dataset("jaffe", jaffe_root, out, **ARGS)  # the lock released: the run goes ahead
    assert manifest["num_examples"] == 12 and not partial.exists() and not (out / common.LOCK).exists()


def test_a_partial_folder_that_is_not_prepares_own_is_left_alone(jaffe_root, tmp_path):
    notes = tmp_path / "jaffe.partial" / "thesis.tex"
    notes.parent.mkdir()
    notes.write_text("two years of work")
    with pytest.raises(UserError, match="was not left by fer-keras prepare"):
        prepare_dataset("jaffe", jaffe_root, tmp_path / "jaffe", **ARGS)
    assert notes.read_text() == "two years of work" and sorted(p.name for p in notes.parent.iterdir()) == ["thesis.tex"]


def test_changed_raw_files_are_not_answered_with_the_old_output(tmp_path):
    root = tmp_path / "raw"
    make_tree(root)
    out = tmp_path / "jaffe"
    prepare_dataset("jaffe", root, out, **ARGS)
    again = prepare_dataset("jaffe", root, out, on_shard_done=lambda k, n: pytest.fail("re-prepared"), **ARGS)
    assert again["num_examples"] == 12  # unchanged raw files: the finished output
    image = root / "jaffe" / "KA.AN1.0.tiff"
    trees.save(image, np.full((64, 64), 128, np.uint8))  # the same name, other pixels
    with pytest.raises(UserError, match="not a finished preparation with these arguments and these raw files"):
        prepare_dataset("jaffe", root, out, **ARGS)
    # and a partial run of the old files is not resumed with the new ones
    with pytest.raises(Interrupt):
        prepare_dataset("jaffe", root, tmp_path / "other", on_shard_done=stop_after(2), **ARGS)
    trees.save(image, np.full((64, 64), 64, np.uint8))
    finished = []
    prepare_dataset("jaffe", root, tmp_path / "other", on_shard_done=lambda k, n: finished.append(k), **ARGS)
    assert finished == [0, 1, 2, 3, 4, 5, 6]


def test_ctrl_c_keeps_finished_shards_and_says_so_and_leaves_nothing_before_the_first(jaffe_root, tmp_path, monkeypatch):
    def interrupt(k, n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="1 of 7 shards are finished in .*jaffe.partial; the same command goes on"):
        prepare_dataset("jaffe", jaffe_root, tmp_path / "jaffe", on_shard_done=interrupt, **ARGS)
    assert (tmp_path / "jaffe.partial" / "data-00000.tfrecord").exists()

    def load(item, options):  # Ctrl-C in the middle of the first shard (workers=1: the work runs in this process)
        raise KeyboardInterrupt

    monkeypatch.setattr(ADAPTERS["jaffe"], "load", load)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("jaffe", jaffe_root, tmp_path / "early", **ARGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jaffe.partial"]  # nothing of "early" is left


def test_out_inside_root_is_refused(jaffe_root):
    with pytest.raises(UserError, match="is inside --root"):
        prepare_dataset("jaffe", jaffe_root, jaffe_root / "prepared", **ARGS)
    assert not (jaffe_root / "prepared").exists() and not (jaffe_root / "prepared.partial").exists()


def test_the_same_samples_give_the_same_bytes_in_another_process():
    """Shards are byte-identical across runs: the record maps are serialised in key order."""
    example = records.make_still_example(
        {"image": np.zeros((8, 8, 1), np.uint8), "emotion": "anger", "subject_id": "s", "landmarks": np.ones((68, 2)),
         "source_path": "a/b.png", "split": "train"}, label_set="basic7", dataset="unit")
    code = ("import hashlib, numpy as np; from fer_keras.data import records; print(hashlib.sha256(records.make_still_example("
            "{'image': np.zeros((8, 8, 1), np.uint8), 'emotion': 'anger', 'subject_id': 's', 'landmarks': np.ones((68, 2)),"
            " 'source_path': 'a/b.png', 'split': 'train'}, label_set='basic7', dataset='unit')).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED="123", TF_CPP_MIN_LOG_LEVEL="3")).stdout.split()[-1]
    assert hashlib.sha256(example).hexdigest() == other


def test_read_image_turns_a_photo_upright_by_its_exif_orientation(tmp_path):
    image = trees.still(1, "happiness", size=64)["image"][:, :48]  # 64 high, 48 wide
    stored = np.ascontiguousarray(np.rot90(image, k=1))  # stored sideways (48 high, 64 wide), as a phone does
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=98)
    upright = common.read_image(tmp_path / "phone.jpg")
    assert upright.shape == (64, 48, 3)
    assert np.abs(upright.astype(int) - image).mean() < 4


def test_read_image_names_a_tiny_image_and_find_face_takes_a_banner(tmp_path):
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(common.Skip, match=r"image too small \(7x7 px\)"):
        common.read_image(tmp_path / "tiny.png")
    with pytest.raises(common.Skip, match="no face found"):  # 8 x 20000: scaled down, one side would round to 0
        common.find_face(np.zeros((8, 20000, 3), np.uint8))


def test_frames_of_different_sizes_are_skipped_rather_than_misaligned():
    q = trees.sequence(3, "surprise", size=96, frames=3)
    frames = [q["frames"][0], q["frames"][1], cv2.resize(q["frames"][2], (192, 192))]
    options = ADAPTERS["ckplus"].resolve(size=48, landmarks="dataset")
    with pytest.raises(common.Skip, match=r"frames of different sizes \(96x96 px first, 192x192 px at frame 3 of 3\)"):
        common.face_sequence(lambda t: frames[t], 3, options, q["landmarks"])
    whole = ADAPTERS["ckplus"].resolve(size=48, detect=False)  # each frame resized on its own: no misalignment
    assert common.face_sequence(lambda t: frames[t], 3, whole)[0].shape == (3, 48, 48, 3)


def test_an_out_whose_folder_cannot_be_written_is_said_before_the_listing(jaffe_root, monkeypatch):
    """OUT.partial is made beside OUT: a folder that cannot take it (here /proc) is one line, before any work."""
    monkeypatch.setattr(ADAPTERS["jaffe"], "list_items", lambda *a: pytest.fail("listed the raw files first"))
    with pytest.raises(UserError) as error:
        prepare_dataset("jaffe", jaffe_root, "/proc/fer_keras_nowhere/jaffe", **ARGS)
    assert str(error.value).startswith("--out '/proc/fer_keras_nowhere/jaffe': its folder '/proc/fer_keras_nowhere' "
                                       "cannot be written:")


def test_a_root_inside_the_dataset_or_still_packed_is_pointed_to_the_right_folder(tmp_path):
    ck = tmp_path / "CK+"
    (ck / "cohn-kanade-images" / "S005" / "001").mkdir(parents=True)
    (ck / "Emotion" / "S005" / "001").mkdir(parents=True)
    for given in (ck / "cohn-kanade-images", ck / "cohn-kanade-images" / "S005"):
        with pytest.raises(UserError) as error:
            prepare_dataset("ckplus", given, tmp_path / "out", quiet=True)
        assert str(error.value).endswith(f"cohn-kanade-images is missing; it is under {str(ck)!r}: pass that folder as --root.")
    (tmp_path / "basic" / "Image").mkdir(parents=True)
    (tmp_path / "basic" / "Image" / "aligned.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(UserError, match=r"Image/aligned is missing; '.*aligned\.zip' is there: unpack it first\.$"):
        common.require(tmp_path / "basic", "Image", "aligned", what="RAF-DB")
    packed = tmp_path / "fer2013.tar.gz"
    packed.write_bytes(b"\x1f\x8b\x08\x00" + bytes(300))
    with pytest.raises(UserError) as error:
        prepare_dataset("fer2013", packed, tmp_path / "fer", quiet=True)
    assert str(error.value) == f"--root {str(packed)!r} is a gzip archive; unpack it and give the fer2013.csv inside."
    assert not (tmp_path / "out").exists() and not (tmp_path / "fer").exists()


def test_an_unfinished_prepare_given_as_data_says_how_to_finish_it(jaffe_root, tmp_path):
    with pytest.raises(Interrupt):
        prepare_dataset("jaffe", jaffe_root, tmp_path / "jaffe", on_shard_done=stop_after(1), **ARGS)
    with pytest.raises(UserError) as error:
        records.read_manifest(tmp_path / "jaffe.partial")
    assert str(error.value) == (f"{str(tmp_path / 'jaffe.partial')!r} is an unfinished `fer-keras prepare`: run the same "
                                "prepare command again to finish it into 'jaffe'.")


def test_the_summary_line_counts_in_words_and_warns_of_a_single_subject():
    from fer_keras.data_prep.adapters import summary

    base = {"num_examples": 7, "kind": "still", "dataset": "kdef", "label_set": "basic7", "_dir": "data/kdef"}
    one = summary(dict(base, counts_per_subject={"F01": 7}, num_skipped=1, skipped_file="skipped.csv"))
    assert one.startswith("Prepared 7 still records of 1 subject (kdef, label set basic7) in data/kdef; skipped 1 item ")
    assert "Note: one subject only" in one
    two = summary(dict(base, counts_per_subject={"F01": 4, "M02": 3}))
    assert "of 2 subjects" in two and "Note" not in two
    assert summary(dict(base, counts_per_subject={"F01": 4, "M02": 3}, _already=True)).startswith("Already prepared 7")
