"""Multi-scale RealNVP and Glow: their numbers are pinned across refactors of the recursion."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_flows as tff

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
        lambda: G([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=8, dtype="float64"),
        None, None),
    "glow_no_prior": (
        lambda: G([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=8, split_prior=False,
                  dtype="float64"),
        None, None),
    "glow_additive_plain": (
        lambda: G([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=8,
                  coupling="additive", lu=False, dtype="float64"),
        None, None),
    "glow_logit": (
        lambda: G([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=8, num_bins=17,
                  logit_alpha=0.05, dtype="float64"),
        17, None),
    "glow_3_levels_conditional": (
        lambda: G([8, 8, 2], num_levels=3, num_steps=1, hidden_channels=4, context_size=3,
                  seed=5, dtype="float64"),
        None, 3),
}

# Measured on the builders as they were before the shared multi-scale recursion
# (tfp_flows.models.multiscale) existed: (len(trainable_weights), trainable parameters,
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
