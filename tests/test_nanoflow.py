"""NanoFlow: the shared trunk and its embeddings, the four sharing variants, exact weight
counts, gradients, transformers, autoregressive steps over a shared MADE trunk,
serialization, export and a long flow on the digits."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import perturb

import tfp_flows as tff
from tfp_flows import bijectors, nets
from tfp_flows.testing import check_bijector, discover_trainable_variables

RNG = np.random.default_rng(0)
IMAGE = RNG.normal(size=[3, 4, 4, 2]).astype("float32")
VECTOR = RNG.normal(size=[5, 4]).astype("float32")


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def conv(kernel, c_in, c_out, bias=True):
    return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def dense(n_in, n_out, bias=True):
    return n_in * n_out + (n_out if bias else 0)


def conv_trunk(c_in, width, blocks, concat=None, bias=None):
    """(variables, parameters) of a `ConvTrunk`: input conv, blocks of 3x3 and 1x1 convs,
    an unbiased 3x3 conv of a concatenated embedding, an unbiased embedding -> biases map."""
    variables = 2 + 4 * blocks
    parameters = conv(3, c_in, width) + blocks * (conv(3, width, width) + conv(1, width, width))
    if concat:
        variables, parameters = variables + 1, parameters + conv(3, concat, width, bias=False)
    if bias:
        variables += 1
        parameters += dense(bias, (1 + 2 * blocks) * width, bias=False)
    return variables, parameters


def mlp_trunk(d_in, units, concat=None, bias=None):
    """(variables, parameters) of an `MLPTrunk`."""
    variables, parameters, width = 2 * len(units), 0, d_in
    for u in units:
        parameters, width = parameters + dense(width, u), u
    if concat:
        variables, parameters = variables + 1, parameters + dense(concat, units[0], bias=False)
    if bias:
        variables, parameters = variables + 1, parameters + dense(bias, sum(units), bias=False)
    return variables, parameters


def step_parts(width, outputs, kinds, embedding_size, concat_size, num_gates):
    """(variables, parameters) of a step's own conditioner parts: projection, embeddings."""
    variables, parameters = 2, dense(width, outputs)
    sizes = {"concat": concat_size, "bias": embedding_size, "gate": num_gates}
    for kind in kinds:
        variables, parameters = variables + 1, parameters + sizes[kind]
    return variables, parameters


def expected_counts(sharing, kinds, num_steps, trunk, step, glow_step):
    """The count formula: conditioners plus Glow's ActNorm and 1x1 kernel per step."""
    shared_parts = {"none": (num_steps, num_steps), "naive": (1, 1),
                    "decomposed": (1, num_steps), "nanoflow": (1, num_steps)}[sharing]
    trunks, projections = shared_parts
    return tuple(trunks * t + projections * s + num_steps * g
                 for t, s, g in zip(trunk, step, glow_step))


VARIANTS = [("none", None), ("naive", None), ("decomposed", None), ("nanoflow", "concat"),
            ("nanoflow", "bias"), ("nanoflow", "gate"), ("nanoflow", ["concat", "gate"]),
            ("nanoflow", ["concat", "bias", "gate"])]
VARIANT_IDS = ["none", "naive", "decomposed", "concat", "bias", "gate", "concat+gate", "all"]


def image_flow(sharing, embedding, num_steps=3, **kwargs):
    return tff.models.NanoFlow([4, 4, 2], num_levels=1, num_steps=num_steps, hidden_channels=4,
                               num_blocks=1, sharing=sharing, embedding=embedding,
                               embedding_channels=2, lu=False, **kwargs)


def vector_flow(sharing, embedding, num_steps=3, **kwargs):
    return tff.models.NanoFlow([4], num_steps=num_steps, hidden_units=[8, 6], sharing=sharing,
                               embedding=embedding, embedding_channels=3, lu=False, **kwargs)


def assert_every_weight_learns(flow, x):
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow(tf.identity(x)))
    grads = tape.gradient(loss, flow.trainable_weights)
    missing = [w.path for w, g in zip(flow.trainable_weights, grads, strict=True)
               if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    assert not missing


@pytest.mark.parametrize("sharing, embedding", VARIANTS, ids=VARIANT_IDS)
def test_image_weight_count_formula_identity_and_gradients(sharing, embedding):
    num_steps = 3
    flow = image_flow(sharing, embedding, num_steps)
    kinds = nets.embedding_kinds(embedding)
    # One level on [4, 4, 2]: steps on the squeezed [2, 2, 8], the trunk sees the kept 4
    # channels and the projection returns a shift and a log-scale for the other 4.
    trunk = conv_trunk(4, 4, 1, concat=2 if "concat" in kinds else None,
                       bias=2 if "bias" in kinds else None)
    step = step_parts(4, 8, kinds, embedding_size=2, concat_size=2 * 2 * 2, num_gates=3 * 4)
    glow_step = (2 + 1, 2 * 8 + 8 * 8)  # ActNorm log-scale and bias, plain 1x1 kernel
    variables, parameters = expected_counts(sharing, kinds, num_steps, trunk, step, glow_step)
    assert len(flow.trainable_weights) == variables
    assert sum(int(np.prod(w.shape)) for w in flow.trainable_weights) == parameters
    assert len(flow.trunks) == (num_steps if sharing == "none" else 1)
    assert len(flow.projections) == (1 if sharing == "naive" else num_steps)
    reached = discover_trainable_variables(flow.bijector)
    assert {id(v) for v in reached} == {id(v) for v in flow.trainable_weights}
    if sharing != "none":
        assert all(c.trunk is flow.trunks[0] for c in flow.conditioners)
    # A fresh flow is the identity in density (zero projections).
    expected = np.sum(-0.5 * IMAGE.astype("float64") ** 2 - 0.5 * np.log(2 * np.pi),
                      axis=(1, 2, 3))
    np.testing.assert_allclose(flow.log_prob(IMAGE), expected, rtol=1e-5)
    assert_every_weight_learns(perturb(flow, seed=1, scale=0.2, trainable_only=True), IMAGE)


@pytest.mark.parametrize("sharing, embedding", VARIANTS[:4] + VARIANTS[-1:],
                         ids=VARIANT_IDS[:4] + VARIANT_IDS[-1:])
def test_vector_weight_count_formula_and_gradients(sharing, embedding):
    num_steps = 3
    flow = vector_flow(sharing, embedding, num_steps)
    kinds = nets.embedding_kinds(embedding)
    trunk = mlp_trunk(2, [8, 6], concat=3 if "concat" in kinds else None,
                      bias=3 if "bias" in kinds else None)
    step = step_parts(6, 2 * 2, kinds, embedding_size=3, concat_size=3, num_gates=8 + 6)
    glow_step = (2 + 1, 2 * 4 + 4 * 4)
    variables, parameters = expected_counts(sharing, kinds, num_steps, trunk, step, glow_step)
    assert len(flow.trainable_weights) == variables
    assert sum(int(np.prod(w.shape)) for w in flow.trainable_weights) == parameters
    assert_every_weight_learns(perturb(flow, seed=2, scale=0.2, trainable_only=True), VECTOR)


def trainable_count(flow):
    return sum(int(np.prod(w.shape)) for w in flow.trainable_weights)


def test_shared_parameters_grow_by_the_per_step_parts_only():
    counts = {k: trainable_count(image_flow("nanoflow", "concat", num_steps=k)) for k in (2, 6)}
    per_step = (2 * 8 + 8 * 8) + dense(4, 8) + 2 * 2 * 2
    assert counts[6] - counts[2] == 4 * per_step
    independent = {k: trainable_count(image_flow("none", None, num_steps=k)) for k in (2, 6)}
    assert independent[6] - independent[2] == 4 * (per_step - 8 + conv_trunk(4, 4, 1)[1])


def test_multiscale_layout_has_one_trunk_per_level():
    flow = tff.models.NanoFlow([8, 8, 1], num_levels=2, num_steps=2, hidden_channels=4)
    assert [t.name for t in flow.trunks] == ["level_0_trunk", "level_1_trunk"]
    assert [c.trunk.name for c in flow.conditioners] == ["level_0_trunk"] * 2 + [
        "level_1_trunk"] * 2
    level_0 = flow.bijector.bijectors[-1]
    names = [b.name for b in level_0.bijectors]
    assert names[:4] == ["level_0_squeeze", "level_0_step_0_actnorm", "level_0_step_0_conv1x1",
                         "level_0_step_0_coupling"]
    assert names[-3:] == ["level_0_prior", "level_0_split", "level_0_unsqueeze"]
    couplings = [b for b in level_0.bijectors if isinstance(b, bijectors.Coupling)]
    assert [c.parity for c in couplings] == [0, 0, 0]  # the kept half is always the first
    assert isinstance(flow.priors[0], nets.StepProjection) and flow.priors[0].kernel_size == 3


# -- the shared trunk and its embeddings -------------------------------------------------------


def _conditioners(trunk, embedding, count=2, zero_init=False):
    projection = nets.StepProjection(3, zero_init=zero_init)
    return [nets.SharedTrunkConditioner(trunk, projection, embedding=embedding)
            for _ in range(count)]


@pytest.mark.parametrize("embedding", ["concat", "bias", "gate"])
def test_the_embedding_tells_the_steps_apart(embedding):
    channels = {"concat": {"concat_channels": 2}, "bias": {"bias_channels": 2}, "gate": {}}
    trunk = nets.ConvTrunk(4, 1, **channels[embedding])
    first, second = _conditioners(trunk, embedding)
    same_input = [np.asarray(c(IMAGE)) for c in (first, second)]
    if embedding == "gate":
        # Gates start at one: the same map until they learn.
        np.testing.assert_array_equal(np.exp(first.log_gate.numpy()), 1.0)
        np.testing.assert_array_equal(same_input[0], same_input[1])
        second.log_gate.assign(RNG.normal(size=second.log_gate.shape))
    else:
        assert not np.allclose(same_input[0], same_input[1])
        name = "embedding" if embedding == "concat" else "bias_embedding"
        getattr(second, name).assign(getattr(first, name))
        np.testing.assert_allclose(first(IMAGE), second(IMAGE), rtol=1e-6)
        getattr(second, name).assign(RNG.normal(size=getattr(second, name).shape))
    assert not np.allclose(first(IMAGE), second(IMAGE))


def _hidden_layers(trunk):
    """The trunk's own layers, input side first (no embedding layers)."""
    if isinstance(trunk, nets.MLPTrunk):
        return list(trunk.hidden_layers)
    return [trunk.input_conv, *(conv for block in trunk.block_convs for conv in block)]


def _copy_hidden_weights(source, target):
    for source_layer, target_layer in zip(_hidden_layers(source), _hidden_layers(target),
                                          strict=True):
        target_layer.set_weights(source_layer.get_weights())


@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_concat_embedding_is_concatenation_to_the_input(kind):
    """The trunk adds `conv_e(e_k)` once instead of convolving `[x, e_k]`: the same map."""
    x = IMAGE if kind == "conv" else VECTOR
    if kind == "conv":
        trunk, plain = nets.ConvTrunk(4, 1, concat_channels=3), nets.ConvTrunk(4, 1)
    else:
        trunk, plain = nets.MLPTrunk([8, 6], concat_channels=3), nets.MLPTrunk([8, 6])
    embedding = RNG.normal(size=[*x.shape[1:-1], 3]).astype("float32")
    features = trunk(x, embedding=embedding)
    concatenated = np.concatenate(
        [x, np.broadcast_to(embedding, [len(x), *embedding.shape])], axis=-1)
    plain.build(concatenated.shape)
    first, plain_first = _hidden_layers(trunk)[0], _hidden_layers(plain)[0]
    for source_layer, target_layer in zip(_hidden_layers(trunk)[1:], _hidden_layers(plain)[1:],
                                          strict=True):
        target_layer.set_weights(source_layer.get_weights())
    kernel = np.concatenate([first.kernel.numpy(), trunk.concat_layer.kernel.numpy()],
                            axis=-2)
    plain_first.set_weights([kernel, first.bias.numpy()])
    np.testing.assert_allclose(features, plain(concatenated), rtol=1e-5, atol=1e-5)


def test_gates_of_one_and_zero_biases_leave_the_trunk_unchanged():
    trunk = nets.ConvTrunk(4, 2, bias_channels=3)
    plain = nets.ConvTrunk(4, 2)
    trunk(IMAGE, bias_embedding=np.zeros([3], "float32"))
    plain.build(IMAGE.shape)
    _copy_hidden_weights(trunk, plain)
    assert trunk.num_gates == 5 * 4
    np.testing.assert_allclose(
        trunk(IMAGE, bias_embedding=np.zeros([3], "float32"), gates=np.ones([20], "float32")),
        plain(IMAGE), rtol=1e-6)


def test_shared_trunk_weights_are_tracked_once_and_all_learn():
    trunk = nets.MLPTrunk([8], concat_channels=2, bias_channels=3)
    steps = [nets.SharedTrunkConditioner(trunk, nets.StepProjection(4, zero_init=False),
                                         embedding=["concat", "bias", "gate"])
             for _ in range(5)]
    for step in steps:
        step(VECTOR)
    holder = keras.layers.Layer()
    holder.steps = steps
    # Trunk: hidden kernel and bias, concat kernel, bias projection; per step: projection
    # kernel and bias, concat and bias embeddings, log-gate.
    assert len(holder.trainable_weights) == 4 + 5 * 5
    assert sum(int(np.prod(w.shape)) for w in holder.trainable_weights) == (
        dense(4, 8) + dense(2, 8, bias=False) + dense(3, 8, bias=False)
        + 5 * (dense(8, 4) + 2 + 3 + 8))
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(step(VECTOR) ** 2) for step in steps)
    grads = tape.gradient(loss, holder.trainable_weights)
    assert all(g is not None and np.any(tf.convert_to_tensor(g).numpy()) for g in grads)


def test_layer_configs_round_trip():
    trunk = nets.ConvTrunk(4, 2, concat_channels=2, bias_channels=3, name="shared")
    conditioner = nets.SharedTrunkConditioner(trunk, nets.StepProjection(5, kernel_size=3),
                                              embedding=["bias", "concat"])
    conditioner(IMAGE)
    rebuilt = nets.SharedTrunkConditioner.from_config(conditioner.get_config())
    assert rebuilt.get_config() == conditioner.get_config()
    assert rebuilt.embedding_kinds == ("concat", "bias")
    assert rebuilt.trunk.get_config() == trunk.get_config()
    for layer in (nets.MLPTrunk([8, 4], bias_channels=2), nets.StepProjection(3)):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


# -- transformers, training and sampling -------------------------------------------------------


@pytest.mark.parametrize("transformer", [
    "additive", "affine", bijectors.RationalQuadraticSpline(num_bins=4, range=2.0),
    bijectors.LogisticMixtureCDF(num_components=2)], ids=["additive", "affine", "spline",
                                                          "logistic_mixture"])
def test_any_transformer_passes_the_test_kit(transformer):
    flow = vector_flow("nanoflow", ["bias", "gate"], num_steps=2, transformer=transformer)
    perturb(flow, seed=3, scale=0.3, trainable_only=True)
    check_bijector(flow.bijector, VECTOR, modes=("eager",))
    assert flow.get_config()["transformer"] == (
        transformer if isinstance(transformer, str)
        else keras.saving.serialize_keras_object(transformer))


def test_image_spline_flow_round_trips():
    flow = image_flow("nanoflow", "gate", num_steps=2,
                      transformer=bijectors.RationalQuadraticSpline(num_bins=3, range=2.0))
    perturb(flow, seed=4, scale=0.2, trainable_only=True)
    z = flow.inverse(IMAGE)
    assert not np.allclose(z, IMAGE, atol=1e-3)
    np.testing.assert_allclose(flow.forward(tf.identity(z)), IMAGE, atol=1e-4)


def test_long_flow_on_digits_builds_and_takes_a_fit_step():
    x_train, _ = tff.datasets.load_digits()
    # Uniformly dequantized levels in [0, 17).
    x = x_train[:32].astype("float32") + RNG.uniform(size=[32, 8, 8, 1]).astype("float32")
    # One level of 32 steps on [4, 4, 4] (two levels take twice as long to build and step).
    flow = tff.models.NanoFlow([8, 8, 1], num_levels=1, num_steps=32, hidden_channels=16,
                               num_bins=17)
    # Glow's 32 conditioners of the same width (a one-block conv ResNet from the kept 2
    # channels to a shift and a log-scale for the other 2) hold more than 3x the parameters
    # of this whole flow.
    glow_conditioners = 32 * (conv(3, 2, 16) + conv(3, 16, 16) + conv(1, 16, 16)
                              + conv(3, 16, 4))
    assert flow.count_params() < glow_conditioners / 3
    # Eagerly: tracing a 32-step training graph takes longer than the step.
    flow.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    before = [w.numpy() for p in flow.projections for w in p.trainable_weights]
    history = flow.fit(x, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [w.numpy() for p in flow.projections for w in p.trainable_weights]
    # Each step's projection learns (the shared trunk learns once they are not zero).
    assert all(np.any(b != a) for b, a in zip(before, after, strict=True))
    # Sampling (here eagerly, without tracing) maps noise to finite images.
    samples = flow.bijector.forward(tf.random.stateless_normal([4, 8, 8, 1], seed=[0, 1]))
    assert samples.shape == (4, 8, 8, 1) and np.all(np.isfinite(samples.numpy()))


# -- serialization and export ------------------------------------------------------------------


def test_keras_file_round_trip_keeps_the_sharing(tmp_path):
    flow = tff.models.NanoFlow([4, 4, 2], num_levels=2, num_steps=2, hidden_channels=4,
                               embedding=["concat", "gate"], embedding_channels=2,
                               transformer=bijectors.LogisticMixtureCDF(2), num_bins=5)
    perturb(flow, seed=5, scale=0.1, trainable_only=True)
    path = str(tmp_path / "nanoflow.keras")
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == flow.get_config()
    assert len(loaded.trainable_weights) == len(flow.trainable_weights)
    assert [c.trunk for c in loaded.conditioners] == [loaded.trunks[0]] * 2 + [
        loaded.trunks[1]] * 2
    x = RNG.integers(0, 5, size=[3, 4, 4, 2]).astype("float32") + 0.5
    np.testing.assert_allclose(loaded.log_prob(x), flow.log_prob(x), rtol=1e-5)


def test_affine_steps_take_glows_sigmoid_scale_and_old_configs_keep_exp():
    flow = tff.models.NanoFlow([4, 4, 2], num_levels=2, num_steps=2, hidden_channels=4)
    steps = [b for b in _members(flow.bijector) if isinstance(b, bijectors.Coupling)]
    assert {b.name: b.transformer for b in steps} == {
        **{f"level_{i}_step_{k}_coupling": bijectors.Affine(scale="sigmoid")
           for i in range(2) for k in range(2)},
        "level_0_prior": bijectors.Affine()}  # a split prior keeps the exp scale
    assert flow.get_config()["coupling_scale"] == "sigmoid"
    # A Transformer given as such is used as it is.
    spline = bijectors.RationalQuadraticSpline(num_bins=3)
    assert tff.models.NanoFlow([4], num_steps=2, hidden_units=[4],
                               transformer=spline)._transformer is spline
    old = perturb(tff.models.NanoFlow([4], num_steps=2, hidden_units=[4],
                                      coupling_scale="exp"), seed=2, scale=0.1)
    config = old.get_config()
    del config["coupling_scale"]  # saved before there was a choice
    loaded = tff.models.NanoFlow.from_config(config)
    assert loaded._transformer == bijectors.Affine(scale="exp")
    loaded.set_weights(old.get_weights())
    x = RNG.normal(size=[3, 4]).astype("float32")
    np.testing.assert_allclose(loaded.log_prob(x), old.log_prob(x), rtol=1e-6)


def _members(bijector):
    """The bijectors inside `bijector`: in chains, and in what a split keeps."""
    inner = getattr(bijector, "bijectors", None) or [getattr(bijector, "bijector", None)]
    return [found for member in filter(None, inner) for found in [member, *_members(member)]]


def test_saved_model_keeps_one_set_of_trunk_weights(tmp_path):
    flow = perturb(image_flow("nanoflow", ["concat", "bias"], num_steps=3), seed=6, scale=0.2,
                   trainable_only=True)
    path = flow.export(str(tmp_path / "nanoflow"))
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(reloaded.log_prob(IMAGE), flow.log_prob(IMAGE), rtol=1e-5)
    # Trunk weights once: as many variables as the model has, not three copies of the trunk.
    assert len(reloaded.trainable_variables) == len(flow.trainable_weights)
    assert sum(int(np.prod(v.shape)) for v in reloaded.trainable_variables) == \
        flow.count_params() - sum(int(np.prod(w.shape)) for w in flow.non_trainable_weights)
    np.testing.assert_allclose(
        reloaded.forward(reloaded.inverse(tf.constant(IMAGE))), IMAGE, atol=1e-4)


# -- autoregressive steps over a shared MADE trunk ---------------------------------------------


def ar_flow(sharing, embedding, num_steps=3, **kwargs):
    return vector_flow(sharing, embedding, num_steps, scheme="autoregressive", **kwargs)


def maf_steps(flow):
    return [b for b in flow.bijector.bijectors
            if isinstance(b, bijectors.MaskedAutoregressiveFlow)]


@pytest.mark.parametrize("sharing, embedding", VARIANTS[:4] + VARIANTS[-1:],
                         ids=VARIANT_IDS[:4] + VARIANT_IDS[-1:])
def test_autoregressive_weight_count_formula_identity_and_gradients(sharing, embedding):
    num_steps = 3
    flow = ar_flow(sharing, embedding, num_steps)
    kinds = nets.embedding_kinds(embedding)
    # The MADE trunk reads all 4 dimensions (its masks are constants, its kernels full
    # matrices); the masked projection gives a shift and a log-scale per dimension.
    trunk = mlp_trunk(4, [8, 6], concat=3 if "concat" in kinds else None,
                      bias=3 if "bias" in kinds else None)
    step = step_parts(6, 4 * 2, kinds, embedding_size=3, concat_size=3, num_gates=8 + 6)
    glow_step = (2 + 1, 2 * 4 + 4 * 4)
    variables, parameters = expected_counts(sharing, kinds, num_steps, trunk, step, glow_step)
    assert len(flow.trainable_weights) == variables
    assert sum(int(np.prod(w.shape)) for w in flow.trainable_weights) == parameters
    assert all(isinstance(t, nets.MADETrunk) for t in flow.trunks)
    assert all(isinstance(p, nets.MaskedStepProjection) for p in flow.projections)
    steps = maf_steps(flow)
    assert [s.made for s in steps] == flow.conditioners
    assert [s.name for s in steps] == [f"step_{k}_autoregressive" for k in range(num_steps)]
    reached = discover_trainable_variables(flow.bijector)
    assert {id(v) for v in reached} == {id(v) for v in flow.trainable_weights}
    expected = np.sum(-0.5 * VECTOR.astype("float64") ** 2 - 0.5 * np.log(2 * np.pi), axis=1)
    np.testing.assert_allclose(flow.log_prob(VECTOR), expected, rtol=1e-5)
    assert_every_weight_learns(perturb(flow, seed=7, scale=0.2, trainable_only=True), VECTOR)


def test_made_trunk_and_masked_projection_have_made_s_masks():
    kwargs = dict(ordering="random", hidden_degrees="random", seed=4)
    trunk = nets.MADETrunk(5, [7, 9], **kwargs)
    made = nets.MADE(5, 3, [7, 9], **kwargs)
    projection = nets.MaskedStepProjection(3, trunk.input_order, trunk.feature_degrees)
    np.testing.assert_array_equal(trunk.input_order, made.input_order)
    for ours, made_layer in zip(trunk.hidden_layers, made.hidden_layers, strict=True):
        np.testing.assert_array_equal(ours.mask, made_layer.mask)
    np.testing.assert_array_equal(projection.mask, made.output_layer.mask)


def _made_conditioner(kinds, ordering, seed=0, params_per_dim=3,
                      cls=nets.SharedTrunkConditioner):
    rng = np.random.default_rng(seed)
    trunk = nets.MADETrunk(4, [16, 16], concat_channels=2 if "concat" in kinds else None,
                           bias_channels=3 if "bias" in kinds else None, ordering=ordering)
    projection = nets.MaskedStepProjection(params_per_dim, trunk.input_order,
                                           trunk.feature_degrees, zero_init=False)
    conditioner = cls(trunk, projection, embedding=kinds or None)
    conditioner(VECTOR)
    for weight in conditioner.trainable_weights:  # gates and biases away from 1 and 0
        weight.assign(rng.normal(size=weight.shape))
    return conditioner


@pytest.mark.parametrize("kinds", [(), ("concat",), ("bias",), ("gate",),
                                   ("concat", "bias", "gate")], ids=str)
def test_made_trunk_with_masked_projection_is_autoregressive(kinds):
    order = [3, 1, 4, 2]
    conditioner = _made_conditioner(kinds, order)
    x = tf.constant(np.random.default_rng(1).normal(size=[64, 4]).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        params = conditioner(x)
    assert params.shape == (64, 4, 3)
    jacobian = tape.batch_jacobian(params, x).numpy()  # [batch, i, p, j]
    depends = np.any(jacobian != 0, axis=(0, 2))
    order = np.asarray(order)
    # Output i reads input j exactly when j comes before i in the order.
    np.testing.assert_array_equal(depends, order[None, :] < order[:, None])
    # The precomputed step terms give the same map.
    np.testing.assert_allclose(conditioner.precompute()(x), params, rtol=1e-6)
    # As parameter blocks (what an affine MaskedAutoregressiveFlow reads): the same values.
    for call in (conditioner, conditioner.precompute()):
        blocks = call(x, param_blocks=True)
        assert isinstance(blocks, tuple) and len(blocks) == 3
        for p, block in enumerate(blocks):
            np.testing.assert_allclose(block, params[..., p], rtol=1e-6, atol=1e-6)


class _TensorOnlyConditioner(nets.SharedTrunkConditioner):
    """Overrides `call` without `param_blocks`: a flow must hand it no such argument."""

    def call(self, inputs):
        return super().call(inputs)


class _TensorOnlyProjection(nets.MaskedStepProjection):
    """Overrides `call` without `param_blocks`: the conditioner splits its tensor instead."""

    def call(self, inputs):
        return super().call(inputs)


def test_a_projection_without_parameter_blocks_is_split_by_the_conditioner():
    trunk = nets.MADETrunk(4, [16])
    projection = _TensorOnlyProjection(2, trunk.input_order, trunk.feature_degrees,
                                       zero_init=False)
    conditioner = nets.SharedTrunkConditioner(trunk, projection)
    x = tf.constant(VECTOR)
    params = conditioner(x)
    for call in (conditioner, conditioner.precompute()):
        blocks = call(x, param_blocks=True)
        assert isinstance(blocks, tuple) and len(blocks) == 2
        for p, block in enumerate(blocks):
            np.testing.assert_allclose(block, params[..., p], rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(params)).max() > 0


def test_affine_steps_read_parameter_blocks_and_subclasses_keep_the_tensor():
    kinds, order = ("concat", "bias", "gate"), [3, 1, 4, 2]
    flows = [bijectors.MaskedAutoregressiveFlow(
        _made_conditioner(kinds, order, seed=2, params_per_dim=2, cls=cls), [4],
        transformer="affine") for cls in (nets.SharedTrunkConditioner, _TensorOnlyConditioner)]
    blocks, tensor = flows
    # Milder than _made_conditioner's unit-scale weights, so float32 sampling inverts well.
    blocks.made.set_weights([0.3 * w for w in blocks.made.get_weights()])
    tensor.made.set_weights(blocks.made.get_weights())
    x = tf.constant(VECTOR)
    z = blocks.inverse(x)
    assert not np.allclose(z, VECTOR, atol=1e-2)
    np.testing.assert_allclose(tensor.inverse(x), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tensor.inverse_log_det_jacobian(x, 1),
                               blocks.inverse_log_det_jacobian(x, 1), rtol=1e-5, atol=1e-5)
    # Sampling (the precomputed function, D passes) inverts it on both paths.
    for flow in flows:
        np.testing.assert_allclose(flow.forward(tf.identity(z)), VECTOR, atol=1e-4)


@pytest.mark.parametrize("transformer, modes", [
    ("affine", ("eager", "jit")), ("additive", ("eager",)),
    (bijectors.RationalQuadraticSpline(num_bins=4, range=2.0), ("eager",)),
    (bijectors.LogisticMixtureCDF(num_components=2), ("eager",))],
    ids=["affine", "additive", "spline", "logistic_mixture"])
def test_autoregressive_flow_passes_the_test_kit(transformer, modes):
    flow = ar_flow("nanoflow", ["concat", "bias", "gate"], num_steps=2,
                   transformer=transformer, dtype="float64")
    perturb(flow, seed=8, scale=0.3, trainable_only=True)
    # XLA compiles the sampling loop with the step terms computed ahead of it.
    check_bijector(flow.bijector, VECTOR[:3].astype("float64"), modes=modes)


def test_autoregressive_sampling_round_trips():
    flow = perturb(ar_flow("nanoflow", ["bias", "gate"]), seed=9, scale=0.3,
                   trainable_only=True)
    z = flow.inverse(VECTOR)
    assert not np.allclose(z, VECTOR, atol=1e-2)
    np.testing.assert_allclose(flow.forward(tf.identity(z)), VECTOR, atol=1e-5)
    samples = flow.sample(6, seed=1)
    assert samples.shape == (6, 4) and np.all(np.isfinite(samples.numpy()))
    np.testing.assert_allclose(flow.inverse(flow.forward(tf.identity(z))), z, atol=1e-5)


def test_sampling_computes_the_step_inputs_once_per_call():
    flow = perturb(ar_flow("nanoflow", ["concat", "gate"], num_steps=2), seed=10, scale=0.3,
                   trainable_only=True)
    calls = []
    for conditioner in flow.conditioners:
        original = conditioner.step_inputs
        conditioner.step_inputs = lambda original=original: calls.append(1) or original()
    noise = tf.constant(VECTOR)
    x = flow.bijector.forward(noise)  # eager: the while loop runs its D = 4 passes in Python
    assert len(calls) == 2  # once per step, not once per pass
    calls.clear()
    np.testing.assert_allclose(flow.bijector.inverse(tf.identity(x)), VECTOR, atol=1e-5)
    assert len(calls) == 2


def test_autoregressive_keras_file_round_trip(tmp_path):
    flow = ar_flow("nanoflow", ["concat", "gate"], num_steps=2,
                   transformer=bijectors.RationalQuadraticSpline(num_bins=3, range=2.0))
    perturb(flow, seed=11, scale=0.2, trainable_only=True)
    assert flow.get_config()["scheme"] == "autoregressive"
    path = str(tmp_path / "nanoflow_maf.keras")
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == flow.get_config()
    assert len(loaded.trainable_weights) == len(flow.trainable_weights)
    assert [c.trunk for c in loaded.conditioners] == [loaded.trunks[0]] * 2
    np.testing.assert_allclose(loaded.log_prob(VECTOR), flow.log_prob(VECTOR), rtol=1e-5)
    z = tf.constant(np.random.default_rng(2).normal(size=[3, 4]).astype("float32"))
    np.testing.assert_allclose(loaded.forward(z), flow.forward(z), rtol=1e-5, atol=1e-6)


def test_made_layer_configs_round_trip():
    conditioner = _made_conditioner(("concat", "bias"), "random")
    rebuilt = nets.SharedTrunkConditioner.from_config(conditioner.get_config())
    assert rebuilt.get_config() == conditioner.get_config()
    assert (rebuilt.event_size, rebuilt.params_per_dim) == (4, 3)
    np.testing.assert_array_equal(rebuilt.trunk.input_order, conditioner.trunk.input_order)
    rebuilt(VECTOR)
    rebuilt.set_weights(conditioner.get_weights())
    np.testing.assert_allclose(rebuilt(VECTOR), conditioner(VECTOR), rtol=1e-6)
    for layer in (nets.MADETrunk(3, [5], ordering=[2, 3, 1], hidden_degrees="random"),
                  nets.MaskedStepProjection(2, [2, 3, 1], [1, 2, 1])):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_invalid_made_layer_arguments():
    trunk = nets.MADETrunk(3, [4])
    masked = nets.MaskedStepProjection(2, trunk.input_order, trunk.feature_degrees)
    with pytest.raises(ValueError, match=r"a MADETrunk needs a MaskedStepProjection"):
        nets.SharedTrunkConditioner(trunk, nets.StepProjection(6))
    with pytest.raises(ValueError, match=r"a MADETrunk needs a MaskedStepProjection"):
        nets.SharedTrunkConditioner(nets.MLPTrunk([4]), masked)
    with pytest.raises(ValueError, match=r"is masked for input_order \[3, 2, 1\]"):
        nets.SharedTrunkConditioner(
            trunk, nets.MaskedStepProjection(2, [3, 2, 1], trunk.feature_degrees))
    plain = nets.SharedTrunkConditioner(nets.MLPTrunk([4]), nets.StepProjection(2))
    assert not hasattr(plain, "event_size") and not hasattr(plain, "params_per_dim")
    conditioner = nets.SharedTrunkConditioner(trunk, masked)
    with pytest.raises(RuntimeError, match=r"call it once before precompute"):
        conditioner.precompute()
    with pytest.raises(ValueError, match=r"expects inputs \[\.\.\., 3\], got shape \[2, 4\]"):
        conditioner(np.zeros([2, 4], "float32"))
    with pytest.raises(ValueError, match=r"needs a MADE with params_per_dim=8"):
        bijectors.MaskedAutoregressiveFlow(
            conditioner, [3], transformer=bijectors.RationalQuadraticSpline(num_bins=3))
    with pytest.raises(ValueError, match=r"made has event_size 3 but event_shape is \[4\]"):
        bijectors.MaskedAutoregressiveFlow(conditioner, [4])
    for kwargs, error, match in [
            (dict(ordering="up"), ValueError, r"ordering must be one of"),
            (dict(ordering=[1, 1, 2]), ValueError, r"permutation of 1..3"),
            (dict(hidden_degrees="left"), ValueError, r"hidden_degrees must be one of"),
            (dict(event_size=0), ValueError, r"event_size must be a positive int, got 0"),
            (dict(seed="0"), TypeError, r"seed must be an int")]:
        with pytest.raises(error, match=match):
            nets.MADETrunk(**{"event_size": 3, "hidden_units": [4], **kwargs})
    for args, error, match in [
            ((2, [1, 3], [1]), ValueError, r"input_order must be a permutation of 1..2"),
            ((2, "left-to-right", [1]), TypeError, r"input_order must be a list of ints"),
            ((2, [1, 2], [1, 2]), ValueError, r"feature_degrees must lie in 0..1"),
            ((2, [1, 2], []), ValueError, r"feature_degrees must not be empty"),
            ((0, [1, 2], [1]), ValueError, r"params_per_dim must be a positive int")]:
        with pytest.raises(error, match=match):
            nets.MaskedStepProjection(*args)
    with pytest.raises(ValueError, match=r"reads 1 features, got shape \[2, 3\]"):
        nets.MaskedStepProjection(2, [1, 2], [1])(np.zeros([2, 3], "float32"))


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(event_shape=[6, 6, 1]), ValueError, r"divisible by 4"),
    (dict(event_shape=[1]), ValueError, r"D >= 2"),
    (dict(sharing="full"), ValueError, r"sharing must be one of"),
    (dict(sharing="decomposed", embedding="concat"), ValueError,
     r"embedding applies to sharing='nanoflow' only"),
    (dict(embedding="film"), ValueError, r"embedding must be one of"),
    (dict(embedding=["gate", "gate"]), ValueError, r"distinct kinds"),
    (dict(embedding=3), TypeError, r"embedding must be None"),
    (dict(num_steps=0), ValueError, r"num_steps must be a positive int, got 0"),
    (dict(num_steps=2.0), TypeError, r"num_steps must be a positive int"),
    (dict(embedding_channels=0), ValueError, r"embedding_channels"),
    (dict(transformer="quadratic"), ValueError, r"transformer must be one of"),
    (dict(transformer=3), TypeError, r"transformer must be"),
    (dict(lu="yes"), TypeError, r"lu must be a bool"),
    (dict(context_size=2), ValueError, r"no conditional form"),
    (dict(scheme="autoregressive"), ValueError,
     r"scheme='autoregressive' models vectors \(event_shape \[D\]\), got event_shape "
     r"\[8, 8, 1\]"),
    (dict(scheme="masked"), ValueError, r"scheme must be one of 'coupling', 'autoregressive'"),
    (dict(coupling_scale="tanh"), ValueError,
     r"coupling_scale must be one of 'exp', 'sigmoid'; got 'tanh'"),
])
def test_invalid_arguments(kwargs, error, match):
    event_shape = kwargs.pop("event_shape", [8, 8, 1])
    with pytest.raises(error, match=match):
        tff.models.NanoFlow(event_shape, num_steps=kwargs.pop("num_steps", 1),
                            hidden_channels=4, **kwargs)


def test_invalid_layer_arguments():
    plain = nets.ConvTrunk(4)
    with pytest.raises(ValueError, match=r"a 'concat' embedding needs a trunk with "
                                         r"concat_channels"):
        nets.SharedTrunkConditioner(plain, nets.StepProjection(2), embedding="concat")
    with pytest.raises(ValueError, match=r"bias_channels"):
        nets.SharedTrunkConditioner(nets.ConvTrunk(4, bias_channels=2), nets.StepProjection(2))
    with pytest.raises(TypeError, match=r"trunk must be a tfp_flows.nets.ConvTrunk"):
        nets.SharedTrunkConditioner(nets.ConvResNet(4, 1, 2), nets.StepProjection(2))
    with pytest.raises(TypeError, match=r"projection must be a keras.layers.Layer"):
        nets.SharedTrunkConditioner(plain, "dense")
    with pytest.raises(ValueError, match=r"kernel_size must be odd, got 2"):
        nets.StepProjection(2, kernel_size=2)
    with pytest.raises(ValueError, match=r"hidden_channels must be a positive int, got 0"):
        nets.ConvTrunk(0)
    with pytest.raises(ValueError, match=r"concat_channels=2 and needs embedding, got none"):
        nets.ConvTrunk(4, concat_channels=2)(IMAGE)
    with pytest.raises(ValueError, match=r"takes gates of shape \[12\]"):
        plain(IMAGE, gates=np.ones([5], "float32"))
