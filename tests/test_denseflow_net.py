"""The DenseFlow networks: Nystrom attention against exact attention, the coupling network
and the cross-unit noise parameters (shapes, weights, gradients, saving, dtypes)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import nets
from tfp_flows.nets.denseflow import _segment_means

RNG = np.random.default_rng(0)
BATCH, HEIGHT, WIDTH, CHANNELS = 2, 4, 4, 3
FILTERS, DEPTH, GROWTH, OUTPUTS = 8, 2, 4, 6
NOISE, FEATURES = 3, 5
IMAGE = RNG.normal(size=[BATCH, HEIGHT, WIDTH, CHANNELS]).astype("float32")
NOISE_IMAGE = RNG.normal(size=[BATCH, HEIGHT, WIDTH, FEATURES]).astype("float32")
VECTOR = RNG.normal(size=[BATCH, FEATURES]).astype("float32")


def make_net(**kwargs):
    options = {"filters": FILTERS, "depth": DEPTH, "growth": GROWTH,
               "output_channels": OUTPUTS, "zero_init": False, **kwargs}
    return nets.DenseAttentionNet(**options)


def _scalars(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def _assert_every_weight_learns(layer, inputs, last_layer):
    """Every trainable weight gets a gradient once the zero last layer has taken one step."""
    outputs = layer(inputs)
    targets = [RNG.normal(size=out.shape).astype("float32") for out in tf.nest.flatten(outputs)]
    weights = layer.trainable_weights
    last = [id(w) for w in last_layer.trainable_weights]

    def gradients():
        with tf.GradientTape() as tape:
            outputs = tf.nest.flatten(layer(inputs, training=True))
            loss = sum(tf.reduce_sum(out * target) for out, target in zip(outputs, targets))
        return [np.zeros(w.shape) if g is None else np.asarray(g)
                for w, g in zip(weights, tape.gradient(loss, weights))]

    # The zero last layer blocks the gradients of every other weight ...
    first = gradients()
    for weight, gradient in zip(weights, first):
        assert (np.abs(gradient).max() > 0) == (id(weight) in last), weight.path
    # ... until one gradient step moves it.
    for weight, gradient in zip(weights, first):
        if id(weight) in last:
            weight.assign(weight - 0.1 * gradient)
    for weight, gradient in zip(weights, gradients()):
        assert np.abs(gradient).max() > 0, weight.path


@pytest.fixture
def global_policy():
    yield keras.mixed_precision.set_dtype_policy
    keras.mixed_precision.set_dtype_policy("float32")


# -- NystromAttention ---------------------------------------------------------------------------


def _softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


def _reference(layer, x, landmarks=None):
    """The layer in NumPy: exact attention, or Nystrom with an exact pseudo-inverse."""
    qkv_kernel, qkv_bias, out_kernel, out_bias = layer.get_weights()
    batch, height, width, _ = x.shape
    positions, embed = height * width, layer.embed_dim
    tokens = x.reshape(batch, positions, -1) @ qkv_kernel + qkv_bias
    q, k, v = np.split(tokens, 3, axis=-1)
    q, k = q / embed**0.25, k / embed**0.25
    if landmarks is None:
        out = _softmax(q @ k.transpose(0, 2, 1)) @ v + v
    else:
        m = min(landmarks, positions)
        segment = np.arange(positions) * m // positions
        q_l = np.stack([q[:, segment == j].mean(axis=1) for j in range(m)], axis=1)
        k_l = np.stack([k[:, segment == j].mean(axis=1) for j in range(m)], axis=1)
        kernel_1 = _softmax(q @ k_l.transpose(0, 2, 1))
        kernel_2 = _softmax(q_l @ k_l.transpose(0, 2, 1))
        kernel_3 = _softmax(q_l @ k.transpose(0, 2, 1))
        out = kernel_1 @ np.linalg.pinv(kernel_2) @ kernel_3 @ v + v
    return out.reshape(batch, height, width, embed) @ out_kernel + out_bias


def _attention(embed=4, height=HEIGHT, width=WIDTH, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    layer = nets.NystromAttention(embed, dtype="float64", **kwargs)
    x = np.random.default_rng(seed).normal(size=[BATCH, height, width, CHANNELS])
    return layer, x, np.asarray(layer(x))


@pytest.mark.parametrize("height, width", [(4, 4), (2, 3)])
def test_nystrom_with_a_landmark_per_position_is_exact_attention(height, width):
    # landmarks == H * W: the landmarks are the queries and keys themselves, and
    # softmax(q k^T) pinv(softmax(q k^T)) softmax(q k^T) = softmax(q k^T).
    layer, x, out = _attention(height=height, width=width, landmarks=height * width,
                               iterations=30)
    expected = _reference(layer, x)
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)
    # With the default 6 iterations it agrees to the pseudo-inverse's accuracy (about 1% of
    # the output's scale here: a fresh layer's attention is nearly uniform, so its matrix is
    # ill-conditioned).
    default = nets.NystromAttention(4, landmarks=height * width, dtype="float64")
    default(x)
    default.set_weights(layer.get_weights())
    error = np.abs(np.asarray(default(x)) - expected).max()
    assert error < 3e-2 * np.abs(expected).max()


@pytest.mark.parametrize("height, width", [(3, 3), (2, 5), (3, 5), (1, 3), (1, 1)])
def test_nystrom_works_for_any_number_of_positions(height, width):
    # 9, 10 and 15 positions are not multiples of the 4 landmarks; 3 and 1 are fewer.
    layer, x, out = _attention(height=height, width=width, iterations=30)
    assert out.shape == (BATCH, height, width, CHANNELS)
    np.testing.assert_allclose(out, _reference(layer, x, landmarks=4), rtol=1e-8, atol=1e-8)
    if height * width <= 4:
        np.testing.assert_allclose(out, _reference(layer, x), rtol=1e-8, atol=1e-8)
    if height * width == 1:  # one position attends to itself: out = proj_out(2 v)
        qkv_kernel, qkv_bias, out_kernel, out_bias = layer.get_weights()
        value = (x.reshape(BATCH, -1) @ qkv_kernel + qkv_bias)[:, 2 * layer.embed_dim:]
        np.testing.assert_allclose(out.reshape(BATCH, -1), 2 * value @ out_kernel + out_bias,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("positions, landmarks", [(16, 4), (10, 4), (9, 4), (7, 7), (5, 3)])
def test_landmark_segments_are_consecutive_and_nearly_equal(positions, landmarks):
    averaging = np.asarray(_segment_means(positions, landmarks, "float64"))
    assert averaging.shape == (landmarks, positions)
    np.testing.assert_allclose(averaging.sum(axis=1), 1.0)
    members = averaging > 0
    assert (members.sum(axis=0) == 1).all()  # each position in exactly one segment
    segment = members.argmax(axis=0)
    assert (np.diff(segment) >= 0).all()  # consecutive
    sizes = members.sum(axis=1)
    assert sizes.min() >= positions // landmarks and sizes.max() - sizes.min() <= 1
    np.testing.assert_allclose(averaging[members], 1.0 / np.repeat(sizes, sizes))


def test_nystrom_weights_and_config():
    layer = nets.NystromAttention(4, landmarks=3, iterations=5, name="attention")
    out = layer(IMAGE)
    # qkv 3*12+12 = 48, proj_out 4*3+3 = 15.
    assert len(layer.trainable_weights) == 4 and _scalars(layer) == 48 + 15
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.get_config() == layer.get_config()
    assert (clone.landmarks, clone.iterations) == (3, 5)
    clone(IMAGE)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(IMAGE), out)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"embed_dim": 0}, ValueError, "embed_dim must be a positive int, got 0"),
    ({"embed_dim": 2.0}, TypeError, "embed_dim must be a positive int, got 2.0"),
    ({"landmarks": 0}, ValueError, "landmarks must be a positive int, got 0"),
    ({"iterations": None}, TypeError, "iterations must be a positive int, got None"),
])
def test_nystrom_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nets.NystromAttention(**{"embed_dim": 4, **kwargs})


def test_nystrom_invalid_inputs():
    with pytest.raises(ValueError, match=r"NystromAttention expects images.*got shape \[2, 5\]"):
        nets.NystromAttention(4)(VECTOR)
    layer = nets.NystromAttention(4)
    layer(IMAGE)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, CHANNELS])])
    def run(image):
        return layer(image)

    with pytest.raises(ValueError, match=r"needs the height and width.*\[None, None, None, 3\]"):
        run.get_concrete_function()


# -- DenseAttentionNet --------------------------------------------------------------------------


def test_output_shape_and_zero_initialised_output():
    out = make_net(zero_init=True)(IMAGE)
    assert list(out.shape) == [BATCH, HEIGHT, WIDTH, OUTPUTS]
    np.testing.assert_array_equal(out, 0.0)
    for attention in (True, False):
        out = make_net(attention=attention)(IMAGE)
        assert list(out.shape) == [BATCH, HEIGHT, WIDTH, OUTPUTS]
        assert np.abs(np.asarray(out)).max() > 0


@pytest.mark.parametrize("attention", [True, False])
def test_every_trainable_weight_gets_a_gradient(attention):
    net = make_net(zero_init=True, attention=attention, dropout=0.1)
    _assert_every_weight_learns(net, IMAGE, net.proj_out)
    names = [w.path.split("/", 1)[1] for w in net.trainable_weights]
    assert any(name.startswith("attention/") for name in names) == attention


def _expected_weights(attention, in_channels, filters, depth, growth, outputs):
    """(number of variables, number of scalars), counted from the architecture."""
    f, g = filters, growth
    conv1x1 = lambda cin, cout: (2, cin * cout + cout)  # kernel and bias
    conv3x3 = lambda cin, cout: (2, 9 * cin * cout + cout)
    parts = [conv1x1(in_channels, f), conv1x1(f + depth * g, 3 * f), conv1x1(f, outputs)]
    for i in range(depth):
        parts += [conv1x1(f + i * g, f + i * g), conv3x3(f + i * g, g)]
    fused = 2 * f if attention else f
    parts += [(2, 2 * fused), (1, fused * f)]  # layer norm, bias-free fusion
    if attention:
        parts += [conv1x1(f, 3 * (f // 2)), conv1x1(f // 2, f)]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


@pytest.mark.parametrize("attention", [True, False])
def test_exact_weight_counts(attention):
    net = make_net(attention=attention)
    net(IMAGE)
    variables, scalars = _expected_weights(attention, CHANNELS, FILTERS, DEPTH, GROWTH, OUTPUTS)
    assert (len(net.trainable_weights), _scalars(net)) == (variables, scalars)
    assert not net.non_trainable_weights
    # By hand, C_in=3, F=8, depth 2, growth 4, 6 outputs: proj_in 3*8+8 = 32; dense layer 0
    # 8*8+8 = 72 and 9*8*4+4 = 292, layer 1 12*12+12 = 156 and 9*12*4+4 = 436; gate
    # 16*24+24 = 408; proj_out 8*6+6 = 54. Attention (embed 4): qkv 8*12+12 = 108 and out
    # 4*8+8 = 40; norm 2*16 and fusion 16*8 (2*8 and 8*8 without attention).
    if attention:
        assert (variables, scalars) == (21, 32 + 72 + 292 + 156 + 436 + 408 + 54 + 148 + 32 + 128)
    else:
        assert (variables, scalars) == (17, 32 + 72 + 292 + 156 + 436 + 408 + 54 + 16 + 64)


def test_output_does_not_depend_on_the_batch_or_the_mode():
    # Layer norm instead of the original's batch norm: an example's parameters are the same
    # alone or in a batch, in training or in inference (without dropout).
    net = make_net()
    out = np.asarray(net(IMAGE))
    np.testing.assert_allclose(net(IMAGE[:1]), out[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net(IMAGE, training=True), out, rtol=1e-6, atol=1e-6)


def test_dropout_is_active_only_in_training():
    net = make_net(dropout=0.5)
    inference = np.asarray(net(IMAGE))
    np.testing.assert_array_equal(net(IMAGE, training=False), inference)
    assert np.abs(np.asarray(net(IMAGE, training=True)) - inference).max() > 1e-3


def test_attention_works_on_sizes_that_are_not_multiples_of_the_landmarks():
    for height, width in [(3, 3), (1, 1), (2, 5)]:
        image = RNG.normal(size=[BATCH, height, width, CHANNELS]).astype("float32")
        out = np.asarray(make_net(landmarks=4)(image))
        assert out.shape == (BATCH, height, width, OUTPUTS) and np.isfinite(out).all()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"filters": 0}, ValueError, "filters must be a positive int, got 0"),
    ({"filters": 1}, ValueError, "filters must be at least 2 with attention=True.*got 1"),
    ({"depth": 0}, ValueError, "depth must be a positive int, got 0"),
    ({"growth": 1.5}, TypeError, "growth must be a positive int, got 1.5"),
    ({"output_channels": "6"}, TypeError, "output_channels must be a positive int"),
    ({"attention": 1}, TypeError, "attention must be a bool, got 1"),
    ({"landmarks": 0}, ValueError, "landmarks must be a positive int, got 0"),
    ({"dropout": 1.0}, ValueError, r"dropout must be a number in \[0, 1\), got 1.0"),
    ({"dropout": "0.1"}, TypeError, "dropout must be a number"),
    ({"zero_init": "yes"}, TypeError, "zero_init must be a bool"),
])
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_net(**kwargs)


def test_one_filter_is_enough_without_attention():
    assert make_net(filters=1, attention=False)(IMAGE).shape[-1] == OUTPUTS


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"DenseAttentionNet expects images.*\[2, 4, 3\]"):
        make_net()(IMAGE[:, 0])


def test_config_round_trip_gives_identical_outputs():
    net = make_net(dropout=0.25, landmarks=3)
    expected = net(IMAGE)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(net))
    assert type(clone) is nets.DenseAttentionNet
    assert clone.get_config() == net.get_config()
    clone(IMAGE)
    clone.set_weights(net.get_weights())
    np.testing.assert_array_equal(clone(IMAGE), expected)


@pytest.mark.parametrize("attention", [True, False])
def test_keras_file_round_trip_gives_identical_outputs(tmp_path, attention):
    image = keras.Input([HEIGHT, WIDTH, CHANNELS])
    model = keras.Model(image, make_net(attention=attention, name="coupling_net")(image))
    expected = model(IMAGE)
    path = str(tmp_path / "net.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("coupling_net"), nets.DenseAttentionNet)
    np.testing.assert_array_equal(loaded(IMAGE), expected)


def test_jit_compile_matches_eager():
    net = make_net(dropout=0.5)
    expected = net(IMAGE)

    @tf.function(jit_compile=True)
    def run(image, training):
        return net(image, training=training)

    np.testing.assert_allclose(run(IMAGE, False), expected, rtol=1e-4, atol=1e-5)
    assert np.isfinite(run(IMAGE, True)).all()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, global_policy):
    reference = make_net()
    expected = np.asarray(reference(IMAGE))
    global_policy(policy)
    net = make_net()
    compute_dtype = keras.mixed_precision.Policy(policy).compute_dtype
    assert net(IMAGE).dtype == compute_dtype
    assert all(w.dtype == "float32" for w in net.weights)
    net.set_weights(reference.get_weights())
    out = np.asarray(net(IMAGE), "float32")
    np.testing.assert_allclose(out, expected, atol=0.05 * np.abs(expected).max())
    # Large inputs: the attention math and the layer norm run in float32.
    assert np.isfinite(np.asarray(net(IMAGE * 30), "float32")).all()


# -- CrossUnitParams ----------------------------------------------------------------------------


@pytest.mark.parametrize("inputs", [NOISE_IMAGE, VECTOR], ids=["image", "vector"])
def test_fresh_noise_parameters_are_zero(inputs):
    mu, log_sigma = nets.CrossUnitParams(NOISE)(inputs)
    assert list(mu.shape) == list(log_sigma.shape) == [*inputs.shape[:-1], NOISE]
    np.testing.assert_array_equal(mu, 0.0)
    np.testing.assert_array_equal(log_sigma, 0.0)


@pytest.mark.parametrize("inputs", [NOISE_IMAGE, VECTOR], ids=["image", "vector"])
def test_noise_parameters_formula(inputs):
    layer = nets.CrossUnitParams(NOISE, expansion=2, zero_init=False)
    mu, log_sigma = layer(inputs * 10)
    raw = np.asarray(layer.output_layer(keras.ops.relu(layer.hidden_layer(inputs * 10))))
    np.testing.assert_allclose(mu, raw[..., :NOISE], rtol=1e-6)
    np.testing.assert_allclose(log_sigma, 2 * np.tanh(raw[..., NOISE:] / 2), rtol=1e-5,
                               atol=1e-6)
    assert np.abs(np.asarray(log_sigma)).max() < 2


@pytest.mark.parametrize("inputs, expected", [
    # hidden 3x3 conv 9*5*20+20 = 920, output 20*6+6 = 126
    (NOISE_IMAGE, 920 + 126),
    # hidden 5*20+20 = 120, output 126
    (VECTOR, 120 + 126),
], ids=["image", "vector"])
def test_noise_parameters_weights_and_gradients(inputs, expected):
    layer = nets.CrossUnitParams(NOISE)
    layer(inputs)
    assert (len(layer.trainable_weights), _scalars(layer)) == (4, expected)
    _assert_every_weight_learns(layer, inputs, layer.output_layer)


@pytest.mark.parametrize("inputs", [NOISE_IMAGE, VECTOR], ids=["image", "vector"])
def test_noise_parameters_round_trips(tmp_path, inputs):
    layer = nets.CrossUnitParams(NOISE, expansion=3, zero_init=False, name="noise_params")
    expected = layer(inputs)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.get_config() == layer.get_config()
    clone(inputs)
    clone.set_weights(layer.get_weights())
    for got, want in zip(clone(inputs), expected):
        np.testing.assert_array_equal(got, want)
    x = keras.Input(inputs.shape[1:])
    model = keras.Model(x, layer(x))
    path = str(tmp_path / "noise.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("noise_params"), nets.CrossUnitParams)
    for got, want in zip(loaded(inputs), expected):
        np.testing.assert_array_equal(got, want)


def test_noise_parameters_mixed_precision(global_policy):
    global_policy("mixed_float16")
    mu, log_sigma = nets.CrossUnitParams(NOISE, zero_init=False)(NOISE_IMAGE * 100)
    assert mu.dtype == log_sigma.dtype == "float16"
    assert np.isfinite(np.asarray(mu, "float32")).all()
    assert np.abs(np.asarray(log_sigma, "float32")).max() <= 2


@pytest.mark.parametrize("kwargs, error, match", [
    ({"growth_rate": 0}, ValueError, "growth_rate must be a positive int, got 0"),
    ({"growth_rate": 2.0}, TypeError, "growth_rate must be a positive int, got 2.0"),
    ({"expansion": 0}, ValueError, "expansion must be a positive int, got 0"),
    ({"zero_init": 0}, TypeError, "zero_init must be a bool"),
])
def test_noise_parameters_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nets.CrossUnitParams(**{"growth_rate": NOISE, **kwargs})


def test_noise_parameters_invalid_inputs():
    with pytest.raises(ValueError, match=r"vectors \[batch, features\] or images.*\[2, 4, 5\]"):
        nets.CrossUnitParams(NOISE)(NOISE_IMAGE[:, 0])
