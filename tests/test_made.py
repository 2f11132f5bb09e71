"""MADE: the autoregressive property, read off the Jacobian, for every ordering."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows.nets import MADE

D = 5
ORDERINGS = ["left-to-right", "right-to-left", "random", [3, 1, 5, 2, 4]]


def _jacobians(made, x, context=None):
    """d params[b, i, p] / d x[b, j] -> [batch, D, P, D]; and w.r.t. the context."""
    x = tf.constant(x)
    context = None if context is None else tf.constant(context)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if context is not None:
            tape.watch(context)
        params = made(x, context=context)
    by_x = tape.batch_jacobian(params, x).numpy()
    by_context = None if context is None else tape.batch_jacobian(params, context).numpy()
    return params.numpy(), by_x, by_context


def _allowed(order):
    """allowed[i, j]: output i may depend on input j (j comes strictly before i)."""
    order = np.asarray(order)
    return order[None, :] < order[:, None]


@pytest.mark.parametrize("ordering", ORDERINGS, ids=str)
@pytest.mark.parametrize("num_blocks, hidden_degrees", [(0, "equal"), (2, "equal"),
                                                       (0, "random")])
@pytest.mark.parametrize("context_size", [None, 3])
def test_output_i_depends_exactly_on_the_inputs_before_i(ordering, num_blocks,
                                                         hidden_degrees, context_size):
    # tanh: no dead units, so every connection the masks allow shows in the Jacobian.
    made = MADE(D, params_per_dim=2, hidden_units=[64] if num_blocks else [64, 64],
                ordering=ordering, hidden_degrees=hidden_degrees, num_blocks=num_blocks,
                context_size=context_size, activation="tanh", zero_init=False, seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=[4, D]).astype("float32")
    context = None if context_size is None else rng.normal(size=[4, context_size]).astype(
        "float32")
    params, by_x, by_context = _jacobians(made, x, context)
    assert params.shape == (4, D, 2)
    if not isinstance(ordering, str):
        np.testing.assert_array_equal(made.input_order, ordering)
    allowed = _allowed(made.input_order)
    dependence = np.abs(by_x).max(axis=(0, 2))  # [D outputs, D inputs]
    # Never on an input at or after i in the order: exactly zero, not just small.
    assert np.all(dependence[~allowed] == 0.0), dependence
    if hidden_degrees == "equal":
        # ...and on every input before it (the masks are not simply all zero).
        assert np.all(dependence[allowed] > 0.0), dependence
    else:
        assert np.mean(dependence[allowed] > 0.0) > 0.5
    if context_size is not None:
        # The context is unmasked: every dimension, the first in the order too, sees it.
        assert np.all(np.abs(by_context).max(axis=(0, 2, 3)) > 0.0)


def test_orderings():
    assert MADE(4, 1, [8]).input_order.tolist() == [1, 2, 3, 4]
    assert MADE(4, 1, [8], ordering="right-to-left").input_order.tolist() == [4, 3, 2, 1]
    random = MADE(6, 1, [8], ordering="random", seed=1).input_order
    assert sorted(random.tolist()) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(random, MADE(6, 1, [8], ordering="random", seed=1).input_order)
    assert not np.array_equal(random, MADE(6, 1, [8], ordering="random", seed=2).input_order)


def test_masks_are_constants_not_weights():
    made = MADE(D, 2, [16, 16], context_size=2)
    made(np.zeros([1, D], "float32"), context=np.zeros([1, 2], "float32"))
    # kernel + bias per masked layer (2 hidden, 1 output), two context kernels.
    assert len(made.trainable_weights) == 3 * 2 + 2
    assert len(made.non_trainable_weights) == 0


def test_zero_init_starts_at_zero_and_the_first_dimension_has_only_a_bias():
    made = MADE(D, 3, [16])
    x = np.random.default_rng(0).normal(size=[2, D]).astype("float32")
    np.testing.assert_array_equal(made(x).numpy(), np.zeros([2, D, 3]))
    trained = MADE(D, 3, [16], zero_init=False)
    params = trained(x).numpy()
    # The first dimension in the order depends on no input: the same for every row.
    np.testing.assert_allclose(params[0, 0], params[1, 0])


def _kernels(made):
    return [layer.kernel.numpy() for layer in made.hidden_layers]


def test_default_init_is_fan_in_uniform_and_initializers_round_trip():
    keras.utils.set_random_seed(3)
    made = MADE(D, 2, [256, 256], zero_init=False)
    made(np.zeros([1, D], "float32"))
    # PyTorch's nn.Linear kernels: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in).
    for kernel, fan_in in zip(_kernels(made) + [made.output_layer.kernel.numpy()],
                              [D, 256, 256], strict=True):
        bound = 1.0 / np.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
        np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3.0), rtol=0.05)
    # Each layer draws its own numbers (an unseeded initializer instance repeats them).
    first, second = _kernels(made)
    assert not np.allclose(second[:D], first[:, :256] * np.sqrt(D / 256.0))
    assert all(np.all(layer.bias.numpy() == 0.0) for layer in made.hidden_layers)
    glorot = MADE(D, 2, [256], kernel_initializer="glorot_uniform",
                  bias_initializer=keras.initializers.Constant(0.5), zero_init=False)
    glorot(np.zeros([1, D], "float32"))
    (kernel,) = _kernels(glorot)
    assert np.abs(kernel).max() <= np.sqrt(6.0 / (D + 256))
    np.testing.assert_array_equal(glorot.hidden_layers[0].bias.numpy(), 0.5)
    config = glorot.get_config()
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert MADE.from_config(config).get_config() == config
    assert MADE.from_config(made.get_config()).get_config() == made.get_config()
    # Same seed, same weights.
    keras.utils.set_random_seed(3)
    again = MADE(D, 2, [256, 256], zero_init=False)
    again(np.zeros([1, D], "float32"))
    for old, new in zip(_kernels(made), _kernels(again), strict=True):
        np.testing.assert_array_equal(old, new)


def test_config_round_trip_keeps_masks_and_outputs():
    made = MADE(D, 2, [16, 16], ordering="random", hidden_degrees="random", seed=5,
                zero_init=False, context_size=2)
    x = np.random.default_rng(1).normal(size=[3, D]).astype("float32")
    context = np.ones([3, 2], "float32")
    expected = made(x, context=context).numpy()
    clone = MADE.from_config(made.get_config())
    clone(x, context=context)
    clone.set_weights(made.get_weights())
    np.testing.assert_array_equal(clone.input_order, made.input_order)
    np.testing.assert_allclose(clone(x, context=context).numpy(), expected, rtol=1e-6)
    model = keras.Sequential([keras.Input([D]), MADE(D, 2, [8], ordering=[2, 1, 3, 5, 4])])
    restored = keras.models.model_from_json(model.to_json())
    assert restored.layers[0].input_order.tolist() == [2, 1, 3, 5, 4]


@pytest.mark.parametrize("num_blocks, context_size", [(0, None), (1, 2)])
def test_param_blocks_are_the_parameters_split_by_parameter(num_blocks, context_size):
    made = MADE(D, 3, [16, 16] if not num_blocks else [16], num_blocks=num_blocks,
                ordering="random", seed=2, zero_init=False, context_size=context_size)
    rng = np.random.default_rng(3)
    x = rng.normal(size=[2, 4, D]).astype("float32")
    kwargs = {} if context_size is None else {
        "context": rng.normal(size=[2, 4, context_size]).astype("float32")}
    expected = made(x, **kwargs).numpy()
    blocks = made(x, param_blocks=True, **kwargs)
    assert isinstance(blocks, tuple) and len(blocks) == 3
    for p, block in enumerate(blocks):
        assert block.shape == (2, 4, D)
        np.testing.assert_allclose(block.numpy(), expected[..., p], rtol=1e-5, atol=1e-6)


def test_works_on_extra_batch_dimensions_and_under_xla():
    made = MADE(D, 2, [16], zero_init=False)
    x = np.random.default_rng(2).normal(size=[2, 3, D]).astype("float32")
    eager = made(x).numpy()
    assert eager.shape == (2, 3, D, 2)
    compiled = tf.function(made, jit_compile=True)
    np.testing.assert_allclose(compiled(tf.constant(x)).numpy(), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(event_size=0), ValueError, "event_size must be a positive int"),
    (dict(params_per_dim=1.5), TypeError, "params_per_dim must be a positive int"),
    (dict(ordering="up"), ValueError, "ordering must be one of"),
    (dict(ordering=[1, 2, 2, 3, 4]), ValueError, "permutation of 1..5"),
    (dict(ordering=[0, 1, 2, 3, 4]), ValueError, "permutation of 1..5"),
    (dict(hidden_degrees="left"), ValueError, "hidden_degrees must be one of"),
    (dict(num_blocks=-1), ValueError, "num_blocks must be an int >= 0"),
    (dict(num_blocks=2, hidden_units=[8, 8]), ValueError, "one hidden width"),
    (dict(hidden_units=[]), ValueError, "hidden_units must be a non-empty list"),
    (dict(seed="0"), TypeError, "seed must be an int"),
    (dict(kernel_initializer="nonsense"), ValueError, "nonsense"),
])
def test_bad_arguments(kwargs, error, message):
    arguments = dict(event_size=D, params_per_dim=2, hidden_units=[8])
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        MADE(**arguments)


def test_wrong_inputs_and_missing_context_are_errors():
    made = MADE(D, 2, [8], context_size=2)
    with pytest.raises(ValueError, match=r"expects inputs \[\.\.\., 5\]"):
        made(np.zeros([1, 4], "float32"), context=np.zeros([1, 2], "float32"))
    with pytest.raises(ValueError, match="context_size is 2"):
        MADE(D, 2, [8], context_size=2)(np.zeros([1, D], "float32"))
