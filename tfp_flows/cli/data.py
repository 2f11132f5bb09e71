"""The data of a `tfp-flows` run: toy densities or image sets, and their shuffled batches.

Toy densities and the digits are small and held in memory. tensorflow-datasets sets are
streamed: their metadata gives the image shape (so settings that do not fit fail before
any download), the set is downloaded and prepared once if it is not in `--data-dir`, and
training and evaluation read it through `tf.data` (shuffle buffer, prefetch, dequantized
on the fly) without ever loading it whole.
"""

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
from tfp_flows.cli.errors import DataUnavailableError, UsageError
from tfp_flows.datasets import (
    DIGITS_NUM_BINS,
    load_digits,
    load_tfds,
    load_toy,
    prepare_tfds,
    tfds_image_shape,
)
from tfp_flows.distributions import uniform_dequantize

try:  # the errors of a failed download, besides OSError
    from tensorflow_datasets.core.download import DownloadError, NonMatchingChecksumError
except ImportError:  # pragma: no cover - tensorflow-datasets is a dependency
    DownloadError = NonMatchingChecksumError = OSError

__all__ = [
    "DATA_KINDS",
    "IMAGE_DATASETS",
    "TEST_FRACTION",
    "TFDS_PREFIX",
    "EVAL_BATCH_SIZE",
    "SHUFFLE_BUFFER",
    "RunData",
    "dataset_kind",
    "dequantizes_itself",
    "evaluation_batches",
    "is_streamed",
    "load_data",
    "shuffled_batches",
    "streamed_batches",
    "training_batches",
]

# Examples in the shuffle buffer of a streamed (tfds) training set.
SHUFFLE_BUFFER = 10_000
# Examples per batch when evaluating.
EVAL_BATCH_SIZE = 256

RunData = collections.namedtuple(
    "RunData", "train test test_levels num_bins is_image event_shape num_train num_test",
    defaults=(None, None, None))
RunData.__doc__ = """A run's data.

In-memory sets (toy data, the digits): `train` and `test` are arrays of examples: for toy
data both float; for images `train` holds the integer levels (dequantized afresh in every
epoch) and `test` one fixed dequantization of `test_levels`. Streamed sets (tfds):
`train` and `test` are `tf.data` pipelines of integer images `[H, W, C]`, read from disk
as training goes, and `test_levels` holds the first test images, for plots. `num_bins` is
the number of levels (`None` for toy data); `event_shape`, `num_train` and `num_test`
describe either kind.
"""


def _in_memory(train, test, test_levels=None, num_bins=None, is_image=False):
    return RunData(train, test, test_levels, num_bins, is_image, list(train.shape[1:]),
                   len(train), len(test))


def is_streamed(data):
    """Whether `data` (a `RunData`) is read from disk as it goes (tfds sets)."""
    return isinstance(data.train, tf.data.Dataset)


def load_data(settings, data_dir=None, check_event_shape=None):
    """The `RunData` of a run's settings (`data_dir`: tensorflow-datasets' directory).

    Args:
        settings: the run's settings.
        data_dir: tensorflow-datasets data directory.
        check_event_shape: called as `check_event_shape(event_shape, num_bins)` with the
            shape of a tfds set's images as the run will see them, read from the dataset's
            metadata before anything is downloaded; it raises to stop the run.

    Raises:
        DataUnavailableError: a tfds set is not in `data_dir` and cannot be downloaded.
    """
    seed = settings["seed"]
    if dataset_kind(settings["dataset"]) != "image":
        train, test = load_toy(settings["dataset"], settings["num_points"], seed=seed,
                               test_fraction=TEST_FRACTION)
        return _in_memory(train, test)
    if settings["dataset"] == "digits":
        train, test_levels = load_digits(seed=seed)
        # One fixed dequantization of the test set, for per-epoch and final evaluation.
        test = uniform_dequantize(test_levels, seed=seed + 1).numpy()
        return _in_memory(train, test, test_levels, DIGITS_NUM_BINS, True)
    return _streamed_images(settings, data_dir, check_event_shape)


def _streamed_images(settings, data_dir, check_event_shape):
    name = settings["dataset"]
    options = IMAGE_DATASETS.get(name) or {}
    tfds_name = name[len(TFDS_PREFIX):] if name.startswith(TFDS_PREFIX) else name
    crop = options.get("center_crop")
    try:
        event_shape, num_bins = tfds_image_shape(tfds_name, settings["image_size"],
                                                 center_crop=crop, data_dir=data_dir)
    except ValueError as error:
        raise UsageError(f"--dataset {name}: {error}") from error
    if None in event_shape:
        raise UsageError(f"--dataset {name}: the images differ in size; give --image-size")
    if check_event_shape is not None:
        check_event_shape(event_shape, num_bins)
    try:
        prepare_tfds(tfds_name, data_dir=data_dir)
    except (OSError, DownloadError, NonMatchingChecksumError) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        if len(reason) > 200:
            reason = reason[:197] + "..."
        where = data_dir if data_dir is not None else "the default tensorflow-datasets " \
                                                       "directory"
        raise DataUnavailableError(
            f"cannot download {tfds_name} into {where} ({reason}); use --data-dir DIR "
            "holding the prepared set, or --dataset digits (no download)") from error

    def levels(split):
        return load_tfds(tfds_name, split, settings["image_size"], center_crop=crop,
                         data_dir=data_dir, download=False)

    train_split, test_split = settings["train_split"], settings["test_split"]
    try:
        train, test = levels(train_split), levels(test_split)
    except ValueError as error:  # an unknown split, a bad slice
        raise UsageError(f"--dataset {name}: {error}") from error
    counts = [_num_examples(train), _num_examples(test)]
    test_levels = np.concatenate(list(test.take(64).batch(64).as_numpy_iterator()))
    return RunData(train, test, test_levels, num_bins, True, event_shape, *counts)


def _num_examples(dataset):
    """The examples of a pipeline: its cardinality (tfds knows it), else counted."""
    count = int(dataset.cardinality())
    if count >= 0:
        return count
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def dequantizes_itself(flow):
    """Whether `flow` takes integer levels and dequantizes them itself (a dequantizer flow:
    uniform or variational dequantization inside the flow)."""
    return bool(getattr(flow.surjection, "discrete", False))


def training_batches(data, batch_size, seed, dequantize=True):
    """Training batches of a run's data and the callback telling them the epoch.

    See `shuffled_batches` (in-memory sets) and `streamed_batches` (tfds sets). Images are
    uniformly dequantized unless `dequantize` is false (a flow that dequantizes itself, such
    as one with variational dequantization, takes the integer levels).
    """
    if is_streamed(data):
        return streamed_batches(data.train, data.num_train, batch_size, seed,
                                dequantize=dequantize)
    return shuffled_batches(data.train, batch_size, seed,
                            dequantize=data.is_image and dequantize)


def evaluation_batches(data, split, dequantize_seed=None, batch_size=EVAL_BATCH_SIZE):
    """Batches for evaluating on the `"train"` or `"test"` set.

    In-memory sets give their array (`mean_nll` batches it): the training levels, the
    test set dequantized once, or, with `dequantize_seed=None`, the test levels. Streamed
    sets give a pipeline of `batch_size` batches, dequantized with noise fixed by
    `(dequantize_seed, batch)` alone (the test set of a run with the run's seed + 1, as the
    in-memory sets are), or the integer levels as floats with `dequantize_seed=None`.
    """
    if not is_streamed(data):
        if split == "train":
            return data.train
        return data.test if dequantize_seed is not None else data.test_levels
    levels = data.train if split == "train" else data.test
    if dequantize_seed is None:
        return (levels.batch(batch_size).map(lambda x: tf.cast(x, tf.float32))
                .prefetch(tf.data.AUTOTUNE))
    seed = tf.constant(dequantize_seed, tf.int64)
    return (levels.batch(batch_size).enumerate()
            .map(lambda index, x: uniform_dequantize(x, seed=tf.stack([seed, index])),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def streamed_batches(levels, num_examples, batch_size, seed, shuffle_buffer=SHUFFLE_BUFFER,
                     dequantize=True):
    """Dequantized, shuffled batches streamed from a `tf.data` pipeline of integer images
    (with `dequantize=False`, the levels as floats).

    The images are read as training goes (a shuffle buffer of `shuffle_buffer` examples,
    prefetching), never all held in memory. Both the shuffle and the noise are drawn from
    `(seed, epoch)` alone, like `shuffled_batches`; so as long as the pipeline reads the
    examples in the same order (tfds does, from the same prepared files), a resumed run
    sees the data as an uninterrupted one would. Returns the dataset and a callback
    telling it the epoch.
    """
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    num_batches = num_examples // batch_size
    seed = tf.constant(seed, tf.int64)

    def load(index, x):
        if not dequantize:
            return tf.cast(x, tf.float32)
        # A negative second component keeps these seeds apart from evaluation's.
        return uniform_dequantize(x, seed=tf.stack([seed, -1 - epoch * num_batches - index]))

    def one_epoch(_):
        # The shuffle's seed is a tensor of (seed, epoch). tf.data mixes an op seed with
        # the graph's seed and compares the pair with (0, 0) in Python, which fails for
        # a tensor when the global seed is 0; the op seed alone decides here.
        graph = tf.compat.v1.get_default_graph()
        graph_seed, graph.seed = graph.seed, None
        try:
            shuffled = levels.shuffle(shuffle_buffer, seed=seed * 1_000_003 + epoch)
        finally:
            graph.seed = graph_seed
        return (shuffled.batch(batch_size, drop_remainder=True).enumerate()
                .map(load, num_parallel_calls=tf.data.AUTOTUNE))

    batches = (tf.data.Dataset.range(1).flat_map(one_epoch)
               .apply(tf.data.experimental.assert_cardinality(num_batches))
               .prefetch(tf.data.AUTOTUNE))
    return batches, _epoch_counter(epoch)


def _epoch_counter(epoch):
    class EpochCounter(keras.callbacks.Callback):
        # Keras makes each epoch's iterator after on_epoch_begin, so it sees this epoch.
        def on_epoch_begin(self, index, logs=None):
            epoch.assign(index)

    return EpochCounter()


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
        elif x.dtype.is_integer:
            x = tf.cast(x, tf.float32)
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

    return batches, _epoch_counter(epoch)
