"""The models of every registered family (NICE, RealNVP, Glow, MAF, IAF, ...): weights,
identity at init, gradients, TFP composition, serialization (.keras and a SavedModel loaded
in a process without tfp_flows), tracing, sampling and training."""

import functools
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import models
from tfp_flows.models import FAMILIES
from tfp_flows.testing import discover_trainable_variables

tfd = tfp.distributions

CONTEXT_SIZE = 3


def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv(kernel, c_in, c_out):
    return kernel * kernel * c_in * c_out + c_out


def _conv_resnet(c_in, hidden, c_out):
    # input 3x3, one block (3x3 then 1x1), output 3x3
    return conv(3, c_in, hidden) + conv(3, hidden, hidden) + conv(1, hidden, hidden) + \
        conv(3, hidden, c_out)


def _glow_net(c_in, hidden, c_out):
    # 3x3 and 1x1 convs without bias, each followed by an ActNorm (log-scale and bias),
    # output 3x3 with bias
    return conv(3, c_in, hidden) - hidden + 2 * hidden + conv(1, hidden, hidden) - hidden + \
        2 * hidden + conv(3, hidden, c_out)


def _nanoflow_trunk(c_in, hidden, embedding):
    # A one-block ConvTrunk (a ConvResNet without its output conv) plus the unbiased 3x3
    # conv of a concatenated embedding.
    return conv(3, c_in, hidden) + conv(3, hidden, hidden) + conv(1, hidden, hidden) + \
        9 * embedding * hidden


def _flowpp_net(c_in, filters, c_out, pixels):
    """(variables, parameters) of a one-block `GatedConvAttentionNet` without context:
    proj_in 3x3, gated conv (3x3 on the doubled channels, 1x1 to 2F), layer norm, attention
    (query, key, value 1x1, gate 1x1 to 2F), layer norm, positional embedding, proj_out."""
    f = filters
    parameters = (conv(3, c_in, f) + conv(3, 2 * f, f) + conv(1, 2 * f, 2 * f) + 2 * f
                  + 3 * conv(1, f, f) + conv(1, f, 2 * f) + 2 * f + pixels * f
                  + conv(3, f, c_out))
    return 2 + (2 + 2 + 2) + (3 * 2 + 2 + 2) + 1 + 2, parameters


def _dense_attention_net(c_in, f, depth, growth, c_out, attention=True):
    """(variables, parameters) of a `DenseAttentionNet`: proj_in 1x1, `depth` dense layers
    (1x1 keeping the width, 3x3 adding `growth`), gated 1x1 to 3F, Nystrom attention (qkv
    1x1 to 3 * F/2, out 1x1 back to F), layer norm and bias-free 1x1 on the fused channels,
    proj_out."""
    parameters = dense(c_in, f) + dense(f + depth * growth, 3 * f) + dense(f, c_out)
    for i in range(depth):
        width = f + i * growth
        parameters += dense(width, width) + conv(3, width, growth)
    fused = 2 * f if attention else f
    parameters += 2 * fused + fused * f
    variables = 2 + 4 * depth + 2 + 2 + 1 + 2
    if attention:
        parameters += dense(f, 3 * (f // 2)) + dense(f // 2, f)
        variables += 4
    return variables, parameters


# name -> (builder, trainable variables, trainable parameters). The counts are written out
# from the conditioner architectures: a coupling's conditioner sees the kept part (plus the
# context) and returns `num_params` values per transformed entry (NICE 1, RealNVP 2).
MODELS = {
    # [4], half mask: each MLP maps 2 -> 8 -> 8 -> 2; plus NICE's log-scale of size 4.
    "nice_vector": (
        lambda: models.NICE([4], num_layers=3, hidden_units=[8, 8]),
        3 * 3 * 2 + 1,
        3 * (dense(2, 8) + dense(8, 8) + dense(8, 2)) + 4),
    # [5] with context 2: parity 0 maps 2+2 -> 8 -> 3, parity 1 maps 3+2 -> 8 -> 2.
    "nice_vector_conditional": (
        lambda: models.NICE([5], num_layers=2, hidden_units=[8], context_size=2,
                            permutation="reverse"),
        2 * 2 * 2 + 1,
        dense(4, 8) + dense(8, 3) + dense(5, 8) + dense(8, 2) + 5),
    # [4]: 2 -> 8 -> 2*2 per coupling.
    "realnvp_vector": (
        lambda: models.RealNVP([4], num_layers=2, hidden_units=[8]),
        2 * 2 * 2,
        2 * (dense(2, 8) + dense(8, 4))),
    "realnvp_vector_conditional": (
        lambda: models.RealNVP([4], num_layers=2, hidden_units=[8], context_size=CONTEXT_SIZE),
        2 * 2 * 2,
        2 * (dense(2 + CONTEXT_SIZE, 8) + dense(8, 4))),
    # Residual MLP: input 2 -> 8, one block of two 8 -> 8, output 8 -> 4.
    "realnvp_residual": (
        lambda: models.RealNVP([4], num_layers=2, hidden_units=[8], conditioner="residual",
                               num_blocks=1, permutation="random"),
        2 * 4 * 2,
        2 * (dense(2, 8) + 2 * dense(8, 8) + dense(8, 4))),
    # [4, 4, 2], checkerboard: the ConvResNet sees all 2 channels and returns 1 or 2 per
    # channel.
    "nice_image": (
        lambda: models.NICE([4, 4, 2], num_layers=2, hidden_channels=4, num_blocks=1),
        2 * 4 * 2 + 1,
        2 * _conv_resnet(2, 4, 2) + 4 * 4 * 2),
    "realnvp_image": (
        lambda: models.RealNVP([4, 4, 2], num_layers=2, hidden_channels=4, num_blocks=1),
        2 * 4 * 2,
        2 * _conv_resnet(2, 4, 4)),
    "realnvp_image_conditional": (
        lambda: models.RealNVP([4, 4, 2], num_layers=2, hidden_channels=4, num_blocks=1,
                               context_size=CONTEXT_SIZE),
        2 * 4 * 2,
        2 * _conv_resnet(2 + CONTEXT_SIZE, 4, 4)),
    # Glow [4, 4, 2], 2 levels of 1 step, plain 1x1 kernels: level 0 works on [2, 2, 8]
    # (ActNorm 2x8, kernel 8x8, coupling 4 -> 8 channels, split prior 4 -> 8), level 1 on
    # the kept half squeezed again, [1, 1, 16] (ActNorm 2x16, kernel 16x16, coupling 8 -> 16).
    # Each conditioner is the paper's network (8 variables), or a one-block ConvResNet (8).
    "glow": (
        lambda: models.Glow([4, 4, 2], num_levels=2, num_steps=1, hidden_channels=4, lu=False),
        2 * (2 + 1 + 8) + 8,
        16 + 64 + 2 * _glow_net(4, 4, 8) + 32 + 256 + _glow_net(8, 4, 16)),
    "glow_conditional": (
        lambda: models.Glow([4, 4, 2], num_levels=2, num_steps=1, hidden_channels=4, lu=False,
                            context_size=CONTEXT_SIZE),
        2 * (2 + 1 + 8) + 8,
        16 + 64 + 2 * _glow_net(4 + CONTEXT_SIZE, 4, 8) + 32 + 256
        + _glow_net(8 + CONTEXT_SIZE, 4, 16)),
    "glow_resnet": (
        lambda: models.Glow([4, 4, 2], num_levels=2, num_steps=1, hidden_channels=4, lu=False,
                            conditioner="resnet"),
        2 * (2 + 1 + 8) + 8,
        16 + 64 + 2 * _conv_resnet(4, 4, 8) + 32 + 256 + _conv_resnet(8, 4, 16)),
    # Flow++ on continuous [4, 4, 2], affine couplings, steps (1, 1, 1): a checkerboard
    # coupling on [4, 4, 2] (per-element ActNorm 2 x 32, kernel 2x2, net 2 -> 2 * 2), then
    # on the squeezed [2, 2, 8] a channel coupling (ActNorm 2 x 32, kernel 8x8, net on the
    # kept 4 channels -> 2 * 4) and a checkerboard one (net 8 -> 2 * 8).
    "flowpp": (
        lambda: models.FlowPlusPlus([4, 4, 2], num_bins=None, dequantization=None,
                                    coupling="affine", filters=4, blocks=1, heads=2,
                                    num_steps=(1, 1, 1)),
        3 * (2 + 1) + _flowpp_net(2, 4, 4, 16)[0] + _flowpp_net(4, 4, 8, 4)[0]
        + _flowpp_net(8, 4, 16, 4)[0],
        64 + 4 + _flowpp_net(2, 4, 4, 16)[1] + 64 + 64 + _flowpp_net(4, 4, 8, 4)[1]
        + 64 + 64 + _flowpp_net(8, 4, 16, 4)[1]),
    # DenseFlow on continuous [4, 4, 2], squeezed to [2, 2, 8]: one block of two units of
    # one module each. Unit 0 on [2, 2, 8] (ActNorm 2x8, kernel 8x8, coupling net 4 -> 8);
    # the cross-unit noise net reads the block's input (3x3 conv 8 -> 32, 1x1 to 2 * 2);
    # unit 1 on [2, 2, 10] (ActNorm 2x10, kernel 10x10, net 5 -> 10); a final ActNorm 2x10.
    "denseflow": (
        lambda: models.DenseFlow([4, 4, 2], num_bins=None, dequantization=None,
                                 growth_rate=2, units_per_block=(2,), modules_per_unit=1,
                                 filters=4, dense_depth=1, dense_growth=2, landmarks=2),
        3 * 2 + 2 + _dense_attention_net(4, 4, 1, 2, 8)[0]
        + _dense_attention_net(5, 4, 1, 2, 10)[0] + 4,
        16 + 64 + _dense_attention_net(4, 4, 1, 2, 8)[1] + conv(3, 8, 32) + dense(32, 4)
        + 20 + 100 + _dense_attention_net(5, 4, 1, 2, 10)[1] + 20),
    # MAF/IAF on [4]: each MADE holds full (masked) kernels, 4 -> 8 (-> 8) -> 4 * params
    # per dimension (affine 2, spline 3 * bins - 1); a context enters through two unbiased
    # kernels, into the first hidden layer and into the output. The data-end ActNorm adds
    # a log-scale and a bias of 4 (and its non-trainable flag).
    "maf_vector": (
        lambda: models.MAF([4], num_layers=2, hidden_units=[8, 8]),
        2 * 3 * 2 + 2,
        2 * (dense(4, 8) + dense(8, 8) + dense(8, 4 * 2)) + 2 * 4),
    "maf_spline_conditional": (
        lambda: models.MAF([4], num_layers=2, hidden_units=[8], transformer="spline",
                           num_spline_bins=3, orderings="random", context_size=CONTEXT_SIZE),
        2 * (2 * 2 + 2) + 2,
        2 * (dense(4, 8) + dense(8, 4 * 8) + CONTEXT_SIZE * 8 + CONTEXT_SIZE * 4 * 8)
        + 2 * 4),
    "iaf_vector": (
        lambda: models.IAF([4], num_layers=2, hidden_units=[8], actnorm=False),
        2 * 2 * 2,
        2 * (dense(4, 8) + dense(8, 4 * 2))),
    # ResMADE: input layer, one block of two 8 -> 8 layers, output layer.
    "iaf_residual_conditional": (
        lambda: models.IAF([4], num_layers=2, hidden_units=[8], num_blocks=1,
                           context_size=CONTEXT_SIZE),
        2 * (4 * 2 + 2) + 2,
        2 * (dense(4, 8) + 2 * dense(8, 8) + dense(8, 4 * 2) + CONTEXT_SIZE * 8
             + CONTEXT_SIZE * 4 * 2) + 2 * 4),
    # NanoFlow [4, 4, 2], 2 levels of 2 steps, plain 1x1 kernels, the default "concat"
    # embedding of 8 channels. Level 0 works on [2, 2, 8]: per step an ActNorm 2x8, a kernel
    # 8x8, a 1x1 projection 4 -> 8 and a 2x2x8 embedding; one trunk on the kept 4 channels;
    # a split prior (a 3x3 conv 4 -> 8). Level 1 on [1, 1, 16]: ActNorm 2x16, kernel 16x16,
    # projection 4 -> 16 and a 1x1x8 embedding per step, one trunk on 8 channels.
    "nanoflow_image": (
        lambda: models.NanoFlow([4, 4, 2], num_levels=2, num_steps=2, hidden_channels=4,
                                lu=False),
        2 * 2 * (2 + 1 + 2 + 1) + 2 * 7 + 2,
        2 * (16 + 64 + dense(4, 8) + 32) + _nanoflow_trunk(4, 4, 8) + conv(3, 4, 8)
        + 2 * (32 + 256 + dense(4, 16) + 8) + _nanoflow_trunk(8, 4, 8)),
    # NanoFlow [4], 3 steps with a "bias" embedding of 3: per step ActNorm 2x4, kernel 4x4,
    # projection 8 -> 2 * 2 and the embedding; one trunk 2 -> 8 with a 3 -> 8 bias map.
    "nanoflow_vector": (
        lambda: models.NanoFlow([4], num_steps=3, hidden_units=[8], embedding="bias",
                                embedding_channels=3, lu=False),
        3 * (2 + 1 + 2 + 1) + 3,
        3 * (8 + 16 + dense(8, 4) + 3) + dense(2, 8) + 3 * 8),
}


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def build(name):
    return MODELS[name][0]()


def perturb(flow, seed=0, scale=0.3):
    """Random weights: a fresh flow is the identity, which hides most bugs."""
    rng = np.random.default_rng(seed)
    flow.set_weights([rng.normal(0.0, scale, w.shape) for w in flow.get_weights()])
    return flow


def assert_every_used_variable_is_tracked(flow):
    """The variables the flow's bijectors and its surjection's `q` compute with are the
    model's trainable weights (a Keras variable and the tf.Variable behind it count as
    one)."""
    layers = getattr(flow, "surjection_layers", [])
    used = [*discover_trainable_variables(flow.bijector),
            *(w for layer in layers for w in layer.trainable_weights)]
    ids = lambda variables: {id(v.value) if isinstance(v, keras.Variable) else id(v)  # noqa: E731
                             for v in variables}
    assert ids(used) == ids(flow.trainable_weights)


def data(flow, batch=5, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=[batch, *flow.event_shape]).astype(flow.dtype)
    context = (rng.normal(size=[batch, flow.context_size]).astype(flow.dtype)
               if flow.conditional else None)
    return x, context


def standard_normal_log_prob(x):
    x = np.reshape(x, [len(x), -1]).astype(np.float64)
    return np.sum(-0.5 * x ** 2 - 0.5 * math.log(2 * math.pi), axis=-1)


# The command-line settings of a tiny flow of any family, and an event of each kind of data:
# the registry-driven checks build every registered family from them.
TINY_SETTINGS = {"num_layers": 2, "hidden_units": [8], "num_levels": 2, "num_steps": 1,
                 "hidden_channels": 4, "num_blocks": 1, "coupling": "affine",
                 "conditioner": "glow"}
EVENT_SHAPES = {"vector": [4], "image": [4, 4, 2]}
FAMILY_CASES = [pytest.param(name, kind, id=f"{name}-{kind}")
                for name, family in FAMILIES.items() for kind in family.data_kinds]


@functools.cache
def _model_kinds():
    """`(builder type, data kind)` of each entry of MODELS."""
    kinds = {}
    for name, (make, _, _) in MODELS.items():
        flow = make()
        kinds[name] = (type(flow), "image" if len(flow.event_shape) == 3 else "vector")
    return kinds


# -- structure and initialisation ------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_trainable_weight_count(name):
    flow = build(name)
    _, num_variables, num_params = MODELS[name]
    assert len(flow.trainable_weights) == num_variables
    assert sum(int(np.prod(w.shape)) for w in flow.trainable_weights) == num_params
    # Every variable the bijectors use is tracked by Keras (and so trained and saved).
    assert_every_used_variable_is_tracked(flow)


@pytest.mark.parametrize("name", MODELS)
def test_fresh_flow_is_the_identity(name):
    flow = build(name)
    x, context = data(flow)
    np.testing.assert_allclose(flow.log_prob(x, context), standard_normal_log_prob(x),
                               rtol=1e-5, atol=1e-5)
    if flow.latent_event_shape != flow.event_shape:
        # A bound flow whose latent is wider than the data (DenseFlow): forward and inverse
        # act on the latent; the bound above is the identity check.
        x = np.random.default_rng(2).normal(size=[5, *flow.latent_event_shape])
    forward, inverse = flow.forward(x, context).numpy(), flow.inverse(x, context).numpy()
    if isinstance(flow, models.Glow | models.FlowPlusPlus | models.NanoFlow):
        # Fresh 1x1 convolutions are random rotations: norms are kept, entries are not.
        norm = lambda v: np.linalg.norm(np.reshape(v, [len(v), -1]), axis=-1)  # noqa: E731
        np.testing.assert_allclose(norm(forward), norm(x), rtol=1e-5)
        np.testing.assert_allclose(norm(inverse), norm(x), rtol=1e-5)
    elif getattr(flow, "permutation", None) is None:  # MAF/IAF reorder inside their MADEs
        np.testing.assert_allclose(forward, x, atol=1e-6)
        np.testing.assert_allclose(inverse, x, atol=1e-6)
    else:  # only the fixed permutations remain
        np.testing.assert_allclose(np.sort(forward, -1), np.sort(x, -1), atol=1e-6)
        np.testing.assert_allclose(np.sort(inverse, -1), np.sort(x, -1), atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_every_weight_gets_a_gradient_from_negative_log_prob(name):
    flow = perturb(build(name))
    x, context = data(flow)
    with tf.GradientTape() as tape:
        # Tensors made inside the tape: TFP's cache must not serve a gradient-less result.
        inputs = tf.identity(x) if context is None else {
            "x": tf.identity(x), "context": tf.identity(context)}
        loss = -tf.reduce_mean(flow(inputs))
    grads = tape.gradient(loss, flow.trainable_weights)
    for weight, grad in zip(flow.trainable_weights, grads, strict=True):
        assert grad is not None, f"{weight.path} gets no gradient"
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.all(np.isfinite(grad)), f"{weight.path} has a non-finite gradient"
        assert np.any(grad != 0), f"{weight.path} has an all-zero gradient"


@pytest.mark.parametrize("name, kind", FAMILY_CASES)
def test_every_registered_family_has_counted_cases(name, kind):
    """MODELS, with its weight counts written out, covers each family on each of its data."""
    builder = FAMILIES[name].load_builder()
    if not isinstance(builder, type):
        pytest.skip(f"{name}'s builder is a function; its flows have no type of their own")
    assert (builder, kind) in _model_kinds().values(), \
        f"MODELS has no {name} flow on {kind} data: add one with its weight counts"


@pytest.mark.parametrize("name, kind", FAMILY_CASES)
def test_registered_family_builds_from_command_line_settings(name, kind):
    family = FAMILIES[name]
    # Images as continuous data: a family that dequantizes (Flow++) then has no bound.
    continuous = {"num_bins": None, "dequantization": None} if kind == "image" else {}
    flow = family.build(EVENT_SHAPES[kind], TINY_SETTINGS, seed=0, **continuous)
    assert isinstance(flow, models.Flow) and list(flow.event_shape) == EVENT_SHAPES[kind]
    for setting in family.options[kind]:
        keyword = family.arguments.get(setting, setting)
        assert flow.get_config()[keyword] == TINY_SETTINGS[setting], setting
    # The rules every family keeps: Keras tracks every variable, a fresh flow is the
    # identity in density, and every weight of a trained-looking flow learns from -log_prob.
    assert_every_used_variable_is_tracked(flow)
    x, _ = data(flow)
    np.testing.assert_allclose(flow.log_prob(x), standard_normal_log_prob(x), rtol=1e-5,
                               atol=1e-5)
    flow = perturb(flow)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow(tf.identity(x)))
    grads = tape.gradient(loss, flow.trainable_weights)
    assert all(grad is not None and np.any(tf.convert_to_tensor(grad).numpy() != 0)
               for grad in grads), [w.path for w, g in zip(flow.trainable_weights, grads)]


def test_round_trip_of_a_trained_looking_flow():
    flow = perturb(build("realnvp_image_conditional"))
    x, context = data(flow)
    z = flow.inverse(x, context)
    assert not np.allclose(z, x, atol=1e-3)
    np.testing.assert_allclose(flow.forward(tf.identity(z), context), x, atol=1e-4)


# -- composition with TFP --------------------------------------------------------------------


def test_distribution_composes_with_tfd_mixture():
    first = perturb(build("realnvp_vector"), seed=0)
    second = perturb(build("nice_vector"), seed=1)
    x, _ = data(first)
    mixture = tfd.Mixture(cat=tfd.Categorical(probs=[0.3, 0.7]),
                          components=[first.distribution, second.distribution])
    expected = np.logaddexp(np.log(0.3) + first.log_prob(x).numpy(),
                            np.log(0.7) + second.log_prob(x).numpy())
    np.testing.assert_allclose(mixture.log_prob(x), expected, rtol=1e-5, atol=1e-5)
    assert mixture.sample(6, seed=3).shape == [6, 4]


def test_distribution_log_prob_with_extra_sample_dims():
    flow = perturb(build("realnvp_image"))
    x = np.random.default_rng(2).normal(size=[2, 3, 4, 4, 2]).astype("float32")
    log_prob = flow.distribution.log_prob(x)
    assert log_prob.shape == [2, 3]
    np.testing.assert_allclose(
        log_prob, np.reshape(flow.log_prob(np.reshape(x, [6, 4, 4, 2])), [2, 3]),
        rtol=1e-5, atol=1e-5)


def test_distribution_in_independent_and_sample():
    flow = perturb(build("realnvp_vector"))
    x = np.random.default_rng(2).normal(size=[5, 3, 4]).astype("float32")
    per_point = np.reshape(flow.log_prob(np.reshape(x, [15, 4])), [5, 3])
    independent = tfd.Independent(tfd.BatchBroadcast(flow.distribution, [3]), 1)
    iid = tfd.Sample(flow.distribution, 3)
    for joint in (independent, iid):
        assert joint.event_shape == [3, 4]
        np.testing.assert_allclose(joint.log_prob(x), per_point.sum(-1), rtol=1e-5, atol=1e-4)


def test_conditional_distribution_takes_context_through_bijector_kwargs():
    flow = perturb(build("realnvp_vector_conditional"))
    x, context = data(flow)
    np.testing.assert_allclose(
        flow.distribution.log_prob(x, bijector_kwargs={"context": context}),
        flow.log_prob(x, context), rtol=1e-5, atol=1e-5)
    other = flow.log_prob(x, context + 1.0)
    assert not np.allclose(other, flow.log_prob(x, context), atol=1e-3)


# -- serialization ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nice_vector", "realnvp_residual", "realnvp_image_conditional",
                                  "nice_vector_conditional", "maf_spline_conditional",
                                  "iaf_residual_conditional"])
def test_keras_file_round_trip(name, tmp_path):
    flow = perturb(build(name))
    x, context = data(flow)
    path = tmp_path / f"{name}.keras"
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(flow)
    assert loaded.get_config() == flow.get_config()
    np.testing.assert_allclose(loaded.log_prob(x, context), flow.log_prob(x, context),
                               rtol=1e-6, atol=1e-6)


def test_keras_file_round_trip_of_a_trained_flow_keeps_optimizer_state(tmp_path):
    flow = perturb(build("realnvp_vector_conditional"))
    flow.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, context = data(flow, batch=16)
    flow.fit(x, context=context, batch_size=8, epochs=1, verbose=0)
    flow.save(tmp_path / "trained.keras")
    loaded = keras.saving.load_model(tmp_path / "trained.keras")
    assert int(loaded.optimizer.iterations.numpy()) == 2
    np.testing.assert_allclose(loaded.log_prob(x, context), flow.log_prob(x, context),
                               rtol=1e-6, atol=1e-6)
    loaded.fit(x, context=context, batch_size=8, epochs=1, verbose=0)  # training resumes
    assert int(loaded.optimizer.iterations.numpy()) == 4


_LOADER = r"""
import json, sys
import tensorflow as tf

requests = json.loads(sys.argv[1])
results = {}
for name, request in requests.items():
    model = tf.saved_model.load(request["path"])
    x = tf.constant(request["x"], tf.float32)
    extra = [] if request["context"] is None else [tf.constant(request["context"], tf.float32)]
    sample_extra = extra and [extra[0][:1]]
    results[name] = {
        "log_prob": model.log_prob(x, *extra).numpy().tolist(),
        "forward": model.forward(x, *extra).numpy().tolist(),
        "inverse": model.inverse(x, *extra).numpy().tolist(),
        "sample": model.sample(tf.constant(4), tf.constant(7), tf.constant(0.8),
                               *sample_extra).numpy().tolist(),
    }
results["imported"] = sorted(
    m for m in sys.modules if m.split(".")[0] in ("tfp_flows", "tensorflow_probability"))
print("RESULTS" + json.dumps(results))
"""


@pytest.mark.slow
def test_export_loads_without_tfp_flows(tmp_path, python_without_tfp_flows):
    flows = {
        "unconditional": perturb(build("realnvp_vector"), seed=0),
        "conditional": perturb(build("realnvp_vector_conditional"), seed=1),
        "image": perturb(build("nice_image"), seed=2),
        "autoregressive": perturb(build("maf_spline_conditional"), seed=3),
    }
    requests = {}
    for name, flow in flows.items():
        x, context = data(flow)
        requests[name] = {"path": str(tmp_path / name), "x": x.tolist(),
                          "context": None if context is None else context.tolist()}
        if name == "unconditional":
            # Overwriting an existing export: the directory ends up holding the second model.
            flow.export(requests[name]["path"])
            perturb(flow, seed=5)
        assert flow.export(requests[name]["path"]) == requests[name]["path"]
    assert sorted(os.listdir(tmp_path)) == sorted(flows)  # no staging leftovers

    done = python_without_tfp_flows.run(_LOADER, json.dumps(requests))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.split("RESULTS", 1)[1])
    assert results.pop("imported") == []

    for name, flow in flows.items():
        x = np.asarray(requests[name]["x"], "float32")
        context = requests[name]["context"]
        context = None if context is None else np.asarray(context, "float32")
        got = {key: np.asarray(value) for key, value in results[name].items()}
        np.testing.assert_allclose(got["log_prob"], flow.log_prob(x, context), atol=1e-5,
                                   rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(got["forward"], flow.forward(x, context), atol=1e-5,
                                   err_msg=name)
        np.testing.assert_allclose(got["inverse"], flow.inverse(x, context), atol=1e-5,
                                   err_msg=name)
        expected_sample = flow.sample(4, temperature=0.8, seed=7,
                                      context=None if context is None else context[0])
        np.testing.assert_allclose(got["sample"], expected_sample, atol=1e-5, err_msg=name)


# -- inference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["realnvp_vector", "realnvp_image_conditional",
                                  "maf_vector", "iaf_residual_conditional"])
def test_no_retracing_for_new_batch_sizes(name):
    flow = perturb(build(name))
    for batch in (1, 3, 8):
        x, context = data(flow, batch=batch)
        assert flow.log_prob(x, context).shape == [batch]
        assert flow.inverse(x, context).shape == x.shape
        sample_context = None if context is None else context[0]
        assert flow.sample(batch, seed=0, context=sample_context).shape == x.shape
    for endpoint in ("log_prob", "inverse", "sample"):
        assert flow._compiled_functions[endpoint].experimental_get_tracing_count() == 1


def test_sample_shapes_and_temperature():
    flow = perturb(build("nice_image"))
    assert flow.sample(3, seed=0).shape == [3, 4, 4, 2]
    np.testing.assert_array_equal(flow.sample(3, seed=4), flow.sample(3, seed=4))
    assert not np.allclose(flow.sample(3, seed=4), flow.sample(3, seed=5))
    # Temperature scales the base noise: near zero, every sample is the image of z = 0.
    cold = flow.sample(5, temperature=1e-6, seed=1).numpy()
    mode = flow.forward(np.zeros([1, 4, 4, 2], "float32")).numpy()
    np.testing.assert_allclose(cold, np.broadcast_to(mode, cold.shape), atol=1e-4)
    # A fresh flow is the identity, so its samples are exactly temperature * noise.
    fresh = build("realnvp_vector")
    np.testing.assert_allclose(fresh.sample(6, temperature=0.5, seed=2),
                               0.5 * fresh.sample(6, temperature=1.0, seed=2).numpy(),
                               rtol=1e-6, atol=1e-7)
    # NumPy scalars are numbers too.
    np.testing.assert_allclose(fresh.sample(6, temperature=np.float32(0.5), seed=np.int64(2)),
                               fresh.sample(6, temperature=0.5, seed=2))


def test_conditional_sample_with_shared_and_per_sample_context():
    flow = perturb(build("realnvp_vector_conditional"))
    context = np.random.default_rng(0).normal(size=[4, CONTEXT_SIZE]).astype("float32")
    shared = flow.sample(4, seed=1, context=context[0])
    per_sample = flow.sample(4, seed=1, context=context)
    assert shared.shape == per_sample.shape == [4, 4]
    np.testing.assert_allclose(shared[0], per_sample[0], atol=1e-6)
    np.testing.assert_allclose(
        flow.sample(4, seed=1, context=np.broadcast_to(context[:1], [4, CONTEXT_SIZE])),
        shared, atol=1e-6)


# -- training ----------------------------------------------------------------------------------


def _two_gaussians(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=[n, 2])
    centers = np.where(rng.random([n, 1]) < 0.5, [[2.0, 1.0]], [[-1.0, -2.0]])
    return (0.4 * z + centers).astype("float32")


@pytest.mark.slow
def test_short_fit_lowers_the_nll():
    flow = models.RealNVP([2], num_layers=4, hidden_units=[32, 32])
    flow.compile(optimizer=keras.optimizers.Adam(3e-3))
    train, test = _two_gaussians(1024, seed=0), _two_gaussians(512, seed=1)
    before_weights = [w.numpy().copy() for w in flow.trainable_weights]
    nll_before = -float(np.mean(flow.log_prob(test)))
    history = flow.fit(train, batch_size=128, epochs=4, verbose=0, validation_data=test)
    nll_after = -float(np.mean(flow.log_prob(test)))
    assert nll_after < nll_before - 1.0, (nll_before, nll_after)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert {"loss", "bits_per_dim", "val_loss"} <= set(history.history)
    np.testing.assert_allclose(history.history["val_loss"][-1], nll_after, rtol=1e-4)
    for before, weight in zip(before_weights, flow.trainable_weights, strict=True):
        assert not np.array_equal(before, weight.numpy()), f"{weight.path} never changed"


def test_fit_with_nan_raises_before_training():
    flow = build("realnvp_vector")
    flow.compile(optimizer="adam")
    x, _ = data(flow, batch=16)
    x[3, 1] = np.nan
    before = [w.copy() for w in flow.get_weights()]
    with pytest.raises(ValueError, match=r"x contains 1 NaN or Inf"):
        flow.fit(x, epochs=1, verbose=0)
    assert int(flow.optimizer.iterations.numpy()) == 0
    for old, new in zip(before, flow.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_mixed_precision_trains_with_float32_density():
    flow = models.RealNVP([4], num_layers=2, hidden_units=[8], dtype="mixed_float16")
    assert flow.conditioners[0].compute_dtype == "float16"
    x, _ = data(flow, batch=64)
    flow.compile(optimizer="adam")
    history = flow.fit(x, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    log_prob = flow.log_prob(x)
    assert log_prob.dtype == tf.float32 and np.all(np.isfinite(log_prob))


@pytest.mark.parametrize("build", [
    lambda: models.RealNVP([2], num_layers=2, hidden_units=[8], context_size=3),
    lambda: models.NICE([2], num_layers=2, hidden_units=[8], context_size=3),
    lambda: models.MAF([2], num_layers=2, hidden_units=[8], context_size=3),
    lambda: models.Glow([4, 4, 1], num_levels=1, num_steps=1, hidden_channels=4,
                        context_size=3),
], ids=["realnvp", "nice", "maf", "glow"])
def test_conditional_bijectors_know_their_context_size(build):
    flow = build()
    x = np.zeros([4, *flow.event_shape], "float32")
    with pytest.raises(ValueError, match=r"expects a context of shape \[4, 3\] .*got a "
                                         r"context of shape \[4, 5\]"):
        flow.distribution.log_prob(x, bijector_kwargs={"context": np.zeros([4, 5], "float32")})
