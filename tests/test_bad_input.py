"""Bad input fails fast with the right exception and a message naming what was received.

One table: (description, callable, expected exception type, regex the message must match).
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import bijectors, models, nets

CONTEXT_SIZE = 3


@functools.cache
def vector_flow():
    flow = models.RealNVP([2], num_layers=2, hidden_units=[8])
    flow.compile(optimizer="adam")
    return flow


@functools.cache
def image_flow():
    flow = models.NICE([4, 4, 1], num_layers=2, hidden_channels=4, num_blocks=1)
    flow.compile(optimizer="adam")
    return flow


@functools.cache
def conditional_flow():
    flow = models.RealNVP([2], num_layers=2, hidden_units=[8], context_size=CONTEXT_SIZE)
    flow.compile(optimizer="adam")
    return flow


@functools.cache
def coupling():
    return bijectors.AffineCoupling(nets.MLP([4], 4), [4])


@functools.cache
def conditional_coupling():
    return bijectors.AffineCoupling(nets.MLP([4], 4), [4], conditional=True)


def zeros(*shape, dtype="float32"):
    return np.zeros(shape, dtype)


def with_value(value, shape=(5, 2), index=(1, 0), dtype="float32"):
    x = zeros(*shape, dtype=dtype)
    x[index] = value
    return x


def context(rows=5, width=CONTEXT_SIZE):
    return zeros(rows, width)


def fit(flow, *args, **kwargs):
    return lambda: flow().fit(*args, epochs=1, verbose=0, **kwargs)


def dataset(array, batch=True):
    data = tf.data.Dataset.from_tensor_slices(array)
    return data.batch(2) if batch else data


BAD_INPUT = [
    # -- shapes ------------------------------------------------------------------------------
    ("log_prob: wrong event size", lambda: vector_flow().log_prob(zeros(5, 3)),
     ValueError, r"x must have shape \[batch, 2\], got \[5, 3\]"),
    ("log_prob: no batch axis", lambda: vector_flow().log_prob(zeros(2)),
     ValueError, r"x must have shape \[batch, 2\], got \[2\]"),
    ("log_prob: extra axis", lambda: vector_flow().log_prob(zeros(5, 2, 1)),
     ValueError, r"got \[5, 2, 1\]"),
    ("log_prob: image without channel axis", lambda: image_flow().log_prob(zeros(5, 4, 4)),
     ValueError, r"x must have shape \[batch, 4, 4, 1\], got \[5, 4, 4\]"),
    ("fit: wrong event size", fit(vector_flow, zeros(5, 3)),
     ValueError, r"x must have shape \[batch, 2\], got \[5, 3\]"),
    ("fit: wrong image size", fit(image_flow, zeros(5, 8, 8, 1)),
     ValueError, r"got \[5, 8, 8, 1\]"),
    ("fit: unbatched dataset", fit(vector_flow, dataset(zeros(4, 2), batch=False)),
     ValueError, r"dataset x must be batched with shape \[batch, 2\], got \[2\]"),
    ("inverse: wrong event size", lambda: vector_flow().inverse(zeros(5, 4)),
     ValueError, r"got \[5, 4\]"),
    ("bijector: wrong event shape", lambda: coupling().forward(zeros(3, 5)),
     ValueError, r"expects inputs with event shape \[4\], got shape \[3, 5\]"),
    # -- dtypes ------------------------------------------------------------------------------
    ("log_prob: integer array", lambda: vector_flow().log_prob(zeros(5, 2, dtype="int32")),
     TypeError, r"floating-point values, got dtype int32"),
    ("log_prob: integer tensor", lambda: vector_flow().log_prob(tf.zeros([5, 2], tf.int64)),
     TypeError, r"floating-point values, got dtype int64"),
    ("fit: integer data", fit(vector_flow, zeros(5, 2, dtype="uint8")),
     TypeError, r"floating-point values, got dtype uint8"),
    ("fit: dataset of integers", fit(vector_flow, dataset(zeros(4, 2, dtype="int32"))),
     TypeError, r"dataset x must hold floating-point values, got dtype int32"),
    ("log_prob: strings", lambda: vector_flow().log_prob([["a", "b"]]),
     TypeError, r"x must be an array of floats, got dtype <U1"),
    ("log_prob: None", lambda: vector_flow().log_prob(None),
     TypeError, r"x must be an array of floats, got None"),
    ("log_prob: ragged list", lambda: vector_flow().log_prob([[1.0], [1.0, 2.0]]),
     TypeError, r"x must be an array of floats, got list"),
    ("log_prob: integer context",
     lambda: conditional_flow().log_prob(zeros(5, 2), context(5).astype("int32")),
     TypeError, r"x context must hold floating-point values, got dtype int32"),
    # -- constructor arguments ----------------------------------------------------------------
    ("num_layers=0", lambda: models.RealNVP([2], num_layers=0),
     ValueError, r"num_layers must be a positive int, got 0"),
    ("num_layers=2.5", lambda: models.NICE([2], num_layers=2.5),
     TypeError, r"num_layers must be a positive int, got 2\.5"),
    ("event_shape of rank 2", lambda: models.RealNVP([2, 3]),
     ValueError, r"event_shape must have rank 1 or 3 .*got \[2, 3\]"),
    ("event_shape with a zero", lambda: models.NICE([0]),
     ValueError, r"event_shape must have rank 1 or 3 .*got \[0\]"),
    ("event_shape not a shape", lambda: models.RealNVP("abc"),
     TypeError, r"event_shape must be a list of positive ints, got 'abc'"),
    ("half mask over one feature", lambda: models.RealNVP([1]),
     ValueError, r"'half' mask .* needs size >= 2; got event_shape \[1\]"),
    ("half mask over one channel", lambda: models.RealNVP([4, 4, 1], mask="half"),
     ValueError, r"needs size >= 2; got event_shape \[4, 4, 1\]"),
    ("mask='foo'", lambda: models.RealNVP([2], mask="foo"),
     ValueError, r"mask must be one of \('half', 'checkerboard'\), got 'foo'"),
    ("coupling mask='foo'", lambda: bijectors.AdditiveCoupling(nets.MLP([4], 2), [4], mask="foo"),
     ValueError, r"got 'foo'"),
    ("coupling parity=2", lambda: bijectors.AdditiveCoupling(nets.MLP([4], 2), [4], parity=2),
     ValueError, r"parity must be 0 or 1, got 2"),
    ("negative log_scale_bound", lambda: models.RealNVP([2], log_scale_bound=-1.0),
     ValueError, r"log_scale_bound must be a positive number, got -1\.0"),
    ("zero log_scale_bound on a coupling",
     lambda: bijectors.AffineCoupling(nets.MLP([4], 4), [4], log_scale_bound=0),
     ValueError, r"log_scale_bound must be a positive number, got 0"),
    ("conditioner='foo'", lambda: models.RealNVP([2], conditioner="foo"),
     ValueError, r"conditioner must be one of \('mlp', 'residual'\), got 'foo'"),
    ("conditioner given as a layer", lambda: models.NICE([2], conditioner=keras.layers.Dense(2)),
     ValueError, r"conditioner must be one of .*got <Dense"),
    ("coupling conditioner not a layer",
     lambda: bijectors.AffineCoupling(lambda x: x, [4]),
     TypeError, r"conditioner must be a keras.layers.Layer, got function"),
    ("diagonal scale layer not a layer", lambda: bijectors.DiagonalScale("scale", [4]),
     TypeError, r"scale_layer must be a keras.layers.Layer, got str"),
    ("permutation='foo'", lambda: models.RealNVP([2], permutation="foo"),
     ValueError, r"permutation must be one of .*got 'foo'"),
    ("random_permutation of size 0", lambda: bijectors.random_permutation(0, seed=0),
     ValueError, r"size must be a positive int, got 0"),
    ("hidden_units=[0]", lambda: models.RealNVP([2], hidden_units=[0]),
     ValueError, r"hidden_units\[0\] must be a positive int, got 0"),
    ("hidden_units='ab'", lambda: models.RealNVP([2], hidden_units="ab"),
     TypeError, r"hidden_units\[0\] must be a positive int, got 'a'"),
    ("hidden_channels=0", lambda: models.RealNVP([4, 4, 2], hidden_channels=0),
     ValueError, r"hidden_channels must be a positive int, got 0"),
    ("context_size=0", lambda: models.RealNVP([2], context_size=0),
     ValueError, r"context_size must be a positive int or None, got 0"),
    # -- non-finite data ----------------------------------------------------------------------
    ("fit: NaN", fit(vector_flow, with_value(np.nan)),
     ValueError, r"x contains 1 NaN or Inf value"),
    ("fit: Inf", fit(vector_flow, with_value(-np.inf)),
     ValueError, r"x contains 1 NaN or Inf value"),
    ("log_prob: Inf", lambda: vector_flow().log_prob(with_value(np.inf)),
     ValueError, r"x contains 1 NaN or Inf value"),
    ("log_prob: NaN tensor", lambda: vector_flow().log_prob(tf.constant(with_value(np.nan))),
     ValueError, r"x contains 1 NaN or Inf value"),
    ("fit: NaN in validation data",
     fit(vector_flow, zeros(4, 2), validation_data=with_value(np.nan)),
     ValueError, r"validation_data contains 1 NaN or Inf value"),
    ("log_prob: NaN in context",
     lambda: conditional_flow().log_prob(zeros(5, 2), with_value(np.nan, shape=(5, 3))),
     ValueError, r"x context contains 1 NaN or Inf value"),
    # A dataset is checked batch by batch as it streams: the first bad batch stops training.
    ("fit: NaN in a dataset", fit(vector_flow, dataset(with_value(np.nan, shape=(4, 2)))),
     tf.errors.InvalidArgumentError, r"dataset x contains NaN or Inf"),
    # -- arguments flows do not take ----------------------------------------------------------
    ("fit: targets y", fit(vector_flow, zeros(5, 2), zeros(5, 2)),
     ValueError, r"takes no targets y, got y=ndarray of shape \[5, 2\]"),
    ("evaluate: targets y", lambda: vector_flow().evaluate(zeros(5, 2), zeros(5), verbose=0),
     ValueError, r"takes no targets y, got y=ndarray of shape \[5\]"),
    ("compile(loss=...)", lambda: models.RealNVP([2], num_layers=1).compile(loss="mse"),
     ValueError, r"compile\(\) takes no loss, got loss='mse'"),
    ("compile(metrics=...)", lambda: models.RealNVP([2], num_layers=1).compile(metrics=["mae"]),
     ValueError, r"compile\(\) takes no metrics, got metrics=\['mae'\]"),
    ("fit before compile", lambda: models.RealNVP([2], num_layers=1).fit(zeros(4, 2)),
     RuntimeError, r"call compile\(\) before fit\(\)"),
    ("export to another format", lambda: vector_flow().export("unused", format="onnx"),
     ValueError, r"format='tf_saved_model', got 'onnx'"),
    # -- context -------------------------------------------------------------------------------
    ("log_prob: context to an unconditional flow",
     lambda: vector_flow().log_prob(zeros(5, 2), context()),
     ValueError, r"not conditional but got a context, ndarray of shape \[5, 3\]"),
    ("fit: context to an unconditional flow", fit(vector_flow, zeros(5, 2), context=context()),
     ValueError, r"not conditional but got a context, ndarray of shape \[5, 3\]"),
    ("sample: context to an unconditional flow",
     lambda: vector_flow().sample(2, context=np.zeros(3)),
     ValueError, r"not conditional but got a context, ndarray of shape \[3\]"),
    ("log_prob: missing context", lambda: conditional_flow().log_prob(zeros(5, 2)),
     ValueError, r"needs a context of shape \[batch, 3\], got None"),
    ("fit: missing context", fit(conditional_flow, zeros(5, 2)),
     ValueError, r"needs a context of shape \[batch, 3\], got None"),
    ("sample: missing context", lambda: conditional_flow().sample(2),
     ValueError, r"needs a context of shape \[3\] or \[n, 3\], got None"),
    ("log_prob: wrong context width",
     lambda: conditional_flow().log_prob(zeros(5, 2), context(5, 4)),
     ValueError, r"context must have shape \[batch, 3\], got \[5, 4\]"),
    ("fit: wrong context width", fit(conditional_flow, zeros(5, 2), context=context(5, 2)),
     ValueError, r"context must have shape \[batch, 3\], got \[5, 2\]"),
    ("log_prob: context rows differ", lambda: conditional_flow().log_prob(zeros(5, 2), context(4)),
     ValueError, r"x has 5 rows but context has 4"),
    ("sample: wrong context width", lambda: conditional_flow().sample(2, context=np.zeros(4)),
     ValueError, r"context must have shape \[batch, 3\], got \[1, 4\]"),
    ("sample: context rows differ from n",
     lambda: conditional_flow().sample(2, context=context(3)),
     ValueError, r"context must have 1 or n=2 rows, got 3"),
    ("fit: context beside a dataset",
     fit(conditional_flow, dataset(zeros(4, 2)), context=context(4)),
     ValueError, r"pass the context inside the dataset"),
    ("fit: conditional validation data without context",
     fit(conditional_flow, zeros(4, 2), context=context(4), validation_data=zeros(4, 2)),
     ValueError, r"must be \(x, context\), got ndarray of shape \[4, 2\]"),
    ("bijector: conditional coupling without context",
     lambda: conditional_coupling().forward(zeros(3, 4)),
     ValueError, r"is conditional and needs a `context` tensor"),
    # -- sampling ------------------------------------------------------------------------------
    ("sample: n=0", lambda: vector_flow().sample(0),
     ValueError, r"n must be a positive int, got 0"),
    ("sample: n=2.5", lambda: vector_flow().sample(2.5),
     TypeError, r"n must be a positive int, got 2\.5"),
    ("sample: negative temperature", lambda: vector_flow().sample(2, temperature=-1.0),
     ValueError, r"temperature must be a positive number, got -1\.0"),
    ("sample: boolean temperature", lambda: vector_flow().sample(2, temperature=True),
     TypeError, r"temperature must be a positive number, got True"),
    ("sample: seed not an int", lambda: vector_flow().sample(2, seed="a"),
     TypeError, r"seed must be an int or None, got 'a'"),
    ("sample: infinite temperature", lambda: vector_flow().sample(2, temperature=np.inf),
     ValueError, r"temperature must be a positive number, got inf \(not finite\)"),
    ("sample: temperature tensor of several values",
     lambda: vector_flow().sample(2, temperature=np.ones(2, "float32")),
     TypeError, r"temperature must be a positive number, got array"),
    # -- empty data and values that overflow float32 ---------------------------------------
    ("fit: empty array", fit(vector_flow, zeros(0, 2)),
     ValueError, r"Flow.fit got x with 0 examples \(shape \[0, 2\]\)"),
    ("evaluate: empty array", lambda: vector_flow().evaluate(zeros(0, 2), verbose=0),
     ValueError, r"Flow.evaluate got x with 0 examples"),
    ("log_prob: float64 1e300", lambda: vector_flow().log_prob(with_value(1e300, dtype="float64")),
     ValueError, r"x contains 1 value\(s\) that are NaN or Inf as float32, 1 of them finite "
                 r"float64 values too large for float32"),
    ("fit: float64 -1e300", fit(vector_flow, with_value(-1e300, dtype="float64")),
     ValueError, r"too large for float32"),
]


@pytest.mark.parametrize("temperature", [
    0.5, np.float32(0.5), np.array(0.5), tf.constant(0.5), tf.constant(0.5, tf.float64)])
def test_scalar_temperatures_of_any_float_type_are_accepted(temperature):
    samples = vector_flow().sample(3, temperature=temperature, seed=0)
    np.testing.assert_array_equal(samples, vector_flow().sample(3, temperature=0.5, seed=0))


# -- data outside a flow's support -------------------------------------------------------------
# Flows with num_bins model data in [0, num_bins) (the logit transform would return NaN
# outside it); flows with a dequantizer take integers in [0, num_bins). Data outside is a
# ValueError in fit/log_prob/evaluate naming the values and the range, never a NaN.


@functools.cache
def support_flow(kind):
    if kind == "glow_logit":
        flow = models.Glow([4, 4, 1], num_levels=1, num_steps=1, hidden_channels=4,
                           num_bins=17, logit_alpha=0.05)
    else:
        options = {
            "logit": dict(num_bins=17, logit_alpha=0.05),
            "logit_alpha_0": dict(num_bins=17, logit_alpha=0.0),
            "binned": dict(num_bins=17),
            "dequantizer": dict(num_bins=17, dequantization="uniform"),
        }[kind]
        flow = models.RealNVP([2], num_layers=2, hidden_units=[8], **options)
    flow.compile(optimizer="adam")
    return flow


def support_data(kind, value, rows=4, dtype="float32"):
    """In-support data with one entry replaced by `value`."""
    flow = support_flow(kind)
    x = np.full([rows, *flow.event_shape], 3.0, dtype)
    x.reshape(rows, -1)[1, 0] = value
    return x


SUPPORT_KINDS = {
    "logit": r"values in \[0, 17\) \(data of a flow with num_bins=17 and logit_alpha=0.05\)",
    "logit_alpha_0": r"values in \(0, 17\)",
    "glow_logit": r"values in \[0, 17\)",
    "binned": r"values in \[0, 17\) \(data of a flow with num_bins=17\)",
    "dequantizer": r"integers in \[0, 17\) \(data of a flow with uniform dequantization",
}
OUTSIDE = [(-1.0, r"1 value\(s\) outside .*: -1"), (17.0, r"outside .*: 17"),
           (20.0, r"outside .*: 20")]


def _support_rows():
    rows = []
    for kind, support in SUPPORT_KINDS.items():
        values = list(OUTSIDE)
        if kind == "logit_alpha_0":
            values.append((0.0, r"outside \(0, 17\): 0"))
        if kind == "dequantizer":
            values.append((2.5, r"1 non-integer value\(s\): 2.5"))
        for value, detail in values:
            x = functools.partial(support_data, kind, value)
            match = f"x must hold {support}.*{detail}"
            rows += [
                (f"{kind}: log_prob of {value}", lambda f=kind, x=x: support_flow(f).log_prob(x()),
                 ValueError, match),
                (f"{kind}: fit on {value}",
                 lambda f=kind, x=x: support_flow(f).fit(x(), epochs=1, verbose=0),
                 ValueError, match),
                (f"{kind}: evaluate {value}",
                 lambda f=kind, x=x: support_flow(f).evaluate(x(), verbose=0),
                 ValueError, match),
            ]
        rows.append((f"{kind}: validation data outside",
                     lambda f=kind: support_flow(f).fit(
                         support_data(f, 3.0), validation_data=support_data(f, 20.0), epochs=1,
                         verbose=0),
                     ValueError, f"validation_data must hold {support}"))
        rows.append((f"{kind}: NaN", lambda f=kind: support_flow(f).log_prob(
            support_data(f, np.nan)), ValueError, r"x contains 1 NaN or Inf value"))
        rows.append((f"{kind}: dataset outside",
                     lambda f=kind: support_flow(f).fit(
                         dataset(support_data(f, 20.0)), epochs=1, verbose=0),
                     tf.errors.InvalidArgumentError, f"dataset x must hold {support}"))
    rows += [
        ("dequantizer: uint8 level too high",
         lambda: support_flow("dequantizer").log_prob(support_data("dequantizer", 200,
                                                                   dtype="uint8")),
         ValueError, r"integers in \[0, 17\).*outside \[0, 17\): 200"),
        ("dequantizer: negative int32 tensor",
         lambda: support_flow("dequantizer").evaluate(
             tf.constant(support_data("dequantizer", -3, dtype="int32")), verbose=0),
         ValueError, r"outside \[0, 17\): -3"),
        ("dequantizer: dataset of non-integers",
         lambda: support_flow("dequantizer").fit(
             dataset(support_data("dequantizer", 0.5)), epochs=1, verbose=0),
         tf.errors.InvalidArgumentError, r"dataset x must hold integers in \[0, 17\)"),
        ("dequantizer: string data", lambda: support_flow("dequantizer").log_prob([["a", "b"]]),
         TypeError, r"x must be an array of floats, got dtype <U1"),
    ]
    return rows


BAD_INPUT += _support_rows()


@pytest.mark.parametrize("kind", SUPPORT_KINDS)
def test_data_at_the_edges_of_the_support_has_a_finite_log_prob(kind):
    flow = support_flow(kind)
    low = 1e-3 if kind == "logit_alpha_0" else 0.0
    high = 16.0 if kind == "dequantizer" else np.nextafter(np.float32(17.0), np.float32(0.0))
    for value in (low, high):
        log_prob = flow.log_prob(support_data(kind, value))
        assert np.all(np.isfinite(log_prob)), (kind, value, log_prob)


@pytest.mark.parametrize("description, call, error, match", BAD_INPUT,
                         ids=[row[0] for row in BAD_INPUT])
def test_bad_input_is_rejected_with_a_clear_message(description, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_table_descriptions_are_unique():
    descriptions = [row[0] for row in BAD_INPUT]
    assert len(descriptions) == len(set(descriptions))
