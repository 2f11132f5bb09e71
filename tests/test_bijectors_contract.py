"""The bijector contract: `tfp_flows.testing.check_bijector` over every bijector we ship.

A new bijector is covered by adding one line to `REGISTRY`; a new flow family is covered by
registering it in `tfp_flows.models.FAMILIES` (its whole bijector, on each kind of data it
models, joins `REGISTRY`). The second half checks that the kit itself can fail: a kit that
passes everything proves nothing.
"""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import bijectors, models, nets
from tfp_flows.models import FAMILIES
from tfp_flows.testing import check_bijector, discover_trainable_variables

tfb = tfp.bijectors

VECTOR = [4]
IMAGE = [4, 4, 2]
CONTEXT_SIZE = 3
BATCH = 3


def _data(shape, dtype, seed=0):
    return np.random.default_rng(seed).normal(size=[BATCH, *shape]).astype(dtype)


def _context(dtype, seed=1):
    return np.random.default_rng(seed).normal(size=[BATCH, CONTEXT_SIZE]).astype(dtype)


def _conditioner(size, shape, dtype):
    """A small, randomly initialised conditioner (zero-init would make the coupling trivial)."""
    if len(shape) == 3:
        return nets.ConvResNet(4, 1, size, zero_init=False, dtype=dtype)
    return nets.MLP([8], size, activation="tanh", zero_init=False, dtype=dtype)


def _coupling(kind, shape, mask, parity, dtype, conditional=False, name=None):
    """`kind`: a coupling class (AffineCoupling, ...), or a transformer for `Coupling`."""
    if isinstance(kind, bijectors.Transformer):
        size = bijectors.Coupling.conditioner_output_size(shape, kind, mask=mask,
                                                          parity=parity)
        return bijectors.Coupling(_conditioner(size, shape, dtype), shape, transformer=kind,
                                  mask=mask, parity=parity, conditional=conditional,
                                  name=name or f"{type(kind).__name__.lower()}_coupling")
    size = kind.conditioner_output_size(shape, mask=mask, parity=parity)
    return kind(_conditioner(size, shape, dtype), shape, mask=mask, parity=parity,
                conditional=conditional, name=name or kind.__name__.lower())


def _diagonal_scale(shape, dtype, name="diagonal_scale"):
    scale = nets.LogScale(shape, dtype=dtype)
    # A zero log-scale is the identity; a random one exercises the log-det.
    scale.log_scale.assign(np.random.default_rng(2).normal(0.0, 0.5, size=shape))
    return bijectors.DiagonalScale(scale, shape, name=name)


def coupling_case(kind, shape, mask, parity, conditional=False):
    def build(dtype):
        bijector = _coupling(kind, shape, mask, parity, dtype, conditional)
        return bijector, _data(shape, dtype), _context(dtype) if conditional else None
    return build


def diagonal_scale_case(shape):
    return lambda dtype: (_diagonal_scale(shape, dtype), _data(shape, dtype), None)


def chain_case(conditional):
    def build(dtype):
        members = [
            _coupling(bijectors.AffineCoupling, VECTOR, "half", 0, dtype, conditional, "c0"),
            bijectors.random_permutation(VECTOR[0], seed=3),
            _diagonal_scale(VECTOR, dtype),
            _coupling(bijectors.AdditiveCoupling, VECTOR, "checkerboard", 1, dtype,
                      conditional, "c1"),
            bijectors.reverse_permutation(VECTOR[0]),
        ]
        if conditional:
            # An inverted conditional coupling inside the chain gets the context too.
            members.append(tfb.Invert(_coupling(bijectors.AffineCoupling, VECTOR, "half", 1,
                                                dtype, conditional, "c2")))
        chain = bijectors.FlowChain(members, name="chain")
        return chain, _data(VECTOR, dtype), _context(dtype) if conditional else None
    return build


def image_chain_case(dtype):
    members = [
        _coupling(bijectors.AffineCoupling, IMAGE, "checkerboard", 0, dtype, name="c0"),
        bijectors.reverse_permutation(IMAGE[-1]),
        _coupling(bijectors.AdditiveCoupling, IMAGE, "half", 1, dtype, name="c1"),
    ]
    return bijectors.FlowChain(members, name="image_chain"), _data(IMAGE, dtype), None


def invert_case(conditional):
    def build(dtype):
        coupling = _coupling(bijectors.AffineCoupling, VECTOR, "half", 1, dtype, conditional)
        return (tfb.Invert(coupling), _data(VECTOR, dtype),
                _context(dtype) if conditional else None)
    return build


GLOW_IMAGE = [4, 4, 3]


def _conv1x1(shape, dtype, lu, seed=1, name="invertible_conv1x1"):
    layer = nets.Conv1x1Kernel(shape[-1], lu=lu, seed=seed, dtype=dtype)
    # A random orthogonal kernel has log|det W| = 0: perturb it so the log-det is exercised.
    rng = np.random.default_rng(seed + 100)
    for weight in layer.trainable_weights:
        weight.assign(weight.numpy() + rng.normal(0.0, 0.3, size=weight.shape))
    return bijectors.InvertibleConv1x1(layer, shape, name=name)


def conv1x1_case(shape, lu):
    return lambda dtype: (_conv1x1(shape, dtype, lu), _data(shape, dtype), None)


def glow_chain_case(dtype):
    """Squeeze [4, 4, 2] -> [2, 2, 8], then a 1x1 convolution and a coupling on that shape."""
    squeezed = bijectors.Squeeze(IMAGE).output_event_shape
    members = [
        _coupling(bijectors.AffineCoupling, squeezed, "half", 0, dtype, name="c0"),
        _conv1x1(squeezed, dtype, lu=True),
        bijectors.Squeeze(IMAGE),
    ]
    return bijectors.FlowChain(members, name="glow_chain"), _data(IMAGE, dtype), None


def split_channels_case(conditional):
    """A (conditional) coupling on the first 2 of 3 channels; the third passes through."""
    def build(dtype):
        inner = _coupling(bijectors.AffineCoupling, IMAGE, "half", 1, dtype, conditional)
        split = bijectors.SplitChannels(inner, GLOW_IMAGE, keep_channels=IMAGE[-1])
        return split, _data(GLOW_IMAGE, dtype), _context(dtype) if conditional else None
    return build


def actnorm_case(shape):
    def build(dtype):
        bijector = bijectors.ActNorm(nets.ActNormParams(shape[-1], dtype=dtype), shape)
        # Initialised on other data, so the checked transform is not the identity.
        bijectors.initialize_actnorm(bijector, 3.0 * _data(shape, dtype, seed=5) + 1.0)
        return bijector, _data(shape, dtype), None
    return build


def maf_case(transformer, conditional=False, inverted=False):
    """A MAF step with a random MADE order; `inverted` is an IAF step (tfb.Invert).

    `transformer` is a name or a `Transformer` instance.
    """
    def build(dtype):
        params_per_dim = bijectors.MaskedAutoregressiveFlow.made_params_per_dim(transformer, 4)
        made = nets.MADE(VECTOR[0], params_per_dim, [8], ordering="random",
                         context_size=CONTEXT_SIZE if conditional else None,
                         activation="tanh", zero_init=False, seed=2, dtype=dtype)
        # spline_range 1: part of the data lies outside, where the spline is the identity.
        bijector = bijectors.MaskedAutoregressiveFlow(
            made, VECTOR, transformer=transformer, num_spline_bins=4, spline_range=1.0,
            conditional=conditional)
        if inverted:
            bijector = tfb.Invert(bijector)
        return bijector, _data(VECTOR, dtype), _context(dtype) if conditional else None
    return build


def autoregressive_model_case(builder, conditional=False):
    """The whole bijector of a 2-step MAF or IAF (random orders), weights perturbed."""
    def build(dtype):
        flow = builder(VECTOR, num_layers=2, hidden_units=[8], orderings="random",
                       context_size=CONTEXT_SIZE if conditional else None, dtype=dtype)
        rng = np.random.default_rng(7)
        for weight in flow.trainable_weights:
            weight.assign(weight.numpy() + rng.normal(0.0, 0.3, size=weight.shape))
        return flow.bijector, _data(VECTOR, dtype), _context(dtype) if conditional else None
    return build


# The command-line settings of a tiny flow of any registered family. On images, Glow's is
# the whole bijector of a 2-level Glow (LU kernels, split priors).
FAMILY_SETTINGS = {"num_layers": 2, "hidden_units": [8], "num_levels": 2, "num_steps": 1,
                   "hidden_channels": 4, "num_blocks": 1, "coupling": "affine"}


def family_case(name, kind):
    """The whole bijector of a tiny flow of a registered family, weights perturbed."""
    def build(dtype):
        shape = IMAGE if kind == "image" else VECTOR
        # Images as continuous data (no dequantizer, no logit preprocessing): the bijector
        # is tested, not a data space whose logit saturates for far-out noise.
        continuous = {"num_bins": None, "dequantization": None} if kind == "image" else {}
        flow = FAMILIES[name].build(shape, FAMILY_SETTINGS, seed=0, dtype=dtype,
                                    **continuous)
        rng = np.random.default_rng(7)
        for weight in flow.trainable_weights:
            weight.assign(weight.numpy() + rng.normal(0.0, 0.1, size=weight.shape))
        if flow.latent_event_shape != flow.event_shape:
            # A flow whose bijectors sit inside its surjection (DenseFlow's InferenceChain):
            # the first unit of its first block, a chain of the family's modules.
            block = next(s for s in flow.surjection.stages if hasattr(s, "units"))
            return block.units[0], _data(block.event_shape, dtype), None
        return flow.bijector, _data(shape, dtype), None
    return build


def noise_affine_case(dtype):
    """DenseFlow's noise map: a random (not zero-initialised) noise net on a context."""
    params = nets.CrossUnitParams(1, zero_init=False, dtype=dtype)
    context = _data([4, 4, 3], dtype, seed=3)
    return bijectors.NoiseAffine(params, IMAGE, num_noise=1), _data(IMAGE, dtype), context


A, N = bijectors.AffineCoupling, bijectors.AdditiveCoupling
# Transformers in the generic `Coupling` and in MAF. Spline range 1: part of the data lies
# outside, where the spline is the identity. (In MAF, "spline" by name builds this same
# SPLINE: `maf_spline` covers both.)
ADDITIVE = bijectors.Additive()
AFFINE = bijectors.Affine(log_scale_bound=2.0)
AFFINE_SIGMOID = bijectors.Affine(log_scale_bound=2.0, scale="sigmoid")
SPLINE = bijectors.RationalQuadraticSpline(num_bins=4, range=1.0)
MIXTURE = bijectors.LogisticMixtureCDF(num_components=3)

# name -> (dtype -> (bijector, x [batch, *event], context or None))
REGISTRY = {
    "additive_half_p0": coupling_case(N, VECTOR, "half", 0),
    "additive_half_p1": coupling_case(N, VECTOR, "half", 1),
    "additive_checkerboard_p0": coupling_case(N, VECTOR, "checkerboard", 0),
    "additive_checkerboard_p1": coupling_case(N, VECTOR, "checkerboard", 1),
    "affine_half_p0": coupling_case(A, VECTOR, "half", 0),
    "affine_half_p1": coupling_case(A, VECTOR, "half", 1),
    "affine_checkerboard_p0": coupling_case(A, VECTOR, "checkerboard", 0),
    "affine_checkerboard_p1": coupling_case(A, VECTOR, "checkerboard", 1),
    "affine_half_odd_size": coupling_case(A, [5], "half", 1),
    "additive_image_checkerboard_p0": coupling_case(N, IMAGE, "checkerboard", 0),
    "additive_image_half_p1": coupling_case(N, IMAGE, "half", 1),
    "affine_image_checkerboard_p1": coupling_case(A, IMAGE, "checkerboard", 1),
    "affine_image_half_p0": coupling_case(A, IMAGE, "half", 0),
    "additive_conditional_half": coupling_case(N, VECTOR, "half", 0, conditional=True),
    "affine_conditional_checkerboard": coupling_case(A, VECTOR, "checkerboard", 1,
                                                     conditional=True),
    "affine_conditional_image": coupling_case(A, IMAGE, "checkerboard", 0, conditional=True),
    "diagonal_scale": diagonal_scale_case(VECTOR),
    "diagonal_scale_image": diagonal_scale_case(IMAGE),
    "flow_chain": chain_case(conditional=False),
    "flow_chain_conditional": chain_case(conditional=True),
    "flow_chain_image": image_chain_case,
    "invert_affine": invert_case(conditional=False),
    "invert_affine_conditional": invert_case(conditional=True),
    "actnorm": actnorm_case(VECTOR),
    "actnorm_image": actnorm_case(IMAGE),
    "level_scaling": lambda dtype: (bijectors.LevelScaling(256, VECTOR), _data(VECTOR, dtype),
                                    None),
    "level_scaling_centered_image": lambda dtype: (
        bijectors.LevelScaling(17, IMAGE, centered=True), _data(IMAGE, dtype), None),
    "logit_transform": lambda dtype: (bijectors.LogitTransform(VECTOR), _data(VECTOR, dtype),
                                      None),
    "logit_transform_image_alpha0": lambda dtype: (
        bijectors.LogitTransform(IMAGE, alpha=0.0), _data(IMAGE, dtype), None),
    "standardize": lambda dtype: (
        bijectors.Standardize(np.linspace(-1.0, 2.0, VECTOR[0]), np.linspace(0.2, 3.0, VECTOR[0])),
        _data(VECTOR, dtype), None),
    "conv1x1_plain": conv1x1_case(GLOW_IMAGE, lu=False),
    "conv1x1_lu": conv1x1_case(GLOW_IMAGE, lu=True),
    "conv1x1_lu_vector": conv1x1_case(VECTOR, lu=True),
    "squeeze": lambda dtype: (bijectors.Squeeze(GLOW_IMAGE), _data(GLOW_IMAGE, dtype), None),
    "glow_chain_squeeze_conv1x1_affine": glow_chain_case,
    "noise_affine": noise_affine_case,
    "split_channels": split_channels_case(conditional=False),
    "split_channels_conditional": split_channels_case(conditional=True),
    "maf_affine": maf_case("affine"),
    "maf_spline": maf_case("spline"),
    "maf_affine_conditional": maf_case("affine", conditional=True),
    "iaf_spline_conditional": maf_case("spline", conditional=True, inverted=True),
    "coupling_additive_half": coupling_case(ADDITIVE, VECTOR, "half", 1),
    "coupling_affine_checkerboard": coupling_case(AFFINE, VECTOR, "checkerboard", 0),
    "coupling_spline_half": coupling_case(SPLINE, VECTOR, "half", 0),
    "coupling_spline_conditional": coupling_case(SPLINE, [5], "checkerboard", 1,
                                                 conditional=True),
    "coupling_additive_image": coupling_case(ADDITIVE, IMAGE, "checkerboard", 1),
    "coupling_affine_image": coupling_case(AFFINE, IMAGE, "half", 0),
    "coupling_affine_sigmoid_image": coupling_case(AFFINE_SIGMOID, IMAGE, "half", 1),
    "coupling_spline_image": coupling_case(SPLINE, IMAGE, "checkerboard", 0),
    "coupling_spline_image_half": coupling_case(SPLINE, IMAGE, "half", 1),
    "coupling_logistic_mixture_half": coupling_case(MIXTURE, VECTOR, "half", 1),
    "coupling_logistic_mixture_conditional": coupling_case(MIXTURE, [5], "checkerboard", 0,
                                                           conditional=True),
    "coupling_logistic_mixture_image": coupling_case(MIXTURE, IMAGE, "checkerboard", 1),
    "maf_additive_transformer": maf_case(ADDITIVE),
    "maf_affine_transformer": maf_case(AFFINE, conditional=True),
    "coupling_affine_inverse_direction": coupling_case(
        bijectors.Affine(2.0, direction="inverse"), VECTOR, "half", 1),
    "maf_logistic_mixture_transformer": maf_case(MIXTURE),
    "maf_model": autoregressive_model_case(models.MAF),
    "grouped_autoregressive": lambda dtype: (bijectors.GroupedAutoregressive(
        nets.SharedTrunkConditioner(nets.CausalConvTrunk(4, dtype=dtype), nets.StepProjection(
            4, zero_init=False, dtype=dtype), dtype=dtype), [3, 2, 2], AFFINE),
        _data([3, 2, 2], dtype), None),
    "iaf_model_conditional": autoregressive_model_case(models.IAF, conditional=True),
    **{f"{name}_{kind}_family": family_case(name, kind)
       for name, family in FAMILIES.items() for kind in family.data_kinds},
}

_SLOW = {"affine_conditional_image", "flow_chain_image", "glow_chain_squeeze_conv1x1_affine",
         "maf_spline", "iaf_spline_conditional", "coupling_spline_image",
         "coupling_spline_image_half",
         *(f"{name}_image_family" for name in FAMILIES)}


def _registry_params():
    for name in REGISTRY:
        for dtype in ("float32", "float64"):
            marks = [pytest.mark.slow] if name in _SLOW else []
            yield pytest.param(name, dtype, id=f"{name}-{dtype}", marks=marks)


def test_registry_covers_every_bijector():
    """Each public bijector class, TFP's Permute and Invert appear in a registry entry."""
    keras.utils.set_random_seed(0)
    seen = []

    def visit(bijector):
        seen.append(bijector)
        for inner in getattr(bijector, "bijectors", []):
            visit(inner)
        if isinstance(getattr(bijector, "bijector", None), tfb.Bijector):  # tfb.Invert
            visit(bijector.bijector)

    for build in REGISTRY.values():
        visit(build("float32")[0])
    public = [getattr(bijectors, name) for name in bijectors.__all__]
    public = [cls for cls in public if isinstance(cls, type) and issubclass(cls, tfb.Bijector)]
    required = [cls for cls in public if cls not in (bijectors.FlowBijector, bijectors.Coupling)]
    # tfb.Invert(...) builds a private `_Invert` (TFP's auto-composite machinery): match names.
    seen_names = {type(b).__name__.lstrip("_") for b in seen}
    missing = [cls.__name__ for cls in [*required, tfb.Permute, tfb.Invert]
               if cls.__name__ not in seen_names]
    assert not missing, f"bijectors missing from REGISTRY: {missing}"


# XLA compilation dominates the run time: float32, the dtype compiled in practice, runs all
# three modes; float64, where the tolerances are tight, runs eager and tf.function.
MODES = {"float32": ("eager", "function", "jit"), "float64": ("eager", "function")}


@pytest.mark.parametrize("name, dtype", _registry_params())
def test_bijector_contract(name, dtype):
    keras.utils.set_random_seed(0)
    bijector, x, context = REGISTRY[name](dtype)
    report = check_bijector(bijector, x, context=context, modes=MODES[dtype])
    expected = {"round trip inverse(forward(x))", "round trip forward(inverse(y))",
                "autodiff log-det", "fldj == -ildj", "function == eager"}
    assert expected <= set(report)
    assert ("jit == eager" in report) == ("jit" in MODES[dtype])


# -- the kit on other people's bijectors ---------------------------------------------------


def test_kit_on_plain_tfp_bijectors_with_tf_variables():
    scale = tf.Variable([0.5, 2.0, 1.5], dtype=tf.float64)
    shift = tf.Variable([0.1, -0.2, 0.3], dtype=tf.float64)
    bijector = tfb.Chain([tfb.Shift(shift), tfb.Scale(scale)])
    found = discover_trainable_variables(bijector)
    assert {id(v) for v in found} == {id(scale), id(shift)}
    check_bijector(bijector, _data([3], "float64"), modes=("eager", "function"))


def test_kit_on_scalar_bijector_with_vector_events():
    """An elementwise bijector (forward_min_event_ndims=0) checked on a vector event."""
    check_bijector(tfb.Sinh(), _data([3], "float32"), modes=("eager",))


def test_discovery_deduplicates_a_shared_coupling():
    keras.utils.set_random_seed(0)
    coupling = _coupling(A, VECTOR, "half", 0, "float32")
    chain = tfb.Chain([coupling, tfb.Invert(coupling), _diagonal_scale(VECTOR, "float32")])
    chain.forward(_data(VECTOR, "float32"))
    found = discover_trainable_variables(chain)
    expected = [*coupling.conditioner.trainable_weights,
                *chain.bijectors[2].scale_layer.trainable_weights]
    assert [id(v) for v in found] == [id(v) for v in expected]
    assert coupling.trainable_variables == ()  # why the kit walks attributes itself


def test_kit_warns_when_the_jacobian_check_is_skipped():
    keras.utils.set_random_seed(0)
    bijector = _coupling(N, VECTOR, "half", 0, "float64")
    with pytest.warns(UserWarning, match=r"event size 4 > max_jacobian_dims=2"):
        report = check_bijector(bijector, _data(VECTOR, "float64"), max_jacobian_dims=2,
                                modes=("eager",))
    assert "autodiff log-det" not in report


@pytest.mark.parametrize("bijector, x, kwargs, error, match", [
    ("not a bijector", np.zeros([2, 4]), {}, TypeError, r"tfp.bijectors.Bijector, got str"),
    (None, np.zeros([2, 4], "int32"), {}, TypeError, r"float32 or float64, got dtype int32"),
    (None, np.zeros([4]), {}, ValueError, r"event rank >= 1 .*got shape \(4,\)"),
    (None, np.zeros([2, 4]), {"modes": ("graph",)}, ValueError,
     r"modes must be .*got \('graph',\)"),
])
def test_kit_rejects_bad_arguments(bijector, x, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_bijector(_VectorBijector("vector") if bijector is None else bijector, x,
                       **kwargs)


# -- the kit must fail on wrong bijectors --------------------------------------------------


class _VectorBijector(tfb.Bijector):
    """y = 2 x on vector events; subclasses break one part of the contract."""

    def __init__(self, name):
        super().__init__(forward_min_event_ndims=1, name=name)

    def _forward(self, x):
        return 2.0 * x

    def _inverse(self, y):
        return y / 2.0

    def _forward_log_det_jacobian(self, x):
        return tf.cast(tf.shape(x)[-1], x.dtype) * math.log(2.0) * tf.ones_like(x[..., 0])


class _LogDetOffByConstant(_VectorBijector):
    def __init__(self):
        super().__init__("log_det_off")

    def _forward_log_det_jacobian(self, x):
        return super()._forward_log_det_jacobian(x) + 0.1


class _WrongInverse(_VectorBijector):
    def __init__(self):
        super().__init__("wrong_inverse")

    def _inverse(self, y):
        return y / 2.001


class _InconsistentInverseLogDet(_VectorBijector):
    def __init__(self):
        super().__init__("inconsistent_ildj")

    def _inverse_log_det_jacobian(self, y):
        # Wrong sign: equals +fldj.
        return self._forward_log_det_jacobian(y)


class _NonFinite(_VectorBijector):
    def __init__(self):
        super().__init__("non_finite")

    def _forward(self, x):
        return tf.math.log(x - 10.0)

    def _inverse(self, y):
        return tf.exp(y) + 10.0

    def _forward_log_det_jacobian(self, x):
        return -tf.reduce_sum(tf.math.log(x - 10.0), axis=-1)


class _GraphOnlyOffset(_VectorBijector):
    """Consistent in every mode, but eager and graph results differ."""

    def __init__(self):
        super().__init__("graph_only_offset")

    def _offset(self):
        return 0.0 if tf.executing_eagerly() else 0.5

    def _forward(self, x):
        return 2.0 * x + self._offset()

    def _inverse(self, y):
        return (y - self._offset()) / 2.0


class _NotCompilable(_VectorBijector):
    def __init__(self):
        super().__init__("not_compilable")

    def _forward(self, x):
        return tf.numpy_function(lambda v: 2.0 * v, [x], x.dtype, stateful=False)


class _UnusedLayer(_VectorBijector):
    """Holds a Keras layer whose weights never reach the output."""

    def __init__(self):
        super().__init__("unused_layer")
        self.layer = keras.layers.Dense(4, dtype="float64")
        self.layer.build([None, 4])


class _AffineForgettingTheScale(bijectors.Affine):
    """A transformer whose inverse forgets the scale."""

    def inverse(self, y, params):
        return y - params[..., 0], tf.zeros_like(y)


class _AdditiveWithWrongLogDet(bijectors.Additive):
    """A transformer whose log-det (served by the greedy cache) is off."""

    def forward(self, x, params):
        y, log_det = super().forward(x, params)
        return y, log_det + 0.05

    def inverse(self, y, params):
        x, log_det = super().inverse(y, params)
        return x, log_det - 0.05


def _cached_case(transformer):
    """A tfp_flows coupling (greedy cache) with a broken transformer."""
    def build():
        keras.utils.set_random_seed(0)
        return _coupling(transformer, VECTOR, "half", 0, "float64")
    return build


BROKEN = [
    ("log-det off by a constant", _LogDetOffByConstant, r"log-det vs autodiff.*max abs error"),
    ("wrong inverse", _WrongInverse, r"round trip inverse\(forward\(x\)\) == x failed in "
                                     r"eager mode: max abs error"),
    ("ildj with the wrong sign", _InconsistentInverseLogDet,
     r"forward_log_det_jacobian\(x\) == -inverse_log_det_jacobian"),
    ("NaN output", _NonFinite, r"finite outputs failed in eager mode: y has \d+ NaN"),
    ("graph differs from eager", _GraphOnlyOffset,
     r"agreement with eager mode on y failed in function mode: max abs error 0\.5"),
    ("no XLA kernel", _NotCompilable, r"failed in jit mode: raised"),
    ("variable without gradient", _UnusedLayer,
     r"gradient of the forward NLL failed in eager mode: variable .*kernel gets no gradient"),
    ("greedy cache, wrong inverse", _cached_case(_AffineForgettingTheScale()),
     r"round trip inverse\(forward\(x\)\) == x failed"),
    ("greedy cache, wrong log-det", _cached_case(_AdditiveWithWrongLogDet()),
     r"log-det vs autodiff.*failed in eager mode: max abs error 0\.1"),
]


@pytest.mark.parametrize("description, build, match", BROKEN, ids=[b[0] for b in BROKEN])
def test_kit_fails_on_broken_bijectors(description, build, match):
    x = _data(VECTOR, "float64")
    with pytest.raises(AssertionError, match=match) as info:
        check_bijector(build(), x)
    assert re.search(r"check_bijector\(\w+\)", str(info.value))


# -- FlowChain's fused walk against tfb.Chain's ---------------------------------------------


def _nested_fused_chain(dtype, conditional):
    """Squeeze, a conditional coupling, an inverted coupling and a split holding a chain:
    every member has a fused transform."""
    squeezed = bijectors.Squeeze(IMAGE).output_event_shape
    inner_shape = [*squeezed[:-1], squeezed[-1] // 2]
    inner = bijectors.FlowChain(
        [_coupling(bijectors.AffineCoupling, inner_shape, "half", 0, dtype, conditional,
                   "inner_c0"), _diagonal_scale(inner_shape, dtype)], name="inner")
    members = [
        tfb.Invert(bijectors.Squeeze(IMAGE)),
        _coupling(bijectors.AffineCoupling, squeezed, "half", 1, dtype, conditional, "c0"),
        tfb.Invert(_coupling(bijectors.AffineCoupling, squeezed, "checkerboard", 0, dtype,
                             conditional, "c1")),
        bijectors.SplitChannels(inner, squeezed, keep_channels=inner_shape[-1]),
        bijectors.Squeeze(IMAGE),
    ]
    return bijectors.FlowChain(members, name="outer")


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
def test_fused_chain_matches_the_tfb_chain_walk(conditional, monkeypatch):
    chain = _nested_fused_chain("float64", conditional)
    assert chain._fused
    x, y = _data(IMAGE, "float64", seed=3), _data(IMAGE, "float64", seed=4)
    kwargs = {"context": _context("float64")} if conditional else {}

    def results():
        return [chain.forward(x, **kwargs), chain.inverse(y, **kwargs),
                chain.forward_log_det_jacobian(x, 3, **kwargs),
                chain.inverse_log_det_jacobian(y, 3, **kwargs),
                # A larger event rank sums the per-example log-dets over the extra axis.
                chain.inverse_log_det_jacobian(y, 4, **kwargs)]

    fused = results()
    assert fused[3].shape == [BATCH] and fused[4].shape == []
    monkeypatch.setattr(bijectors.FlowChain, "_fused", property(lambda self: False))
    walked = results()
    for got, want in zip(fused, walked, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fused[4], np.sum(walked[3]), rtol=1e-10)
    # The log-det really depends on the input (the check is not comparing constants).
    assert np.ptp(fused[3]) > 1e-3


def test_chain_with_a_plain_tfp_member_takes_the_tfb_chain_walk():
    scale = tfb.Scale(np.float64(2.0))
    chain = bijectors.FlowChain([_diagonal_scale(VECTOR, "float64"), scale])
    empty = bijectors.FlowChain([])
    assert not chain._fused and not empty._fused
    x = _data(VECTOR, "float64")
    ildj = chain.inverse_log_det_jacobian(x, 1)
    np.testing.assert_allclose(
        ildj, -4 * np.log(2.0) + chain.bijectors[0].inverse_log_det_jacobian(x / 2.0, 1),
        rtol=1e-12)
    np.testing.assert_allclose(empty.inverse_log_det_jacobian(x, 1), np.zeros(BATCH))
