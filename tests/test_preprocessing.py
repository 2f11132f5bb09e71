"""Preprocessing bijectors, uniform dequantization and bits per dimension in level space."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import models
from tfp_flows.bijectors import FlowChain, LevelScaling, LogitTransform, Standardize
from tfp_flows.distributions import uniform_dequantize
from tfp_flows.training import BitsPerDim, bits_per_dim

tfd = tfp.distributions

LOG2_17 = 4.087462841250339  # log2(17)


# -- LevelScaling ----------------------------------------------------------------------------


@pytest.mark.parametrize("centered, expected", [(False, [0.0, 0.5, 255 / 256]),
                                                (True, [-0.5, 0.0, 255 / 256 - 0.5])])
def test_level_scaling_maps_levels_to_unit_interval(centered, expected):
    scaling = LevelScaling(256, [3], centered=centered)
    y = np.array([[0.0, 128.0, 255.0]])
    np.testing.assert_allclose(scaling.inverse(y).numpy(), [expected])
    np.testing.assert_allclose(scaling.forward(np.array([expected])).numpy(), y)


def test_level_scaling_log_det_is_minus_d_log_k():
    scaling = LevelScaling(17, [8, 8, 1])
    y = np.zeros([2, 8, 8, 1])
    np.testing.assert_allclose(scaling.inverse_log_det_jacobian(y, event_ndims=3),
                               [-64 * math.log(17)] * 2)
    np.testing.assert_allclose(scaling.forward_log_det_jacobian(y, event_ndims=3),
                               [64 * math.log(17)] * 2)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_bins": 1}, ValueError, r"num_bins must be an int >= 2, got 1"),
    ({"num_bins": 256.0}, TypeError, r"num_bins must be an int >= 2, got 256.0"),
    ({"num_bins": True}, TypeError, r"num_bins must be an int >= 2, got True"),
    ({"centered": 1}, TypeError, r"centered must be a bool, got 1"),
])
def test_level_scaling_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LevelScaling(**{"num_bins": 256, "event_shape": [2], **kwargs})


# -- LogitTransform --------------------------------------------------------------------------


def test_logit_transform_hand_computed_values():
    logit = LogitTransform([2], alpha=0.05)
    x = np.array([[0.5, 0.0]])
    # s = 0.05 + 0.9 x: s = 0.5 -> z = 0; s = 0.05 -> z = log(0.05 / 0.95).
    np.testing.assert_allclose(logit.inverse(x).numpy(), [[0.0, math.log(0.05 / 0.95)]])
    # log(0.9) - log(s) - log(1 - s), summed over the two entries.
    expected = (math.log(0.9) - 2 * math.log(0.5)) + (math.log(0.9) - math.log(0.05)
                                                       - math.log(0.95))
    np.testing.assert_allclose(logit.inverse_log_det_jacobian(x, event_ndims=1), [expected])


def test_logit_transform_forward_is_stable_for_large_logits():
    logit = LogitTransform([3], alpha=0.0)
    z = np.array([[-80.0, 0.0, 80.0]])
    np.testing.assert_allclose(logit.forward(z).numpy(), [[0.0, 0.5, 1.0]], atol=1e-30)
    fldj = logit.forward_log_det_jacobian(z, event_ndims=1).numpy()
    np.testing.assert_allclose(fldj, [-80.0 + 2 * math.log(0.5) - 80.0], rtol=1e-12)


@pytest.mark.parametrize("alpha, error", [
    (-0.1, ValueError), (0.5, ValueError), ("0.05", TypeError), (True, TypeError)])
def test_logit_transform_rejects_bad_alpha(alpha, error):
    with pytest.raises(error, match=r"alpha must be a number in \[0, 0.5\), got"):
        LogitTransform([2], alpha=alpha)


def test_logit_transform_validate_args_rejects_data_outside_unit_interval():
    logit = LogitTransform([2], validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inverse needs inputs in \[0, 1\]"):
        logit.inverse(np.array([[0.5, 1.5]]))


def test_logit_transform_validate_args_compiles_under_xla():
    logit = LogitTransform([2], validate_args=True)
    fn = tf.function(lambda x: logit.inverse_log_det_jacobian(x, event_ndims=1),
                     jit_compile=True)
    np.testing.assert_allclose(fn(tf.constant([[0.5, 0.5]])), [2 * math.log(3.6)], rtol=1e-6)


# -- the preprocessing chain -----------------------------------------------------------------


def test_chain_over_levels_of_a_uniform_base_has_log2_k_bits_per_dim():
    """Density 1 on [0, 1)^D, scaled to [0, 17)^D: 17^-D, i.e. log2(17) bits per dim."""
    base = tfd.Sample(tfd.Uniform(tf.constant(0.0, tf.float64), 1.0), [8, 8, 1])
    flow = tfd.TransformedDistribution(base, LevelScaling(17, [8, 8, 1]))
    y = uniform_dequantize(np.full([3, 8, 8, 1], 16, "uint8"), seed=1, dtype=tf.float64)
    nll = -flow.log_prob(y).numpy()
    np.testing.assert_allclose(nll, [64 * math.log(17)] * 3)
    np.testing.assert_allclose(bits_per_dim(nll, 64, num_bins=17, density_space="bins"),
                               [LOG2_17] * 3)
    # The same number from the unit-space density (0 nats) with the unit correction.
    assert bits_per_dim(0.0, 64, num_bins=17, density_space="unit") == pytest.approx(LOG2_17)


def test_logit_chain_log_prob_accounts_for_every_step():
    """log p(y) = log N(logit(s)) + ildj(logit) - D log K, step by step."""
    shape = [2, 2, 1]
    chain = FlowChain([LevelScaling(256, shape), LogitTransform(shape, alpha=0.05)])
    flow = tfd.TransformedDistribution(
        tfd.Sample(tfd.Normal(tf.constant(0.0, tf.float64), 1.0), shape), chain)
    y = uniform_dequantize(np.array([0, 17, 128, 255], "uint8").reshape([1, *shape]),
                           seed=2, dtype=tf.float64).numpy()
    s = 0.05 + 0.9 * y / 256
    z = np.log(s) - np.log1p(-s)
    expected = (np.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi))
                + np.sum(math.log(0.9) - np.log(s) - np.log1p(-s)) - 4 * math.log(256))
    np.testing.assert_allclose(flow.log_prob(y).numpy(), [expected], rtol=1e-12)


# -- uniform dequantization ------------------------------------------------------------------


def test_uniform_dequantize_adds_unit_noise():
    x = np.arange(17, dtype="uint8").repeat(100)
    y = uniform_dequantize(x, seed=0).numpy()
    assert y.dtype == np.float32
    assert np.all((y >= x) & (y < x + 1))
    assert 0.4 < np.mean(y - x) < 0.6


def test_uniform_dequantize_stays_below_the_next_level():
    # In float32, 255 + u rounds to 256 for about 8 in 10^6 draws of u.
    y = uniform_dequantize(tf.fill([10**6], tf.constant(255, tf.uint8)), seed=3).numpy()
    assert y.max() < 256.0


def test_uniform_dequantize_seeds():
    x = np.zeros([50], "int32")
    a, b = uniform_dequantize(x, seed=7), uniform_dequantize(x, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, uniform_dequantize(x, seed=8))
    c = uniform_dequantize(x, seed=tf.constant([7, 0], tf.int64))
    np.testing.assert_array_equal(a, c)
    keras.utils.set_random_seed(0)
    assert not np.array_equal(uniform_dequantize(x), uniform_dequantize(x))


def test_uniform_dequantize_in_graphs_and_datasets():
    fn = tf.function(lambda x: uniform_dequantize(x, dtype=tf.float64))
    y = fn(tf.constant([[3, 4]], tf.int64))
    assert y.dtype == tf.float64 and y.shape == [1, 2]
    dataset = tf.data.Dataset.from_tensor_slices(np.array([[1, 2], [3, 4]], "uint8"))
    rows = list(dataset.map(uniform_dequantize).as_numpy_iterator())
    assert np.all(np.floor(rows) == [[1, 2], [3, 4]])


@pytest.mark.parametrize("x", [np.array([0.5, 1.0]), tf.constant([1.0, 2.0]),
                               np.array([1.0], "float32")])
def test_uniform_dequantize_rejects_float_input(x):
    with pytest.raises(TypeError, match=r"expects integer data .*got dtype float"):
        uniform_dequantize(x)


@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": tf.float16}, r"dtype must be float32 or float64, got float16"),
    ({"seed": 1.5}, r"seed must be None, an int or a shape-\[2\] integer tensor"),
    ({"seed": tf.constant([1, 2, 3])}, r"got int32 tensor of shape \[3\]"),
])
def test_uniform_dequantize_rejects_bad_arguments(kwargs, match):
    with pytest.raises(TypeError, match=match):
        uniform_dequantize(np.zeros([2], "uint8"), **kwargs)


# -- bits per dimension ----------------------------------------------------------------------


def test_bits_per_dim_continuous_default_is_unchanged():
    assert bits_per_dim(3 * math.log(2.0), 3) == pytest.approx(1.0)


@pytest.mark.parametrize("nll, num_dims, num_bins, space, expected", [
    # nll = D ln 2 nats: 1 bit per dim in level space ...
    (64 * math.log(2.0), 64, 17, "bins", 1.0),
    # ... plus log2(K) bits when the density was over data divided by K.
    (64 * math.log(2.0), 64, 17, "unit", 1.0 + LOG2_17),
    (0.0, 3072, 256, "unit", 8.0),
    (-3072 * 2 * math.log(2.0), 3072, 256, "unit", 6.0),
    (3072 * 3.5 * math.log(2.0), 3072, 256, "bins", 3.5),
])
def test_bits_per_dim_discrete_hand_computed(nll, num_dims, num_bins, space, expected):
    got = bits_per_dim(nll, num_dims, num_bins=num_bins, density_space=space)
    assert got == pytest.approx(expected, rel=1e-12)


def test_bits_per_dim_on_tensors():
    nll = tf.constant([0.0, 64 * math.log(2.0)], tf.float32)
    got = bits_per_dim(nll, 64, num_bins=17, density_space="unit")
    np.testing.assert_allclose(got.numpy(), [LOG2_17, LOG2_17 + 1.0], rtol=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_bins": 256}, ValueError,
     r"with num_bins=256, density_space must say where .*got None"),
    ({"num_bins": 256, "density_space": "pixels"}, ValueError, r"got 'pixels'"),
    ({"density_space": "unit"}, ValueError, r"density_space='unit' needs num_bins"),
    ({"num_bins": 1, "density_space": "unit"}, ValueError,
     r"num_bins must be an int >= 2 or None"),
    ({"num_bins": 256.0, "density_space": "unit"}, TypeError, r"got 256.0"),
])
def test_bits_per_dim_rejects_ambiguous_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        bits_per_dim(1.0, 4, **kwargs)
    with pytest.raises(error, match=match):
        BitsPerDim(4, **kwargs)


def test_bits_per_dim_metric_in_unit_space_and_config():
    metric = BitsPerDim(64, num_bins=17, density_space="unit")
    metric.update_state(np.array([0.0, -64 * 2 * math.log(2.0)], "float32"))
    assert float(metric.result()) == pytest.approx(LOG2_17 + 1.0, rel=1e-6)
    clone = BitsPerDim.from_config(metric.get_config())
    assert (clone.num_dims, clone.num_bins, clone.density_space) == (64, 17, "unit")


def test_bits_per_dim_metric_reads_configs_saved_before_num_bins():
    config = BitsPerDim(2).get_config()
    del config["num_bins"], config["density_space"]
    clone = BitsPerDim.from_config(config)
    clone.update_state(np.array([-2 * math.log(2.0)], "float32"))
    assert float(clone.result()) == pytest.approx(1.0, rel=1e-6)


# -- Standardize -----------------------------------------------------------------------------


def _vectors(batch=64):
    rng = np.random.default_rng(4)
    return rng.normal(size=[batch, 3]) * [0.05, 1.0, 30.0] + [2.0, -1.0, 100.0]


def test_standardize_maps_data_to_zero_mean_unit_std_and_counts_its_log_det():
    x = _vectors()
    standardize = Standardize.from_data(x)
    np.testing.assert_allclose(standardize.mean, x.mean(axis=0))
    np.testing.assert_allclose(standardize.std, x.std(axis=0))
    z = standardize.inverse(tf.constant(x)).numpy()
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-12)
    log_std = np.log(x.std(axis=0)).sum()
    np.testing.assert_allclose(standardize.inverse_log_det_jacobian(x, event_ndims=1),
                               [-log_std] * len(x))
    np.testing.assert_allclose(standardize.forward_log_det_jacobian(z, event_ndims=1),
                               [log_std] * len(x))
    np.testing.assert_allclose(standardize.forward(tf.identity(z)), x, rtol=1e-12)
    # A standard normal pushed through it is the data's per-dimension normal.
    distribution = tfd.TransformedDistribution(
        tfd.Sample(tfd.Normal(np.float64(0.0), 1.0), [3]), standardize)
    expected = tfd.Normal(x.mean(axis=0), x.std(axis=0)).log_prob(x).numpy().sum(axis=-1)
    np.testing.assert_allclose(distribution.log_prob(x), expected, rtol=1e-12)
    assert standardize.inverse(x[:2].astype("float32")).dtype == tf.float32


def test_standardize_config_round_trip_and_constant_dimensions():
    x = _vectors()
    x[:, 1] = 7.0
    standardize = Standardize.from_data(x, min_std=1e-3)
    assert standardize.std[1] == 1e-3
    assert np.all(np.isfinite(standardize.inverse(x).numpy()))
    config = standardize.get_config()
    assert set(config) == {"mean", "std"} and isinstance(config["mean"], list)
    rebuilt = Standardize(**config)
    np.testing.assert_array_equal(rebuilt.mean, standardize.mean)
    np.testing.assert_array_equal(rebuilt.std, standardize.std)
    image = Standardize(np.zeros([2, 2, 1]), np.full([2, 2, 1], 2.0))
    assert image.event_shape == [2, 2, 1]
    np.testing.assert_allclose(image.inverse_log_det_jacobian(np.ones([1, 2, 2, 1]), 3),
                               [-4 * math.log(2.0)])


@pytest.mark.parametrize("build, error, match", [
    (lambda: Standardize([0.0, 0.0], [1.0, 0.0]), ValueError,
     r"std must be positive, got \[1.0, 0.0\]"),
    (lambda: Standardize([0.0, 0.0], [1.0, 1.0, 1.0]), ValueError,
     r"mean and std must have the same shape, got \[2\] and \[3\]"),
    (lambda: Standardize(0.0, 1.0), ValueError, "a scalar 0.0"),
    (lambda: Standardize(["a"], [1.0]), TypeError, r"mean must be an array of numbers"),
    (lambda: Standardize([np.nan], [1.0]), ValueError, r"mean must be finite, got \[nan\]"),
    (lambda: Standardize.from_data(np.zeros([1, 3])), ValueError,
     r"N >= 2 examples, got shape \[1, 3\]"),
    (lambda: Standardize.from_data(np.zeros([4, 3]), min_std=0.0), ValueError,
     "min_std must be a positive number, got 0.0"),
])
def test_standardize_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_a_flow_with_standardize_models_the_data_in_their_own_units(tmp_path):
    x = _vectors().astype("float32")
    standardize = Standardize.from_data(x)

    def build(**kwargs):
        return models.MAF([3], num_layers=2, hidden_units=[8], actnorm=False, **kwargs)

    flow, plain = build(standardize=standardize), build()
    assert [b.name for b in flow.bijector.bijectors][0] == "standardize"
    weights = [np.random.default_rng(1).normal(0.0, 0.3, w.shape) for w in flow.get_weights()]
    flow.set_weights(weights)
    plain.set_weights(weights)
    z = (x - standardize.mean) / standardize.std
    expected = plain.log_prob(z.astype("float32")).numpy() - np.log(standardize.std).sum()
    np.testing.assert_allclose(flow.log_prob(x), expected, rtol=1e-5, atol=1e-4)
    config = flow.get_config()
    assert config["standardize"] == standardize.get_config()
    assert "standardize" not in plain.get_config()
    flow.save(tmp_path / "flow.keras")
    loaded = keras.saving.load_model(tmp_path / "flow.keras")
    np.testing.assert_allclose(loaded.log_prob(x), flow.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(loaded.standardize.std, standardize.std)
    # Samples come back in the data's units.
    samples = flow.sample(2000, seed=0).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), standardize.mean,
                               atol=0.5 * standardize.std.max())


@pytest.mark.parametrize("build, error, match", [
    (lambda: models.MAF([3], standardize=(np.zeros(3), np.ones(3))), TypeError,
     "standardize must be None or a tfp_flows.bijectors.Standardize, got tuple"),
    (lambda: models.MAF([4], standardize=Standardize(np.zeros(3), np.ones(3))), ValueError,
     r"standardize has the shape \[3\], which must be the event_shape \[4\]"),
    (lambda: models.RealNVP([4], num_layers=1, hidden_units=[4], num_bins=17,
                            standardize=Standardize(np.zeros(4), np.ones(4))), ValueError,
     "standardize needs continuous data"),
])
def test_standardize_on_a_flow_is_checked(build, error, match):
    with pytest.raises(error, match=match):
        build()
