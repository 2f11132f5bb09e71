"""Glow's invertible 1x1 convolution (kernel layer and bijector) and the squeeze bijector.

Their bijector contract (round trips, log-det vs autodiff, gradients, XLA) runs in
`test_bijectors_contract.py`; this module checks what is specific to them.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import bijectors, nets

tfd = tfp.distributions


def _perturb(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    for weight in layer.trainable_weights:
        weight.assign(weight.numpy() + rng.normal(0.0, scale, size=weight.shape))
    return layer


# -- the kernel layer ----------------------------------------------------------------------


@pytest.mark.parametrize("lu", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_is_orthogonal_at_init(lu, dtype):
    layer = nets.Conv1x1Kernel(5, lu=lu, seed=3, dtype=dtype)
    kernel, log_abs_det = layer(np.zeros([1, 5], dtype))
    assert kernel.dtype.name == dtype and log_abs_det.dtype.name == dtype
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(kernel @ tf.transpose(kernel), np.eye(5), atol=tolerance)
    np.testing.assert_allclose(log_abs_det, 0.0, atol=tolerance)
    assert np.abs(kernel - np.eye(5)).max() > 0.1  # not the identity


def test_plain_and_lu_start_from_the_same_kernel():
    plain, _ = nets.Conv1x1Kernel(4, seed=7, dtype="float64")(np.zeros([1, 4]))
    lu, _ = nets.Conv1x1Kernel(4, lu=True, seed=7, dtype="float64")(np.zeros([1, 4]))
    np.testing.assert_allclose(lu, plain, atol=1e-12)
    other, _ = nets.Conv1x1Kernel(4, seed=8, dtype="float64")(np.zeros([1, 4]))
    assert np.abs(other - plain).max() > 0.1


@pytest.mark.parametrize("lu", [False, True])
def test_inverse_kernel_and_log_det_after_training_moves_the_weights(lu):
    layer = _perturb(nets.Conv1x1Kernel(4, lu=lu, seed=1, dtype="float64"))
    x = np.zeros([1, 4])
    kernel, log_abs_det = layer(x)
    inverse, inverse_log_abs_det = layer(x, inverse=True)
    np.testing.assert_allclose(kernel @ inverse, np.eye(4), atol=1e-12)
    expected = np.linalg.slogdet(kernel.numpy())[1]
    assert abs(expected) > 0.1
    np.testing.assert_allclose(log_abs_det, expected, rtol=1e-12)
    np.testing.assert_allclose(inverse_log_abs_det, expected, rtol=1e-12)


def test_lu_weights_and_masking():
    layer = nets.Conv1x1Kernel(4, lu=True, seed=2, dtype="float64")
    assert [w.name for w in layer.trainable_weights] == ["lower", "upper", "log_scale"]
    assert [w.name for w in layer.non_trainable_weights] == ["permutation", "sign"]
    permutation = layer.permutation.numpy()
    assert set(permutation.ravel()) <= {0.0, 1.0}
    np.testing.assert_array_equal(permutation.sum(axis=0), 1.0)
    np.testing.assert_array_equal(permutation.sum(axis=1), 1.0)
    assert set(np.abs(layer.sign.numpy())) == {1.0}
    kernel, _ = layer(np.zeros([1, 4]))
    # Entries outside the triangles are masked: changing them leaves W alone.
    layer.lower.assign(layer.lower.numpy() + np.triu(np.full([4, 4], 5.0)))
    layer.upper.assign(layer.upper.numpy() + np.tril(np.full([4, 4], 5.0)))
    np.testing.assert_allclose(layer(np.zeros([1, 4]))[0], kernel, atol=1e-12)
    # W = P L (U + diag(sign * exp(log_s))) with the unit diagonal of L enforced.
    p, lower, upper = (t.numpy() for t in layer._lu_factors())
    np.testing.assert_allclose(np.diag(lower), 1.0)
    np.testing.assert_allclose(p @ lower @ upper, kernel, atol=1e-12)


@pytest.mark.parametrize("lu", [False, True])
def test_config_round_trip(lu):
    layer = _perturb(nets.Conv1x1Kernel(3, lu=lu, seed=4, dtype="float64", name="w"))
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is nets.Conv1x1Kernel
    assert clone.get_config() == layer.get_config()
    assert (clone.channels, clone.lu, clone.seed) == (3, lu, 4)
    x = np.zeros([1, 3])
    # Same seed, same initial kernel (before the perturbation); same weights, same kernel.
    fresh, _ = nets.Conv1x1Kernel(3, lu=lu, seed=4, dtype="float64")(x)
    np.testing.assert_allclose(clone(x)[0], fresh, atol=1e-12)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x)[0], layer(x)[0], atol=1e-12)


def test_unseeded_layer_records_its_seed():
    keras.utils.set_random_seed(0)
    layer = nets.Conv1x1Kernel(3)
    assert isinstance(layer.get_config()["seed"], int)
    clone = nets.Conv1x1Kernel.from_config(layer.get_config())
    np.testing.assert_array_equal(clone.kernel.numpy(), layer.kernel.numpy())


def test_mixed_precision_keeps_log_det_in_float32():
    layer = nets.Conv1x1Kernel(3, lu=True, seed=0, dtype="mixed_float16")
    kernel, log_abs_det = layer(np.zeros([1, 3], "float32"))
    assert kernel.dtype.name == "float16"
    assert log_abs_det.dtype.name == "float32"
    assert all(w.dtype == "float32" for w in layer.weights)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"channels": 0}, ValueError, r"channels must be a positive int, got 0"),
    ({"channels": 2.0}, TypeError, r"channels must be a positive int, got 2.0"),
    ({"channels": 2, "lu": "yes"}, TypeError, r"lu must be a bool, got 'yes'"),
    ({"channels": 2, "seed": "0"}, TypeError, r"seed must be an int or None, got '0'"),
])
def test_kernel_layer_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nets.Conv1x1Kernel(**kwargs)


# -- the 1x1 convolution bijector ----------------------------------------------------------


@pytest.mark.parametrize("lu", [False, True])
def test_conv1x1_matches_a_1x1_conv2d(lu):
    layer = _perturb(nets.Conv1x1Kernel(3, lu=lu, seed=5, dtype="float64"))
    bijector = bijectors.InvertibleConv1x1(layer, [4, 2, 3])
    x = np.random.default_rng(0).normal(size=[2, 4, 2, 3])
    kernel = layer(x)[0].numpy()
    expected = tf.nn.conv2d(x, kernel[None, None], strides=1, padding="VALID")
    np.testing.assert_allclose(bijector.forward(x), expected, atol=1e-12)
    log_det = bijector.forward_log_det_jacobian(x, event_ndims=3)
    np.testing.assert_allclose(log_det, [8 * np.linalg.slogdet(kernel)[1]] * 2, rtol=1e-12)


def test_conv1x1_handles_any_batch_rank():
    layer = nets.Conv1x1Kernel(3, seed=0, dtype="float64")
    bijector = bijectors.InvertibleConv1x1(layer, [2, 2, 3])
    for shape in ([2, 2, 3], [5, 2, 2, 2, 3]):
        x = np.ones(shape)
        assert bijector.forward(x).shape == shape
        assert bijector.forward_log_det_jacobian(x, event_ndims=3).shape == shape[:-3]


def test_conv1x1_rejects_bad_arguments():
    layer = nets.Conv1x1Kernel(3, seed=0)
    with pytest.raises(ValueError, match=r"mixes 3 channels .*event_shape \[4, 4, 2\]"):
        bijectors.InvertibleConv1x1(layer, [4, 4, 2])
    with pytest.raises(ValueError, match=r"rank 1 or 3 .*got \[4, 3\]"):
        bijectors.InvertibleConv1x1(layer, [4, 3])
    with pytest.raises(TypeError, match=r"keras.layers.Layer, got ndarray"):
        bijectors.InvertibleConv1x1(np.eye(3), [4, 4, 3])
    bijector = bijectors.InvertibleConv1x1(layer, [4, 4, 3])
    with pytest.raises(ValueError, match=r"event shape \[4, 4, 3\], got shape \[2, 4, 2, 3\]"):
        bijector.forward(np.zeros([2, 4, 2, 3], "float32"))


# -- squeeze -------------------------------------------------------------------------------


def _manual_squeeze(x, factor):
    *batch, height, width, channels = x.shape
    x = x.reshape([*batch, height // factor, factor, width // factor, factor, channels])
    n = len(batch)
    x = x.transpose([*range(n), n, n + 2, n + 1, n + 3, n + 4])
    return x.reshape([*batch, height // factor, width // factor, factor * factor * channels])


@pytest.mark.parametrize("shape, factor", [([4, 6, 3], 2), ([6, 3, 2], 3), ([2, 2, 1], 2)])
def test_squeeze_matches_a_manual_reshape_and_transpose(shape, factor):
    x = np.random.default_rng(0).normal(size=[2, 3, *shape])
    squeeze = bijectors.Squeeze(shape, factor=factor)
    y = squeeze.forward(x)
    np.testing.assert_array_equal(y, _manual_squeeze(x, factor))
    np.testing.assert_array_equal(squeeze.inverse(tf.identity(y)), x)
    np.testing.assert_array_equal(squeeze.forward_log_det_jacobian(x, event_ndims=3),
                                  np.zeros([2, 3]))


def test_squeeze_channel_order():
    # Pixel (i, j) of the 2x2 block lands on channels (2 i + j) * C ... (2 i + j + 1) * C.
    x = np.arange(2 * 2 * 2, dtype="float32").reshape([2, 2, 2])
    y = bijectors.Squeeze([2, 2, 2]).forward(x)
    np.testing.assert_array_equal(y, x.reshape([1, 1, 8]))


def test_squeeze_event_shapes_and_transformed_distribution():
    squeeze = bijectors.Squeeze([4, 2, 3])
    assert squeeze.output_event_shape == [2, 1, 12]
    assert squeeze.forward_event_shape([4, 2, 3]) == [2, 1, 12]
    assert squeeze.forward_event_shape([7, 4, 2, 3]) == [7, 2, 1, 12]
    assert squeeze.inverse_event_shape([2, 1, 12]) == [4, 2, 3]
    assert squeeze.forward_event_shape_tensor([4, 2, 3]).numpy().tolist() == [2, 1, 12]
    assert squeeze.inverse_event_shape_tensor([2, 1, 12]).numpy().tolist() == [4, 2, 3]
    scale = np.linspace(0.5, 2.0, 24, dtype="float32").reshape([4, 2, 3])
    base = tfd.Independent(tfd.Normal(tf.zeros([4, 2, 3]), scale), 3)
    flow = tfd.TransformedDistribution(base, squeeze)
    assert flow.event_shape == [2, 1, 12]
    assert flow.event_shape_tensor().numpy().tolist() == [2, 1, 12]
    sample = flow.sample(5, seed=0)
    assert sample.shape == [5, 2, 1, 12]
    y = np.random.default_rng(0).normal(size=[5, 2, 1, 12]).astype("float32")
    expected = base.log_prob(tf.nn.depth_to_space(y, 2))
    np.testing.assert_allclose(flow.log_prob(y), expected, rtol=1e-6)


@pytest.mark.parametrize("shape, factor, match", [
    ([5, 4, 2], 2, r"divisible by 2, got event_shape \[5, 4, 2\]"),
    ([4, 6, 2], 4, r"divisible by 4, got event_shape \[4, 6, 2\]"),
    ([4, 4], 2, r"rank 3 .*got \[4, 4\]"),
    ([4, 4, 2], 1, r"factor must be an int >= 2, got 1"),
])
def test_squeeze_rejects_bad_shapes(shape, factor, match):
    with pytest.raises(ValueError, match=match):
        bijectors.Squeeze(shape, factor=factor)


def test_squeeze_rejects_inputs_of_the_wrong_shape():
    squeeze = bijectors.Squeeze([4, 4, 2])
    with pytest.raises(ValueError, match=r"event shape \[4, 4, 2\], got shape \[3, 2, 2, 8\]"):
        squeeze.forward(np.zeros([3, 2, 2, 8], "float32"))
    with pytest.raises(ValueError, match=r"inverse expects inputs with event shape \[2, 2, 8\], "
                                         r"got shape \[3, 4, 4, 2\]"):
        squeeze.inverse(np.zeros([3, 4, 4, 2], "float32"))


def test_squeeze_and_conv1x1_in_a_transformed_distribution():
    """A Glow-style step between a squeeze and an unsqueeze, over a base of the data shape:
    event shapes propagate through `FlowChain` and `tfb.Invert`, and `-log_prob` reaches
    every trainable weight."""
    layer = _perturb(nets.Conv1x1Kernel(8, lu=True, seed=0, dtype="float64"))
    conv = bijectors.InvertibleConv1x1(layer, [2, 2, 8])
    squeeze = bijectors.Squeeze([4, 4, 2])
    # Base noise -> data: squeeze, mix channels, unsqueeze.
    chain = bijectors.FlowChain([tfp.bijectors.Invert(squeeze), conv, squeeze])
    base = tfd.Sample(tfd.Normal(np.float64(0.0), np.float64(1.0)), [4, 4, 2])
    flow = tfd.TransformedDistribution(base, chain)
    assert flow.event_shape == [4, 4, 2]
    assert flow.sample(3, seed=1).shape == [3, 4, 4, 2]
    x = np.random.default_rng(0).normal(size=[3, 4, 4, 2])
    with tf.GradientTape() as tape:
        log_prob = flow.log_prob(x)
        loss = -tf.reduce_mean(log_prob)
    inverse_kernel, log_abs_det = layer(x, inverse=True)
    z = tf.nn.depth_to_space(tf.einsum("...i,ij->...j", tf.nn.space_to_depth(x, 2),
                                       inverse_kernel), 2)
    np.testing.assert_allclose(log_prob, base.log_prob(z) - 4 * log_abs_det, rtol=1e-12)
    gradients = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None and np.abs(g).max() > 0 for g in gradients)
