"""Whole-model checkpoints after every epoch, and resuming training from the newest one.

A checkpoint is a `.keras` file written by `model.save`: architecture, weights and the
optimizer's state (its iteration count too, so a learning-rate schedule keyed on
iterations continues where it stopped). Files are named `epoch-0007.keras` after the
number of completed epochs, written under a temporary name in the same directory and
renamed into place with `os.replace`, so a crash never leaves a truncated checkpoint under
a checkpoint's name.
"""

import json
import os
import re
import warnings
import zipfile

import keras

from tfp_flows._atomic import STAGING_PREFIX, staged, write_json
from tfp_flows._validation import check_positive_int

__all__ = ["CHECKPOINT_INDEX", "EpochCheckpoint", "checkpoint_path", "latest_checkpoint",
           "list_checkpoints", "resume"]

CHECKPOINT_INDEX = "checkpoint.json"
_CHECKPOINT_NAME = re.compile(r"^epoch-(\d{4,})\.keras$")
# Members every `.keras` archive written by `model.save` holds.
_REQUIRED_MEMBERS = ("metadata.json", "config.json", "model.weights.h5")


def checkpoint_path(directory, completed_epochs):
    """The path of the checkpoint taken after `completed_epochs` epochs."""
    return os.path.join(os.fspath(directory), f"epoch-{completed_epochs:04d}.keras")


def list_checkpoints(directory):
    """Checkpoint files in `directory` as `(completed_epochs, path)`, oldest first.

    Only names like `epoch-0007.keras` count: temporary files of a save in progress (or of
    one that crashed) and anything else are ignored. Files are not opened.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _CHECKPOINT_NAME.match(name)
        if match and os.path.isfile(os.path.join(directory, name)):
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def _check_archive(path):
    """Raises `ValueError` unless `path` is a complete `.keras` archive (CRCs included)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .keras (zip) archive; truncated or overwritten?")
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [m for m in _REQUIRED_MEMBERS if m not in archive.namelist()]
            if missing:
                raise ValueError(f"{path} lacks {missing}; not a complete .keras file")
            bad = archive.testzip()
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is a damaged zip archive: {error}") from error
    if bad is not None:
        raise ValueError(f"{path}: member {bad!r} fails its CRC check")


def _usable_checkpoints(directory):
    """Yields `(path, completed_epochs)` of intact checkpoints, newest first, warning on
    each damaged one it skips."""
    for completed, path in reversed(list_checkpoints(directory)):
        try:
            _check_archive(path)
        except (OSError, ValueError) as error:
            warnings.warn(f"skipping damaged checkpoint {path}: {error}", RuntimeWarning,
                          stacklevel=3)
            continue
        yield path, completed


def latest_checkpoint(directory):
    """Finds the newest intact checkpoint in `directory`.

    The newest `epoch-NNNN.keras` whose archive is complete wins; a damaged one (truncated,
    garbage, failing a CRC check) is skipped with a `RuntimeWarning` and the previous one is
    tried. Temporary files are ignored. `checkpoint.json` is informative only: the files
    themselves decide.

    Args:
        directory: the directory an `EpochCheckpoint` writes to (it need not exist).

    Returns:
        `(path, completed_epochs)`, or `(None, 0)` if there is no usable checkpoint.
    """
    for path, completed in _usable_checkpoints(directory):
        return path, completed
    return None, 0


def resume(directory, custom_objects=None):
    """Loads the newest loadable checkpoint of `directory`, compiled, optimizer included.

    Checkpoints are tried newest first; one that is damaged or fails to load is skipped
    with a `RuntimeWarning`.

    Args:
        directory: the directory an `EpochCheckpoint` writes to.
        custom_objects: passed to `keras.saving.load_model` (tfp_flows' own classes are
            registered and need none).

    Returns:
        `(model, initial_epoch)`: pass `initial_epoch` to `fit` together with the total
        `epochs` to train for. `(None, 0)` if there is no usable checkpoint.

    Example:
        >>> model, initial_epoch = resume("/nonexistent/checkpoints")
        >>> model, initial_epoch
        (None, 0)
    """
    for path, completed in _usable_checkpoints(directory):
        try:
            model = keras.saving.load_model(path, custom_objects=custom_objects)
        except Exception as error:  # any failure to load means: try the previous one
            warnings.warn(f"skipping checkpoint {path} that failed to load: "
                          f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=2)
            continue
        return model, completed
    return None, 0


def _scalar_logs(logs):
    scalars = {}
    for key, value in (logs or {}).items():
        try:
            scalars[key] = float(value)
        except (TypeError, ValueError):
            continue
    return scalars


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (optimizer state included) after every epoch.

    After epoch `e` (counting from 1, as `fit` prints it) the model goes to
    `directory/epoch-000e.keras`: written to a temporary file in `directory`, flushed to
    disk and renamed into place, so the name always holds a complete file. Then
    `directory/checkpoint.json` is updated the same way (latest file, completed epochs,
    optimizer iterations and any `metadata`), and only then are old checkpoints pruned to
    the newest `keep`. The file just written is never deleted.

    Checkpoints numbered above the one just written can only come from an earlier, longer
    run in the same directory and are removed. With `fresh=True` every checkpoint not
    written by this callback is removed once its first checkpoint is complete (start a new
    run in a directory that holds an old one); by default older checkpoints of the run
    being resumed are kept and count towards `keep`.

    Args:
        directory: where checkpoints go; created if needed.
        keep: how many checkpoints to keep (a positive int), or `None` to keep all.
        fresh: whether checkpoints already in `directory` belong to an unrelated earlier
            run.
        metadata: a JSON-serialisable dict stored in `checkpoint.json` (e.g. the run's
            settings).

    Example:
        >>> import tempfile
        >>> callback = EpochCheckpoint(tempfile.mkdtemp(), keep=2)
        >>> callback.keep
        2
    """

    def __init__(self, directory, keep=3, fresh=False, metadata=None):
        super().__init__()
        check_positive_int("keep", keep, allow_none=True)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as error:
            # Found now rather than after the first epoch's training.
            raise TypeError(f"metadata must be JSON-serialisable: {error}") from error
        self.directory = os.path.abspath(os.fspath(directory))
        self.keep = keep
        self.fresh = bool(fresh)
        self.metadata = dict(metadata or {})
        self._written = set()

    def on_train_begin(self, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        # Temporary files of a process killed while saving; one run writes here at a time.
        for name in os.listdir(self.directory):
            if name.startswith(STAGING_PREFIX):
                self._remove(os.path.join(self.directory, name))

    def on_epoch_end(self, epoch, logs=None):
        completed = epoch + 1
        path = checkpoint_path(self.directory, completed)
        self._save(path)
        self._written.add(path)
        iterations = getattr(getattr(self.model, "optimizer", None), "iterations", None)
        write_json(os.path.join(self.directory, CHECKPOINT_INDEX), {
            "latest": os.path.basename(path),
            "completed_epochs": completed,
            # Through NumPy: under tf.distribute the variable is mirrored (no int()).
            "optimizer_iterations": (None if iterations is None
                                     else int(keras.ops.convert_to_numpy(iterations))),
            "logs": _scalar_logs(logs),
            "metadata": self.metadata,
        })
        self._prune(completed, path)

    def _save(self, path):
        # model.save insists on a name ending in .keras; the staging prefix hides the
        # temporary file from list_checkpoints while it is incomplete.
        with staged(path) as staging:
            self.model.save(staging)

    def _prune(self, completed, just_written):
        kept = []
        for number, path in list_checkpoints(self.directory):
            if path == just_written:
                kept.append((number, path))
            elif number > completed or (self.fresh and path not in self._written):
                self._remove(path)
            else:
                kept.append((number, path))
        if self.keep is not None:
            for _, path in kept[:-self.keep]:
                if path != just_written:
                    self._remove(path)

    @staticmethod
    def _remove(path):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
