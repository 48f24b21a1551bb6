"""Run configuration: defaults <- config file <- CLI, validation, and repeating a run from its config.json."""

import json

import pytest

from fer_keras.errors import UserError
from fer_keras.training import config as config_lib


def test_defaults_are_valid_and_not_shared():
    a = config_lib.resolve()
    assert a == config_lib.DEFAULTS
    a["synth"]["subjects"] = 99
    a["model_args"]["x"] = 1
    assert config_lib.DEFAULTS["synth"]["subjects"] == 30  # resolve returns a deep copy
    assert config_lib.resolve()["model_args"] == {}


def test_cli_wins_over_file_and_file_over_defaults():
    config = config_lib.resolve({"epochs": 3, "batch_size": 8, "synth": {"subjects": 5}}, epochs=7, fold=None)
    assert config["epochs"] == 7  # CLI
    assert config["batch_size"] == 8  # file
    assert config["fold"] == 0  # CLI None means "not given": default stays
    assert config["synth"]["subjects"] == 5 and config["synth"]["size"] == 64  # nested: merged, not replaced


def test_keys_written_by_a_run_are_ignored():
    config = config_lib.resolve({"run_name": "x", "version": "0.1.0", "split_subjects": {}, "dataset": {"dir": "d"}})
    assert config == config_lib.DEFAULTS


@pytest.mark.parametrize("file_config, match", [
    ({"learning_rte": 0.1}, "learning_rte"),
    ({"synth": {"subject": 3}}, "subject"),
])
def test_unknown_keys(file_config, match):
    with pytest.raises(UserError, match=f"Unknown .*{match}"):
        config_lib.resolve(file_config)


def test_unknown_cli_key():
    with pytest.raises(UserError, match="colour"):
        config_lib.resolve(colour="red")


@pytest.mark.parametrize("override, match", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"pretrain_epochs": 0}, "pretrain_epochs must be a positive integer or null"),
    ({"pretrain_epochs": True}, "pretrain_epochs must be a positive integer or null"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"clip_length": -1}, "clip_length"),
    ({"clip_stride": 0}, "clip_stride"),
    ({"folds": 0}, "folds"),
    ({"split": "random"}, "split must be"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"lr_schedule": "step"}, "lr_schedule must be one of constant, cosine"),
    ({"streams": "flow"}, "streams"),
    ({"streams": "rgb,depth"}, "streams"),
    ({"image_size": 8}, "image_size must be in 16..512"),
    ({"channels": 2}, "channels must be 1 or 3"),
    ({"synth": {"subjects": 1}}, "synth.subjects"),
    ({"synth": {"size": 32}}, "synth.size"),
    # the choices and ranges of `prepare synth`, whose command regenerates a run's damaged data
    ({"synth": {"label_set": "ravdess8"}}, r"synth.label_set must be one of \['basic7', 'ckplus7', 'ckplus8'\]"),
    ({"synth": {"samples_per_emotion": 0}}, "synth.samples_per_emotion must be an integer in 1..1000"),
    ({"synth": {"sequences_per_emotion": 101}}, "synth.sequences_per_emotion must be an integer in 1..100"),
    ({"synth": {"subjects": 100001}}, "synth.subjects must be an integer in 2..100000"),
    ({"synth": {"seed": 1.5}}, "synth.seed must be an integer"),
    ({"synth": {"capture": "studio"}}, "synth.capture must be 'wild' or 'lab'"),
    ({"synth": {"seed": -1}}, r"synth.seed must be an integer in 0\.\."),
    ({"synth": {"grey": "no"}}, "synth.grey must be true or false"),
    ({"fold": 5}, "fold must be in 0..4 for 5 folds"),
    ({"fold": -1}, "fold must be in 0..4"),
    ({"model": "resnet50"}, "Unknown model 'resnet50'"),
    ({"model": "frame_cnn", "size": "huge"}, "has no size 'huge'. Sizes: paper, small"),
])
def test_invalid_values(override, match):
    with pytest.raises(UserError, match=match):
        config_lib.resolve(override)


@pytest.mark.parametrize("override", [{"learning_rate": "0.001"}, {"image_size": "big"}])
def test_wrongly_typed_values_are_user_errors(override):
    """A config file with a value of the wrong type must give a UserError that names it, not a TypeError."""
    key = next(iter(override))
    with pytest.raises(UserError, match=key):
        config_lib.resolve(override)


def test_valid_overrides():
    config = config_lib.resolve({"streams": "rgb, flow", "image_size": 16, "channels": 3, "split": "official"})
    assert config["streams"] == "rgb, flow" and config["image_size"] == 16


def test_load_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        config_lib.load_config_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{epochs: 3")
    with pytest.raises(UserError, match="not valid JSON"):
        config_lib.load_config_file(bad)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(UserError, match="JSON object"):
        config_lib.load_config_file(listing)


def test_a_runs_config_json_repeats_the_run(still_run):
    """`train --config runs/<run>/config.json` resolves to exactly the configuration of that run."""
    written = json.loads((still_run / "config.json").read_text())
    again = config_lib.resolve(config_lib.load_config_file(still_run / "config.json"))
    assert again == {k: v for k, v in written.items() if k not in ("run_name", "run_id", "version", "split_subjects", "dataset")}
    assert again["model"] == "frame_cnn" and again["epochs"] == 2 and again["image_size"] == 32 and again["folds"] == 2


@pytest.mark.parametrize("augment", [True, False])
def test_make_dataset_hands_augment_to_the_pipeline(sequence_data, augment):
    import numpy as np

    from fer_keras.data import records
    from fer_keras.data.splits import Split
    from fer_keras.training import fit

    config = config_lib.resolve(model="convlstm2d_clip", image_size=16, clip_length=4, clip_stride=4, augment=augment)
    manifest = records.read_manifest(sequence_data)
    split = Split(train=("synth0000",), test=("synth0001",))

    def clips(training):
        ds = fit.make_dataset(config, manifest, split, "train", training=training, with_meta=True, batch_size=64)
        x, _, meta = next(iter(ds))
        return {f"{v}/{s}": c for v, s, c in zip(meta["video"].numpy(), meta["start"].numpy(), x.numpy())}

    plain, trained = clips(False), clips(True)
    assert set(plain) == set(trained)
    same = [np.array_equal(plain[k], trained[k]) for k in plain]
    assert all(same) if not augment else not all(same)


def test_learning_rate_is_constant_or_a_cosine_decay_to_zero_over_the_run():
    from keras import ops

    from fer_keras.training import fit

    assert fit.learning_rate(config_lib.resolve(learning_rate=0.01), steps_per_epoch=7) == 0.01
    schedule = fit.learning_rate(config_lib.resolve(learning_rate=0.01, lr_schedule="cosine", epochs=4), steps_per_epoch=5)
    rates = [float(ops.convert_to_numpy(schedule(step))) for step in (0, 10, 20)]
    assert rates == pytest.approx([0.01, 0.005, 0.0], abs=1e-7)  # start, half-way (2 of 4 epochs), last step
    with pytest.raises(ValueError, match="steps_per_epoch"):
        fit.make_optimizer(config_lib.resolve(lr_schedule="cosine"))


def test_staged_trainers_refuse_a_schedule_before_creating_a_run(tmp_path):
    from fer_keras.training import fit

    with pytest.raises(UserError, match="lr_schedule must be 'constant' for it"):
        fit.train(config_lib.resolve(model="vae_swap", lr_schedule="cosine"), out=tmp_path, name="v")
    assert not (tmp_path / "v").exists()


def test_a_run_config_with_a_relative_data_folder_resolves_to_the_folder_the_run_recorded(tmp_path):
    """Runs made before data was stored absolute: --resume and --config from another folder use dataset.dir."""
    old = {"model": "frame_cnn", "data": "data/still", "dataset": {"dir": str(tmp_path / "data" / "still")}}
    assert config_lib.resolve(old)["data"] == str(tmp_path / "data" / "still")
    assert config_lib.resolve(old, data="elsewhere")["data"] == "elsewhere"  # the command line still wins
    assert config_lib.resolve(dict(old, data="synth"))["data"] == "synth"


def test_a_prepared_folders_run_ignores_a_leftover_synth_block():
    """The block is dropped unread where no SynthFER is generated: its values cannot refuse the run."""
    config = config_lib.resolve({"data": "some/folder", "synth": {"label_set": "ravdess8", "samples_per_emotion": 0}})
    assert "synth" not in config
