"""What a run records of its data, and says about it: the SynthFER set a --data synth run generated into its folder
versus a folder the user prepared (`fer-keras prepare ...`; here `prepare synth`, which is folder data too)."""

import json
import shlex
import shutil

import pytest

from fer_keras.data import records
from fer_keras.errors import UserError
from fer_keras.training import config as config_lib
from fer_keras.training import fit
from tests.conftest import expect_ok, expect_user_error, invoke

# 4 subjects x 7 emotions x 1 image at 48 px, a 2-fold split, 1 epoch at 32 px: the smallest run that trains.
TRAIN = ("--quiet", "train", "--model", "frame_cnn", "--epochs", 1, "--batch-size", 16, "--image-size", 32, "--folds", 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"synth": a --data synth run, "folder": a run on a folder from `prepare synth`}, both of the same 4 subjects."""
    out = tmp_path_factory.mktemp("run_data")
    settings = out / "synth.json"
    settings.write_text(json.dumps({"synth": {"samples_per_emotion": 1, "size": 48}}))
    expect_ok(invoke(*TRAIN, "--data", "synth", "--synth-subjects", 4, "--config", settings, "--out", out, "--name", "synth"))
    data = out / "prepared"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", data, "--subjects", 4, "--samples-per-emotion", 1, "--size", 48))
    expect_ok(invoke(*TRAIN, "--data", data, "--out", out, "--name", "folder"))
    return {"synth": out / "synth", "folder": out / "folder"}


def _damage(data_dir):
    shard = data_dir / records.read_manifest(data_dir)["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return shard


def test_a_damaged_shard_of_generated_data_says_how_to_generate_it_again(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["synth"], run)
    model = (run / "model.keras").read_bytes()
    shard = _damage(run / "data")
    line = expect_user_error(invoke("evaluate", run))
    assert line.startswith(f"Error: Shard {shard} is corrupt: its sha256 does not match the manifest")
    assert "prepare it again" not in line  # nobody prepared it: the run generated it
    assert f"it is the SynthFER set run 'run' generated: remove what is left of {str(run / 'data')!r} and generate it again" in line
    # A resume checks the data it finds in the run as well, before it touches the run.
    resumed = expect_user_error(invoke("train", "--resume", run, "--epochs", 2))
    assert resumed == line
    assert (run / "model.keras").read_bytes() == model and not (run / fit.ASIDE).exists()
    # Following the advice gives back the very samples the run trained on (the fingerprint config.json recorded).
    command = shlex.split(line.split("`")[1])
    assert command[:3] == ["fer-keras", "prepare", "synth"]
    shutil.rmtree(run / "data")
    expect_ok(invoke("--quiet", *command[1:]))
    expect_ok(invoke("--quiet", "evaluate", run))
    expect_ok(invoke("--quiet", "train", "--resume", run, "--epochs", 2))


def test_a_damaged_shard_of_a_prepared_folder_still_says_to_prepare_it_again(runs, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(fit.run_data_dir(runs["folder"], fit.read_run_config(runs["folder"])), data)
    run = tmp_path / "run"
    shutil.copytree(runs["folder"], run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, dataset=dict(config["dataset"], dir=str(data)))))
    _damage(data)
    assert expect_user_error(invoke("evaluate", run)).endswith(f"delete {str(data)!r} and prepare it again.")


def test_only_a_run_that_generated_synthfer_records_the_generator_settings(runs):
    folder = fit.read_run_config(runs["folder"])
    assert folder["dataset"]["name"] == "synthfer"  # SynthFER, but prepared: its manifest says how it was made
    assert "synth" not in folder
    generated = fit.read_run_config(runs["synth"])
    assert generated["synth"] == dict(config_lib.DEFAULTS["synth"], subjects=4, samples_per_emotion=1, size=48)


@pytest.mark.parametrize("with_block", [False, True], ids=["new", "old"])
def test_a_folder_run_config_with_or_without_the_generator_settings_is_read(runs, tmp_path, with_block):
    """Runs on users' disks carry the default synth block: evaluate, --resume and --config read them as before."""
    run = tmp_path / "run"
    shutil.copytree(runs["folder"], run)
    config = json.loads((run / "config.json").read_text())
    if with_block:
        config["synth"] = config_lib.DEFAULTS["synth"]
        (run / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    expect_ok(invoke("--quiet", "evaluate", run))
    assert config_lib.resolve(fit.read_run_config(run))["data"] == config["data"]
    expect_ok(invoke("--quiet", "train", "--resume", run, "--epochs", 2))
    assert ("synth" in fit.read_run_config(run)) == with_block  # a resume rewrites config.json as it found it
    expect_ok(invoke(*TRAIN, "--config", run / "config.json", "--out", tmp_path, "--name", "again"))
    assert "synth" not in fit.read_run_config(tmp_path / "again")


def test_a_kfold_fold_and_a_missing_or_replaced_generated_set_get_the_regenerate_advice(runs, tmp_path):
    """A k-fold fold of a --data synth run trains on RUN/data as a folder: its damage is the run's generated set too;
    so is RUN/data deleted outright, or replaced by another set."""
    run = tmp_path / "run"
    shutil.copytree(runs["synth"], run)
    advice = f"it is the SynthFER set run 'run' generated: remove what is left of {str(run / 'data')!r} and generate it again"
    fold = dict(fit.read_run_config(run), data=str(run / "data"))
    fold.pop("synth")
    _damage(run / "data")
    with pytest.raises(UserError, match="generate it again as the run did") as caught:
        fit.load_dataset(config_lib.resolve(fold), tmp_path / "fold")
    assert advice in str(caught.value)
    shutil.rmtree(run / "data")
    line = expect_user_error(invoke("evaluate", run))
    assert line.startswith(f"Error: Data folder {str(run / 'data')!r} does not exist; {advice}")
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", run / "data", "--subjects", 4, "--samples-per-emotion", 1,
                     "--size", 48, "--seed", 1))
    line = expect_user_error(invoke("evaluate", run))
    assert "was replaced since run 'run' trained on it (people 'synthfer seed 1', not 'synthfer seed 0')" in line
    assert advice in line and "prepare it again" not in line


@pytest.mark.parametrize("model, synth", [
    ("frame_cnn", {"label_set": "ckplus8", "seed": 7, "grey": False}),
    ("convgru", {"label_set": "ckplus7", "capture": "lab", "flow": True, "sequences_per_emotion": 2}),
])
def test_the_regenerate_command_is_one_prepare_synth_takes_and_writes_the_same_set(model, synth, tmp_path):
    """Every generator setting a config may hold is one `prepare synth` accepts, so the advice always runs."""
    config = config_lib.resolve({"model": model, "data": "synth",
                                 "synth": dict(subjects=2, samples_per_emotion=1, size=48, **synth)})
    command = shlex.split(fit.regenerate_advice(tmp_path / "run", config).split("`")[1])
    expect_ok(invoke("--quiet", *command[1:]))
    from fer_keras.data_prep.synth import prepare_synth

    expected = prepare_synth(tmp_path / "expected", **fit.synth_arguments(config), quiet=True)
    assert [s["sha256"] for s in records.read_manifest(tmp_path / "run" / "data")["shards"]] == [
        s["sha256"] for s in expected["shards"]]


def test_a_users_data_folder_beside_a_copied_config_is_not_taken_for_a_generated_set(runs, tmp_path):
    """`train --config runs/x/config.json` copied beside the user's own ./data: its damage is theirs to prepare again."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(runs["synth"] / "config.json", project / "config.json")
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", project / "data", "--subjects", 4, "--samples-per-emotion", 1,
                     "--size", 48, "--seed", 7))
    expect_ok(invoke(*TRAIN, "--config", project / "config.json", "--data", project / "data", "--out", tmp_path,
                     "--name", "mine"))
    _damage(project / "data")
    line = expect_user_error(invoke("evaluate", tmp_path / "mine"))
    assert line.endswith(f"delete {str(project / 'data')!r} and prepare it again.") and "SynthFER set run" not in line
    with pytest.raises(UserError, match="and prepare it again"):
        fit.load_dataset(config_lib.resolve({"model": "frame_cnn", "data": str(project / "data")}), tmp_path / "new")
