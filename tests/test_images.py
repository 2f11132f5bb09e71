"""Integer image data: scikit-learn digits, tfds pipelines (mocked), dequantized pipelines."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfp_flows.datasets import DIGITS_NUM_BINS, dequantize_dataset, load_digits, load_tfds
from tfp_flows.datasets.images import _to_levels


def _rows(images):
    return sorted(image.tobytes() for image in images)


def test_load_digits_shapes_levels_and_split():
    x_train, x_test = load_digits()
    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8
    levels = np.unique(np.concatenate([x_train, x_test]))
    assert levels.min() == 0 and levels.max() == DIGITS_NUM_BINS - 1 == 16
    from sklearn.datasets import load_digits as sklearn_load_digits
    everything = sklearn_load_digits().images.astype(np.uint8)[..., None]
    assert _rows(np.concatenate([x_train, x_test])) == _rows(everything)


def test_load_digits_split_depends_on_seed_only():
    a_train, a_test = load_digits(seed=0)
    b_train, _ = load_digits(seed=0)
    c_train, _ = load_digits(seed=1)
    np.testing.assert_array_equal(a_train, b_train)
    assert not np.array_equal(a_train, c_train)
    with pytest.raises(TypeError, match=r"seed must be an int, got '0'"):
        load_digits(seed="0")


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=6):
        yield


def test_load_tfds_mnist_gives_integer_images(mock_tfds):
    dataset = load_tfds("mnist", "train")
    assert dataset.element_spec == tf.TensorSpec([28, 28, 1], tf.uint8)
    images = list(dataset.as_numpy_iterator())
    assert len(images) == 6


def test_load_tfds_celeb_a_cropped_and_resized(mock_tfds):
    dataset = load_tfds("celeb_a", "train", image_size=32, center_crop=148, batch_size=4)
    batches = list(dataset.as_numpy_iterator())
    assert [b.shape for b in batches] == [(4, 32, 32, 3), (2, 32, 32, 3)]
    assert batches[0].dtype == np.uint8


def test_load_tfds_resize_keeps_levels_and_averages():
    image = tf.constant(np.array([[0, 255], [255, 0]], "uint8")[..., None])
    out = _to_levels(image, None, (1, 1))
    assert out.dtype == tf.uint8 and int(out[0, 0, 0]) == 128  # round(127.5)


def test_load_tfds_dequantized_pipeline(mock_tfds):
    dataset = dequantize_dataset(load_tfds("cifar10", "test", shuffle_buffer=6, seed=0), seed=0)
    images = np.stack(list(dataset.as_numpy_iterator()))
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
    assert np.all((images >= 0) & (images < 256))


@pytest.mark.parametrize("kwargs, match", [
    ({"image_key": "picture"}, r"'mnist' examples have no 'picture' feature; features: "
                               r"\['image', 'label'\]"),
    ({"image_key": "label"}, r"feature 'label' must be an integer image \[H, W, C\], got "
                             r"int64 of shape \[\]"),
    ({"image_size": 0}, r"image_size must be a positive int or a pair"),
    ({"center_crop": (8, 8, 1)}, r"center_crop must be a positive int or a pair"),
])
def test_load_tfds_rejects_bad_arguments(mock_tfds, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_tfds("mnist", "train", **kwargs)


def test_dequantize_dataset_seeded_per_element_and_per_epoch():
    x = np.zeros([4, 3], "uint8")
    dataset = dequantize_dataset(tf.data.Dataset.from_tensor_slices(x), seed=5)
    first = np.stack(list(dataset.as_numpy_iterator()))
    second = np.stack(list(dataset.as_numpy_iterator()))
    again = np.stack(list(dequantize_dataset(tf.data.Dataset.from_tensor_slices(x), seed=5)
                          .as_numpy_iterator()))
    np.testing.assert_array_equal(first, again)  # reproducible
    assert not np.array_equal(first, second)  # fresh noise each epoch
    assert len({row.tobytes() for row in first}) == 4  # each element its own noise
    assert np.all((first >= 0) & (first < 1))


def test_dequantize_dataset_unseeded_and_digits():
    x_train, _ = load_digits()
    dataset = dequantize_dataset(tf.data.Dataset.from_tensor_slices(x_train[:8]),
                                 dtype=tf.float64).batch(8)
    batch = next(iter(dataset)).numpy()
    assert batch.dtype == np.float64
    assert np.all((batch >= x_train[:8]) & (batch < x_train[:8] + 1))


@pytest.mark.parametrize("dataset, seed, match", [
    (tf.data.Dataset.from_tensor_slices(np.zeros([2, 2], "float32")), None,
     r"expects a dataset of integer tensors, got element_spec TensorSpec"),
    (tf.data.Dataset.from_tensor_slices((np.zeros([2], "uint8"), np.zeros([2]))), None,
     r"expects a dataset of integer tensors"),
    (tf.data.Dataset.from_tensor_slices(np.zeros([2], "uint8")), 1.5,
     r"seed must be an int, got 1.5"),
])
def test_dequantize_dataset_rejects_bad_input(dataset, seed, match):
    with pytest.raises(TypeError, match=match):
        dequantize_dataset(dataset, seed=seed)


def test_tfds_image_shape_reads_metadata_only(tmp_path):
    from tfp_flows.datasets import tfds_image_shape

    # An empty data directory: the shape comes from the feature description, no download.
    assert tfds_image_shape("mnist", data_dir=str(tmp_path)) == ([28, 28, 1], 256)
    assert tfds_image_shape("cifar10", 8, data_dir=str(tmp_path)) == ([8, 8, 3], 256)
    assert tfds_image_shape("celeb_a", 64, center_crop=148,
                            data_dir=str(tmp_path)) == ([64, 64, 3], 256)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"center_crop \[40, 40\] is larger than the images"):
        tfds_image_shape("mnist", center_crop=40, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"feature 'label' must be an integer image"):
        tfds_image_shape("mnist", image_key="label", data_dir=str(tmp_path))
