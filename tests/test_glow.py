"""Glow: multi-scale structure, its conditioners, ActNorm initialisation in fit, discrete data,
serialization."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import load_exported

import tfp_flows as tff
from tfp_flows.distributions import uniform_dequantize
from tfp_flows.training import bits_per_dim


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def small_glow(**kwargs):
    options = dict(num_levels=2, num_steps=2, hidden_channels=8)
    options.update(kwargs)
    return tff.models.Glow([8, 8, 1], **options)


def digits_like(n=64, seed=0):
    """Integer images with 17 levels and some structure (a bright diagonal)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 4, size=[n, 8, 8, 1])
    images[:, np.arange(8), np.arange(8), 0] += 12
    return images.astype("int32")


def glow_net_parameters(c_in, hidden, c_out):
    """A `GlowConvNet`'s: 3x3 and 1x1 kernels without bias, each followed by an ActNorm
    (log-scale and bias per channel), then a 3x3 output kernel with bias."""
    return 9 * c_in * hidden + 2 * hidden + hidden * hidden + 2 * hidden \
        + 9 * hidden * c_out + c_out


def conditioner_actnorms(flow):
    return [actnorm for layer in flow.conditioners + flow.priors
            for actnorm in (layer.input_actnorm, layer.hidden_actnorm)]


def test_exact_parameter_count_with_the_papers_conditioner():
    flow = small_glow()
    assert flow.conditioner == "glow"
    assert all(type(layer) is tff.nets.GlowConvNet for layer in flow.conditioners + flow.priors)
    # A step on C channels: ActNorm (2C), LU kernel (L and U, C x C each, and log_s, C), and
    # an affine coupling whose network maps the kept C/2 channels to 2 * C/2 parameters.
    step = lambda c: 2 * c + (2 * c * c + c) + glow_net_parameters(c // 2, 8, c)  # noqa: E731
    # Level 0 on [4, 4, 4]: 2 steps and a split prior (the kept 2 channels -> mean and
    # log-scale of the other 2); level 1 on the kept half squeezed, [2, 2, 8]: 2 steps.
    expected = 2 * step(4) + glow_net_parameters(2, 8, 4) + 2 * step(8)
    assert expected == 2 * (8 + 36 + 532) + 532 + 2 * (16 + 136 + 968) == 3924
    assert sum(int(np.prod(w.shape)) for w in flow.trainable_weights) == expected
    # Per step 2 + 3 + 8 variables, 8 in a prior; an "initialized" flag per ActNorm.
    assert len(flow.trainable_weights) == 4 * 13 + 8
    assert len(conditioner_actnorms(flow)) == 2 * 5


@pytest.mark.parametrize("conditioner", ["glow", "resnet"])
def test_a_fresh_flow_is_a_rotation_and_every_weight_gets_a_gradient(conditioner):
    flow = small_glow(conditioner=conditioner, context_size=2, dtype="float64")
    rng = np.random.default_rng(1)
    x, context = tf.constant(rng.normal(size=[3, 8, 8, 1])), tf.constant(rng.normal(size=[3, 2]))
    # Eager calls of the distribution and bijector (what the flow's methods compile).
    log_prob = lambda: flow.distribution.log_prob(  # noqa: E731
        x, bijector_kwargs={"context": context})
    # ActNorms start as the identity, couplings and priors with zero outputs, and the 1x1
    # convolutions are rotations: the density is the standard Normal's, norms are kept.
    flat = x.numpy().reshape(3, -1)
    standard = np.sum(-0.5 * flat ** 2 - 0.5 * math.log(2 * math.pi), -1)
    np.testing.assert_allclose(log_prob(), standard, rtol=1e-10)
    z = flow.bijector.inverse(tf.identity(x), context=context).numpy()
    np.testing.assert_allclose(np.linalg.norm(z.reshape(3, -1), axis=-1),
                               np.linalg.norm(flat, axis=-1), rtol=1e-10)
    _trained_looking(flow)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(log_prob())
    gradients = tape.gradient(loss, flow.trainable_weights)
    for weight, gradient in zip(flow.trainable_weights, gradients):
        assert gradient is not None and np.abs(gradient.numpy()).max() > 0, weight.path
    # Round trip through fresh tensors (no bijector cache).
    z = flow.bijector.inverse(tf.identity(x), context=context)
    x_again = flow.bijector.forward(tf.identity(z), context=context)
    np.testing.assert_allclose(x_again, x, atol=1e-8)


def test_levels_preserve_the_event_shape_and_factor_out_half_the_channels():
    flow = small_glow(num_levels=3, num_steps=1)
    x = np.random.default_rng(0).normal(size=[2, 8, 8, 1]).astype("float32")
    assert flow.inverse(x).shape == (2, 8, 8, 1)
    splits = [b for b in flow.bijector.bijectors[0].bijectors
              if isinstance(b, tff.bijectors.SplitChannels)]
    assert len(splits) == 1 and splits[0].keep_channels == 2  # [4, 4, 4] keeps 2 channels
    assert len(flow.priors) == 2 and len(flow.actnorms) == 3


@pytest.fixture(scope="module")
def trained_glow():
    """A small Glow fitted to 128 digit-like images (4 epochs), and what was seen on the way."""
    keras.utils.set_random_seed(0)
    flow = small_glow(num_bins=17)
    x = uniform_dequantize(digits_like(128), seed=3).numpy()
    initialized = {"steps": [float(a.initialized.numpy()) for a in flow.actnorms],
                   "conditioners": [float(a.initialized.numpy())
                                    for a in conditioner_actnorms(flow)]}
    flow.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = flow.evaluate(x, return_dict=True, verbose=0)["loss"]
    history = flow.fit(x, batch_size=32, epochs=4, verbose=0)
    return flow, initialized, before, history.history


def test_actnorm_initialises_on_the_first_batch_of_fit_and_training_lowers_the_nll(
        trained_glow):
    flow, initialized, before, history = trained_glow
    assert initialized["steps"] == [0.0] * len(flow.actnorms)  # before fit
    assert initialized["conditioners"] == [0.0] * 2 * (len(flow.conditioners)
                                                       + len(flow.priors))
    assert all(float(a.initialized.numpy()) == 1.0 for a in flow.actnorms)
    # The ActNorms inside the conditioners initialised from their first batch too.
    assert all(float(a.initialized.numpy()) == 1.0 for a in conditioner_actnorms(flow))
    assert all(np.abs(a.log_scale.numpy()).max() > 0 for a in conditioner_actnorms(flow))
    assert history["loss"][-1] < before
    # The first ActNorm normalises the squeezed data of the first batch: its bias is set.
    assert np.abs(flow.actnorms[0].bias.numpy()).max() > 0


def test_bits_per_dim_is_in_the_discrete_space_of_the_data():
    flow = small_glow(num_bins=17)
    x = uniform_dequantize(digits_like(16), seed=2).numpy()
    flow.compile(optimizer="adam")
    logs = flow.evaluate(x, return_dict=True, verbose=0)
    expected = bits_per_dim(logs["loss"], 64, num_bins=17, density_space="bins")
    assert logs["bits_per_dim"] == pytest.approx(expected, rel=1e-5)
    # A fresh flow maps [0, 17) to the unit interval and then acts as a rotation: its NLL is
    # that of a standard Normal on the centred unit data plus 64 log 17.
    centred = x.reshape(16, -1) / 17.0 - 0.5
    nll = np.mean(np.sum(0.5 * centred ** 2 + 0.5 * math.log(2 * math.pi), -1)) + 64 * math.log(17)
    assert logs["loss"] == pytest.approx(nll, rel=1e-4)


@pytest.mark.slow
def test_samples_of_a_trained_glow_are_finite_at_temperature_one(trained_glow):
    flow = trained_glow[0]
    for temperature in (1.0, 0.7):
        samples = flow.sample(64, temperature=temperature, seed=0).numpy()
        assert samples.shape == (64, 8, 8, 1)
        assert np.all(np.isfinite(samples))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(event_shape=[64]), ValueError, r"image event_shape \[H, W, C\], got \[64\]"),
    (dict(event_shape=[6, 6, 1]), ValueError, r"divisible by 4, got event_shape \[6, 6, 1\]"),
    (dict(num_levels=0), ValueError, "num_levels must be a positive int, got 0"),
    (dict(num_steps=1.5), TypeError, "num_steps must be a positive int, got 1.5"),
    (dict(coupling="spline"), ValueError, "coupling must be one of .*got 'spline'"),
    (dict(num_bins=0), ValueError, "num_bins must be an int >= 2 or None, got 0"),
    (dict(conditioner="unet"), ValueError,
     "conditioner must be one of 'glow', 'resnet'; got 'unet'"),
    (dict(coupling_scale="tanh"), ValueError,
     "coupling_scale must be one of 'exp', 'sigmoid'; got 'tanh'"),
])
def test_invalid_arguments(kwargs, error, match):
    options = dict(event_shape=[8, 8, 1], num_levels=2, num_steps=1, hidden_channels=4)
    options.update(kwargs)
    with pytest.raises(error, match=match):
        tff.models.Glow(**options)


def _trained_looking(flow, seed=0):
    rng = np.random.default_rng(seed)
    for weight in flow.trainable_weights:
        weight.assign(weight.numpy() + rng.normal(0.0, 0.05, size=weight.shape))
    return flow


@pytest.mark.parametrize("conditioner", ["glow", "resnet"])
def test_keras_file_round_trip_with_lu_kernels_and_actnorm_state(tmp_path, conditioner):
    flow = _trained_looking(small_glow(num_bins=17, conditioner=conditioner))
    flow.actnorms[0].initialized.assign(1.0)
    if conditioner == "glow":
        flow.conditioners[0].hidden_actnorm.initialized.assign(1.0)
    path = str(tmp_path / "glow.keras")
    flow.save(path)
    loaded = keras.models.load_model(path)
    x = uniform_dequantize(digits_like(4), seed=4).numpy()
    np.testing.assert_allclose(loaded.log_prob(x), flow.log_prob(x), rtol=1e-5, atol=1e-4)
    assert float(loaded.actnorms[0].initialized.numpy()) == 1.0
    assert loaded.get_config() == flow.get_config()
    assert loaded.get_config()["conditioner"] == conditioner
    assert type(loaded.conditioners[0]) is type(flow.conditioners[0])
    if conditioner == "glow":
        assert float(loaded.conditioners[0].hidden_actnorm.initialized.numpy()) == 1.0


def test_a_config_saved_before_the_conditioner_choice_builds_conv_resnets():
    flow = _trained_looking(small_glow(conditioner="resnet", num_blocks=2))
    config = flow.get_config()
    del config["conditioner"]
    loaded = tff.models.Glow.from_config(config)
    assert loaded.conditioner == "resnet" and loaded.num_blocks == 2
    assert all(type(layer) is tff.nets.ConvResNet for layer in loaded.conditioners)
    loaded.set_weights(flow.get_weights())
    x = tf.constant(np.random.default_rng(3).normal(size=[2, 8, 8, 1]).astype("float32"))
    np.testing.assert_allclose(loaded.distribution.log_prob(x), flow.distribution.log_prob(x),
                               rtol=1e-6)


def _affine_couplings(bijector):
    """The affine couplings inside `bijector`: in chains, and in what a split keeps."""
    inner = getattr(bijector, "bijectors", None) or [getattr(bijector, "bijector", None)]
    found = []
    for member in filter(None, inner):
        if isinstance(member, tff.bijectors.AffineCoupling):
            found.append(member)
        found += _affine_couplings(member)
    return found


def test_couplings_take_the_papers_sigmoid_scale_and_the_split_priors_exp():
    couplings = _affine_couplings(small_glow(num_steps=1).bijector)
    scales = {coupling.name: coupling.transformer.scale for coupling in couplings}
    assert scales == {"level_0_step_0_coupling": "sigmoid", "level_0_prior": "exp",
                      "level_1_step_0_coupling": "sigmoid"}
    exp = _affine_couplings(small_glow(num_steps=1, coupling_scale="exp").bijector)
    assert {coupling.transformer.scale for coupling in exp} == {"exp"}


def test_a_config_saved_before_the_scale_choice_keeps_exp_scales():
    flow = _trained_looking(small_glow(coupling_scale="exp"))
    config = flow.get_config()
    assert config["coupling_scale"] == "exp"
    del config["coupling_scale"]
    loaded = tff.models.Glow.from_config(config)
    assert loaded.coupling_scale == "exp"
    loaded.set_weights(flow.get_weights())
    x = tf.constant(np.random.default_rng(3).normal(size=[2, 8, 8, 1]).astype("float32"))
    np.testing.assert_allclose(loaded.distribution.log_prob(x), flow.distribution.log_prob(x),
                               rtol=1e-6)
    # The same weights under the sigmoid scale are another density.
    sigmoid = tff.models.Glow.from_config({**config, "coupling_scale": "sigmoid"})
    sigmoid.set_weights(flow.get_weights())
    assert not np.allclose(sigmoid.distribution.log_prob(x), flow.distribution.log_prob(x))


@pytest.mark.slow
def test_multiscale_export_loads_without_tfp_flows(tmp_path, python_without_tfp_flows):
    flow = _trained_looking(small_glow(num_bins=17))
    x = uniform_dequantize(digits_like(4), seed=5).numpy()
    path = flow.export(str(tmp_path / "glow"))
    results = load_exported(path, x, python_without_tfp_flows)
    assert results["imported"] == []
    np.testing.assert_allclose(results["log_prob"], flow.log_prob(x), rtol=1e-5, atol=1e-4)
    expected = flow.sample(3, temperature=0.7, seed=5).numpy()
    np.testing.assert_allclose(results["sample"], expected, rtol=1e-4, atol=1e-4)


def test_conditioners_without_actnorm_have_biased_hidden_convolutions():
    flow = small_glow(conditioner_actnorm=False)
    assert not flow.conditioner_actnorm
    nets = flow.conditioners + flow.priors
    assert all(net.input_actnorm is None and net.hidden_actnorm is None for net in nets)
    assert all(net.input_conv.use_bias and net.hidden_conv.use_bias for net in nets)
    # Each net trades its two ActNorms (2 x 2 x 8 weights) for two biases (2 x 8).
    trainable = lambda f: sum(int(np.prod(w.shape)) for w in f.trainable_weights)  # noqa: E731
    assert trainable(small_glow()) - trainable(flow) == 5 * 16
    restored = tff.models.Glow.from_config(flow.get_config())
    assert restored.conditioner_actnorm is False
    with pytest.raises(TypeError, match="conditioner_actnorm"):
        small_glow(conditioner_actnorm="no")
