"""`fer-keras prepare DATASET` from the CLI on fake trees in each layout, then `train` on the result."""

import json

import pytest

from tests.conftest import expect_ok, expect_user_error, invoke
from tests.data_prep.test_ckplus import root as ckplus_root  # noqa: F401  (module fixtures, reused)
from tests.data_prep.test_kdef import root as kdef_root  # noqa: F401
from tests.data_prep.test_mug import tree as mug_tree  # noqa: F401
from tests.data_prep.test_rafdb import tree as rafdb_tree  # noqa: F401
from tests.data_prep.test_fer2013 import write_csv
from tests.data_prep.test_jaffe import make_tree as make_jaffe_tree

TRAIN = ("--quiet", "train", "--epochs", 1, "--batch-size", 8, "--image-size", 32)


def _train(data, out, model, *extra):
    expect_ok(invoke(*TRAIN, "--model", model, "--data", data, "--out", out, "--name", "run", *extra))
    assert (out / "run" / "model.keras").is_file()
    return json.loads((out / "run" / "config.json").read_text())


def test_jaffe_prepares_and_trains(tmp_path):
    make_jaffe_tree(tmp_path / "raw")
    out = tmp_path / "jaffe"
    result = expect_ok(invoke("prepare", "jaffe", "--root", tmp_path / "raw", "--out", out, "--size", 48, "--grey", "--no-detect"))
    assert "skipped" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "jaffe" and manifest["num_examples"] == 12
    assert (out / "skipped.csv").is_file()
    config = _train(out, tmp_path / "runs", "frame_cnn", "--folds", 2)
    assert config["dataset"]["name"] == "jaffe"


def test_fer2013_trains_on_its_official_split(tmp_path):
    write_csv(tmp_path / "raw" / "fer2013.csv")
    out = tmp_path / "fer2013"
    expect_ok(invoke("--quiet", "prepare", "fer2013", "--root", tmp_path / "raw", "--out", out, "--size", 48, "--grey"))
    config = _train(out, tmp_path / "runs", "frame_cnn", "--split", "official")
    assert config["split_subjects"]["official"] is True


def test_ckplus_sequences_prepare_and_train_a_clip_model(tmp_path, ckplus_root):  # noqa: F811
    out = tmp_path / "ckplus"
    expect_ok(invoke("--quiet", "prepare", "ckplus", "--root", ckplus_root, "--out", out, "--size", 48, "--grey",
                     "--landmarks", "dataset"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sequence" and manifest["label_set"] == "ckplus7"
    _train(out, tmp_path / "runs", "convlstm2d_clip", "--folds", 2, "--clip-length", 4)


def test_rafdb_prepares_with_dataset_landmarks_and_trains_on_its_official_split(tmp_path, rafdb_tree):  # noqa: F811
    base, _ = rafdb_tree
    out = tmp_path / "rafdb"
    expect_ok(invoke("--quiet", "prepare", "rafdb", "--root", base, "--out", out, "--size", 48, "--landmarks", "dataset"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["official_split"] is True and manifest["label_set"] == "basic7"
    config = _train(out, tmp_path / "runs", "frame_cnn", "--split", "official")
    assert config["dataset"]["name"] == "rafdb"


def test_mug_sequences_with_flow_prepare_and_train_two_streams(tmp_path, mug_tree):  # noqa: F811
    out = tmp_path / "mug"
    expect_ok(invoke("--quiet", "prepare", "mug", "--root", mug_tree, "--out", out, "--size", 48, "--grey", "--flow"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sequence"
    _train(out, tmp_path / "runs", "convlstm", "--folds", 2, "--clip-length", 4, "--streams", "rgb,flow")


def test_kdef_real_photographs_are_detected_and_train(tmp_path, kdef_root):  # noqa: F811
    out = tmp_path / "kdef"
    expect_ok(invoke("--quiet", "prepare", "kdef", "--root", kdef_root, "--out", out, "--size", 48))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_examples"] >= 3 and manifest["num_skipped"] >= 1
    _train(out, tmp_path / "runs", "frame_cnn", "--folds", 2)


def test_a_folder_in_the_wrong_layout_is_one_clear_error(tmp_path):
    (tmp_path / "not_ck").mkdir()
    line = expect_user_error(invoke("prepare", "ckplus", "--root", tmp_path / "not_ck", "--out", tmp_path / "out"))
    assert "cohn-kanade-images" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_dataset_whose_every_item_is_skipped_is_one_clear_error_and_no_folder(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "KA.AN1.1.tiff").write_bytes(bytes(range(256)) * 4)  # not an image
    out = tmp_path / "out"
    for _ in range(2):  # nothing is left behind to change the second run
        line = expect_user_error(invoke("--quiet", "prepare", "jaffe", "--root", tmp_path / "raw", "--out", out, "--size", 48))
        assert line.startswith(f"Error: No usable JAFFE items in {tmp_path / 'raw'}: all 1 were skipped: "
                               "1 x corrupt or unreadable image"), line
        assert line.endswith("(e.g. KA.AN1.1.tiff)."), line
        assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_a_csv_that_is_not_fer2013_is_one_clear_error(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "fer2013.csv").write_bytes(b"\x1f\x8b\x08\x00\rbinary\xff\x00" * 300)
    line = expect_user_error(invoke("prepare", "fer2013", "--root", tmp_path / "raw", "--out", tmp_path / "out", "--size", 48))
    path = tmp_path / "raw" / "fer2013.csv"
    assert line == f"Error: {path} is not a valid FER2013 CSV (line 1: new-line character seen in unquoted field)."
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_each_dataset_is_offered_only_the_options_it_can_use(tmp_path):
    """--flow where the adapter makes sequences, --landmarks where the dataset ships its own: the CLI's lists agree
    with the adapters, and an option a dataset cannot use is a usage error, not an offer that always fails."""
    from fer_keras.cli import LANDMARK_DATASETS, SEQUENCE_DATASETS, prepare_group
    from fer_keras.data_prep.adapters import ADAPTERS
    from fer_keras.data_prep.common import Options

    datasets = [name for name in ADAPTERS if name != "folder"]
    assert set(prepare_group.commands) == set(datasets) | {"folder", "synth", "merge"}
    makes_sequences = {name for name in datasets
                       if any(ADAPTERS[name].kind(Options(protocol=p)) == "sequence"
                              for p in getattr(ADAPTERS[name], "protocols", (None,)))}
    assert set(SEQUENCE_DATASETS) == makes_sequences
    assert set(LANDMARK_DATASETS) == {name for name in datasets if ADAPTERS[name].has_landmarks}
    for name in datasets:
        offered = {o for p in prepare_group.commands[name].params for o in p.opts}
        assert ("--flow" in offered) == (name in SEQUENCE_DATASETS)
        assert ("--landmarks" in offered) == (name in LANDMARK_DATASETS)
    result = invoke("prepare", "jaffe", "--root", tmp_path, "--out", tmp_path / "out", "--flow")
    assert result.exit_code == 2 and "No such option '--flow'" in result.output


def test_synth_flow_needs_sequences(tmp_path):
    line = expect_user_error(invoke("prepare", "synth", "--out", tmp_path / "s", "--subjects", 2, "--flow"))
    assert line == "Error: --flow needs sequence records; SynthFER stills have none (add --kind sequence)."
    assert not (tmp_path / "s").exists()
