"""Epoch checkpoints: atomic writes, pruning, finding the newest intact one, resuming."""

import json
import os
import shutil
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

import tfp_flows as tff
from tfp_flows.training import (
    EpochCheckpoint,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    resume,
)

X = np.random.default_rng(0).normal(size=[64, 2]).astype("float32")


def _flow(decay_steps=40):
    keras.utils.set_random_seed(0)
    flow = tff.models.RealNVP([2], num_layers=1, hidden_units=[4])
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=decay_steps)
    flow.compile(optimizer=keras.optimizers.Adam(schedule))
    return flow


def _fit(flow, directory, epochs, initial_epoch=0, **kwargs):
    callback = EpochCheckpoint(directory, **kwargs)
    flow.fit(X, batch_size=16, epochs=epochs, initial_epoch=initial_epoch, verbose=0,
             callbacks=[callback])
    return callback


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A flow trained 3 epochs (4 steps each) with checkpoints kept, and its directory."""
    directory = tmp_path_factory.mktemp("checkpoints")
    flow = _flow()
    _fit(flow, directory, 3, keep=None)
    return flow, directory


def _copy(directory, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def test_a_checkpoint_after_every_epoch_and_an_index(trained):
    flow, directory = trained
    assert sorted(os.listdir(directory)) == [
        "checkpoint.json", "epoch-0001.keras", "epoch-0002.keras", "epoch-0003.keras"]
    with open(directory / "checkpoint.json") as file:
        index = json.load(file)
    assert index["latest"] == "epoch-0003.keras" and index["completed_epochs"] == 3
    assert index["optimizer_iterations"] == 12
    assert np.isfinite(index["logs"]["loss"])
    assert checkpoint_path(directory, 7) == os.path.join(directory, "epoch-0007.keras")
    assert latest_checkpoint(directory) == (os.path.join(directory, "epoch-0003.keras"), 3)


def test_resume_restores_weights_optimizer_and_schedule(trained):
    flow, directory = trained
    model, initial_epoch = resume(directory)
    assert initial_epoch == 3 and isinstance(model, tff.models.RealNVP)
    assert int(model.optimizer.iterations) == 12
    # The cosine schedule is keyed on the restored iteration count: it continues.
    assert float(model.optimizer.learning_rate) == pytest.approx(
        float(flow.optimizer.learning_rate))
    assert float(model.optimizer.learning_rate) < 1e-2
    for saved, loaded in zip(flow.weights, model.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())
    for saved, loaded in zip(flow.optimizer.variables, model.optimizer.variables,
                             strict=True):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())


def test_resumed_training_continues_the_schedule_of_uninterrupted_training(tmp_path):
    uninterrupted = _flow()
    uninterrupted.fit(X, batch_size=16, epochs=4, verbose=0)
    flow = _flow()
    _fit(flow, tmp_path, 2)
    model, initial_epoch = resume(tmp_path)
    assert initial_epoch == 2
    model.fit(X, batch_size=16, epochs=4, initial_epoch=initial_epoch, verbose=0)
    assert int(model.optimizer.iterations) == int(uninterrupted.optimizer.iterations) == 16
    assert float(model.optimizer.learning_rate) == pytest.approx(
        float(uninterrupted.optimizer.learning_rate))
    for weight in model.weights:
        assert np.all(np.isfinite(weight.numpy()))


def test_no_checkpoint_gives_none(tmp_path):
    assert latest_checkpoint(tmp_path) == (None, 0)
    assert latest_checkpoint(tmp_path / "missing") == (None, 0)
    assert resume(tmp_path / "missing") == (None, 0)


def test_temporary_and_unrelated_files_are_ignored(trained, tmp_path):
    _, directory = trained
    directory = _copy(directory, tmp_path)
    (directory / ".tmp-0123abcd-epoch-0009.keras").write_bytes(b"half")
    (directory / "epoch-9.keras").write_bytes(b"not our name")
    (directory / "notes.txt").write_text("x")
    assert [n for n, _ in list_checkpoints(directory)] == [1, 2, 3]
    assert latest_checkpoint(directory)[1] == 3
    # Leftovers of a process killed mid-save are cleared when training starts again.
    EpochCheckpoint(directory).on_train_begin()
    assert not (directory / ".tmp-0123abcd-epoch-0009.keras").exists()
    assert (directory / "notes.txt").exists() and (directory / "epoch-9.keras").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(trained, tmp_path, damage):
    _, directory = trained
    directory = _copy(directory, tmp_path)
    newest = directory / "epoch-0004.keras"
    content = (directory / "epoch-0003.keras").read_bytes()
    newest.write_bytes({"truncated": content[: len(content) // 2],
                        "garbage": b"\x00garbage" * 100, "empty": b""}[damage])
    with pytest.warns(RuntimeWarning, match="skipping damaged checkpoint .*epoch-0004"):
        assert latest_checkpoint(directory) == (str(directory / "epoch-0003.keras"), 3)
    with pytest.warns(RuntimeWarning, match="epoch-0004"):
        model, initial_epoch = resume(directory)
    assert initial_epoch == 3 and int(model.optimizer.iterations) == 12


def test_a_checkpoint_that_fails_to_load_falls_back(trained, tmp_path):
    _, directory = trained
    directory = _copy(directory, tmp_path)
    # A complete archive whose config names a class nobody registered.
    source = directory / "epoch-0003.keras"
    broken = directory / "epoch-0004.keras"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(broken, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "config.json":
                data = data.replace(b"RealNVP", b"NoSuchFlow")
            new.writestr(item, data)
    assert latest_checkpoint(directory)[1] == 4  # intact archive: latest_checkpoint trusts it
    with pytest.warns(RuntimeWarning, match="epoch-0004.keras that failed to load"):
        assert resume(directory)[1] == 3


def test_keep_prunes_to_the_newest(tmp_path):
    flow = _flow()
    _fit(flow, tmp_path, 5, keep=2)
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint.json", "epoch-0004.keras", "epoch-0005.keras"]
    _fit(flow, tmp_path, 6, initial_epoch=5, keep=1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.json", "epoch-0006.keras"]


@pytest.mark.parametrize("keep, error", [
    (0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)])
def test_keep_must_be_a_positive_int_or_none(keep, error, tmp_path):
    with pytest.raises(error, match=f"keep must be a positive int or None, got {keep!r}"):
        EpochCheckpoint(tmp_path, keep=keep)


def test_checkpoints_of_an_earlier_run_are_handled(trained, tmp_path):
    _, directory = trained
    directory = _copy(directory, tmp_path)
    # Resuming from epoch 1 (say epochs 2 and 3 were bad): higher numbers are stale.
    (directory / "epoch-0002.keras").unlink()
    flow, _ = resume(directory)
    (directory / "epoch-0003.keras").write_bytes(b"stale")
    _fit(flow, directory, 2, initial_epoch=1, keep=None)
    assert [n for n, _ in list_checkpoints(directory)] == [1, 2]
    # fresh=True: everything not written by this run goes once its first file is complete.
    _fit(_flow(), directory, 1, keep=None, fresh=True)
    assert [n for n, _ in list_checkpoints(directory)] == [1]


def test_a_failed_save_leaves_previous_checkpoints_and_no_partial_file(tmp_path, monkeypatch):
    flow = _flow()
    _fit(flow, tmp_path, 1)

    def failing_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as file:
            file.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(type(flow), "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _fit(flow, tmp_path, 2, initial_epoch=1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.json", "epoch-0001.keras"]
    assert latest_checkpoint(tmp_path)[1] == 1


def _scalars(log_dir):
    values = {}
    for root, _, files in os.walk(log_dir):
        for name in files:
            assert name.startswith("events.out.tfevents.")
            for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                event = event_pb2.Event.FromString(record.numpy())
                for value in event.summary.value:
                    key = (os.path.basename(root), value.tag)
                    values.setdefault(key, []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
    return values


def test_keras_tensorboard_writes_epoch_scalars(tmp_path):
    # `tensorboard` is a dependency: Keras' own callback writes the event files.
    flow = _flow()
    flow.fit(X, batch_size=16, epochs=2, verbose=0, validation_data=X[:16],
             callbacks=[keras.callbacks.TensorBoard(tmp_path)])
    scalars = _scalars(tmp_path)
    assert {("train", "epoch_loss"), ("train", "epoch_bits_per_dim"),
            ("train", "epoch_learning_rate"), ("validation", "epoch_loss")} <= set(scalars)
    assert [step for step, _ in scalars[("train", "epoch_loss")]] == [0, 1]
    assert all(np.isfinite(v) for _, v in scalars[("train", "epoch_loss")])


def test_deprecated_tensorboard_names_are_keras_tensorboard(tmp_path):
    from tfp_flows.training import EpochSummaries, tensorboard_callback

    with pytest.warns(DeprecationWarning, match="keras.callbacks.TensorBoard"):
        callback = tensorboard_callback(tmp_path / "a")
    assert type(callback) is keras.callbacks.TensorBoard
    with pytest.warns(DeprecationWarning, match="keras.callbacks.TensorBoard"):
        summaries = EpochSummaries(tmp_path / "b")
    flow = _flow()
    flow.fit(X, batch_size=16, epochs=1, verbose=0, callbacks=[summaries])
    assert [step for step, _ in _scalars(tmp_path / "b")[("train", "epoch_loss")]] == [0]


def test_metadata_must_be_a_json_serialisable_dict(tmp_path):
    with pytest.raises(TypeError, match="metadata must be a dict or None, got list"):
        EpochCheckpoint(tmp_path, metadata=[1])
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        EpochCheckpoint(tmp_path, metadata={"x": object()})
