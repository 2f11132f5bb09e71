"""The data of a `tfp-flows` run: toy densities or image sets, and their shuffled batches."""

import collections

import keras
import numpy as np
import tensorflow as tf

from tfp_flows.cli.catalog import (
    DATA_KINDS,
    IMAGE_DATASETS,
    TEST_FRACTION,
    TFDS_PREFIX,
    dataset_kind,
)
from tfp_flows.datasets import (
    DIGITS_NUM_BINS,
    load_digits,
    load_tfds,
    load_toy,
)
from tfp_flows.distributions import uniform_dequantize

__all__ = [
    "DATA_KINDS",
    "IMAGE_DATASETS",
    "TEST_FRACTION",
    "TFDS_PREFIX",
    "RunData",
    "dataset_kind",
    "load_data",
    "shuffled_batches",
]

RunData = collections.namedtuple("RunData", "train test test_levels num_bins is_image")
RunData.__doc__ = """A run's data.

`train` and `test` are arrays of examples: for toy data both float; for images `train`
holds the integer levels (dequantized afresh in every epoch) and `test` one fixed
dequantization of `test_levels`. `num_bins` is the number of levels (`None` for toy data).
"""


def load_data(settings, data_dir=None):
    """The `RunData` of a run's settings (`data_dir`: tensorflow-datasets' directory)."""
    seed = settings["seed"]
    if dataset_kind(settings["dataset"]) == "image":
        train, test_levels, num_bins = _load_images(settings, data_dir)
        # One fixed dequantization of the test set, for per-epoch and final evaluation.
        test = uniform_dequantize(test_levels, seed=seed + 1).numpy()
        return RunData(train, test, test_levels, num_bins, True)
    train, test = load_toy(settings["dataset"], settings["num_points"], seed=seed,
                           test_fraction=TEST_FRACTION)
    return RunData(train, test, None, None, False)


def _load_images(settings, data_dir):
    """`(train, test, num_bins)`: integer image arrays of the run's image set."""
    name = settings["dataset"]
    if name == "digits":
        return (*load_digits(seed=settings["seed"]), DIGITS_NUM_BINS)
    options = IMAGE_DATASETS.get(name) or {}
    tfds_name = name[len(TFDS_PREFIX):] if name.startswith(TFDS_PREFIX) else name

    def load(split):
        batches = load_tfds(tfds_name, split, settings["image_size"],
                            center_crop=options.get("center_crop"), batch_size=1024,
                            data_dir=data_dir)
        return np.concatenate(list(batches.as_numpy_iterator()))

    train, test = load(settings["train_split"]), load(settings["test_split"])
    return train, test, int(np.iinfo(train.dtype).max) + 1


def shuffled_batches(train, batch_size, seed, dequantize=False):
    """Batches of `train` reshuffled every epoch in an order fixed by `(seed, epoch)` alone.

    With `dequantize`, integer batches get uniform noise drawn from `(seed, epoch, batch)`
    alone. Returns the dataset and a callback telling it the epoch. As neither the order nor
    the noise depends on how many epochs this process has run, a resumed run sees the data
    exactly as an uninterrupted one would.
    """
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    data = tf.constant(train)
    num_batches = len(train) // batch_size
    seed = tf.constant(seed, tf.int64)

    def load(index, rows):
        x = tf.gather(data, rows)
        if dequantize:
            # A negative second component keeps these seeds apart from the shuffle's.
            x = uniform_dequantize(x, seed=tf.stack([seed, -1 - epoch * num_batches - index]))
        return x

    def one_epoch(_):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(train)), seed=tf.stack([seed, epoch]))
        # Full batches only: under XLA every new batch shape is another compilation.
        return (tf.data.Dataset.from_tensor_slices(order)
                .batch(batch_size, drop_remainder=True).enumerate().map(load))

    batches = (tf.data.Dataset.range(1).flat_map(one_epoch)
               .apply(tf.data.experimental.assert_cardinality(num_batches))
               .prefetch(tf.data.AUTOTUNE))

    class EpochCounter(keras.callbacks.Callback):
        # Keras makes each epoch's iterator after on_epoch_begin, so it sees this epoch.
        def on_epoch_begin(self, index, logs=None):
            epoch.assign(index)

    return batches, EpochCounter()
