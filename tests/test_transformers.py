"""Elementwise transformers: the shipped ones, a user-written one in Coupling and MAF, and
context handling of conditional couplings and MAFs."""

import functools
import math

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfp_flows import bijectors, models, nets
from tfp_flows.bijectors import (
    Additive,
    Affine,
    Coupling,
    LogisticMixtureCDF,
    MaskedAutoregressiveFlow,
    RationalQuadraticSpline,
    Transformer,
)
from tfp_flows.testing import check_bijector

VECTOR = [4]
IMAGE = [4, 4, 2]
CONTEXT_SIZE = 3


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def normal(shape, seed=0, dtype="float64", scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(dtype)


def _log_cosh(value):
    magnitude = tf.abs(value)
    return magnitude + tf.math.softplus(-2.0 * magnitude) - math.log(2.0)


@keras.saving.register_keras_serializable(package="tfp_flows_tests")
class SinhArcsinh(Transformer):
    """A user's transformer, written against the public API only (Jones & Pewsey 2009).

    With `(t, a, e, b_raw)` per entry and tail weight `b = exp(c tanh(b_raw / c))`:

    - forward: `y = t + exp(a) sinh(b asinh(x) + e)`
    - inverse: `x = sinh((asinh((y - t) exp(-a)) - e) / b)`
    - log-det: `a + log b + log cosh(b asinh(x) + e) - log(1 + x^2) / 2` forward
    """

    def __init__(self, tail_bound=1.0):
        self.tail_bound = float(tail_bound)

    @property
    def num_params(self):
        return 4

    def _unpack(self, params):
        shift, log_scale, skew, raw_tail = tf.unstack(params, axis=-1)
        log_tail = bijectors.soft_clamp(raw_tail, self.tail_bound)
        return shift, log_scale, skew, log_tail

    def _log_det(self, x, inner, log_scale, log_tail):
        return log_scale + log_tail + _log_cosh(inner) - 0.5 * tf.math.log1p(x * x)

    def forward(self, x, params):
        shift, log_scale, skew, log_tail = self._unpack(params)
        inner = tf.exp(log_tail) * tf.asinh(x) + skew
        y = shift + tf.exp(log_scale) * tf.sinh(inner)
        return y, self._log_det(x, inner, log_scale, log_tail)

    def inverse(self, y, params):
        shift, log_scale, skew, log_tail = self._unpack(params)
        inner = tf.asinh((y - shift) * tf.exp(-log_scale))
        x = tf.sinh((inner - skew) * tf.exp(-log_tail))
        return x, -self._log_det(x, inner, log_scale, log_tail)

    def get_config(self):
        return {"tail_bound": self.tail_bound}


@keras.saving.register_keras_serializable(package="tfp_flows_tests")
class ManyParams(Transformer):
    """An affine map read from 2 of `3K + 2` params: sizes must follow `num_params`."""

    def __init__(self, num_components=4):
        self.num_components = num_components

    @property
    def num_params(self):
        return 3 * self.num_components + 2

    def forward(self, x, params):
        return Affine().forward(x, params[..., -2:])

    def inverse(self, y, params):
        return Affine().inverse(y, params[..., -2:])

    def get_config(self):
        return {"num_components": self.num_components}


SHIPPED = {
    "additive": Additive(),
    "affine": Affine(log_scale_bound=2.0),
    "spline": RationalQuadraticSpline(num_bins=5, range=2.0),
    "logistic_mixture": LogisticMixtureCDF(num_components=3, scale_bound=2.0),
}
ALL = {**SHIPPED, "affine_sigmoid": Affine(log_scale_bound=2.0, scale="sigmoid"),
       "affine_inverse": Affine(log_scale_bound=2.0, direction="inverse"),
       "sinh_arcsinh": SinhArcsinh(), "many_params": ManyParams()}


# -- transformers on their own ------------------------------------------------------------


def test_num_params():
    assert [t.num_params for t in SHIPPED.values()] == [1, 2, 14, 11]
    assert LogisticMixtureCDF().num_params == 14 and LogisticMixtureCDF(1).num_params == 5
    assert RationalQuadraticSpline(num_bins=8).num_params == 23
    assert ManyParams(5).num_params == 17


@pytest.mark.parametrize("name", ALL)
def test_zero_params_are_the_identity(name):
    transformer = ALL[name]
    x = normal([5, 3], scale=2.0)
    params = np.zeros([5, 3, transformer.num_params])
    for method in (transformer.forward, transformer.inverse):
        value, log_det = method(tf.constant(x), tf.constant(params))
        np.testing.assert_allclose(value, x, atol=1e-12)
        np.testing.assert_allclose(log_det, np.zeros_like(x), atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_round_trip_and_log_det_against_autodiff(name):
    transformer = ALL[name]
    x = tf.constant(normal([6, 3], scale=1.5))
    params = tf.constant(normal([6, 3, transformer.num_params], seed=1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y, log_det = transformer.forward(x, params)
    derivative = tape.gradient(y, x)  # elementwise map: the gradient is the derivative
    np.testing.assert_allclose(log_det, np.log(np.abs(derivative)), rtol=1e-9, atol=1e-9)
    x_again, inverse_log_det = transformer.inverse(tf.identity(y), params)
    np.testing.assert_allclose(x_again, x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(inverse_log_det, -log_det, rtol=1e-9, atol=1e-9)


def test_affine_directions_swap_which_map_scales_then_shifts():
    x = tf.constant([[0.5, -2.0]], tf.float64)
    params = tf.constant([[[1.0, 0.3], [-0.5, -1.2]]], tf.float64)
    shift, log_scale = params[..., 0], 2.0 * tf.tanh(params[..., 1] / 2.0)
    forward, inverse = Affine(2.0), Affine(2.0, direction="inverse")
    y, log_det = forward.forward(x, params)
    np.testing.assert_allclose(y, x * tf.exp(log_scale) + shift)
    np.testing.assert_allclose(log_det, log_scale)
    y, log_det = inverse.inverse(x, params)
    np.testing.assert_allclose(y, x * tf.exp(log_scale) + shift)
    np.testing.assert_allclose(log_det, log_scale)
    y, log_det = inverse.forward(x, params)
    np.testing.assert_allclose(y, (x - shift) * tf.exp(-log_scale))
    np.testing.assert_allclose(log_det, -log_scale)
    assert inverse.get_config() == {"log_scale_bound": 2.0, "scale": "exp",
                                    "direction": "inverse"}
    # A config written before `direction` existed is the forward one.
    assert Affine.from_config({"log_scale_bound": 2.0}) == forward != inverse


@pytest.mark.parametrize("name", ["affine", "affine_inverse", "spline", "logistic_mixture"])
def test_inverse_is_finite_for_extreme_inputs_and_parameters(name):
    transformer = ALL[name]
    y = tf.constant([[-1e30, -5.0, -1.0, 0.0, 1e-3, 2.0, 1e30]], tf.float32)
    params = tf.constant(normal([1, 7, transformer.num_params], scale=50.0, dtype="float32"))
    x, log_det = transformer.inverse(y, params)
    if name == "spline":  # the identity outside [-range, range]
        np.testing.assert_array_equal(x.numpy()[0, [0, 1, 6]], y.numpy()[0, [0, 1, 6]])
    assert np.all(np.isfinite(log_det))
    assert not np.any(np.isnan(x))


def test_the_sigmoid_scale_lets_the_inverse_shrink_but_barely_grow():
    """`exp(-s) = sigmoid(s_raw + 2) / sigmoid(2)`, its log soft-clamped at `-c`: the inverse
    multiplies by at most `1 / sigmoid(2)` however large `s_raw`, where the soft-clamped
    `exp` scale reaches `e^c`."""
    raw = np.array([-1e30, -50.0, -2.0, 0.0, 2.0, 50.0, 1e30])
    params = tf.constant(np.stack([np.zeros_like(raw), raw], axis=-1))
    ones = tf.ones([len(raw)], tf.float64)
    x, log_det = Affine(2.0, scale="sigmoid").inverse(ones, params)
    log_sigmoid = lambda z: -np.logaddexp(0.0, -z)  # noqa: E731
    expected = 2.0 * np.tanh((log_sigmoid(raw + 2.0) - log_sigmoid(2.0)) / 2.0)
    np.testing.assert_allclose(log_det, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(x, np.exp(expected), rtol=1e-12)
    assert np.all(np.diff(x) >= 0)  # grows with s_raw
    assert x[-1] <= 1.0 + math.exp(-2.0) and x[0] >= math.exp(-2.0) and x[3] == 1.0
    x_exp, _ = Affine(2.0).inverse(ones, params)
    np.testing.assert_allclose([x_exp[0], x_exp[-1]], [math.exp(2.0), math.exp(-2.0)])


@pytest.mark.parametrize("name", ALL)
def test_config_round_trip(name):
    transformer = ALL[name]
    rebuilt = type(transformer).from_config(transformer.get_config())
    assert rebuilt == transformer and rebuilt is not transformer
    serialized = keras.saving.serialize_keras_object(transformer)
    assert bijectors.get_transformer(serialized) == transformer
    assert repr(transformer).startswith(type(transformer).__name__ + "(")


def test_get_transformer():
    assert bijectors.get_transformer("additive") == Additive()
    assert bijectors.get_transformer("affine") == Affine(3.0)
    assert bijectors.get_transformer("spline") == RationalQuadraticSpline(8, range=3.0)
    assert bijectors.get_transformer("logistic_mixture") == LogisticMixtureCDF(4, 1.0, -7.0)
    assert bijectors.TRANSFORMER_NAMES == ("additive", "affine", "spline", "logistic_mixture")
    spline = SHIPPED["spline"]
    assert bijectors.get_transformer(spline) is spline


@pytest.mark.parametrize("build, error, match", [
    (lambda: Affine(log_scale_bound=0), ValueError,
     r"log_scale_bound must be a positive number, got 0"),
    (lambda: Affine(log_scale_bound="3"), TypeError,
     r"log_scale_bound must be a positive number, got '3' of type str"),
    (lambda: Affine(scale="softplus"), ValueError,
     r"scale must be one of 'exp', 'sigmoid'; got 'softplus'"),
    (lambda: Affine(direction="sampling"), ValueError,
     r"direction must be one of 'forward', 'inverse'; got 'sampling'"),
    (lambda: RationalQuadraticSpline(num_bins=1), ValueError,
     r"num_bins must be an int >= 2, got 1"),
    (lambda: RationalQuadraticSpline(num_bins=2.5), TypeError,
     r"num_bins must be an int >= 2, got 2.5 of type float"),
    (lambda: RationalQuadraticSpline(range=-1.0), ValueError,
     r"range must be a positive number, got -1.0"),
    (lambda: RationalQuadraticSpline(range=float("inf")), ValueError,
     r"range must be a positive number, got inf \(not finite\)"),
    (lambda: bijectors.get_transformer("cubic"), ValueError,
     r"transformer must be one of \('additive', 'affine', 'spline', 'logistic_mixture'\) "
     r"or a Transformer, got 'cubic'"),
    (lambda: bijectors.get_transformer(3), TypeError,
     r"transformer must be a tfp_flows.bijectors.Transformer, .*got 3 of type int"),
    (lambda: bijectors.get_transformer({"class_name": "MLP", "config": {
        "hidden_units": [2], "output_units": 2}, "module": "tfp_flows.nets.mlp",
        "registered_name": "tfp_flows>MLP"}), ValueError,
     r"transformer config does not describe a Transformer"),
    (lambda: LogisticMixtureCDF(num_components=0), ValueError,
     r"num_components must be a positive int, got 0"),
    (lambda: LogisticMixtureCDF(num_components=2.0), TypeError,
     r"num_components must be a positive int, got 2.0 of type float"),
    (lambda: LogisticMixtureCDF(scale_bound=0.0), ValueError,
     r"scale_bound must be a positive number, got 0.0"),
    (lambda: LogisticMixtureCDF(scale_bound=None), TypeError,
     r"scale_bound must be a positive number, got None of type NoneType"),
    (lambda: LogisticMixtureCDF(min_log_scale=float("-inf")), ValueError,
     r"min_log_scale must be a finite number, got -inf \(not finite\)"),
    (lambda: LogisticMixtureCDF(min_log_scale="-7"), TypeError,
     r"min_log_scale must be a finite number, got '-7' of type str"),
    (lambda: Transformer(), TypeError, r"abstract"),
])
def test_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


# -- any transformer in a coupling and in a MAF --------------------------------------------


def coupling(transformer, shape, mask="half", parity=0, context_size=None, dtype="float64"):
    size = Coupling.conditioner_output_size(shape, transformer, mask=mask, parity=parity)
    if len(shape) == 3:
        conditioner = nets.ConvResNet(4, 1, size, zero_init=False, dtype=dtype)
    else:
        conditioner = nets.MLP([8], size, activation="tanh", zero_init=False, dtype=dtype)
    return Coupling(conditioner, shape, transformer=transformer, mask=mask, parity=parity,
                    context_size=context_size)


def maf(transformer, size=4, context_size=None, dtype="float64"):
    made = nets.MADE(size, transformer.num_params, [8], ordering="random",
                     context_size=context_size, activation="tanh", zero_init=False, seed=2,
                     dtype=dtype)
    return MaskedAutoregressiveFlow(made, [size], transformer=transformer)


# The shipped transformers run through Coupling and MAF in tests/test_bijectors_contract.py
# as well (float32 with XLA too); here every transformer, the user's included.
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("scheme", ["coupling_vector", "coupling_image", "maf"])
def test_every_transformer_passes_the_kit(name, scheme):
    transformer = ALL[name]
    if scheme == "coupling_vector":
        bijector, x = coupling(transformer, [5], mask="checkerboard", parity=1), normal([3, 5])
    elif scheme == "coupling_image":
        bijector, x = coupling(transformer, IMAGE, parity=1), normal([2, *IMAGE])
    else:
        bijector, x = maf(transformer), normal([3, 4])
    report = check_bijector(bijector, x, modes=("eager", "function"))
    assert "autodiff log-det" in report


@pytest.mark.parametrize("scheme", ["coupling", "maf"])
def test_user_transformer_conditional_under_xla(scheme):
    transformer = SinhArcsinh()
    if scheme == "coupling":
        bijector = coupling(transformer, VECTOR, context_size=CONTEXT_SIZE, dtype="float32")
    else:
        bijector = maf(transformer, context_size=CONTEXT_SIZE, dtype="float32")
    x, context = normal([3, 4], dtype="float32"), normal([3, CONTEXT_SIZE], 1, "float32")
    check_bijector(bijector, x, context=context, modes=("eager", "jit"))


def test_generic_coupling_equals_the_aliases():
    """`AffineCoupling` is `Coupling` with `Affine`: same sizes, same numbers."""
    for alias, kwargs, transformer in [
            (bijectors.AffineCoupling, {}, Affine(3.0)),
            (bijectors.AffineCoupling, {"scale": "sigmoid"}, Affine(3.0, scale="sigmoid")),
            (bijectors.AdditiveCoupling, {}, Additive())]:
        for mask, shape in [("half", [5]), ("checkerboard", IMAGE)]:
            size = alias.conditioner_output_size(shape, mask, 1)  # positional, as builders
            assert size == Coupling.conditioner_output_size(shape, transformer, mask, 1)
            conditioner = (nets.ConvResNet(4, 1, size, zero_init=False, dtype="float64")
                           if len(shape) == 3 else
                           nets.MLP([8], size, zero_init=False, dtype="float64"))
            fixed = alias(conditioner, shape, mask=mask, parity=1, **kwargs)
            generic = Coupling(conditioner, shape, transformer, mask=mask, parity=1)
            assert fixed.transformer == transformer and fixed.num_params == generic.num_params
            x = normal([3, *shape])
            np.testing.assert_array_equal(fixed.forward(x), generic.forward(x))
            np.testing.assert_array_equal(fixed.forward_log_det_jacobian(x, len(shape)),
                                          generic.forward_log_det_jacobian(x, len(shape)))


def test_coupling_parameter_layout():
    """Parameter p of changed entry i is conditioner channel p * n + i."""
    transformer = ManyParams(2)  # 8 params; the last two are (shift, log-scale)
    size = Coupling.conditioner_output_size([6], transformer)
    assert size == 8 * 3
    conditioner = nets.MLP([4], size, dtype="float64")
    bijector = Coupling(conditioner, [6], transformer)
    x = normal([2, 6])
    bijector.forward(x)  # builds the conditioner
    bias = np.zeros(size)
    bias[6 * 3:7 * 3] = [1.0, 2.0, 3.0]  # shifts of the three changed entries
    conditioner.output_layer.bias.assign(bias)
    y = bijector.forward(tf.identity(tf.constant(x)))
    np.testing.assert_allclose(y[:, 3:] - x[:, 3:], [[1.0, 2.0, 3.0]] * 2, atol=1e-12)
    np.testing.assert_array_equal(y[:, :3], x[:, :3])


def test_coupling_takes_a_transformer_by_name():
    bijector = Coupling(nets.MLP([4], 2 * 23), [4], "spline")
    assert bijector.transformer == RationalQuadraticSpline()
    assert bijector.num_params == 23


def test_coupling_rejects_a_non_transformer():
    with pytest.raises(TypeError, match=r"transformer must be a tfp_flows.bijectors.Trans"):
        Coupling(nets.MLP([4], 2), [4], transformer=lambda x, p: x)


def test_conditioner_input_size_is_gone():
    assert not hasattr(Coupling, "conditioner_input_size")


def test_mixed_precision_spline_coupling_keeps_log_dets_in_float32():
    transformer = SHIPPED["spline"]
    size = Coupling.conditioner_output_size(VECTOR, transformer)
    bijector = Coupling(nets.MLP([8], size, zero_init=False, dtype="mixed_float16"), VECTOR,
                        transformer)
    x = normal([3, 4], dtype="float32")
    y = bijector.forward(x)
    log_det = bijector.forward_log_det_jacobian(x, 1)
    assert y.dtype == tf.float32 and log_det.dtype == tf.float32
    np.testing.assert_allclose(bijector.inverse(tf.identity(y)), x, atol=1e-4)


# -- the MAF builder with a Transformer instance ---------------------------------------------


def test_maf_builder_takes_a_transformer_and_serializes_it(tmp_path):
    flow = models.MAF([3], num_layers=2, hidden_units=[8], transformer=SinhArcsinh(0.5))
    assert [m.params_per_dim for m in flow.mades] == [4, 4]
    data_end, *steps = flow.bijector.bijectors  # the data-end ActNorm, then the MAF steps
    assert isinstance(data_end, bijectors.ActNorm)
    assert all(step.transformer == SinhArcsinh(0.5) for step in steps)
    rng = np.random.default_rng(0)
    flow.set_weights([rng.normal(0.0, 0.3, w.shape) for w in flow.get_weights()])
    x = normal([5, 3], dtype="float32")
    config = flow.get_config()
    assert config["transformer"]["config"] == {"tail_bound": 0.5}
    rebuilt = models.MAF.from_config(config)
    assert rebuilt.get_config() == config
    flow.save(tmp_path / "flow.keras")
    loaded = keras.saving.load_model(tmp_path / "flow.keras")
    assert loaded.get_config() == config
    np.testing.assert_allclose(loaded.log_prob(x), flow.log_prob(x), rtol=1e-6, atol=1e-6)


def test_maf_builder_strings_are_unchanged():
    flow = models.MAF([3], num_layers=1, hidden_units=[8], transformer="spline",
                      num_spline_bins=4, spline_range=2.0)
    assert flow.get_config()["transformer"] == "spline"
    assert flow.bijector.bijectors[-1].transformer == RationalQuadraticSpline(4, range=2.0)
    assert flow.mades[0].params_per_dim == 11
    # "affine" in an autoregressive flow: the MADE gives the density direction.
    flow = models.MAF([3], num_layers=1, hidden_units=[8], log_scale_bound=2.0)
    assert flow.bijector.bijectors[-1].transformer == Affine(2.0, direction="inverse")


# -- context: checked and flattened once ----------------------------------------------------


def _conditional(kind):
    if kind == "coupling":
        return coupling(Affine(), VECTOR, context_size=CONTEXT_SIZE, dtype="float32")
    return maf(Affine(), context_size=CONTEXT_SIZE, dtype="float32")


@pytest.mark.parametrize("kind", ["coupling", "maf"])
def test_context_size_is_known(kind):
    bijector = _conditional(kind)
    assert bijector.conditional and bijector.context_size == CONTEXT_SIZE


@pytest.mark.parametrize("kind", ["coupling", "maf"])
@pytest.mark.parametrize("context_shape, match", [
    ([3, 5], r"expects a context of shape \[3, 3\] for inputs of shape \[3, 4\], got a "
             r"context of shape \[3, 5\]: its last axis has size 5, not context_size=3"),
    ([2, 3], r"expects a context of shape \[3, 3\] .*got a context of shape \[2, 3\]: its "
             r"batch axes do not broadcast"),
    ([1, 3, 3], r"got a context of shape \[1, 3, 3\]: it has more batch axes"),
    ([], r"got a context of shape \[\]: a context needs at least one axis"),
])
def test_wrong_context_shape_names_both_shapes(kind, context_shape, match):
    bijector = _conditional(kind)
    context = np.zeros(context_shape, "float32")
    for method in (bijector.forward, bijector.inverse):
        with pytest.raises(ValueError, match=match):
            method(normal([3, 4], dtype="float32"), context=context)


@pytest.mark.parametrize("kind", ["coupling", "maf"])
def test_context_broadcasts_against_extra_batch_axes(kind):
    bijector = _conditional(kind)
    x = normal([2, 3, 4], dtype="float32")
    context = normal([3, CONTEXT_SIZE], seed=1, dtype="float32")
    flat_context = np.broadcast_to(context, [2, 3, CONTEXT_SIZE]).reshape(6, CONTEXT_SIZE)
    np.testing.assert_allclose(np.reshape(bijector.inverse(x, context=context), [6, 4]),
                               bijector.inverse(x.reshape(6, 4), context=flat_context),
                               atol=1e-6)
    single = bijector.inverse(x, context=context[0])  # one context for the whole batch
    assert single.shape == [2, 3, 4]


def test_context_size_is_learned_from_the_first_context():
    size = Coupling.conditioner_output_size(VECTOR, Affine())
    bijector = Coupling(nets.MLP([8], size), VECTOR, Affine(), conditional=True)
    assert bijector.context_size is None
    x = normal([3, 4], dtype="float32")
    bijector.forward(x, context=np.zeros([3, 2], "float32"))
    assert bijector.context_size == 2
    with pytest.raises(ValueError, match=r"last axis has size 5, not context_size=2"):
        bijector.forward(x, context=np.zeros([3, 5], "float32"))


@pytest.mark.parametrize("build, error, match", [
    (lambda: Coupling(nets.MLP([4], 4), VECTOR, Affine(), conditional=False,
                      context_size=2), ValueError,
     r"context_size=2 needs conditional=True, got conditional=False"),
    (lambda: Coupling(nets.MLP([4], 4), VECTOR, Affine(), context_size=0), ValueError,
     r"context_size must be a positive int or None, got 0"),
    (lambda: Coupling(nets.MLP([4], 4), VECTOR, Affine(), conditional="yes"), TypeError,
     r"conditional must be a bool, got 'yes'"),
    (lambda: MaskedAutoregressiveFlow(nets.MADE(4, 2, [8], context_size=2), VECTOR,
                                      context_size=3), ValueError,
     r"context_size=3 does not match the MADE's context_size=2"),
    (lambda: MaskedAutoregressiveFlow(nets.MADE(4, 2, [8], context_size=2), VECTOR,
                                      conditional=False), ValueError,
     r"conditional=False does not match the MADE's context_size=2"),
    (lambda: MaskedAutoregressiveFlow(nets.MADE(4, 4, [8]), VECTOR,
                                      transformer=ManyParams(1)), ValueError,
     r"a ManyParams transformer needs a MADE with params_per_dim=5, got 4"),
])
def test_context_and_size_arguments_are_checked(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_wrong_conditioner_output_size_is_a_clear_error():
    transformer = SinhArcsinh()
    size = Coupling.conditioner_output_size(VECTOR, transformer)  # for the "half" mask
    bijector = Coupling(nets.MLP([8], size), VECTOR, transformer, mask="checkerboard")
    with pytest.raises(ValueError, match=r"conditioner returned 8 values on its last axis, "
                                         r"expected 16 \(4 parameters of SinhArcsinh x 4 "
                                         r"transformed entries"):
        bijector.forward(normal([2, 4], dtype="float32"))


# -- the logistic-mixture CDF (Flow++) ------------------------------------------------------


def _mixture(a_raw, logits, means, log_scales, shift=0.0):
    """Params `(a_raw, b, logits, means, log_scales)` of one entry of `LogisticMixtureCDF`."""
    return np.concatenate([[a_raw, shift], logits, means, log_scales]).astype("float64")


# Log-scales at the floor (-7; -30 is floored to it) and large, `a` at its bounds (a_raw =
# +-50 with scale_bound 1), means far apart, peaked and flat logits, K = 1 and K = 8.
EXTREME = {
    "floor_far_means": _mixture(0.0, [0, 0], [-50, 50], [-7, -30]),
    "floor_and_large_scales": _mixture(0.0, [0, 0], [-50, 50], [-7, 6]),
    "large_scales": _mixture(0.0, [0, 1, -1], [-1, 0, 2], [5, 8, 3]),
    "a_at_upper_bound": _mixture(50.0, [0, 0], [-2, 2], [-7, 0], shift=3.0),
    "a_at_lower_bound": _mixture(-50.0, [0, 0], [-2, 2], [-7, 0], shift=-3.0),
    "peaked_logits": _mixture(0.0, [20, -20, -20, -20], [-3, 0, 3, 10], [0, -7, 1, -2]),
    "one_component_at_floor": _mixture(-50.0, [0], [3], [-7]),
    "one_component_large": _mixture(-1.0, [5], [-40], [6]),
    "eight_flat_logits": _mixture(0.5, np.zeros(8), np.linspace(-50, 50, 8),
                                  np.linspace(-7, 4, 8)),
    "eight_peaked_logits": _mixture(-0.5, np.linspace(-15, 15, 8), np.linspace(50, -50, 8),
                                    [-7] * 4 + [3] * 4),
}


def _extreme(name, size, dtype="float64"):
    """The transformer of an `EXTREME` case and its params repeated `size` times."""
    params = EXTREME[name]
    transformer = LogisticMixtureCDF((len(params) - 2) // 3)
    return transformer, np.broadcast_to(params, [size, len(params)]).astype(dtype)


def _run(method, mode):
    return {"eager": method, "function": tf.function(method),
            "jit": tf.function(method, jit_compile=True)}[mode]


@functools.cache
def _compiled_inverse(num_components):
    """One XLA-compiled inverse per K, shared by the tests (compiling dominates their time)."""
    return tf.function(LogisticMixtureCDF(num_components).inverse, jit_compile=True)


def _inverse(transformer, mode):
    if mode == "jit" and transformer == LogisticMixtureCDF(transformer.num_components):
        return _compiled_inverse(transformer.num_components)
    return _run(transformer.inverse, mode)


def test_logistic_mixture_forward_and_log_det_against_scipy():
    transformer = LogisticMixtureCDF(3, scale_bound=2.0, min_log_scale=-3.0)
    x = normal([40], scale=3.0)
    params = normal([40, 11], seed=1)
    params[:10, 8:] = -5.0  # below the floor: the log-scales used are -3
    y, log_det = transformer.forward(tf.constant(x), tf.constant(params))

    a = 2.0 * np.tanh(params[:, 0] / 2.0)
    weights = scipy.special.softmax(params[:, 2:5], axis=-1)
    args = (x[:, None], params[:, 5:8], np.exp(np.maximum(params[:, 8:], -3.0)))
    cdf = np.sum(weights * scipy.stats.logistic.cdf(*args), axis=-1)
    survival = np.sum(weights * scipy.stats.logistic.sf(*args), axis=-1)
    density = np.sum(weights * scipy.stats.logistic.pdf(*args), axis=-1)
    np.testing.assert_allclose(y, np.exp(a) * np.log(cdf / survival) + params[:, 1],
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(log_det, a + np.log(density / (cdf * survival)),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", EXTREME)
def test_logistic_mixture_log_det_against_autodiff_at_extreme_parameters(name):
    transformer, params = _extreme(name, 61)
    params = tf.constant(params)
    x, _ = transformer.inverse(tf.constant(np.linspace(-30.0, 30.0, 61)), params)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y, log_det = transformer.forward(x, params)
    np.testing.assert_allclose(log_det, np.log(tape.gradient(y, x)), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-5), ("float32", 1e-4)])
def test_logistic_mixture_round_trips_up_to_30(dtype, tolerance, mode):
    transformer = LogisticMixtureCDF(4)
    y = np.linspace(-30.0, 30.0, 121).astype(dtype)
    params = normal([121, 14], seed=3, dtype=dtype)
    inverse, forward = _run(transformer.inverse, mode), _run(transformer.forward, mode)
    x, inverse_log_det = inverse(tf.constant(y), tf.constant(params))
    y_again, log_det = forward(tf.identity(x), tf.constant(params))
    np.testing.assert_allclose(y_again, y, rtol=0, atol=tolerance)
    np.testing.assert_allclose(inverse_log_det, -log_det, rtol=0, atol=tolerance)
    x_again, _ = inverse(tf.identity(y_again), tf.constant(params))
    np.testing.assert_allclose(x_again, x, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype, mode", [("float64", "eager"), ("float64", "function"),
                                         ("float32", "eager"), ("float32", "jit")])
def test_logistic_mixture_round_trips_at_extreme_parameters(dtype, mode):
    """`|forward(inverse(y)) - y| <= 1e-5` in float64; in float32 `1e-4` plus what the
    float grid allows: `x` can only be a float32, and `forward` changes by its slope times
    the float spacing between neighbours (at the floor up to `e^(7 + a)` ~ 3e3)."""
    y = np.linspace(-30.0, 30.0, 121)
    for name in EXTREME:
        transformer, params = _extreme(name, len(y), dtype)
        x, inverse_log_det = _inverse(transformer, mode)(
            tf.constant(y.astype(dtype)), tf.constant(params))
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(inverse_log_det)), name
        # The residual in float64 at the returned x, so only the inverse's error counts.
        y_again, log_det = transformer.forward(tf.cast(x, tf.float64), tf.constant(
            params, tf.float64))
        error = np.abs(y_again.numpy() - y)
        if dtype == "float64":
            assert error.max() <= 1e-5, (name, error.max())
        else:
            grid = np.exp(log_det.numpy()) * np.spacing(np.abs(x.numpy())).astype("float64")
            assert np.all(error <= 1e-4 + grid), (name, np.max(error - grid))
        np.testing.assert_allclose(inverse_log_det, -log_det, rtol=1e-4, atol=1e-4,
                                   err_msg=name)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_logistic_mixture_float32_inverse_is_finite_up_to_1e4(mode):
    """Finite values and log-dets for |y| <= 1e4, and out to the largest float32."""
    largest = np.finfo("float32").max
    y = np.concatenate([np.linspace(-1e4, 1e4, 113), [-1e4, -9999.5, 9999.5, 1e4],
                        [-largest, -1e30, 1e30, largest]]).astype("float32")
    cases = [_extreme(name, len(y), "float32") for name in EXTREME]
    cases.append((LogisticMixtureCDF(4), normal([len(y), 14], seed=6, dtype="float32",
                                                scale=30.0)))
    for transformer, params in cases:
        x, log_det = _inverse(transformer, mode)(tf.constant(y), tf.constant(params))
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(log_det))


def test_logistic_mixture_one_component_inverse_is_the_closed_form():
    """For K = 1 the bracket is the point `mu + s t`: the inverse is the closed form."""
    transformer = LogisticMixtureCDF(1, scale_bound=3.0)
    y = normal([50], scale=10.0)
    params = normal([50, 5], seed=7, scale=2.0)
    params[:10, 4] = -9.0  # floored at -7
    x, _ = transformer.inverse(tf.constant(y), tf.constant(params))
    a = 3.0 * np.tanh(params[:, 0] / 3.0)
    closed_form = params[:, 3] + np.exp(np.maximum(params[:, 4], -7.0) - a) * (y - params[:, 1])
    np.testing.assert_allclose(x, closed_form, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", ["random", "a_at_upper_bound", "eight_peaked_logits"])
def test_logistic_mixture_inverse_gradient_is_implicit(case):
    """Gradients of the inverse (value and log-det) against central differences, float64.

    The bisection itself has no gradient (it runs on integers): these come from the
    implicit function theorem, and `dx/dy` must equal `exp(inverse log-det)`.
    """
    if case == "random":
        transformer, params = LogisticMixtureCDF(3), normal([6, 11], seed=4)
    else:
        transformer, params = _extreme(case, 6)
        # Central differences straddling the floor's kink would average its two sides.
        params = np.where(params == -7.0, -6.5, params)
    y = np.linspace(-3.0, 4.0, 6)
    value_weights, log_det_weights = normal([6], seed=8), normal([6], seed=9)

    @tf.function
    def losses(y, params):  # one loss per entry: entries do not interact
        x, log_det = transformer.inverse(y, params)
        return value_weights * x + log_det_weights * log_det

    y, params = tf.constant(y), tf.constant(params)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([y, params])
        x, log_det = transformer.inverse(y, params)
        loss = tf.reduce_sum(losses(y, params))
    grad_y, grad_params = tape.gradient(loss, [y, params])
    np.testing.assert_allclose(tape.gradient(x, y), np.exp(log_det), rtol=1e-10)

    step = 1e-6
    numeric_y = (losses(y + step, params) - losses(y - step, params)) / (2 * step)
    np.testing.assert_allclose(grad_y, numeric_y, rtol=1e-5, atol=1e-6)
    for j in range(transformer.num_params):
        delta = tf.one_hot(j, transformer.num_params, dtype=tf.float64) * step
        numeric = (losses(y, params + delta) - losses(y, params - delta)) / (2 * step)
        np.testing.assert_allclose(grad_params[:, j], numeric, rtol=1e-5, atol=1e-6,
                                   err_msg=f"parameter {j}")


def test_logistic_mixture_zero_initialised_conditioners_give_the_identity():
    transformer = LogisticMixtureCDF()
    x = normal([3, 4], scale=3.0, dtype="float32")
    size = Coupling.conditioner_output_size(VECTOR, transformer)
    flows = [Coupling(nets.MLP([8], size), VECTOR, transformer),  # zero_init by default
             MaskedAutoregressiveFlow(nets.MADE(4, transformer.num_params, [8]), VECTOR,
                                      transformer=transformer)]
    for bijector in flows:
        for method, log_det in [(bijector.forward, bijector.forward_log_det_jacobian),
                                (bijector.inverse, bijector.inverse_log_det_jacobian)]:
            np.testing.assert_allclose(method(tf.constant(x)), x, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(log_det(tf.constant(x), 1), np.zeros(3), atol=1e-5)


class _SubclassedAffine(Affine):
    """Declares nothing itself: a coupling hands it the `[..., n, 2]` tensor."""


@pytest.mark.parametrize("mask", ["half", "checkerboard"])
@pytest.mark.parametrize("transformer", [Affine(scale="sigmoid"), Additive()],
                         ids=["affine", "additive"])
def test_couplings_hand_parameter_tuples_to_the_transformers_that_take_them(transformer, mask):
    assert bijectors.transformers.takes_param_tuple(transformer)
    subclass = type(f"Sub{type(transformer).__name__}", (type(transformer),), {})(
        **transformer.get_config())
    assert not bijectors.transformers.takes_param_tuple(subclass)
    assert not bijectors.transformers.takes_param_tuple(_SubclassedAffine())
    shape = [4, 4, 2]
    size = bijectors.Coupling.conditioner_output_size(shape, transformer, mask=mask)
    conditioner = nets.ConvResNet(4, 1, size, zero_init=False)
    x = np.random.default_rng(0).normal(size=[3, *shape]).astype("float32")
    results = []
    for t in (transformer, subclass):
        coupling = bijectors.Coupling(conditioner, shape, transformer=t, mask=mask)
        results.append([coupling.forward(x), coupling.inverse(x),
                        coupling.forward_log_det_jacobian(x, 3)])
    for tuple_form, tensor_form in zip(*results, strict=True):
        np.testing.assert_allclose(tuple_form, tensor_form, rtol=1e-6, atol=1e-6)
    assert not np.allclose(results[0][0], x)  # the shared conditioner is not the identity
