"""GatedConvAttentionNet, the Flow++ coupling network: shapes, weights, context, saving, dtypes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import nets

RNG = np.random.default_rng(0)
BATCH, HEIGHT, WIDTH, CHANNELS = 2, 4, 4, 3
FILTERS, OUTPUTS, CONTEXT_CHANNELS = 8, 6, 5
IMAGE = RNG.normal(size=[BATCH, HEIGHT, WIDTH, CHANNELS]).astype("float32")
CONTEXT = RNG.normal(size=[BATCH, CONTEXT_CHANNELS]).astype("float32")
CONTEXT_MAP = RNG.normal(size=[BATCH, HEIGHT * WIDTH * CONTEXT_CHANNELS]).astype("float32")


def make(**kwargs):
    options = {"filters": FILTERS, "blocks": 2, "output_channels": OUTPUTS, "heads": 2,
               "zero_init": False, **kwargs}
    return nets.GatedConvAttentionNet(**options)


def test_output_shape_and_zero_initialised_output():
    net = make(zero_init=True, context_channels=CONTEXT_CHANNELS)
    out = net(IMAGE, context=CONTEXT)
    assert list(out.shape) == [BATCH, HEIGHT, WIDTH, OUTPUTS]
    np.testing.assert_array_equal(out, 0.0)
    out = make()(IMAGE)
    assert list(out.shape) == [BATCH, HEIGHT, WIDTH, OUTPUTS]
    assert np.abs(np.asarray(out)).max() > 0


@pytest.mark.parametrize("context", [CONTEXT, CONTEXT_MAP], ids=["vector", "map"])
def test_every_trainable_weight_gets_a_gradient(context):
    net = make(context_channels=CONTEXT_CHANNELS)
    net(IMAGE, context=context)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(IMAGE, context=context, training=True) ** 2)
    grads = tape.gradient(loss, net.trainable_weights)
    paths = [weight.path for weight in net.trainable_weights]
    assert any("position_embedding" in p for p in paths)
    assert any("context" in p for p in paths) and any("query" in p for p in paths)
    for path, grad in zip(paths, grads):
        assert grad is not None and np.abs(np.asarray(grad)).max() > 0, path


def _expected_weights(attention, in_channels, filters, blocks, outputs, context_channels,
                      height, width):
    """(number of variables, number of scalars), counted from the architecture."""
    f = filters
    conv3x3 = lambda cin, cout: (2, 9 * cin * cout + cout)  # kernel and bias
    dense = lambda cin, cout: (2, cin * cout + cout)
    norm = (2, 2 * f)  # gamma and beta
    parts = [conv3x3(in_channels, f), conv3x3(f, outputs)]  # proj_in, proj_out
    for _ in range(blocks):
        parts += [conv3x3(2 * f, f), dense(2 * context_channels, f), dense(2 * f, 2 * f), norm]
        if attention:  # query, key, value, gate, norm
            parts += [dense(f, f)] * 3 + [dense(f, 2 * f), norm]
    if attention:
        parts.append((1, height * width * f))  # one positional embedding
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


@pytest.mark.parametrize("attention", [True, False])
def test_exact_weight_counts(attention):
    net = make(attention=attention, context_channels=CONTEXT_CHANNELS)
    net(IMAGE, context=CONTEXT)
    variables, scalars = _expected_weights(attention, CHANNELS, FILTERS, 2, OUTPUTS,
                                           CONTEXT_CHANNELS, HEIGHT, WIDTH)
    assert len(net.trainable_weights) == variables
    assert sum(int(np.prod(w.shape)) for w in net.trainable_weights) == scalars
    assert not net.non_trainable_weights
    # By hand, C_in=3, F=8, 2 blocks, 6 outputs, 5 context channels: proj_in 9*3*8+8 = 224,
    # proj_out 9*8*6+6 = 438; per block: conv 9*16*8+8 = 1160, context 10*8+8 = 88,
    # gate 16*16+16 = 272, norm 16; attention adds per block 3 * (8*8+8) + 8*16+16 + 16 = 376
    # (10 variables) and once the 4*4*8 = 128 positional embedding.
    if attention:
        assert (variables, scalars) == (41, 224 + 438 + 2 * (1160 + 88 + 272 + 16 + 376) + 128)
    else:
        assert (variables, scalars) == (20, 224 + 438 + 2 * (1160 + 88 + 272 + 16))
        names = [w.path.split("/", 1)[1] for w in net.trainable_weights]
        assert not any(part in name for name in names
                       for part in ("query", "attention", "position"))


def test_dropout_is_active_only_in_training():
    net = make(dropout=0.5)
    inference = net(IMAGE)
    np.testing.assert_array_equal(net(IMAGE, training=False), inference)
    training = net(IMAGE, training=True)
    assert np.abs(np.asarray(training) - np.asarray(inference)).max() > 1e-3


def test_vector_context_equals_the_same_context_as_a_flattened_map():
    net = make(context_channels=CONTEXT_CHANNELS)
    tiled = np.broadcast_to(CONTEXT[:, None, None, :],
                            [BATCH, HEIGHT, WIDTH, CONTEXT_CHANNELS]).reshape(BATCH, -1)
    from_vector = net(IMAGE, context=CONTEXT)
    np.testing.assert_allclose(net(IMAGE, context=tiled), from_vector, rtol=1e-5, atol=1e-6)
    # A map that differs across positions is read per position, not as the vector.
    assert np.abs(np.asarray(net(IMAGE, context=CONTEXT_MAP)) - from_vector).max() > 1e-4


@pytest.mark.parametrize("kwargs, error, match", [
    ({"filters": 0}, ValueError, "filters must be a positive int, got 0"),
    ({"filters": 2.5}, TypeError, "filters must be a positive int, got 2.5"),
    ({"blocks": 0}, ValueError, "blocks must be a positive int, got 0"),
    ({"output_channels": "6"}, TypeError, "output_channels must be a positive int"),
    ({"heads": 3}, ValueError, r"filters \(8\) must be divisible by heads \(3\)"),
    ({"heads": 0}, ValueError, "heads must be a positive int, got 0"),
    ({"dropout": 1.0}, ValueError, r"dropout must be a number in \[0, 1\), got 1.0"),
    ({"dropout": -0.1}, ValueError, "dropout must be a number"),
    ({"dropout": "0.1"}, TypeError, "dropout must be a number"),
    ({"attention": 1}, TypeError, "attention must be a bool, got 1"),
    ({"context_channels": 0}, ValueError, "context_channels must be a positive int or None"),
    ({"zero_init": "yes"}, TypeError, "zero_init must be a bool"),
])
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_heads_need_not_divide_filters_without_attention():
    assert make(heads=3, attention=False)(IMAGE).shape[-1] == OUTPUTS


def test_invalid_inputs():
    net = make()
    with pytest.raises(ValueError, match=r"got shape \[2, 4, 3\]"):
        net(IMAGE[:, 0])
    net(IMAGE)
    with pytest.raises(ValueError, match=r"built for 4x4 images, got inputs of shape \[2, 8, 4"):
        net(np.concatenate([IMAGE, IMAGE], axis=1))
    with pytest.raises(ValueError, match=r"context_channels=None.*shape \[2, 5\]"):
        net(IMAGE, context=CONTEXT)
    conditional = make(context_channels=CONTEXT_CHANNELS)
    with pytest.raises(ValueError, match="context_channels=5 and needs a context"):
        conditional(IMAGE)
    with pytest.raises(ValueError, match=r"\[batch, 5\].*\[batch, 80\].*got shape \[2, 7\] "
                                         r"for inputs of shape \[2, 4, 4, 3\]"):
        conditional(IMAGE, context=RNG.normal(size=[BATCH, 7]).astype("float32"))


def test_config_round_trip_gives_identical_outputs():
    net = make(context_channels=CONTEXT_CHANNELS, dropout=0.25, attention=True)
    expected = net(IMAGE, context=CONTEXT)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(net))
    assert type(clone) is nets.GatedConvAttentionNet
    assert clone.get_config() == net.get_config()
    clone(IMAGE, context=CONTEXT)
    clone.set_weights(net.get_weights())
    np.testing.assert_array_equal(clone(IMAGE, context=CONTEXT), expected)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    image = keras.Input([HEIGHT, WIDTH, CHANNELS])
    context = keras.Input([HEIGHT * WIDTH * CONTEXT_CHANNELS])
    net = make(context_channels=CONTEXT_CHANNELS, name="coupling_net")
    model = keras.Model([image, context], net(image, context=context))
    expected = model([IMAGE, CONTEXT_MAP])
    path = str(tmp_path / "net.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("coupling_net"), nets.GatedConvAttentionNet)
    np.testing.assert_array_equal(loaded([IMAGE, CONTEXT_MAP]), expected)


def test_jit_compile_matches_eager():
    net = make(context_channels=CONTEXT_CHANNELS, dropout=0.5)
    expected = net(IMAGE, context=CONTEXT)

    @tf.function(jit_compile=True)
    def run(image, context, training):
        return net(image, context=context, training=training)

    np.testing.assert_allclose(run(IMAGE, CONTEXT, False), expected, rtol=1e-4, atol=1e-5)
    assert np.isfinite(run(IMAGE, CONTEXT, True)).all()


@pytest.fixture
def global_policy():
    yield keras.mixed_precision.set_dtype_policy
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, global_policy):
    reference = make(context_channels=CONTEXT_CHANNELS)
    expected = reference(IMAGE, context=CONTEXT)
    global_policy(policy)
    net = make(context_channels=CONTEXT_CHANNELS)
    compute_dtype = keras.mixed_precision.Policy(policy).compute_dtype
    out = net(IMAGE, context=CONTEXT)
    assert out.dtype == compute_dtype
    assert all(w.dtype == "float32" for w in net.weights)
    net.set_weights(reference.get_weights())
    out = np.asarray(net(IMAGE, context=CONTEXT), "float32")
    np.testing.assert_allclose(out, expected, atol=0.05 * np.abs(expected).max())
    # Large inputs: layer norms and softmax run in float32, so nothing overflows.
    assert np.isfinite(np.asarray(net(IMAGE * 1e3, context=CONTEXT * 1e3), "float32")).all()
