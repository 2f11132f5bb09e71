"""GlowConvNet, Glow's coupling network: shapes, exact weights, in-network ActNorm, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import nets

RNG = np.random.default_rng(0)
BATCH, HEIGHT, WIDTH, CHANNELS = 4, 4, 4, 3
HIDDEN, OUTPUTS, CONTEXT_SIZE = 8, 6, 5
IMAGE = (RNG.normal(size=[BATCH, HEIGHT, WIDTH, CHANNELS]) * 3.0 + 1.0).astype("float32")
CONTEXT = RNG.normal(size=[BATCH, CONTEXT_SIZE]).astype("float32")


def make(**kwargs):
    return nets.GlowConvNet(**{"hidden_channels": HIDDEN, "output_channels": OUTPUTS,
                               "zero_init": False, **kwargs})


def actnorms(net):
    return [net.input_actnorm, net.hidden_actnorm]


@pytest.mark.parametrize("actnorm", [True, False])
@pytest.mark.parametrize("context", [None, CONTEXT], ids=["no_context", "context"])
def test_output_shape_and_zero_initialised_output(actnorm, context):
    out = make(zero_init=True, actnorm=actnorm)(IMAGE, context=context)
    assert list(out.shape) == [BATCH, HEIGHT, WIDTH, OUTPUTS]
    np.testing.assert_array_equal(out, 0.0)
    out = make(actnorm=actnorm)(IMAGE, context=context)
    assert np.abs(np.asarray(out)).max() > 0


@pytest.mark.parametrize("actnorm", [True, False])
@pytest.mark.parametrize("context_size", [None, CONTEXT_SIZE])
def test_exact_weight_counts(actnorm, context_size):
    net = make(actnorm=actnorm)
    net(IMAGE, context=None if context_size is None else CONTEXT)
    c_in = CHANNELS + (context_size or 0)
    if actnorm:
        # 3x3 kernel, ActNorm (log_scale, bias), 1x1 kernel, ActNorm, output kernel and bias:
        # no bias in the hidden convolutions.
        variables = 1 + 2 + 1 + 2 + 2
        scalars = 9 * c_in * HIDDEN + 2 * HIDDEN + HIDDEN * HIDDEN + 2 * HIDDEN \
            + 9 * HIDDEN * OUTPUTS + OUTPUTS
        # The two ActNorms' "initialized" flags.
        assert [w.shape for w in net.non_trainable_weights] == [(), ()]
    else:
        variables = 2 + 2 + 2
        scalars = 9 * c_in * HIDDEN + HIDDEN + HIDDEN * HIDDEN + HIDDEN \
            + 9 * HIDDEN * OUTPUTS + OUTPUTS
        assert not net.non_trainable_weights
    assert len(net.trainable_weights) == variables
    assert sum(int(np.prod(w.shape)) for w in net.trainable_weights) == scalars
    # By hand, C_in=3, 8 hidden, 6 outputs, ActNorm: 216 + 16 + 64 + 16 + 432 + 6.
    if actnorm and context_size is None:
        assert scalars == 750


def _normalized_hidden(net, x):
    """The two hidden activations after their ActNorm, before the ReLU."""
    hidden = net.input_conv(x)
    log_scale, bias = net.input_actnorm(hidden)
    first = (hidden + bias) * tf.exp(log_scale)
    hidden = net.hidden_conv(tf.nn.relu(first))
    log_scale, bias = net.hidden_actnorm(hidden)
    return first, (hidden + bias) * tf.exp(log_scale)


def test_actnorms_initialise_from_the_first_training_batch_only():
    net = make()
    net(IMAGE)  # no `training`: never initialises
    net(IMAGE, training=False)
    assert [float(a.initialized.numpy()) for a in actnorms(net)] == [0.0, 0.0]
    np.testing.assert_array_equal(net.input_actnorm.bias.numpy(), 0.0)
    net(IMAGE, training=True)
    assert [float(a.initialized.numpy()) for a in actnorms(net)] == [1.0, 1.0]
    # That batch comes out of each hidden convolution with zero mean and unit variance per
    # channel (the second from the already normalised first).
    for hidden in _normalized_hidden(net, IMAGE):
        flat = hidden.numpy().reshape(-1, HIDDEN)
        np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(flat.std(0), 1.0, rtol=1e-3)
    values = [w.numpy() for w in net.weights]
    net(IMAGE[::-1] * 2.0 + 5.0, training=True)  # initialised: nothing changes
    for before, weight in zip(values, net.weights):
        np.testing.assert_array_equal(weight.numpy(), before)


def test_actnorms_initialise_in_a_compiled_training_call():
    net = make()
    net(IMAGE)
    step = tf.function(lambda x: net(x, training=True), jit_compile=True)
    eager_twin = make()
    eager_twin(IMAGE)
    eager_twin.set_weights(net.get_weights())
    np.testing.assert_allclose(step(IMAGE), eager_twin(IMAGE, training=True), rtol=1e-4,
                               atol=1e-5)
    assert [float(a.initialized.numpy()) for a in actnorms(net)] == [1.0, 1.0]
    np.testing.assert_allclose(net.hidden_actnorm.log_scale.numpy(),
                               eager_twin.hidden_actnorm.log_scale.numpy(), rtol=1e-4)


@pytest.mark.parametrize("actnorm", [True, False])
def test_every_trainable_weight_gets_a_gradient(actnorm):
    net = make(actnorm=actnorm)
    net(IMAGE, context=CONTEXT, training=True)  # initialises the ActNorms
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(IMAGE, context=CONTEXT, training=True) ** 2)
    grads = tape.gradient(loss, net.trainable_weights)
    for weight, grad in zip(net.trainable_weights, grads):
        assert grad is not None and np.abs(np.asarray(grad)).max() > 0, weight.path


@pytest.mark.parametrize("actnorm", [True, False])
def test_config_round_trip_gives_the_same_outputs(actnorm):
    net = make(actnorm=actnorm)
    net(IMAGE, training=True)
    expected = net(IMAGE)
    config = keras.saving.serialize_keras_object(net)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is nets.GlowConvNet
    assert clone.get_config() == net.get_config()
    assert clone.get_config()["actnorm"] is actnorm
    clone(IMAGE)
    clone.set_weights(net.get_weights())
    np.testing.assert_allclose(clone(IMAGE), expected, rtol=1e-6)
    if actnorm:  # the initialised flags travel with the weights: no re-initialisation
        clone(IMAGE * 3.0, training=True)
        np.testing.assert_allclose(clone(IMAGE), expected, rtol=1e-6)


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input([HEIGHT, WIDTH, CHANNELS])
    model = keras.Model(inputs, make()(inputs))
    model(IMAGE, training=True)
    path = str(tmp_path / "net.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(IMAGE), model(IMAGE), rtol=1e-6)
    net = next(layer for layer in loaded.layers if isinstance(layer, nets.GlowConvNet))
    assert [float(a.initialized.numpy()) for a in actnorms(net)] == [1.0, 1.0]


def test_float64():
    net = make(dtype="float64")
    out = net(IMAGE.astype("float64"), context=CONTEXT.astype("float64"), training=True)
    assert out.dtype == tf.float64
    assert all(w.dtype == "float64" for w in net.trainable_weights)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(hidden_channels=0), ValueError, "hidden_channels must be a positive int, got 0"),
    (dict(output_channels=2.5), TypeError, "output_channels must be a positive int, got 2.5"),
])
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)
