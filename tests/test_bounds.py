"""Flows whose density is a bound: inference surjections (uniform dequantization, Normal
augmentation), the ELBO/IWBO estimators, exact sampling, TFP composition and export."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from flow_helpers import load_exported_bound, perturb

import tfp_flows as tff
from tfp_flows.distributions import (
    InferenceSurjection,
    LowerBoundDistribution,
    NormalAugmentation,
    UniformDequantization,
    importance_weighted_bound,
    uniform_dequantize,
)

tfd = tfp.distributions

NUM_BINS = 5


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def dequantizer_flow(**kwargs):
    return tff.models.RealNVP([2], num_layers=2, hidden_units=[8], num_bins=NUM_BINS,
                              dequantization="uniform", **kwargs)


def augmented_flow(seed=0, **kwargs):
    """RealNVP on [x, e] (4-D) for 2-D data x, e ~ N(0, I) appended."""
    flow = tff.models.RealNVP([4], num_layers=4, hidden_units=[16],
                              surjection=NormalAugmentation([2], 2), **kwargs)
    return perturb(flow, seed=seed)


def levels(n, seed=0, dtype="uint8"):
    return np.random.default_rng(seed).integers(0, NUM_BINS, size=[n, 2]).astype(dtype)


def points(n, seed=1):
    return np.random.default_rng(seed).normal(size=[n, 2]).astype("float32")


def normal_log_prob(e):
    return np.sum(-0.5 * np.square(e) - 0.5 * math.log(2 * math.pi), axis=-1)


# -- surjections --------------------------------------------------------------------------------


def test_uniform_dequantization_encodes_like_uniform_dequantize_and_decodes_exactly():
    surjection = UniformDequantization(NUM_BINS, [2])
    x = levels(64)
    z, log_q = surjection.encode(tf.cast(x, tf.float32), seed=tf.constant([3, 4]))
    np.testing.assert_array_equal(z, uniform_dequantize(x, seed=tf.constant([3, 4])))
    np.testing.assert_array_equal(log_q, np.zeros(64))
    np.testing.assert_array_equal(surjection.decode(z), x)
    # Latents a flow puts outside [0, K) decode to the nearest level.
    np.testing.assert_array_equal(surjection.decode([[-3.5, 7.2]]), [[0.0, NUM_BINS - 1]])
    assert surjection.discrete and surjection.num_bins == NUM_BINS
    assert surjection.latent_event_shape == surjection.event_shape == [2]


def test_normal_augmentation_appends_channels_and_scores_the_noise():
    surjection = NormalAugmentation([4, 4, 3], 2)
    assert surjection.latent_event_shape == [4, 4, 5]
    x = np.random.default_rng(0).normal(size=[3, 4, 4, 3]).astype("float32")
    z, log_q = surjection.encode(x, seed=7)
    np.testing.assert_array_equal(z[..., :3], x)
    noise = tf.random.stateless_normal([3, 4, 4, 2], seed=[7, 0])
    np.testing.assert_allclose(z[..., 3:], noise)
    np.testing.assert_allclose(log_q, normal_log_prob(noise.numpy().reshape(3, -1)), rtol=1e-5)
    np.testing.assert_array_equal(surjection.decode(z), x)
    assert isinstance(surjection, InferenceSurjection) and surjection.layers == []


@pytest.mark.parametrize("make, error, match", [
    (lambda: UniformDequantization(1, [2]), ValueError, r"num_bins must be an int >= 2, got 1"),
    (lambda: UniformDequantization(2.0, [2]), TypeError, r"num_bins must be an int >= 2, got 2\.0"),
    (lambda: NormalAugmentation([2], 0), ValueError, r"num_features must be a positive int"),
    (lambda: NormalAugmentation("ab", 1), TypeError, r"event_shape must be a list"),
    (lambda: NormalAugmentation([0], 1), ValueError, r"event_shape must be a non-empty"),
    (lambda: LowerBoundDistribution(tfd.Normal(0.0, 1.0), NormalAugmentation([1], 1)),
     ValueError, r"event shape \[\] but the surjection's latent_event_shape is \[2\]"),
    (lambda: LowerBoundDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(2)), NormalAugmentation([1], 1), num_samples=0),
     ValueError, r"num_samples must be a positive int, got 0"),
    (lambda: LowerBoundDistribution("normal", NormalAugmentation([1], 1)),
     TypeError, r"latent_distribution must be a tfd.Distribution, got str"),
    (lambda: dequantizer_flow(surjection=NormalAugmentation([2], 1)),
     ValueError, r"either dequantization or surjection"),
    (lambda: tff.models.RealNVP([2], num_layers=1, dequantization="uniform"),
     ValueError, r"dequantization='uniform' needs num_bins"),
    (lambda: tff.models.RealNVP([4], num_layers=1, num_bins=4,
                                surjection=UniformDequantization(5, [4])),
     ValueError, r"the flow's num_bins=4 does not match the surjection's num_bins=5"),
    (lambda: tff.models.RealNVP([2], num_layers=1, num_bins=4, dequantization="normal"),
     ValueError, r"dequantization must be one of None, 'uniform', 'variational'; got 'normal'"),
    (lambda: tff.models.RealNVP([3], num_layers=1, surjection=NormalAugmentation([2], 2)),
     ValueError, r"latent_event_shape \[4\] must equal the flow's event_shape \[3\]"),
    (lambda: tff.models.RealNVP([4], num_layers=1, num_bins=4,
                                surjection=NormalAugmentation([2], 2)),
     ValueError, r"cannot be combined with surjection=.*whose data are continuous"),
    (lambda: tff.models.RealNVP([2], num_layers=1, surjection="augment"),
     TypeError, r"surjection must be an InferenceSurjection or None, got str"),
    (lambda: tff.models.RealNVP([2], num_layers=1, num_eval_samples=0),
     ValueError, r"num_eval_samples must be a positive int or None, got 0"),
    (lambda: augmented_flow().log_prob(points(2), num_samples=2.0),
     TypeError, r"num_samples must be a positive int"),
    (lambda: augmented_flow().log_prob(points(2), seed="a"),
     TypeError, r"seed must be an int or None, got 'a'"),
])
def test_invalid_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# -- dequantizer flows ----------------------------------------------------------------------------


def test_training_through_the_surjection_equals_training_on_uniform_dequantize_data():
    through = perturb(dequantizer_flow(), seed=1)
    plain = tff.models.RealNVP([2], num_layers=2, hidden_units=[8], num_bins=NUM_BINS)
    plain.set_weights(through.get_weights())
    for flow in (through, plain):
        flow.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = levels(32)
    # The surjection draws step t's noise from the stateless seed [s, t].
    seed = int(through.noise_seed_generator.state.numpy()[0])
    history = through.fit(x, batch_size=32, epochs=3, shuffle=False, verbose=0).history
    plain_losses = []
    for step in range(3):
        dequantized = uniform_dequantize(x, seed=tf.constant([seed, step], tf.int64))
        logs = plain.fit(dequantized, batch_size=32, epochs=1, shuffle=False, verbose=0)
        plain_losses += logs.history["loss"]
    np.testing.assert_allclose(history["loss"], plain_losses, rtol=1e-6)
    for a, b in zip(through.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float32", "float64"])
def test_dequantizer_flow_takes_discrete_data_and_its_log_prob_is_the_elbo(dtype):
    flow = perturb(dequantizer_flow(), seed=2)
    x = levels(16, dtype=dtype)
    got = flow.log_prob(x, seed=5)
    dequantized = uniform_dequantize(x.astype("int32"), seed=tf.constant([5, 0]))
    np.testing.assert_allclose(got, flow.latent_distribution.log_prob(dequantized), rtol=1e-6)
    np.testing.assert_allclose(flow.elbo(x, seed=5), got)
    assert flow.log_prob_estimator == "elbo"
    assert flow.latent_distribution.event_shape == [2]


def test_dequantizer_bits_per_dim_need_no_correction():
    flow = perturb(dequantizer_flow(), seed=3)
    flow.compile()
    x = levels(64)
    logs = flow.evaluate(x, return_dict=True, verbose=0)
    assert logs["bits_per_dim"] == pytest.approx(logs["loss"] / (2 * math.log(2)), rel=1e-5)
    assert flow.bits_per_dim_tracker.estimator == "elbo"
    # The bound of a probability mass: at most log 1 = 0 on average (no density spikes).
    assert -float(np.mean(flow.log_prob(x, num_samples=20, seed=0))) > 0.0


def test_dequantizer_flow_samples_discrete_levels():
    flow = perturb(dequantizer_flow(), seed=4)
    samples = flow.sample(200, seed=0).numpy()
    assert samples.shape == (200, 2)
    np.testing.assert_array_equal(samples, np.floor(samples))
    assert samples.min() >= 0 and samples.max() <= NUM_BINS - 1
    # One pass: the latent flow's sample, floored.
    latent = flow.forward(tf.random.stateless_normal([200, 2], seed=[0, 0]))
    np.testing.assert_array_equal(samples, np.clip(np.floor(latent), 0, NUM_BINS - 1))
    np.testing.assert_array_equal(flow.log_prob(samples, seed=0).shape, [200])


def test_glow_and_realnvp_builders_take_dequantization():
    glow = tff.models.Glow([8, 8, 1], num_levels=2, num_steps=1, hidden_channels=4,
                           num_bins=17, logit_alpha=0.05, dequantization="uniform")
    images = np.random.default_rng(0).integers(0, 17, size=[3, 8, 8, 1]).astype("uint8")
    assert np.all(np.isfinite(glow.log_prob(images, num_samples=3, seed=0)))
    samples = glow.sample(2, seed=0).numpy()
    assert samples.shape == (2, 8, 8, 1) and np.all(samples == np.floor(samples))
    assert glow.get_config()["dequantization"] == "uniform"
    multiscale = tff.models.RealNVP([4, 4, 2], hidden_channels=4, num_blocks=1, num_scales=2,
                                    num_bins=17, dequantization="uniform")
    assert multiscale.log_prob(images[:, :4, :4].repeat(2, -1)).shape == [3]


def test_dequantizer_flow_fits_a_dataset_of_integers():
    flow = dequantizer_flow()
    flow.compile()
    dataset = tf.data.Dataset.from_tensor_slices(levels(32)).batch(8)
    history = flow.fit(dataset, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_dequantizer_flow_keras_file_round_trip(tmp_path):
    flow = perturb(dequantizer_flow(num_eval_samples=4), seed=5)
    flow.save(tmp_path / "flow.keras")
    loaded = keras.saving.load_model(tmp_path / "flow.keras")
    assert loaded.get_config() == flow.get_config()
    assert loaded.log_prob_estimator == "iwbo(k=4)"
    x = levels(8)
    np.testing.assert_allclose(loaded.log_prob(x, seed=1), flow.log_prob(x, seed=1), rtol=1e-6)


# -- the toy augmented flow ---------------------------------------------------------------------


def test_augmented_flow_shapes_and_weights():
    flow = augmented_flow()
    plain = tff.models.RealNVP([4], num_layers=4, hidden_units=[16])
    assert flow.event_shape == [2] and flow.latent_event_shape == [4]
    assert len(flow.trainable_weights) == len(plain.trainable_weights)
    assert flow.log_prob_estimator == "elbo"
    assert augmented_flow(num_eval_samples=10).log_prob_estimator == "iwbo(k=10)"
    assert plain.log_prob_estimator == "exact"
    assert flow.get_config()["event_shape"] == [4]


def test_augmented_elbo_and_iwbo_by_hand():
    flow = augmented_flow(seed=6)
    x = points(5)
    noise = tf.random.stateless_normal([3 * 5, 2], seed=[9, 0]).numpy()
    z = np.concatenate([np.tile(x, [3, 1]), noise], axis=-1)
    log_w = (flow.latent_distribution.log_prob(z).numpy() - normal_log_prob(noise))
    log_w = log_w.reshape(3, 5).astype(np.float64)  # sample-major, like the tiled batch
    expected = np.log(np.mean(np.exp(log_w), axis=0))
    np.testing.assert_allclose(flow.log_prob(x, num_samples=3, seed=9), expected, rtol=1e-5)
    # k = 1 is the ELBO, with the first sample's noise.
    np.testing.assert_allclose(flow.log_prob(x, num_samples=1, seed=9), log_w[0], rtol=1e-5)
    np.testing.assert_array_equal(flow.elbo(x, seed=9), flow.log_prob(x, num_samples=1, seed=9))


def test_iwbo_is_non_decreasing_in_k_on_average():
    flow = augmented_flow(seed=7)
    x = points(256, seed=2)
    means = {k: float(np.mean(flow.log_prob(x, num_samples=k, seed=k))) for k in (1, 10, 100)}
    assert means[1] <= means[10] <= means[100], means
    assert means[100] - means[1] > 0.05, means  # the bound is loose at k = 1 here
    # The one-sample bound is the ELBO: same value for the same seed.
    np.testing.assert_array_equal(flow.log_prob(x, num_samples=1, seed=3),
                                  flow.elbo(x, seed=3))


def test_augmented_samples_are_exact_and_one_pass():
    flow = augmented_flow(seed=8)
    samples = flow.sample(64, seed=11, temperature=0.9).numpy()
    assert samples.shape == (64, 2) and np.all(np.isfinite(samples))
    noise = tf.random.stateless_normal([64, 4], seed=[11, 0]) * 0.9
    np.testing.assert_allclose(samples, flow.forward(noise)[:, :2], atol=1e-6)


def test_every_weight_gets_a_gradient_from_the_negative_elbo():
    flow = augmented_flow(seed=9)
    x = tf.constant(points(8))
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow(x, training=True))
    gradients = tape.gradient(loss, flow.trainable_weights)
    for weight, gradient in zip(flow.trainable_weights, gradients, strict=True):
        assert gradient is not None and np.any(gradient.numpy() != 0), weight.path


def test_bound_compiles_with_xla_and_fit_runs_jit_compiled():
    flow = augmented_flow(seed=17)
    x = tf.constant(points(6))
    compiled = tf.function(lambda x: flow._bound(x, None, 4, tf.constant([2, 0])),
                           jit_compile=True)
    # XLA draws other stateless noise than the plain kernels (like Flow.sample): the bound
    # is reproducible within one compilation mode, not across modes.
    bound = compiled(x).numpy()
    assert bound.shape == (6,) and np.all(np.isfinite(bound))
    np.testing.assert_array_equal(compiled(x), bound)
    flow.compile(optimizer="adam", jit_compile=True)
    assert np.isfinite(flow.fit(points(16), batch_size=8, verbose=0).history["loss"][0])


def test_exact_flows_ignore_num_samples_and_seed():
    flow = perturb(tff.models.RealNVP([2], num_layers=2, hidden_units=[8]), seed=18)
    x = points(3)
    np.testing.assert_array_equal(flow.log_prob(x, num_samples=10, seed=1), flow.log_prob(x))
    np.testing.assert_array_equal(flow.elbo(x), flow.log_prob(x))
    assert flow.distribution is flow.latent_distribution and flow.surjection is None


def test_training_noise_is_fresh_at_every_step():
    flow = augmented_flow(seed=10)
    x = tf.constant(points(4))
    first, second = flow(x, training=True), flow(x, training=True)
    assert not np.allclose(first, second)


def test_augmented_flow_fits_and_evaluates():
    flow = augmented_flow(seed=12, num_eval_samples=5)
    flow.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = flow.fit(points(128), batch_size=32, epochs=2, verbose=0,
                       validation_data=points(32, seed=3)).history
    assert np.all(np.isfinite(history["loss"])) and np.isfinite(history["val_loss"][-1])
    logs = flow.evaluate(points(32, seed=3), return_dict=True, verbose=0)
    assert logs["bits_per_dim"] == pytest.approx(logs["loss"] / (2 * math.log(2)), rel=1e-5)


def test_conditional_augmented_flow():
    flow = augmented_flow(seed=13, context_size=3)
    x = points(6)
    context = np.random.default_rng(4).normal(size=[6, 3]).astype("float32")
    bound = flow.log_prob(x, context, num_samples=4, seed=0)
    assert bound.shape == [6]
    assert not np.allclose(bound, flow.log_prob(x, context + 1.0, num_samples=4, seed=0))
    assert flow.sample(3, seed=0, context=context[0]).shape == [3, 2]
    dist_bound = flow.distribution.log_prob(x, seed=0, bijector_kwargs={"context": context})
    np.testing.assert_allclose(dist_bound, flow.log_prob(x, context, num_samples=1, seed=0),
                               rtol=1e-6)


def test_augmented_flow_keras_file_round_trip(tmp_path):
    flow = augmented_flow(seed=14)
    flow.save(tmp_path / "flow.keras")
    loaded = keras.saving.load_model(tmp_path / "flow.keras")
    assert loaded.get_config() == flow.get_config()
    assert isinstance(loaded.surjection, NormalAugmentation)
    x = points(4)
    np.testing.assert_allclose(loaded.log_prob(x, num_samples=5, seed=2),
                               flow.log_prob(x, num_samples=5, seed=2), rtol=1e-6)


# -- the TFP distribution -------------------------------------------------------------------------


def test_distribution_samples_exactly_and_scores_by_the_iwbo():
    flow = augmented_flow(seed=15, num_eval_samples=7)
    dist = flow.distribution
    assert isinstance(dist, LowerBoundDistribution) and isinstance(dist, tfd.Distribution)
    assert dist.event_shape == [2] and dist.batch_shape == []
    assert dist.num_samples == 7 and dist.estimator == "iwbo(k=7)"
    # TFP builds a `_TransformedDistribution` (not a composite tensor) for these bijectors.
    assert "TransformedDistribution" in type(flow.latent_distribution).__name__
    assert dist.latent_distribution is flow.latent_distribution
    assert flow.latent_distribution.event_shape == [4]
    x = points(5)
    np.testing.assert_allclose(dist.log_prob(x, seed=3),
                               flow.log_prob(x, num_samples=7, seed=3), rtol=1e-6)
    assert dist.sample(4, seed=1).shape == [4, 2]
    assert dist.sample([2, 3], seed=1).shape == [2, 3, 2]
    # Extra leading sample dimensions, and composition with TFP's meta-distributions.
    assert dist.log_prob(np.stack([x, x])).shape == [2, 5]
    iid = tfd.Sample(dist, 3)
    assert iid.sample(2, seed=0).shape == [2, 3, 2]
    assert iid.log_prob(np.zeros([4, 3, 2], "float32")).shape == [4]


def test_importance_weighted_bound_with_an_exact_latent_is_exact():
    # With a latent N(0, I) over [x, e] and q(e) = N(0, I), every weight equals N(x; 0, 1).
    latent = tfd.MultivariateNormalDiag(loc=tf.zeros(3, tf.float64))
    x = tf.constant(points(4), tf.float64)[:, :1]
    bound = importance_weighted_bound(lambda z, c: latent.log_prob(z),
                                      NormalAugmentation([1], 2), x, 6, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(bound, normal_log_prob(x.numpy()), rtol=1e-12)


# -- export ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_of_an_augmented_flow_loads_without_tfp_flows(tmp_path,
                                                             python_without_tfp_flows):
    flow = augmented_flow(seed=16)
    x = points(6)
    path = flow.export(str(tmp_path / "augmented"))
    results = load_exported_bound(path, x, 10, python_without_tfp_flows)
    assert results["imported"] == []
    np.testing.assert_allclose(results["iwbo"], flow.log_prob(x, num_samples=10, seed=3),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results["elbo"], flow.elbo(x, seed=3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results["sample"], flow.sample(4, seed=7), atol=1e-5)
