"""DenseFlow: cross-unit coupling (NoiseAffine, NormalAugmentation with a learned q,
CrossUnitBlock), the InferenceChain it runs in, and the DenseFlow builder."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from flow_helpers import load_exported_bound, perturb

import tfp_flows as tff
from tfp_flows import bijectors, nets
from tfp_flows.distributions import (
    CrossUnitBlock,
    FactorOut,
    InferenceChain,
    NormalAugmentation,
    UniformDequantization,
)

tfd = tfp.distributions

SMALL = dict(num_bins=5, growth_rate=2, units_per_block=(2, 2), modules_per_unit=1, filters=4,
             dense_depth=1, dense_growth=4, landmarks=2, dequantizer_steps=1,
             dequantizer_filters=4)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def levels(n, event_shape=(4, 4, 1), num_bins=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_bins, size=[n, *event_shape]).astype("float32")


def small_denseflow(event_shape=(4, 4, 1), **kwargs):
    return tff.models.DenseFlow(list(event_shape), **{**SMALL, **kwargs})


def _randomize(layer, seed=0, scale=0.5):
    """Random weights: a fresh CrossUnitParams outputs mu = 0, log_sigma = 0."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(0.0, scale, weight.shape))
    return layer


def test_noise_affine_passes_the_test_kit_with_the_context_fixed():
    params_net = nets.CrossUnitParams(3, dtype="float64")
    context = np.random.default_rng(0).normal(size=[5, 4])
    params_net(context)
    _randomize(params_net)
    bijector = bijectors.NoiseAffine(params_net, [5], num_noise=3)
    x = np.random.default_rng(1).normal(size=[5, 5])
    tff.testing.check_bijector(bijector, x, context=context)
    # The kept entries pass unchanged; only the noise entries move.
    y = bijector.forward(x, context=context).numpy()
    np.testing.assert_array_equal(y[:, :2], x[:, :2])
    assert np.abs(y[:, 2:] - x[:, 2:]).max() > 1e-3


@pytest.mark.parametrize("event_shape, context_shape", [([3], [4]), ([2, 2, 1], [2, 2, 3])])
def test_learned_augmentation_log_q_is_the_normal_log_density_of_the_noise(
        event_shape, context_shape):
    params_net = nets.CrossUnitParams(2, dtype="float64")
    rng = np.random.default_rng(0)
    context = rng.normal(size=[6, *context_shape])
    params_net(context)
    _randomize(params_net, scale=0.3)
    augmentation = NormalAugmentation(event_shape, 2, params_net=params_net)
    assert augmentation.layers == [params_net] and augmentation.default_num_eval_samples == 64
    x = rng.normal(size=[6, *event_shape])
    z, log_q = augmentation.encode(x, seed=3, context=context)
    mu, log_sigma = params_net(context)
    noise = z[..., event_shape[-1]:]
    direct = tfd.Normal(mu, tf.exp(log_sigma)).log_prob(noise)
    expected = tf.reduce_sum(direct, axis=list(range(1, len(event_shape) + 1)))
    np.testing.assert_allclose(log_q, expected, rtol=1e-10)
    np.testing.assert_array_equal(augmentation.decode(z), x)
    assert np.abs(mu).max() > 1e-3 and np.abs(log_sigma).max() > 1e-3


def test_cross_unit_block_conditions_on_the_previous_representations():
    """Unit i's noise sees the block's input and the outputs of units 0..i-2 (the
    original's `InvertibleDenseBlock`), and the log q adds the noise densities and the
    units' log-dets."""
    scales = [2.0, 0.5, 3.0]
    units = [tfp.bijectors.Scale(s) for s in scales]
    seen = []

    class Recorder(keras.layers.Layer):
        def call(self, context):
            seen.append(context.shape[-1])
            half = tf.reduce_mean(context, axis=-1, keepdims=True)
            return tf.concat([half, half], -1), 0.1 * tf.ones_like(tf.concat([half, half], -1))

    augmentations = [NormalAugmentation([2], 2, params_net=Recorder()),
                     NormalAugmentation([4], 2, params_net=Recorder())]
    block = CrossUnitBlock(units, augmentations, [2])
    assert block.latent_event_shape == [6] and block.default_num_eval_samples == 64
    x = np.array([[1.0, -2.0]], "float32")
    z, log_q = block.encode(x, seed=1)
    # Contexts: x (2 channels), then x and y_0 (4 channels).
    assert seen == [2, 4]
    np.testing.assert_allclose(block.decode(z), x, rtol=1e-6)
    # Recompute by hand with the same noise draws.
    y0 = x / 2.0
    n1, lq1 = augmentations[0].encode(y0, seed=tf.random.experimental.stateless_fold_in(
        tf.constant([1, 0], tf.int64), 1), context=x)
    y1 = n1 / 0.5
    n2, lq2 = augmentations[1].encode(y1, seed=tf.random.experimental.stateless_fold_in(
        tf.constant([1, 0], tf.int64), 2), context=np.concatenate([x, y0], -1))
    np.testing.assert_allclose(z, n2 / 3.0, rtol=1e-6)
    log_dets = 2 * np.log(2.0) + 4 * np.log(0.5) + 6 * np.log(3.0)
    np.testing.assert_allclose(log_q, lq1 + lq2 + log_dets, rtol=1e-5)


def test_inference_chain_concatenates_what_leaves_and_decodes_exactly():
    dequantize = UniformDequantization(4, [2, 2, 2])
    chain = InferenceChain([dequantize, tfp.bijectors.Scale(0.5), FactorOut(1),
                            tfp.bijectors.Shift(1.0)], [2, 2, 2])
    assert chain.discrete and chain.num_bins == 4 and chain.latent_event_shape == [8]
    x = levels(3, (2, 2, 2), num_bins=4)
    z, log_q = chain.encode(x, seed=2)
    u, log_q_dequantize = dequantize.encode(x, seed=tf.random.experimental.stateless_fold_in(
        tf.constant([2, 0], tf.int64), 0))
    h = 2.0 * u.numpy()
    expected = np.concatenate([h[..., 1:].reshape(3, -1), (h[..., :1] - 1.0).reshape(3, -1)],
                              -1)
    np.testing.assert_allclose(z, expected, rtol=1e-6)
    np.testing.assert_allclose(log_q, log_q_dequantize - 8 * np.log(2.0), rtol=1e-6)
    np.testing.assert_array_equal(chain.decode(z), x)


@pytest.mark.parametrize("stages, error, match", [
    ([FactorOut(2)], ValueError, r"must keep fewer than the 2 channels"),
    (["scale"], TypeError, r"stages must be bijectors"),
    ([NormalAugmentation([3], 1)], ValueError, r"takes event shape \[3\]"),
])
def test_inference_chain_rejects_bad_stages(stages, error, match):
    with pytest.raises(error, match=match):
        InferenceChain(stages, [2])


def test_denseflow_layout_weights_and_gradients():
    flow = small_denseflow()
    # 4x4x1 -> squeeze 2x2x4 -> block 0 (2 units, +2 noise) -> 6 channels -> squeeze
    # 1x1x24, keep 12 -> block 1 (+2) -> 14. Latent: 12 factored out + 14 + ... = 26.
    assert flow.latent_event_shape == [12 + 14]
    blocks = [s for s in flow.surjection.stages if isinstance(s, CrossUnitBlock)]
    assert [b.latent_event_shape for b in blocks] == [[2, 2, 6], [1, 1, 14]]
    assert len(flow.noise_nets) == 2 and len(flow.conditioners) == 4
    layers = [*flow.actnorms, *flow.kernels, *flow.conditioners, *flow.noise_nets,
              *flow.surjection_layers]
    layers = list({id(layer): layer for layer in layers}.values())
    assert len(flow.trainable_weights) == sum(len(layer.trainable_weights) for layer in layers)
    perturb(flow, seed=1, scale=0.1, trainable_only=True)
    x = tf.constant(levels(8))
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow(x, training=True))
    grads = tape.gradient(loss, flow.trainable_weights)
    missing = [w.path for w, g in zip(flow.trainable_weights, grads, strict=True)
               if g is None or not np.any(g.numpy())]
    assert not missing


@pytest.mark.parametrize("kwargs, noise_nets, latent", [
    (dict(growth_rate=0), 0, 16),
    (dict(augmentation="unconditional"), 0, 26),
    (dict(dequantization="uniform", attention=False), 2, 26),
])
def test_variants_are_one_argument_each(kwargs, noise_nets, latent):
    flow = small_denseflow(**kwargs)
    assert len(flow.noise_nets) == noise_nets and flow.latent_event_shape == [latent]
    bound = flow.log_prob(levels(4), num_samples=2, seed=0).numpy()
    assert bound.shape == (4,) and np.all(np.isfinite(bound))


def test_fit_lowers_the_bound_and_samples_are_exact_levels():
    # Uniform dequantization: the bound is over the augmentation noise (q is learned there).
    flow = small_denseflow(dequantization="uniform")
    x = levels(64)
    # Without XLA: compiling the train step would take most of this test's time.
    flow.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    before = -flow.log_prob(x, num_samples=1, seed=0).numpy().mean()
    history = flow.fit(x, batch_size=32, epochs=2, verbose=0)
    after = -flow.log_prob(x, num_samples=1, seed=0).numpy().mean()
    assert after < before
    np.testing.assert_allclose(history.history["bits_per_dim"][-1] * 16 * np.log(2),
                               history.history["loss"][-1], rtol=1e-4)
    assert flow.log_prob_estimator == "iwbo(k=64)"
    iwbo = flow.log_prob(x[:8], num_samples=16, seed=1).numpy()
    elbo = flow.log_prob(x[:8], num_samples=1, seed=1).numpy()
    assert np.mean(iwbo) >= np.mean(elbo)
    samples = flow.sample(16, seed=2).numpy()
    assert samples.shape == (16, 4, 4, 1)
    assert np.all(np.isfinite(samples)) and samples.min() >= 0 and samples.max() <= 4
    np.testing.assert_array_equal(samples, np.floor(samples))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(event_shape=[16]), ValueError, r"image event_shape"),
    (dict(event_shape=[6, 6, 1]), ValueError, r"divisible by 4"),
    (dict(augmentation="fixed"), ValueError, r"augmentation must be one of"),
    (dict(dequantization="none"), ValueError, r"dequantization must be one of"),
    (dict(dequantization=None), ValueError, r"num_bins=5 and dequantization=None"),
    (dict(growth_rate=-1), ValueError, r"growth_rate"),
    (dict(units_per_block="3"), TypeError, r"units_per_block must be an int or a list"),
    (dict(num_blocks=3), ValueError, r"units_per_block must be an int or 3 ints"),
    (dict(units_per_block=2, num_blocks=0), ValueError, r"num_blocks must be a positive"),
    (dict(modules_per_unit=(1, 1, 1)), ValueError, r"modules_per_unit must be an int or 2"),
    (dict(filters="8"), TypeError, r"filters must be an int"),
    (dict(context_size=3), ValueError, r"no conditional form"),
])
def test_invalid_arguments(kwargs, error, match):
    event_shape = kwargs.pop("event_shape", [4, 4, 1])
    with pytest.raises(error, match=match):
        tff.models.DenseFlow(event_shape, **{**SMALL, **kwargs})


def test_keras_file_round_trip(tmp_path):
    flow = perturb(small_denseflow(modules_per_unit=(1, 2), dequantization="uniform"), seed=3,
                   scale=0.05, trainable_only=True)
    path = str(tmp_path / "denseflow.keras")
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == flow.get_config()
    x = levels(3, seed=1)
    np.testing.assert_allclose(loaded.log_prob(x, num_samples=4, seed=5),
                               flow.log_prob(x, num_samples=4, seed=5), rtol=1e-5)
    np.testing.assert_allclose(loaded.sample(2, seed=1), flow.sample(2, seed=1))


@pytest.mark.slow
def test_export_loads_without_tfp_flows(tmp_path, python_without_tfp_flows):
    flow = perturb(small_denseflow(), seed=4, scale=0.05, trainable_only=True)
    x = levels(3, seed=2)
    path = flow.export(str(tmp_path / "denseflow"))
    results = load_exported_bound(path, x, 8, python_without_tfp_flows)
    assert results["imported"] == []
    np.testing.assert_allclose(results["iwbo"], flow.log_prob(x, num_samples=8, seed=3),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(results["sample"], flow.sample(4, seed=7), atol=1e-5)


def test_forward_and_inverse_take_any_latent_value():
    """The latent is the chain's Gaussian vector: num_bins does not bound it."""
    flow = small_denseflow(dequantization="uniform")
    z = np.random.default_rng(0).normal(scale=10.0, size=[3, *flow.latent_event_shape])
    np.testing.assert_allclose(flow.inverse(z.astype("float32")), z, rtol=1e-6)
    np.testing.assert_allclose(flow.forward(z.astype("float32")), z, rtol=1e-6)
