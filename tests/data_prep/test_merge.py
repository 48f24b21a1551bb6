"""prepare merge: prepared folders of several datasets as one (paper 004's union of MUG, CK+ and RAVDESS), on real
SynthFER folders of two seeds (other people under the same ids) and two label sets."""

import json

import numpy as np
import pytest
import tensorflow as tf

from fer_keras.data import records
from fer_keras.data_prep import common
from fer_keras.data_prep.merge import merge_prepared
from fer_keras.data_prep.synth import prepare_synth
from fer_keras.errors import UserError
from fer_keras.labels import get_label_set
from tests.conftest import expect_ok, expect_user_error, invoke


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    a = root / "a"
    b = root / "b"
    prepare_synth(a, subjects=3, samples_per_emotion=1, size=48, quiet=True)  # basic7
    prepare_synth(b, subjects=2, samples_per_emotion=1, size=48, seed=5, label_set="ckplus7", quiet=True)
    return root, a, b


def _stills(folder):
    manifest = records.read_manifest(folder)
    out = []
    for serialized in tf.data.TFRecordDataset(records.shard_paths(manifest)):
        r = records.parse_still(serialized)
        out.append({"subject": r["subject"].numpy().decode(), "label": int(r["label"]), "source": r["source"].numpy().decode(),
                    "name": r["label_name"].numpy().decode(), "image": tf.io.decode_png(r["image/encoded"]).numpy()})
    return out


def test_records_keep_their_images_under_dataset_prefixed_subjects_and_one_label_set(folders, tmp_path):
    _, a, b = folders
    manifest = merge_prepared([a, b], tmp_path / "m", label_set="basic7", quiet=True)
    names = get_label_set("basic7")
    merged = _stills(tmp_path / "m")
    sources = {("synthfer seed 0", r["subject"], r["source"]): r for r in _stills(a)}
    sources.update({("synthfer seed 5", r["subject"], r["source"]): r for r in _stills(b)})
    assert len(merged) == manifest["num_examples"] == 3 * 7 + 2 * 6  # b's contempt is not in basic7
    for r in merged:
        person, subject = r["subject"].split("/")
        assert r["source"].startswith(f"{person}/")  # a's and b's sample ids are the same: kept apart too
        original = sources[(person, subject, r["source"][len(person) + 1:])]
        np.testing.assert_array_equal(r["image"], original["image"])
        assert r["name"] == original["name"] and r["label"] == names.index(r["name"])
    assert sorted(manifest["counts_per_subject"]) == [f"synthfer seed 0/synth000{i}" for i in range(3)] + [
        f"synthfer seed 5/synth000{i}" for i in range(2)]  # the same ids, other people: kept apart
    assert manifest["dataset"] == "synthfer+synthfer" and manifest["label_set"] == "basic7"
    assert [s["people"] for s in manifest["merged_from"]] == ["synthfer seed 0", "synthfer seed 5"]
    skipped = common.read_skipped(tmp_path / "m")
    assert len(skipped) == manifest["num_skipped"] == 2
    assert all(path.startswith("b/") and reason == "label contempt is not in label set basic7" for path, reason in skipped)


def test_the_same_merge_again_is_found_finished(folders, tmp_path):
    _, a, b = folders
    first = merge_prepared([a, b], tmp_path / "m", label_set="ckplus8", quiet=True)
    again = merge_prepared([a, b], tmp_path / "m", label_set="ckplus8", quiet=True)
    assert again.get("_already") and again["shards"] == first["shards"]
    with pytest.raises(UserError, match=r"is not this merge \(its label set is ckplus8, not basic7\); choose another"):
        merge_prepared([a, b], tmp_path / "m", label_set="basic7", quiet=True)
    with pytest.raises(UserError, match=r"is not this merge \(its --from folders were given in another order\)"):
        merge_prepared([b, a], tmp_path / "m", label_set="ckplus8", quiet=True)


def test_a_copy_is_refused_and_the_same_people_twice_or_an_official_split_are_noted(folders, tmp_path, capsys):
    import shutil

    _, a, b = folders
    shutil.copytree(a, tmp_path / "a_copy")
    with pytest.raises(UserError, match="hold the same records \\(one is a copy of the other\\)"):
        merge_prepared([a, tmp_path / "a_copy", b], tmp_path / "m", label_set="basic7", quiet=True)
    assert not (tmp_path / "m").exists()
    prepare_synth(tmp_path / "a_more", subjects=3, samples_per_emotion=2, size=48, quiet=True)  # seed 0: a's people
    manifest = merge_prepared([a, tmp_path / "a_more"], tmp_path / "m", quiet=True)
    assert "hold the same people (synthfer seed 0): a subject id in both is one person" in capsys.readouterr().err
    assert len(manifest["counts_per_subject"]) == 3 and manifest["num_examples"] == 3 * 7 * 3
    from fer_keras.data_prep.adapters import prepare_dataset
    from tests.data_prep.test_folder import make_still_tree

    make_still_tree(tmp_path / "raw" / "train")
    make_still_tree(tmp_path / "raw" / "test")
    prepare_dataset("folder", tmp_path / "raw", tmp_path / "official", size=48, grey=True, quiet=True)
    merge_prepared([a, tmp_path / "official"], tmp_path / "m2", quiet=True)
    assert f"the official split of {tmp_path / 'official'} is not kept" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("one", "needs at least two --from folders"),
    ("twice", "is given twice"),
    ("label sets", "The folders have label sets basic7, ckplus7; choose the merged one with --label-set"),
    ("size", "holds another image size and channels"),
    ("kind", "holds another record kind"),
    ("inside", "is inside a --from folder"),
])
def test_merges_that_cannot_be_made_are_refused_in_one_line_leaving_nothing(folders, tmp_path, case, message):
    root, a, b = folders
    other = tmp_path / "other"
    sources, out, label_set = [a, b], tmp_path / "m", None
    if case == "one":
        sources = [a]
    elif case == "twice":
        sources = [a, root / "b" / ".." / "a"]
    elif case == "size":
        prepare_synth(other, subjects=2, samples_per_emotion=1, size=64, quiet=True)
        sources = [a, other]
    elif case == "kind":
        prepare_synth(other, kind="sequence", subjects=2, size=48, quiet=True)
        sources = [a, other]
    elif case == "inside":
        out, label_set = a / "m", "basic7"
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        merge_prepared(sources, out, label_set=label_set, quiet=True)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_a_merge_is_not_merged_again(folders, tmp_path):
    _, a, b = folders
    merge_prepared([a, b], tmp_path / "m", label_set="basic7", quiet=True)
    with pytest.raises(UserError, match="is itself a merge"):
        merge_prepared([tmp_path / "m", a], tmp_path / "m2", quiet=True)


def test_cli_merges_and_a_run_splits_the_union_by_subject(folders, tmp_path):
    _, a, b = folders
    line = expect_user_error(invoke("prepare", "merge", "--from", a, "--from", b, "--out", tmp_path / "m"))
    assert "choose the merged one with --label-set" in line
    output = expect_ok(invoke("prepare", "merge", "--from", a, "--from", b, "--out", tmp_path / "m",
                              "--label-set", "basic7")).output
    assert "Merged 33 still records of 5 subjects from 2 folders (synthfer+synthfer, label set basic7)" in output
    from fer_keras.data import pipeline, splits

    split = splits.kfold_split(pipeline.subjects_of(records.read_manifest(tmp_path / "m")), 5, 0)
    assert len(split.test) == 1 and len(split.train) == 3


TRAIN = ["train", "--model", "frame_cnn", "--epochs", 1, "--batch-size", 16, "--image-size", 32]


def test_a_person_is_the_same_in_a_merge_and_in_the_folder_it_came_from(folders, tmp_path):
    """The subject-leak checks map a merged id (``synthfer seed 0/synth0001``) back to its dataset's person: weights
    trained on folder a do not start a merged run that tests on their training subjects, a merged run is not scored
    on a as if it were another dataset, and SynthFER of another seed under the same ids is not a leak."""
    from fer_keras.training import fit

    _, a, b = folders
    merged = tmp_path / "m"
    merge_prepared([a, b], merged, label_set="basic7", quiet=True)
    expect_ok(invoke(*TRAIN, "--data", a, "--folds", 2, "--fold", 0, "--out", tmp_path, "--name", "on_a"))
    assert json.loads((tmp_path / "on_a" / "config.json").read_text())["split_subjects"]["train"] == ["synth0001"]
    # fold 1 of 5 of the merge tests synthfer seed 0/synth0001, on which on_a trained
    line = expect_user_error(invoke(*TRAIN, "--data", merged, "--folds", 5, "--fold", 1, "--init-from", tmp_path / "on_a",
                                    "--out", tmp_path, "--name", "tuned"))
    assert "was trained on subjects that this run tests on (synthfer seed 0/synth0001)" in line
    assert not (tmp_path / "tuned").exists()
    # fold 3 tests synthfer seed 5/synth0000: the same id as a's synth0000, another person
    expect_ok(invoke(*TRAIN, "--data", merged, "--folds", 5, "--fold", 3, "--init-from", tmp_path / "on_a",
                     "--out", tmp_path, "--name", "tuned"))
    assert fit.leaked_subjects(tmp_path / "tuned", "synthfer seed 0", ["synth0000", "synth0002"]) == ["synth0000",
                                                                                                     "synth0002"]
    line = expect_user_error(invoke("evaluate", tmp_path / "tuned", "--data", a))
    assert "holds 3 subjects this run trained or validated on" in line and "it is not another dataset" in line
    assert fit.leaked_subjects(tmp_path / "tuned", "synthfer seed 5", ["synth0000", "synth0001"]) == ["synth0001"]


def test_paper_004_union_trains_vae_swap_and_scores_it_on_a_merge_of_the_same_datasets(tmp_path):
    """Paper 004 trains on MUG + CK+ + RAVDESS and scores stills of MUG + CK+: here two SynthFER seeds stand for two
    datasets. `evaluate RUN --data` takes a merge of the run's own datasets, and refuses one holding other people."""
    from tests.training.test_vae_swap import TINY

    first, second = tmp_path / "first", tmp_path / "second"
    prepare_synth(first, subjects=4, samples_per_emotion=2, size=48, quiet=True)
    prepare_synth(second, subjects=4, samples_per_emotion=1, size=48, seed=5, quiet=True)
    merge_prepared([first, second], tmp_path / "train_set", quiet=True)
    merge_prepared([first, second], tmp_path / "eval_set", quiet=True)  # SynthFER: one folder serves both
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_args": dict(TINY, encoder_filters=[4, 4, 8, 8], decoder_filters=[8, 4, 4, 4],
                                                     rounds=1)}))
    train = ["--quiet", "train", "--model", "vae_swap", "--data", tmp_path / "train_set", "--epochs", 1, "--batch-size", 8,
             "--config", config, "--out", tmp_path]
    expect_ok(invoke(*train, "--folds", 4, "--name", "vae"))
    expect_ok(invoke("--quiet", "evaluate", tmp_path / "vae", "--data", tmp_path / "eval_set"))
    metrics = json.loads((tmp_path / "vae" / "cross" / "eval_set" / "metrics.json").read_text())
    # 4-fold over 8 subjects: seed 0's and seed 5's synth0000 test, their synth0002-3 train (14 images a seed-0 subject)
    assert metrics["kmeans_test"]["images"] == 14 + 7 and metrics["kmeans_train"]["images"] == 2 * 14 + 2 * 7
    expect_ok(invoke("--quiet", "evaluate", tmp_path / "vae", "--data", first))  # one of the datasets merged, alone
    metrics = json.loads((tmp_path / "vae" / "cross" / "first" / "metrics.json").read_text())
    assert metrics["kmeans_test"]["images"] == 14 and metrics["kmeans_train"]["images"] == 2 * 14
    assert metrics["protocol"].endswith("its synthfer seed 0 subjects")
    third = tmp_path / "third"
    prepare_synth(third, subjects=2, samples_per_emotion=1, size=48, seed=9, quiet=True)
    merge_prepared([second, third], tmp_path / "other_people", quiet=True)
    line = expect_user_error(invoke("evaluate", tmp_path / "vae", "--data", tmp_path / "other_people"))
    assert "holds people of synthfer seed 9, which" in line
    line = expect_user_error(invoke("evaluate", tmp_path / "vae", "--data", third))
    assert "stills of the people it trained on (the datasets it was merged from" in line
    assert "or the still folder of one of them); " in line and "holds stills of synthfer seed 9" in line
    expect_ok(invoke(*train, "--folds", 8, "--fold", 4, "--name", "few"))  # one test subject of 7 images, for k = 9
    line = expect_user_error(invoke("evaluate", tmp_path / "few", "--data", tmp_path / "eval_set"))
    assert "The run's test subjects have 7 images here; k-means++ with k=9 needs at least 9" in line
    line = expect_user_error(invoke("evaluate", tmp_path / "few", "--data", first))  # it tests seed 5's synth0000 only
    assert "has no test subjects of synthfer seed 0 (" in line and "score it on a merge of its datasets'" in line


def test_sequences_keep_apart_the_videos_of_two_datasets_under_the_same_ids(tmp_path):
    """Per-video scores group clips by their video's id: two SynthFER seeds name their videos alike."""
    first, second = tmp_path / "first", tmp_path / "second"
    prepare_synth(first, kind="sequence", subjects=2, size=48, flow=True, quiet=True)
    prepare_synth(second, kind="sequence", subjects=2, size=48, flow=True, seed=1, quiet=True)
    manifest = merge_prepared([first, second], tmp_path / "m", quiet=True)
    assert manifest["kind"] == "sequence" and manifest["flow_bound"] == records.DEFAULT_FLOW_BOUND
    merged = [records.parse_sequence(r) for r in tf.data.TFRecordDataset(records.shard_paths(manifest))]
    videos = [r["video"].numpy().decode() for r in merged]
    assert len(videos) == len(set(videos)) == manifest["num_examples"] == 2 * 2 * 7
    originals = {r["video"].numpy().decode() for r in (records.parse_sequence(x) for x in
                 tf.data.TFRecordDataset(records.shard_paths(records.read_manifest(first))))}
    assert {v.partition("/")[2] for v in videos if v.startswith("synthfer seed 0/")} == originals
    assert {r["subject"].numpy().decode().partition("/")[0] for r in merged} == {"synthfer seed 0", "synthfer seed 1"}


def test_stills_with_and_without_landmarks_are_merged_but_not_for_landmark_arm(folders, tmp_path, capsys):
    """landmark_arm checks the first records for 68 landmarks: a merge of folders with and without them is refused
    for it by the merge's own record of its sources, and trains the other models."""
    from fer_keras.data_prep.adapters import prepare_dataset
    from tests.data_prep.test_folder import make_still_tree

    _, a, _ = folders
    make_still_tree(tmp_path / "faces")
    prepare_dataset("folder", tmp_path / "faces", tmp_path / "bare", size=48, grey=True, detect=False, quiet=True)
    manifest = merge_prepared([a, tmp_path / "bare"], tmp_path / "m", label_set="basic7", quiet=True)
    assert "bare' holds no 68 landmarks and the other folders do" in capsys.readouterr().err
    assert [s["landmarks"] for s in manifest["merged_from"]] == [True, False]
    assert records.stills_with_landmarks(manifest) > 0  # the first records have them: the merge must say
    train = ["train", "--epochs", 1, "--batch-size", 16, "--image-size", 32, "--data", tmp_path / "m", "--out", tmp_path]
    line = expect_user_error(invoke(*train, "--model", "landmark_arm", "--name", "arm"))
    assert f"merges stills without them ({tmp_path / 'bare'})" in line
    expect_ok(invoke(*train, "--model", "frame_cnn", "--name", "cnn"))