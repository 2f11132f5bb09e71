"""Conditioner layers: shapes, zero-initialised outputs, config and serialization round trips."""

import keras
import numpy as np
import pytest

from tfp_flows import nets

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
