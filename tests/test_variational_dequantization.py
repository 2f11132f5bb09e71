"""Variational dequantization (Flow++): the learned q(u | x), its log-density, its bounds
in flows, bits per dimension, serialization and export."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import load_exported_bound, perturb

import tfp_flows as tff
from tfp_flows import nets
from tfp_flows.bijectors import Coupling, LogisticMixtureCDF, RationalQuadraticSpline
from tfp_flows.distributions import (
    InferenceSurjection,
    NormalAugmentation,
    UniformDequantization,
    VariationalDequantization,
)
from tfp_flows.training import bits_per_dim

LOGIT_NORMAL_STD = 0.2083  # standard deviation of sigmoid(N(0, 1)), by quadrature


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def small_q(num_bins=5, event_shape=(4, 4, 1), **kwargs):
    options = dict(num_steps=2, filters=4, blocks=1, context_channels=2)
    options.update(kwargs)
    return VariationalDequantization(num_bins, list(event_shape), **options)


def built(q, dtype="float32"):
    """`q` with its layers' weights created (a Flow does this when it takes `q`)."""
    q.encode(tf.zeros([1, *q.event_shape], dtype), seed=0)
    return q


def shift_weights(q, scale, seed=0):
    """Adds N(0, scale) noise to every trainable weight of q's layers."""
    rng = np.random.default_rng(seed)
    for layer in q.layers:
        for weight in layer.trainable_weights:
            weight.assign(weight.numpy() + rng.normal(0.0, scale, weight.shape))
    return q


def levels(shape, num_bins, seed=0, dtype="float32"):
    return np.random.default_rng(seed).integers(0, num_bins, size=shape).astype(dtype)


def log_normal(value):
    return -0.5 * np.square(value) - 0.5 * math.log(2 * math.pi)


def q_weight_count(q):
    return sum(len(layer.trainable_weights) for layer in q.layers)


def small_realnvp(num_bins=5, event_shape=(4, 4, 1), **kwargs):
    """A two-scale RealNVP with a small learned dequantizer."""
    return tff.models.RealNVP(list(event_shape), num_scales=2, hidden_channels=4, num_blocks=1,
                              num_bins=num_bins,
                              surjection=small_q(num_bins, event_shape), **kwargs)


# -- the surjection -------------------------------------------------------------------------------


def test_u_lies_in_the_open_unit_interval_and_z_in_the_level_of_x():
    # Large weights drive h = f(eps) far out, where sigmoid(h) rounds to 0 or 1.
    q = shift_weights(built(small_q(256, [4, 4, 2])), scale=2.0)
    x = np.concatenate([np.zeros([16, 4, 4, 2]), np.full([16, 4, 4, 2], 255.0),
                        levels([16, 4, 4, 2], 256)]).astype("float32")
    z, log_q = q.encode(x, seed=1)
    z = z.numpy()
    u = z[:16]  # x = 0: z is u itself
    assert np.all((u > 0) & (u < 1))
    assert u.min() < 1e-6 and u.max() > 1 - 1e-6, "the weights did not saturate the sigmoid"
    assert np.all((z >= x) & (z < x + 1))
    np.testing.assert_array_equal(q.decode(z), x)
    assert log_q.shape == [48] and np.all(np.isfinite(log_q))
    assert isinstance(q, InferenceSurjection) and q.discrete and q.num_bins == 256
    assert q.latent_event_shape == q.event_shape == [4, 4, 2]


def test_log_q_is_the_log_density_of_the_sampling_map():
    """log q(z | x) = log N(eps) - log|det dz/deps|, the determinant by autodiff."""
    q = small_q(5, [2, 2, 2], dtype="float64")
    shift_weights(built(q, "float64"), scale=0.3, seed=1)
    x = tf.constant(levels([3, 2, 2, 2], 5, dtype="float64"))
    z, log_q = q.encode(x, seed=tf.constant([4, 5]))
    noise = tf.random.stateless_normal([3, 2, 2, 2], seed=[4, 5], dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(noise)
        mapped, _ = q.encode_noise(x, noise)
        flat = tf.reshape(mapped, [3, 8])
    jacobian = tf.reshape(tape.batch_jacobian(flat, noise), [3, 8, 8])
    _, log_abs_det = np.linalg.slogdet(jacobian.numpy())
    expected = log_normal(noise.numpy()).reshape(3, -1).sum(-1) - log_abs_det
    np.testing.assert_array_equal(mapped, z)
    np.testing.assert_allclose(log_q, expected, rtol=1e-10)
    assert np.abs(log_abs_det - log_abs_det.mean()).max() > 1e-3  # the map depends on x


@pytest.mark.parametrize("channels", [1, 2])
def test_a_fresh_q_is_logit_normal_and_ignores_x(channels):
    """Zero-initialised conditioners: h is standard Normal, u_i ~ LogitNormal(0, 1)."""
    q = small_q(5, [4, 4, channels], dtype="float64")
    zeros = np.zeros([256, 4, 4, channels])
    u, log_q = q.encode(zeros, seed=3)
    u = u.numpy()
    logit = np.log(u) - np.log1p(-u)
    density = log_normal(logit) - np.log(u) - np.log1p(-u)
    np.testing.assert_allclose(log_q, density.reshape(256, -1).sum(-1), rtol=1e-10)
    if channels == 1:  # no 1x1 convolution: h is the noise itself
        noise = tf.random.stateless_normal(zeros.shape, seed=[3, 0], dtype=tf.float64)
        np.testing.assert_allclose(logit, noise, atol=1e-8)
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - LOGIT_NORMAL_STD) < 0.01
    # The same noise for other data: the same u and log q.
    x = levels(zeros.shape, 5, seed=1, dtype="float64")
    z_other, log_q_other = q.encode(x, seed=3)
    np.testing.assert_allclose(z_other - x, u, atol=1e-12)
    np.testing.assert_allclose(log_q_other, log_q, rtol=1e-12)


def test_encode_compiles_with_xla_and_a_seed_reproduces_the_draw():
    q = shift_weights(built(small_q(17, [4, 4, 3])), scale=0.2)
    x = tf.constant(levels([5, 4, 4, 3], 17))
    compiled = tf.function(lambda x: q.encode(x, seed=tf.constant([2, 0])), jit_compile=True)
    z, log_q = compiled(x)
    assert np.all((z >= x) & (z < x + 1)) and np.all(np.isfinite(log_q))
    first, second = q.encode(x, seed=7), q.encode(x, seed=7)
    np.testing.assert_array_equal(first[0], second[0])
    assert not np.allclose(first[0], q.encode(x, seed=8)[0])


def test_layers_hold_every_weight_and_the_transformer_is_chosen_by_argument():
    q = built(small_q(5, [4, 4, 2]))
    # Context: projection + 3 gated blocks of 2 convolutions (kernel and bias each);
    # per step: a log-scale, a 1x1 kernel and the conditioner, Flow++'s network (its
    # weights counted on a separately built one of the same configuration).
    size = Coupling.conditioner_output_size([4, 4, 2], LogisticMixtureCDF(4), "checkerboard")
    net = nets.GatedConvAttentionNet(4, 1, size, context_channels=2)
    net(tf.zeros([1, 4, 4, 2]), context=tf.zeros([1, 4 * 4 * 2]))
    assert len(net.trainable_weights) > 10
    assert q_weight_count(q) == 2 + 3 * 2 * 2 + 2 * (1 + 1 + len(net.trainable_weights))
    couplings = [b for b in q.flow.bijectors if isinstance(b, Coupling)]
    assert [c.parity for c in reversed(couplings)] == [0, 1]
    assert all(c.transformer == LogisticMixtureCDF(4) for c in couplings)
    assert all(isinstance(c.conditioner, nets.GatedConvAttentionNet) for c in couplings)
    assert all(c.context_size == 4 * 4 * 2 for c in couplings)
    spline = small_q(5, [4, 4, 2], transformer=RationalQuadraticSpline(num_bins=3))
    assert all(isinstance(b.transformer, RationalQuadraticSpline)
               for b in spline.flow.bijectors if isinstance(b, Coupling))
    z, _ = built(spline).encode(levels([2, 4, 4, 2], 5), seed=0)
    assert z.shape == [2, 4, 4, 2]


def test_config_round_trip():
    q = small_q(5, [4, 4, 2], transformer=RationalQuadraticSpline(num_bins=3), dropout=0.1,
                dtype="float64", name="deq")
    config = keras.saving.serialize_keras_object(q)
    again = keras.saving.deserialize_keras_object(config)
    assert isinstance(again, VariationalDequantization)
    assert again.get_config() == q.get_config()
    assert again.get_config()["transformer"]["config"] == {"num_bins": 3, "range": 3.0}
    assert [layer.name for layer in again.layers] == [layer.name for layer in q.layers]
    assert again.context_network.dtype == "float64"


@pytest.mark.parametrize("make, error, match", [
    (lambda: small_q(1), ValueError, r"num_bins must be an int >= 2, got 1"),
    (lambda: small_q(5, [16]), ValueError,
     r"event_shape must be an image shape \[H, W, C\] with at least two pixels, got \[16\]"),
    (lambda: small_q(5, [1, 1, 3]), ValueError, r"at least two pixels, got \[1, 1, 3\]"),
    (lambda: VariationalDequantization(5, "abc"), TypeError, r"event_shape must be a list"),
    (lambda: small_q(num_steps=0), ValueError, r"num_steps must be a positive int, got 0"),
    (lambda: small_q(filters=2.5), TypeError, r"filters must be a positive int, got 2\.5"),
    (lambda: small_q(context_channels=0), ValueError, r"context_channels must be a positive"),
    (lambda: small_q(components=0), ValueError, r"components must be a positive int"),
    (lambda: small_q(dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\), got 1"),
    (lambda: small_q(transformer="cubic"), ValueError, r"transformer must be one of"),
    (lambda: small_q(transformer=3), TypeError, r"transformer must be a tfp_flows"),
    (lambda: tff.models.RealNVP([4, 4, 1], num_scales=1, hidden_channels=4, num_blocks=1,
                                num_bins=17, surjection=small_q(5)),
     ValueError, r"the flow's num_bins=17 does not match the surjection's num_bins=5 "
                 r"\(VariationalDequantization\(num_bins=5"),
    (lambda: tff.models.RealNVP([4, 4, 1], num_scales=1, hidden_channels=4, num_blocks=1,
                                dequantization="variational"),
     ValueError, r"dequantization='variational' needs num_bins"),
    (lambda: tff.models.RealNVP([4, 4, 1], num_scales=1, hidden_channels=4, num_blocks=1,
                                num_bins=5, dequantization="variational",
                                surjection=small_q(5)),
     ValueError, r"either dequantization or surjection"),
    (lambda: tff.models.RealNVP([16], num_layers=1, hidden_units=[4], num_bins=5,
                                dequantization="variational"),
     ValueError, r"event_shape must be an image shape"),
])
def test_invalid_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# -- flows with a learned dequantizer --------------------------------------------------------------


def test_a_surjection_with_the_flows_num_bins_is_accepted():
    flow = small_realnvp()
    assert isinstance(flow.surjection, VariationalDequantization)
    assert flow.num_bins == flow.surjection.num_bins == 5
    plain = tff.models.RealNVP([4, 4, 1], num_scales=2, hidden_channels=4, num_blocks=1,
                               num_bins=5)
    assert len(flow.trainable_weights) == (len(plain.trainable_weights)
                                           + q_weight_count(flow.surjection))
    uniform = tff.models.RealNVP([4, 4, 1], num_scales=2, hidden_channels=4, num_blocks=1,
                                 num_bins=5, surjection=UniformDequantization(5, [4, 4, 1]))
    assert uniform.log_prob_estimator == "elbo"


def test_iwbo_is_non_decreasing_in_k_on_average_and_the_elbo_at_k_1():
    flow = perturb(small_realnvp(), seed=1, scale=0.2, trainable_only=True)
    x = levels([128, 4, 4, 1], 5, seed=2)
    means = {k: float(np.mean(flow.log_prob(x, num_samples=k, seed=k))) for k in (1, 4, 32)}
    assert means[1] <= means[4] <= means[32], means
    assert means[32] - means[1] > 0.05, means
    assert means[32] < 0.0  # a bound on the log of a probability mass
    np.testing.assert_array_equal(flow.log_prob(x, num_samples=1, seed=3),
                                  flow.elbo(x, seed=3))


def test_bits_per_dim_is_that_of_the_discrete_data_for_each_estimator():
    x = levels([16, 4, 4, 1], 5, seed=3)
    for num_eval_samples, estimator in ((None, "iwbo(k=64)"), (1, "elbo")):
        flow = perturb(small_realnvp(num_eval_samples=num_eval_samples), seed=2, scale=0.2,
                       trainable_only=True)
        assert flow.log_prob_estimator == flow.bits_per_dim_tracker.estimator == estimator
        flow.compile()
        logs = flow.evaluate(x, return_dict=True, verbose=0)
        expected = bits_per_dim(logs["loss"], 16, num_bins=5, density_space="bins")
        assert logs["bits_per_dim"] == pytest.approx(expected, rel=1e-5)
        assert logs["loss"] > 0  # minus a bound on the log of a probability mass


def image_levels(n, seed=0):
    """Integer 8x8 images with 17 levels and some structure (a bright diagonal)."""
    images = np.random.default_rng(seed).integers(0, 4, size=[n, 8, 8, 1])
    images[:, np.arange(8), np.arange(8), 0] += 12
    return images.astype("uint8")


def variational_glow():
    return tff.models.Glow([8, 8, 1], num_levels=2, num_steps=1, hidden_channels=8,
                           num_bins=17, dequantization="variational")


def variational_realnvp():
    q = VariationalDequantization(17, [8, 8, 1], num_steps=2, filters=8, blocks=1,
                                  context_channels=4)
    return tff.models.RealNVP([8, 8, 1], num_scales=2, hidden_channels=8, num_blocks=1,
                              num_bins=17, surjection=q)


BUILDERS = {"glow": variational_glow, "realnvp": variational_realnvp}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_image_flows_train_q_with_the_flow(name):
    flow = BUILDERS[name]()
    q = flow.surjection
    assert isinstance(q, VariationalDequantization) and flow.event_shape == [8, 8, 1]
    weights = {id(w) for w in flow.trainable_weights}
    assert all(id(w) in weights for layer in q.layers for w in layer.trainable_weights)
    assert len(flow.trainable_weights) - q_weight_count(q) > 0
    before = [w.numpy().copy() for layer in q.layers for w in layer.trainable_weights]
    # SGD: its update traces faster than Adam's for the ~200 weights.
    flow.compile(optimizer=keras.optimizers.SGD(1e-3))
    history = flow.fit(image_levels(32), batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    after = [w.numpy() for layer in q.layers for w in layer.trainable_weights]
    assert sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)) > 0
    x = image_levels(4, seed=1)
    bound = flow.log_prob(x, num_samples=4, seed=0).numpy()
    elbo = flow.elbo(x, seed=0).numpy()
    assert bound.shape == elbo.shape == (4,)
    assert np.all(np.isfinite(bound)) and np.all(np.isfinite(elbo))
    samples = flow.sample(6, seed=2).numpy()
    assert samples.shape == (6, 8, 8, 1) and np.all(np.isfinite(samples))
    latent = flow.forward(tf.random.stateless_normal([6, 8, 8, 1], seed=[2, 0]))
    np.testing.assert_array_equal(samples, np.clip(np.floor(latent), 0, 16))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_q_weight_gets_a_gradient_from_the_training_loss(name):
    flow = perturb(BUILDERS[name](), seed=4, scale=0.05, trainable_only=True)
    x = tf.constant(image_levels(4, seed=2), tf.float32)
    with tf.GradientTape() as tape:
        loss = flow.compute_loss(x, y_pred=flow(x, training=True))
    gradients = tape.gradient(loss, flow.trainable_weights)
    for weight, gradient in zip(flow.trainable_weights, gradients, strict=True):
        assert gradient is not None and np.any(gradient.numpy() != 0), weight.path


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_keras_file_round_trip_restores_q(name, tmp_path):
    flow = perturb(BUILDERS[name](), seed=5, scale=0.05, trainable_only=True)
    flow.save(tmp_path / "flow.keras")
    loaded = keras.saving.load_model(tmp_path / "flow.keras")
    assert loaded.get_config() == flow.get_config()
    assert isinstance(loaded.surjection, VariationalDequantization)
    assert loaded.log_prob_estimator == "iwbo(k=64)"
    for a, b in zip(loaded.surjection.layers, flow.surjection.layers, strict=True):
        for loaded_weight, weight in zip(a.weights, b.weights, strict=True):
            np.testing.assert_array_equal(loaded_weight, weight)
    x = image_levels(3, seed=3)
    np.testing.assert_allclose(loaded.log_prob(x, num_samples=2, seed=1),
                               flow.log_prob(x, num_samples=2, seed=1), rtol=1e-5)


def test_a_variational_flow_compiles_its_bound_with_xla():
    flow = perturb(small_realnvp(), seed=6, scale=0.2, trainable_only=True)
    x = tf.constant(levels([3, 4, 4, 1], 5))
    compiled = tf.function(lambda x: flow._bound(x, None, 4, tf.constant([2, 0])),
                           jit_compile=True)
    bound = compiled(x).numpy()
    assert bound.shape == (3,) and np.all(np.isfinite(bound))


@pytest.mark.slow
def test_export_of_a_variational_flow_loads_without_tfp_flows(tmp_path,
                                                             python_without_tfp_flows):
    flow = perturb(variational_realnvp(), seed=7, scale=0.05, trainable_only=True)
    x = image_levels(3, seed=4).astype("float32")
    path = flow.export(str(tmp_path / "variational"))
    results = load_exported_bound(path, x, 8, python_without_tfp_flows)
    assert results["imported"] == []
    np.testing.assert_allclose(results["iwbo"], flow.log_prob(x, num_samples=8, seed=3),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(results["elbo"], flow.elbo(x, seed=3), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(results["sample"], flow.sample(4, seed=7), atol=1e-5)


def test_normal_augmentation_keeps_its_elbo_default():
    flow = tff.models.RealNVP([4], num_layers=1, hidden_units=[4],
                              surjection=NormalAugmentation([2], 2))
    assert flow.num_eval_samples == 1 and "num_eval_samples" not in flow.get_config()
