"""A full disk during export or checkpointing: one clear error, nothing partial left behind."""

import errno
import os
import pathlib

import keras
import pytest

from fer_keras import atomic
from fer_keras.errors import UserError
from fer_keras.exports import savedmodel, tflite
from fer_keras.training import fit


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_removes_its_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old version")
    monkeypatch.setattr(atomic.os, "fsync", _no_space)
    with pytest.raises(UserError, match="No space left on device"):
        atomic.write_bytes(target, b"new version")
    assert target.read_bytes() == b"old version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_tflite_export_on_a_full_disk_leaves_no_model_and_no_metadata(still_run, tmp_path, monkeypatch):
    calls = []

    def fsync_fails_on_second_file(fd):
        calls.append(fd)
        if len(calls) == 2:  # the .tflite is written, its .json beside it fails
            _no_space()

    monkeypatch.setattr(atomic.os, "fsync", fsync_fails_on_second_file)
    with pytest.raises(UserError, match="No space left on device"):
        tflite.export_tflite(still_run, out=tmp_path, quantize="none")
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_a_failed_re_export_keeps_the_previous_model_and_its_metadata(tmp_path, monkeypatch):
    """The .tflite and its .json are replaced together or not at all: an app never finds a model without its JSON."""
    model, meta = tmp_path / "model_int8.tflite", tmp_path / "model_int8.json"
    model.write_bytes(b"old model")
    meta.write_bytes(b"old metadata")
    calls = []

    def fsync_fails_on_second_file(fd):
        calls.append(fd)
        if len(calls) == 2:
            _no_space()

    monkeypatch.setattr(atomic.os, "fsync", fsync_fails_on_second_file)
    with pytest.raises(UserError, match="No space left on device"):
        atomic.write_files([(model, b"new model"), (meta, b"new metadata")])
    assert (model.read_bytes(), meta.read_bytes()) == (b"old model", b"old metadata")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_int8.json", "model_int8.tflite"]
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: None)
    atomic.write_files([(model, b"new model"), (meta, b"new metadata")])
    assert (model.read_bytes(), meta.read_bytes()) == (b"new model", b"new metadata")


def test_savedmodel_export_on_a_full_disk_leaves_no_version(still_run, tmp_path, monkeypatch):
    # The SavedModel files are on disk in the temporary folder when writing the metadata beside them fails.
    monkeypatch.setattr(savedmodel.pathlib.Path, "write_text", _no_space)
    with pytest.raises(UserError, match="No space left on device"):
        savedmodel.export_savedmodel(still_run, out=tmp_path)
    base = tmp_path / still_run.name
    assert base.is_dir() and list(base.iterdir()) == []


def test_a_failed_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """The disk fills while the better epoch 2 is saved, after part of the file is written: best.keras stays epoch 1's."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = fit.EpochCheckpoint(tmp_path, monitor="accuracy")  # higher is better, as training's monitors
    callback.set_model(model)
    callback.on_epoch_end(0, {"accuracy": 0.5})
    best = tmp_path / "checkpoints" / "best.keras"
    saved = best.read_bytes()

    def half_written(self, path, *args, **kwargs):
        pathlib.Path(path).write_bytes(b"PK half a zip")
        _no_space()

    monkeypatch.setattr(keras.Model, "save", half_written)
    with pytest.raises(OSError):
        callback.on_epoch_end(1, {"accuracy": 0.9})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.keras", "epoch-0001"]
    assert best.read_bytes() == saved
    assert os.path.exists(tmp_path / "checkpoints" / "epoch-0001" / "model.keras")
