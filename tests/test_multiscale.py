"""The shared multi-scale recursion: RealNVP and Glow pinned to their numbers, a toy family."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff
from tfp_flows.models.multiscale import multiscale_bijector
from tfp_flows.testing import check_bijector

R, G = tff.models.RealNVP, tff.models.Glow

# name: (builder, num_bins (None: Gaussian data), context_size (None: unconditional)).
CASES = {
    "realnvp_2_scales": (
        lambda: R([8, 8, 1], num_scales=2, hidden_channels=8, num_blocks=1, dtype="float64"),
        None, None),
    "realnvp_3_scales": (
        lambda: R([8, 8, 2], num_scales=3, hidden_channels=4, num_blocks=1, dtype="float64"),
        None, None),
    "realnvp_1_scale": (
        lambda: R([4, 4, 1], num_scales=1, hidden_channels=4, num_blocks=1, dtype="float64"),
        None, None),
    "realnvp_logit_conditional": (
        lambda: R([8, 8, 1], num_scales=2, hidden_channels=4, num_blocks=1, num_bins=17,
                  logit_alpha=0.05, context_size=3, dtype="float64"),
        17, 3),
    "glow_prior": (
        lambda: G([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=8,
                  conditioner="resnet", coupling_scale="exp", dtype="float64"),
        None, None),
    "glow_no_prior": (
        lambda: G([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=8,
                  conditioner="resnet", split_prior=False, coupling_scale="exp",
                  dtype="float64"),
        None, None),
    "glow_additive_plain": (
        lambda: G([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=8,
                  conditioner="resnet", coupling="additive", lu=False, dtype="float64"),
        None, None),
    "glow_logit": (
        lambda: G([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=8,
                  conditioner="resnet", num_bins=17, logit_alpha=0.05, coupling_scale="exp",
                  dtype="float64"),
        17, None),
    "glow_3_levels_conditional": (
        lambda: G([8, 8, 2], num_levels=3, num_steps=1, hidden_channels=4, context_size=3,
                  seed=5, conditioner="resnet", coupling_scale="exp", dtype="float64"),
        None, 3),
}

# Measured on the builders as they were before the shared multi-scale recursion
# (tfp_flows.models.multiscale) existed, when Glow's conditioners were all ConvResNets (now
# `conditioner="resnet"`) and its coupling scales soft-clamped exponentials (now
# `coupling_scale="exp"`): (len(trainable_weights), trainable parameters,
# log_prob of the three examples `pinned_inputs` draws, after `assign_pinned_weights`).
BEFORE = {
    "realnvp_2_scales": (80, 10346, [
        -89.91887059550083, -96.52994201094545, -97.51375972813315]),
    "realnvp_3_scales": (128, 12212, [
        -176.36173654145014, -180.90323156801531, -186.1253762507568]),
    "realnvp_1_scale": (32, 1128, [
        -19.973601431849595, -21.833776458381852, -22.67453292438996]),
    "realnvp_logit_conditional": (80, 4670, [
        -189.1349846100726, -187.13482129192096, -193.33885017745217]),
    "glow_prior": (60, 6764, [
        -104.63337182694627, -92.71897524745286, -96.03457065808391]),
    "glow_no_prior": (52, 5664, [
        -90.92504218179039, -91.89390816615446, -85.16874133290308]),
    "glow_additive_plain": (52, 5704, [
        -94.6537104568437, -90.15944144798833, -94.91639074531983]),
    "glow_logit": (60, 6764, [
        -192.8789765635359, -199.98027403261426, -184.48684913319767]),
    "glow_3_levels_conditional": (55, 8656, [
        -188.75347419354134, -171.90944787897666, -191.4217587230709]),
}


def assign_pinned_weights(flow, rng):
    """Overwrites every trainable weight, in `flow.trainable_weights` order, with N(0, 0.05^2)
    draws from `rng` (square 2-D weights, the plain 1x1-convolution kernels, get the identity
    added so they stay well conditioned). Non-trainable weights (LU permutations and signs,
    ActNorm flags) keep the values the builder gave them."""
    for weight in flow.trainable_weights:
        value = rng.normal(0.0, 0.05, size=weight.shape)
        if len(weight.shape) == 2 and weight.shape[0] == weight.shape[1]:
            value += np.eye(weight.shape[0])
        weight.assign(value)


def pinned_inputs(flow, rng, num_bins, context_size):
    """Three examples (uniform in `[0, num_bins)` for discrete data, else Gaussian)."""
    shape = [3, *flow.event_shape]
    x = rng.uniform(0.0, num_bins, size=shape) if num_bins else rng.normal(size=shape)
    context = None if context_size is None else rng.normal(size=[3, context_size])
    return x, context


@pytest.mark.parametrize("name", sorted(CASES))
def test_weights_and_log_prob_are_those_measured_before_the_shared_recursion(name):
    keras.utils.set_random_seed(0)
    build, num_bins, context_size = CASES[name]
    flow = build()
    num_weights, num_params, expected = BEFORE[name]
    assert len(flow.trainable_weights) == num_weights
    assert sum(int(np.prod(w.shape)) for w in flow.trainable_weights) == num_params
    rng = np.random.default_rng(0)
    assign_pinned_weights(flow, rng)
    x, context = pinned_inputs(flow, rng, num_bins, context_size)
    # Eager `distribution.log_prob` (what `flow.log_prob` compiles): no tracing, faster here.
    kwargs = {} if context is None else {"context": tf.constant(context)}
    log_prob = flow.distribution.log_prob(tf.constant(x), bijector_kwargs=kwargs).numpy()
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5)


# -- the shared recursion, with a family's own steps ------------------------------------------

tfb = tfp.bijectors


def scale_steps(factors):
    """Toy steps: level `i` multiplies its (squeezed) event by `factors[i]` when sampling."""
    def steps(shape, level):
        return [tfb.Scale(tf.constant(factors[level], tf.float64), name=f"level_{level}_scale")]
    return steps


def test_toy_steps_make_a_shape_preserving_flow_with_one_naming_scheme():
    bijector = multiscale_bijector([4, 4, 1], 2, scale_steps([2.0, 3.0]))
    assert bijector.name == "level_0"
    assert [b.name for b in bijector.bijectors] == [
        "level_0_squeeze", "level_0_scale", "level_0_split", "level_0_unsqueeze"]
    level_1 = bijector.bijectors[2].bijector
    assert [b.name for b in level_1.bijectors] == [
        "level_1_squeeze", "level_1_scale", "level_1_unsqueeze"]
    # data -> noise: the squeeze squeezes, the unsqueeze undoes it.
    assert bijector.bijectors[0].inverse_event_shape([4, 4, 1]).as_list() == [2, 2, 4]
    assert bijector.bijectors[-1].inverse_event_shape([2, 2, 4]).as_list() == [4, 4, 1]
    x = np.random.default_rng(0).normal(size=[3, 4, 4, 1])
    z = bijector.inverse(x).numpy()
    assert z.shape == x.shape
    # Level 0 divides all 16 entries by 2; the kept half (channels 0, 1 of the squeezed
    # event) is divided by 3 again in level 1, the factored-out half (channels 2, 3) is not.
    squeeze = tff.bijectors.Squeeze([4, 4, 1])
    z_squeezed, x_squeezed = squeeze.forward(z).numpy(), squeeze.forward(x).numpy()
    np.testing.assert_allclose(z_squeezed[..., 2:], x_squeezed[..., 2:] / 2.0)
    np.testing.assert_allclose(z_squeezed[..., :2], x_squeezed[..., :2] / 6.0)
    log_det = bijector.inverse_log_det_jacobian(x, event_ndims=3).numpy()
    np.testing.assert_allclose(log_det, -16 * np.log(2.0) - 8 * np.log(3.0))
    np.testing.assert_allclose(bijector.forward(tf.identity(z)).numpy(), x)


def test_every_part_of_a_level_in_data_to_noise_order():
    calls = []

    def hook(kind):
        def build(shape, level):
            calls.append((kind, level, shape))
            bijector = tfb.Scale(tf.constant(1.5, tf.float64), name=f"level_{level}_{kind}")
            return bijector if kind == "prior" else [bijector]
        return build

    bijector = multiscale_bijector([8, 8, 1], 3, hook("steps"),
                                   steps_before_squeeze=hook("before"),
                                   factor_out_prior=hook("prior"), squeeze_last_level=False)
    assert [b.name for b in bijector.bijectors] == [
        "level_0_before", "level_0_squeeze", "level_0_steps", "level_0_prior", "level_0_split",
        "level_0_unsqueeze"]
    last = bijector.bijectors[4].bijector.bijectors[4].bijector
    assert [b.name for b in last.bijectors] == ["level_2_before", "level_2_steps"]
    # Shapes each callable sees; data -> noise creation order (the default).
    assert calls == [
        ("before", 0, [8, 8, 1]), ("steps", 0, [4, 4, 4]), ("prior", 0, [4, 4, 4]),
        ("before", 1, [4, 4, 2]), ("steps", 1, [2, 2, 8]), ("prior", 1, [2, 2, 8]),
        ("before", 2, [2, 2, 4]), ("steps", 2, [2, 2, 4])]
    calls.clear()
    reversed_bijector = multiscale_bijector(
        [8, 8, 1], 3, hook("steps"), steps_before_squeeze=hook("before"),
        factor_out_prior=hook("prior"), squeeze_last_level=False,
        creation_order="noise_to_data")
    assert [kind_level[:2] for kind_level in calls] == [
        ("steps", 2), ("before", 2), ("prior", 1), ("steps", 1), ("before", 1),
        ("prior", 0), ("steps", 0), ("before", 0)]
    x = np.random.default_rng(1).normal(size=[2, 8, 8, 1])
    np.testing.assert_allclose(reversed_bijector.inverse(x), bijector.inverse(x))


class ToyFamily(tff.models.Flow):
    """A new multi-scale family: one step is an affine coupling with a conv ResNet."""

    def __init__(self, event_shape, num_levels=2, num_steps=2, **kwargs):
        super().__init__(event_shape, **kwargs)
        self.num_steps = num_steps
        self.conditioners = []  # every conditioner is tracked by Keras through this list
        self._set_bijectors([multiscale_bijector(self.event_shape, num_levels, self._steps)])

    def _steps(self, shape, level):
        return [self._coupling(shape, f"level_{level}_step_{k}", k % 2)
                for k in range(self.num_steps)]

    def _coupling(self, shape, name, parity):
        conditioner = tff.nets.ConvResNet(
            4, 1, tff.bijectors.AffineCoupling.conditioner_output_size(shape, "half", parity),
            dtype=self.dtype_policy, name=f"{name}_conditioner")
        self.conditioners.append(conditioner)
        return tff.bijectors.AffineCoupling(conditioner, shape, mask="half", parity=parity,
                                            name=name)


def test_a_new_family_plugs_its_step_into_the_shared_recursion():
    keras.utils.set_random_seed(0)
    flow = ToyFamily([4, 4, 1], dtype="float64")
    assert len(flow.conditioners) == 4
    # Each ConvResNet has 4 kernels and 4 biases; all are the model's weights.
    assert len(flow.trainable_weights) == 4 * 8
    assert {id(w) for w in flow.trainable_weights} == {
        id(w) for layer in flow.conditioners for w in layer.trainable_weights}
    rng = np.random.default_rng(0)
    assign_pinned_weights(flow, rng)
    x = rng.normal(size=[2, 4, 4, 1])
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow.distribution.log_prob(tf.constant(x)))
    gradients = tape.gradient(loss, flow.trainable_weights)
    assert all(g is not None and np.all(np.isfinite(g)) for g in gradients)
    check_bijector(flow.bijector, x, modes=("eager",))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(event_shape=[4, 4]), ValueError, r"event_shape must have rank 3"),
    (dict(event_shape=[6, 8, 1]), ValueError,
     r"2 levels \(2 squeezes\) need height and width divisible by 4, got event_shape "
     r"\[6, 8, 1\]"),
    (dict(num_levels=0), ValueError, r"num_levels must be a positive int, got 0"),
    (dict(num_levels=2.0), TypeError, r"num_levels must be a positive int, got 2.0"),
    (dict(steps="coupling"), TypeError,
     r"steps must be a callable \(shape, level\) -> bijectors, got 'coupling'"),
    (dict(factor_out_prior=3), TypeError, r"factor_out_prior must be a callable"),
    (dict(steps=lambda shape, level: tfb.Identity()), TypeError,
     r"steps must return a list of tfp.bijectors.Bijector, got .*Identity.* for level 0"),
    (dict(steps=lambda shape, level: [tff.bijectors.Squeeze(shape)]), ValueError,
     r"steps must return bijectors that keep the event shape \[2, 2, 4\] of level 0, but "
     r"squeeze maps it to \[1, 1, 16\]"),
    (dict(factor_out_prior=lambda shape, level: [tfb.Identity()]), TypeError,
     r"factor_out_prior must return a tfp.bijectors.Bijector or None"),
    (dict(squeeze_last_level=1), TypeError, r"squeeze_last_level must be a bool, got 1"),
    (dict(creation_order="random"), ValueError,
     r"creation_order must be one of 'data_to_noise', 'noise_to_data'; got 'random'"),
])
def test_bad_arguments(kwargs, error, match):
    arguments = dict(event_shape=[4, 4, 1], num_levels=2, steps=scale_steps([2.0, 3.0]))
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        multiscale_bijector(**arguments)


def test_glow_and_realnvp_levels_share_one_layout():
    glow = G([8, 8, 1], num_levels=2, num_steps=1, hidden_channels=4)
    (level_0,) = glow.bijector.bijectors
    assert [b.name for b in level_0.bijectors] == [
        "level_0_squeeze", "level_0_step_0_actnorm", "level_0_step_0_conv1x1",
        "level_0_step_0_coupling", "level_0_prior", "level_0_split", "level_0_unsqueeze"]
    assert [b.name for b in level_0.bijectors[5].bijector.bijectors] == [
        "level_1_squeeze", "level_1_step_0_actnorm", "level_1_step_0_conv1x1",
        "level_1_step_0_coupling", "level_1_unsqueeze"]
    realnvp = R([4, 4, 1], num_scales=2, hidden_channels=4, num_blocks=1)
    (level_0,) = realnvp.bijector.bijectors
    for flow_level in (glow.bijector.bijectors[0], level_0):
        squeeze = next(b for b in flow_level.bijectors if b.name == "level_0_squeeze")
        unsqueeze = flow_level.bijectors[-1]
        # Written as sampling maps: the data -> noise squeeze is an inverted unsqueeze.
        assert isinstance(squeeze.bijector, tff.bijectors.Squeeze)
        assert isinstance(unsqueeze, tff.bijectors.Squeeze)
        assert unsqueeze.name == "level_0_unsqueeze"
