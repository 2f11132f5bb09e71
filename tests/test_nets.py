"""Conditioner layers: shapes, zero-initialised outputs, config and serialization round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import nets
from tfp_flows.nets import conv_resnet

RNG = np.random.default_rng(0)
VECTOR = RNG.normal(size=[3, 4]).astype("float32")
IMAGE = RNG.normal(size=[2, 4, 4, 2]).astype("float32")
CONTEXT = {3: RNG.normal(size=[3, 5]).astype("float32"),
           2: RNG.normal(size=[2, 5]).astype("float32")}

LAYERS = {
    "mlp": (lambda **kw: nets.MLP([8, 8], 6, **kw), VECTOR, [3, 6]),
    "residual_mlp": (lambda **kw: nets.ResidualMLP(8, 2, 6, **kw), VECTOR, [3, 6]),
    "conv_resnet": (lambda **kw: nets.ConvResNet(8, 1, 6, **kw), IMAGE, [2, 4, 4, 6]),
}


@pytest.mark.parametrize("make", [lambda **kw: nets.GlowConvNet(32, 3, **kw),
                                  lambda **kw: nets.ConvResNet(32, 1, 3, **kw)],
                         ids=["glow_net", "conv_resnet"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed_float16"])
@pytest.mark.parametrize("size", [14, 20])
def test_two_stage_output_convolution_is_the_plain_one(make, dtype, size, monkeypatch):
    """On images of 14x14 or more the thin 3x3 output convolution runs as a 1x1 convolution
    to each tap's contribution plus a fixed summing convolution: the network gives the
    values and gradients (inputs and every weight) of the plain convolution."""
    net = make(zero_init=False, dtype=dtype)
    compute = net.compute_dtype
    x = tf.constant(RNG.normal(size=[2, size, size, 2]), compute)
    net(x)
    assert size * size >= conv_resnet.TWO_STAGE_MIN_PIXELS and 9 * 3 < 32
    net.output_conv.bias.assign(RNG.normal(size=[3]))
    results = []
    for min_pixels in (conv_resnet.TWO_STAGE_MIN_PIXELS, 10**9):  # two stages, then plain
        monkeypatch.setattr(conv_resnet, "TWO_STAGE_MIN_PIXELS", min_pixels)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = net(x)
            assert out.dtype == compute
            # Weighted so every output pixel and channel has its own gradient.
            weight = tf.reshape(tf.range(tf.size(out)) % 7, out.shape)
            loss = tf.reduce_sum(tf.cast(out, "float64") * tf.cast(weight, "float64"))
        grads = tape.gradient(loss, [x, *net.trainable_weights])
        results.append([np.asarray(t, "float64") for t in (out, *grads)])
    fast, plain = results
    assert not np.array_equal(fast[0], plain[0])  # the two stages did run: other rounding
    tol = {"float32": 1e-4, "float64": 1e-10, "mixed_float16": 2e-2}[dtype]
    for a, b in zip(fast, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
    assert np.abs(plain[0]).max() > 0


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("with_context", [False, True])
def test_output_shape_and_zero_init(name, with_context):
    make, x, shape = LAYERS[name]
    context = {"context": CONTEXT[x.shape[0]]} if with_context else {}
    out = make()(x, **context)
    assert list(out.shape) == shape
    np.testing.assert_array_equal(out, 0.0)  # zero-initialised output layer
    out = make(zero_init=False)(x, **context)
    assert np.abs(np.asarray(out)).max() > 0


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_round_trip_gives_the_same_outputs(name):
    make, x, _ = LAYERS[name]
    layer = make(zero_init=False, activation="tanh") if name == "mlp" else make(zero_init=False)
    expected = layer(x)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), expected, rtol=1e-6)


def test_log_scale_layer():
    layer = nets.LogScale([4])
    np.testing.assert_array_equal(layer(VECTOR), np.zeros(4))
    assert len(layer.trainable_weights) == 1
    clone = nets.LogScale.from_config(layer.get_config())
    assert clone.shape == [4]


def test_dtype_float64():
    out = nets.MLP([8], 2, dtype="float64", zero_init=False)(VECTOR.astype("float64"))
    assert out.dtype.name == "float64"


@pytest.mark.parametrize("make, match", [
    (lambda: nets.MLP([], 2), "hidden_units"),
    (lambda: nets.MLP([8, 0], 2), r"hidden_units\[1\] must be a positive int, got 0"),
    (lambda: nets.MLP([8], 0), "output_units must be a positive int, got 0"),
    (lambda: nets.ResidualMLP(8, 0, 2), "num_blocks must be a positive int, got 0"),
    (lambda: nets.ConvResNet(0, 1, 2), "hidden_channels must be a positive int, got 0"),
    (lambda: nets.LogScale([2, -1]), r"got \[2, -1\]"),
])
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_non_int_argument_is_a_type_error():
    with pytest.raises(TypeError, match="output_units must be a positive int, got 2.5"):
        nets.MLP([8], 2.5)
