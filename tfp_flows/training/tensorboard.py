"""TensorBoard logs of training, with or without the `tensorboard` package installed."""

import importlib.util
import os

import keras
import tensorflow as tf

__all__ = ["EpochSummaries", "tensorboard_callback"]


def _scalar_metadata():
    # What tensorboard's own `tf.summary.scalar` attaches: the scalars plugin shows the value.
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    metadata.data_class = metadata.DESCRIPTOR.fields_by_name["data_class"].enum_type \
        .values_by_name["DATA_CLASS_SCALAR"].number
    return metadata


class EpochSummaries(keras.callbacks.Callback):
    """Writes the epoch logs of `fit` as TensorBoard scalars, using TensorFlow alone.

    The layout and tags are those of `keras.callbacks.TensorBoard`: `log_dir/train` and
    `log_dir/validation`, tags `epoch_loss`, `epoch_bits_per_dim`, ... and
    `epoch_learning_rate`, stepped by the epoch index (which continues across a resumed
    run). `keras.callbacks.TensorBoard` needs the `tensorboard` package to write anything;
    this callback does not (reading the logs still takes TensorBoard).

    Args:
        log_dir: directory of the logs; created if needed.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self._writers = {}
        self._metadata = _scalar_metadata()

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(
                os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        train, validation = {}, {}
        for key, value in (logs or {}).items():
            if key.startswith("val_"):
                validation[key[len("val_"):]] = value
            else:
                train[key] = value
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and "learning_rate" not in train:
            train["learning_rate"] = optimizer.learning_rate
        for name, values in (("train", train), ("validation", validation)):
            if not values:
                continue
            with self._writer(name).as_default():
                for key, value in values.items():
                    tf.summary.write(f"epoch_{key}", tf.cast(value, tf.float32), step=epoch,
                                     metadata=self._metadata)
            self._writers[name].flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def tensorboard_callback(log_dir):
    """`keras.callbacks.TensorBoard(log_dir)` if `tensorboard` is installed, else
    `EpochSummaries(log_dir)` (epoch scalars only)."""
    if importlib.util.find_spec("tensorboard") is not None:
        return keras.callbacks.TensorBoard(log_dir)
    return EpochSummaries(log_dir)
