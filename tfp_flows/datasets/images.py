"""Image data as integer levels: the scikit-learn digits offline, any tfds image set online.

Images stay integers here (their discrete levels); dequantization (`dequantize_dataset`)
and scaling (`tfp_flows.bijectors.LevelScaling`) come after, so that bits per dimension
are computed in the data's own discrete space.
"""

import numpy as np
import tensorflow as tf

from tfp_flows._validation import check_int
from tfp_flows.distributions import uniform_dequantize

__all__ = ["DIGITS_NUM_BINS", "dequantize_dataset", "load_digits", "load_tfds",
           "prepare_tfds", "tfds_image_shape"]

# The scikit-learn digits are 8x8 counts of set pixels in 4x4 blocks: values 0..16.
DIGITS_NUM_BINS = 17
_DIGITS_TRAIN = 1437


def load_digits(seed=0):
    """The 1,797 scikit-learn 8x8 digits as integer images, split 1,437 train / 360 test.

    Pixels take the 17 levels `0..16` (`DIGITS_NUM_BINS`); use `num_bins=17` for
    scaling and bits per dimension. The data ships with scikit-learn: no download.

    Args:
        seed: seed of the random permutation that splits the examples (same seed, same
            split).

    Returns:
        `(x_train, x_test)`, uint8 arrays of shapes `[1437, 8, 8, 1]` and `[360, 8, 8, 1]`.

    Raises:
        TypeError: `seed` is not an int.

    Example:
        >>> x_train, x_test = load_digits()
        >>> x_train.shape, x_test.shape, int(x_train.max())
        ((1437, 8, 8, 1), (360, 8, 8, 1), 16)
    """
    check_int("seed", seed)
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("load_digits needs scikit-learn: pip install scikit-learn") from error
    images = sklearn_load_digits().images  # float64 [1797, 8, 8], integral values 0..16
    images = np.rint(images).astype(np.uint8)[..., None]
    order = np.random.default_rng(int(seed)).permutation(len(images))
    return images[order[:_DIGITS_TRAIN]], images[order[_DIGITS_TRAIN:]]


def _size_pair(value, name):
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (not isinstance(value, tuple | list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1
                   for v in value)):
        raise ValueError(f"{name} must be a positive int or a pair (height, width) of them, "
                         f"got {value!r}")
    return int(value[0]), int(value[1])


def _to_levels(image, center_crop, image_size):
    """Center-crops and resizes an integer image, keeping integer levels."""
    dtype = image.dtype
    if center_crop is not None:
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        top, left = (height - center_crop[0]) // 2, (width - center_crop[1]) // 2
        image = image[top:top + center_crop[0], left:left + center_crop[1]]
    if image_size is not None:
        # Area averaging is the antialiased downscale; rounding returns to the levels.
        resized = tf.image.resize(tf.cast(image, tf.float32), image_size, method="area")
        image = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, dtype.max), dtype)
    return image


def _levels_shape(shape, center_crop, image_size):
    """`[H, W, C]` of an image of `shape` after `center_crop` and `image_size`."""
    height, width, channels = shape
    if center_crop is not None:
        if height is not None and width is not None and (
                center_crop[0] > height or center_crop[1] > width):
            raise ValueError(f"center_crop {list(center_crop)} is larger than the images "
                             f"({height}x{width})")
        height, width = center_crop
    if image_size is not None:
        height, width = image_size
    return [height, width, channels]


def tfds_image_shape(name, image_size=None, *, center_crop=None, image_key="image",
                     data_dir=None):
    """`(shape, num_bins)` of the integer images `load_tfds` would give, from metadata alone.

    Reads the dataset's feature description (`tfds.builder(name).info.features`), which
    needs neither the data nor a download, so that settings that do not fit the images
    (a size a multi-scale flow cannot squeeze, say) fail before anything is downloaded.

    Args:
        name: tfds dataset name, e.g. `"mnist"`.
        image_size: the `image_size` of `load_tfds` (an int or `(height, width)`).
        center_crop: the `center_crop` of `load_tfds`.
        image_key: feature holding the image.
        data_dir: tfds data directory.

    Returns:
        `([H, W, C], num_bins)`: the shape after cropping and resizing (`None` for a size
        that varies between images and is not resized) and the number of levels (256
        for uint8 images).

    Raises:
        ValueError: unknown dataset, no `image_key` feature or not an integer image of
            rank 3, a bad size argument, or a crop larger than the images.
    """
    import tensorflow_datasets as tfds

    image_size = None if image_size is None else _size_pair(image_size, "image_size")
    center_crop = None if center_crop is None else _size_pair(center_crop, "center_crop")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"no tensorflow-datasets set named {name!r}") from error
    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, "keys") else []
    if image_key not in keys:
        raise ValueError(f"{name!r} examples have no {image_key!r} feature; features: "
                         f"{sorted(keys)}")
    feature = features[image_key]
    dtype = tf.as_dtype(getattr(feature, "np_dtype", None) or feature.dtype)
    shape = tuple(feature.shape)
    if not dtype.is_integer or len(shape) != 3:
        raise ValueError(f"{name!r} feature {image_key!r} must be an integer image [H, W, C], "
                         f"got {dtype.name} of shape {list(shape)}")
    return _levels_shape(shape, center_crop, image_size), int(dtype.max) + 1


def prepare_tfds(name, data_dir=None, download_retries=2):
    """Makes sure a tfds set is prepared in `data_dir`, downloading it if it is not.

    Args:
        name: tfds dataset name.
        data_dir: tfds data directory (tfds' default if `None`).
        download_retries: connection retries per file. tensorflow-datasets' own default
            (10, with growing back-off) keeps an offline machine waiting minutes before
            it fails; a working connection rarely needs more than a couple.

    Returns:
        The `tfds` builder, prepared.

    Raises:
        OSError: the data could not be downloaded (no network, host unreachable, ...);
            also tfds' `DownloadError` and `NonMatchingChecksumError`.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    from tensorflow_datasets.core.download import downloader

    retries = getattr(downloader, "MAX_RETRIES", None)
    if retries is not None:
        downloader.MAX_RETRIES = min(retries, int(download_retries))
    try:
        builder.download_and_prepare()
    finally:
        if retries is not None:
            downloader.MAX_RETRIES = retries
    return builder


def load_tfds(name, split, image_size=None, *, center_crop=None, image_key="image",
              batch_size=None, shuffle_buffer=None, seed=None, data_dir=None,
              download=True):
    """A `tf.data` pipeline of integer images from a tensorflow-datasets image set.

    Works with any tfds set whose examples hold an integer image under `image_key`
    (`"mnist"`, `"cifar10"`, `"celeb_a"`, `"imagenet_resized/32x32"`, ...). For CelebA,
    RealNVP's preprocessing is `center_crop=148, image_size=64`.

    Args:
        name: tfds dataset name, e.g. `"mnist"`.
        split: tfds split, e.g. `"train"` or `"test[:10%]"`.
        image_size: resize to this size (an int or `(height, width)`) with area averaging,
            rounded back to integer levels; `None` keeps the size.
        center_crop: crop the central `(height, width)` (or int) before resizing.
        image_key: feature holding the image.
        batch_size: batch the pipeline if given.
        shuffle_buffer: shuffle with this buffer size if given (before batching).
        seed: shuffle seed.
        data_dir: tfds data directory.
        download: let tfds download and prepare the data if missing.

    Returns:
        A `tf.data.Dataset` of integer (uint8 for images) tensors `[H, W, C]`, or
        `[batch, H, W, C]` when batched. Dequantize with `dequantize_dataset`.

    Raises:
        ValueError: the examples have no `image_key` feature, or it is not an integer
            image of rank 3; or a size argument is invalid.
    """
    import tensorflow_datasets as tfds

    image_size = None if image_size is None else _size_pair(image_size, "image_size")
    center_crop = None if center_crop is None else _size_pair(center_crop, "center_crop")
    dataset = tfds.load(name, split=split, data_dir=data_dir, download=download)
    spec = dataset.element_spec
    if not isinstance(spec, dict) or image_key not in spec:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"{name!r} examples have no {image_key!r} feature; features: {keys}")
    image_spec = spec[image_key]
    if not image_spec.dtype.is_integer or image_spec.shape.rank != 3:
        raise ValueError(f"{name!r} feature {image_key!r} must be an integer image [H, W, C], "
                         f"got {image_spec.dtype.name} of shape {image_spec.shape.as_list()}")
    dataset = dataset.map(lambda example: _to_levels(example[image_key], center_crop,
                                                     image_size),
                          num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle_buffer is not None:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    if batch_size is not None:
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


def dequantize_dataset(dataset, seed=None, dtype=tf.float32):
    """Maps `tfp_flows.distributions.uniform_dequantize` over a dataset of integer tensors.

    With a seed, each element gets its own stateless seed from `tf.data.Dataset.random`,
    drawn afresh in every iteration (epoch): noise differs between elements and epochs yet
    the whole sequence is reproducible.

    Args:
        dataset: a `tf.data.Dataset` whose elements are integer tensors (e.g. from
            `load_tfds`, or `tf.data.Dataset.from_tensor_slices(load_digits()[0])`).
        seed: `None` (stateful noise) or an int.
        dtype: float32 or float64.

    Returns:
        A `tf.data.Dataset` of `x + u`, `u ~ U[0, 1)`, in `dtype`.

    Raises:
        TypeError: the elements are not single integer tensors.

    Example:
        >>> ds = dequantize_dataset(tf.data.Dataset.from_tensor_slices([[1, 2]]), seed=0)
        >>> [bool(tf.reduce_all((y >= [1, 2]) & (y < [2, 3]))) for y in ds]
        [True]
    """
    spec = dataset.element_spec
    if not isinstance(spec, tf.TensorSpec) or not spec.dtype.is_integer:
        raise TypeError(f"dequantize_dataset expects a dataset of integer tensors, got "
                        f"element_spec {spec}")
    if seed is None:
        return dataset.map(lambda x: uniform_dequantize(x, dtype=dtype),
                           num_parallel_calls=tf.data.AUTOTUNE)
    check_int("seed", seed)
    seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).map(
        lambda x, pair: uniform_dequantize(x, seed=pair, dtype=dtype),
        num_parallel_calls=tf.data.AUTOTUNE)
