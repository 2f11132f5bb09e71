"""The Flow++ builder: layout, weights, ablation arguments, training, bounds, sampling,
serialization and export."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import load_exported_bound, perturb

import tfp_flows as tff
from tfp_flows import bijectors, nets
from tfp_flows.distributions import UniformDequantization, VariationalDequantization

SMALL = dict(num_bins=5, num_components=2, filters=4, blocks=1, heads=2, num_steps=(1, 1, 1),
             dequantizer_steps=1, dequantizer_filters=4, dropout=0.0)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def small_flowpp(event_shape=(4, 4, 1), **kwargs):
    return tff.models.FlowPlusPlus(list(event_shape), **{**SMALL, **kwargs})


def levels(n, event_shape=(4, 4, 1), num_bins=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_bins, size=[n, *event_shape]).astype("float32")


def _couplings(bijector):
    found = []
    for member in getattr(bijector, "bijectors", []):
        if isinstance(member, bijectors.Coupling):
            found.append(member)
        found += _couplings(member)
    return found


def test_layout_is_the_papers_checkerboard_channel_checkerboard():
    flow = small_flowpp(num_steps=(2, 1, 2))
    couplings = _couplings(flow.bijector)
    # Data -> noise: two checkerboard couplings at full resolution, then after the squeeze
    # one channel coupling and two checkerboard ones.
    assert [c.mask for c in couplings] == ["checkerboard"] * 2 + ["half"] + ["checkerboard"] * 2
    assert [c.parity for c in couplings] == [0, 1, 0, 0, 1]
    assert [list(c._event_shape_in) for c in couplings] == [[4, 4, 1]] * 2 + [[2, 2, 4]] * 3
    assert all(c.transformer == bijectors.LogisticMixtureCDF(2) for c in couplings)
    assert all(isinstance(c.conditioner, nets.GatedConvAttentionNet) for c in couplings)
    # Each coupling is preceded by a per-element ActNorm and a 1x1 convolution.
    assert [a.spatial_shape for a in flow.actnorms] == [[4, 4]] * 2 + [[2, 2]] * 3
    assert len(flow.kernels) == 5
    assert isinstance(flow.surjection, VariationalDequantization)
    assert flow.log_prob_estimator == "iwbo(k=64)"
    assert flow.sample(3, seed=0).shape == [3, 4, 4, 1]


def test_every_layer_is_tracked_and_every_trainable_weight_gets_a_gradient():
    flow = small_flowpp()
    layers = [*flow.actnorms, *flow.kernels, *flow.conditioners, *flow.surjection.layers]
    expected = sum(len(layer.trainable_weights) for layer in layers)
    # 3 couplings of the flow, 1 of q, each with its Flow++ network.
    assert len(flow.conditioners) == 3 and expected > 3 * 15
    assert len(flow.trainable_weights) == expected
    perturb(flow, seed=1, scale=0.1, trainable_only=True)
    x = tf.constant(levels(8))
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow(x, training=True))
    grads = tape.gradient(loss, flow.trainable_weights)
    missing = [w.path for w, g in zip(flow.trainable_weights, grads, strict=True)
               if g is None or not np.any(g.numpy())]
    assert not missing


@pytest.mark.parametrize("kwargs, fewer", [
    (dict(coupling="affine"), True),
    (dict(attention=False), True),
    (dict(dequantization="uniform"), True),
    (dict(num_components=3), False),
])
def test_ablations_are_one_argument_each(kwargs, fewer):
    full = small_flowpp().count_params()
    flow = small_flowpp(**kwargs)
    assert (flow.count_params() < full) == fewer
    x = levels(4)
    bound = flow.log_prob(x, num_samples=2, seed=0).numpy()
    assert bound.shape == (4,) and np.all(np.isfinite(bound))
    if kwargs.get("coupling") == "affine":
        assert all(c.transformer == bijectors.Affine() for c in _couplings(flow.bijector))
    if kwargs.get("dequantization") == "uniform":
        assert isinstance(flow.surjection, UniformDequantization)
        assert flow.log_prob_estimator == "elbo"


def test_fit_lowers_the_bound_and_reports_bits_per_dim_of_the_discrete_data():
    flow = small_flowpp()
    x = levels(64)
    flow.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = -flow.log_prob(x, num_samples=1, seed=0).numpy().mean()
    history = flow.fit(x, batch_size=32, epochs=3, verbose=0)
    after = -flow.log_prob(x, num_samples=1, seed=0).numpy().mean()
    assert after < before
    np.testing.assert_allclose(history.history["bits_per_dim"][-1] * 16 * np.log(2),
                               history.history["loss"][-1], rtol=1e-4)
    iwbo = flow.log_prob(x[:8], num_samples=16, seed=1).numpy()
    elbo = flow.log_prob(x[:8], num_samples=1, seed=1).numpy()
    assert np.mean(iwbo) >= np.mean(elbo)
    samples = flow.sample(16, seed=2, temperature=0.8).numpy()
    assert np.all(np.isfinite(samples)) and samples.min() >= 0 and samples.max() <= 4
    np.testing.assert_array_equal(samples, np.floor(samples))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(event_shape=[16]), ValueError, r"image event_shape"),
    (dict(coupling="spline"), ValueError, r"coupling must be one of"),
    (dict(dequantization="learned"), ValueError, r"dequantization must be one of"),
    (dict(dequantization=None), ValueError, r"num_bins=5 and dequantization=None"),
    (dict(num_bins=None), ValueError, r"num_bins=None and dequantization='variational'"),
    (dict(filters=6, heads=4), ValueError, r"heads=4 must divide filters=6"),
    (dict(num_steps=(1, 1)), ValueError, r"num_steps must be three ints"),
    (dict(num_steps=(0, 0, 0)), ValueError, r"at least one coupling"),
    (dict(num_steps="3"), TypeError, r"num_steps must be three ints"),
    (dict(num_steps=0), ValueError, r"num_steps must be a positive int"),
    (dict(dropout=1.0), ValueError, r"dropout"),
    (dict(num_bins=2.5), TypeError, r"num_bins"),
    (dict(attention="yes"), TypeError, r"attention"),
    (dict(context_size=3), ValueError, r"no conditional form"),
])
def test_invalid_arguments(kwargs, error, match):
    event_shape = kwargs.pop("event_shape", [4, 4, 1])
    with pytest.raises(error, match=match):
        tff.models.FlowPlusPlus(event_shape, **{**SMALL, **kwargs})


def test_keras_file_round_trip(tmp_path):
    flow = perturb(small_flowpp(event_shape=(4, 4, 2), num_levels=2, num_steps=(1, 0, 1)),
                   seed=3, scale=0.05, trainable_only=True)
    path = str(tmp_path / "flowpp.keras")
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == flow.get_config()
    x = levels(3, event_shape=(4, 4, 2), seed=1)
    np.testing.assert_allclose(loaded.log_prob(x, num_samples=4, seed=5),
                               flow.log_prob(x, num_samples=4, seed=5), rtol=1e-5)
    np.testing.assert_allclose(loaded.sample(2, seed=1), flow.sample(2, seed=1))


@pytest.mark.slow
def test_export_loads_without_tfp_flows(tmp_path, python_without_tfp_flows):
    flow = perturb(small_flowpp(), seed=4, scale=0.05, trainable_only=True)
    x = levels(3, seed=2)
    path = flow.export(str(tmp_path / "flowpp"))
    results = load_exported_bound(path, x, 8, python_without_tfp_flows)
    assert results["imported"] == []
    np.testing.assert_allclose(results["iwbo"], flow.log_prob(x, num_samples=8, seed=3),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(results["sample"], flow.sample(4, seed=7), atol=1e-5)
