"""Masked autoregressive flow: one MADE pass for the density, `D` passes to sample."""


import keras
import tensorflow as tf

from tfp_flows._validation import check_int, check_positive_number, class_declares
from tfp_flows.bijectors.base import (
    FlowBijector,
    check_event_shape,
    resolve_context_size,
)
from tfp_flows.bijectors.transformers import (
    Affine,
    RationalQuadraticSpline,
    Transformer,
    takes_param_tuple,
)

__all__ = ["MaskedAutoregressiveFlow", "make_transformer"]

# The transformers MAF names by string; any `Transformer` instance works too.
TRANSFORMERS = ("affine", "spline")


def _num_bins(value):
    return check_int("num_spline_bins", value, minimum=2)


def make_transformer(transformer="affine", log_scale_bound=3.0, num_spline_bins=8,
                     spline_range=3.0):
    """The `Transformer` MAF's arguments describe.

    `"affine"` is `Affine(log_scale_bound, direction="inverse")`: in an autoregressive
    flow the conditioner gives the density direction `u = x * exp(s) + t` (see
    `MaskedAutoregressiveFlow`).

    Args:
        transformer: `"affine"`, `"spline"` or a `tff.bijectors.Transformer` (returned as
            is; the other arguments are then only validated).
        log_scale_bound: positive bound of the affine log-scales.
        num_spline_bins: number of spline bins, `>= 2`.
        spline_range: positive half-width of the spline's interval.

    Raises:
        TypeError: `transformer` is neither a name nor a `Transformer`.
        ValueError: an unknown name or an argument out of range.
    """
    log_scale_bound = check_positive_number("log_scale_bound", log_scale_bound)
    num_spline_bins = _num_bins(num_spline_bins)
    spline_range = check_positive_number("spline_range", spline_range)
    if isinstance(transformer, Transformer):
        return transformer
    if not isinstance(transformer, str):
        raise TypeError(f"transformer must be one of {TRANSFORMERS} or a "
                        f"tfp_flows.bijectors.Transformer, got {transformer!r} of type "
                        f"{type(transformer).__name__}")
    if transformer not in TRANSFORMERS:
        raise ValueError(f"transformer must be one of {TRANSFORMERS}, got {transformer!r}")
    if transformer == "affine":
        return Affine(log_scale_bound, direction="inverse")
    return RationalQuadraticSpline(num_spline_bins, range=spline_range)


class MaskedAutoregressiveFlow(FlowBijector):
    """Masked autoregressive flow (MAF): an elementwise transform whose parameters for
    dimension `i` come from a MADE reading the data dimensions before `i` in its order.

    With `u` the base-side value, `x` the data-side value and `theta_i(x)` the MADE
    parameters of dimension `i` (they depend on `x_j` only for `j` before `i`):

    - inverse (density direction, data -> noise): `u_i = tau^{-1}(x_i; theta_i(x))`, one
      parallel MADE pass over `x`.
    - forward (sampling direction, noise -> data): `x_i = tau(u_i; theta_i(x))`, solved
      one dimension at a time: a `tf.while_loop` of exactly `D` MADE passes, pass `k`
      recomputing `theta(x)` from the current `x`; after pass `k` the first `k` dimensions
      in the order are exact, and the last pass gives the exact parameters of every
      dimension.
    - log-det: the Jacobian is triangular in the MADE order, so the log-det is the sum of
      the elementwise log-derivatives of `tau` at the exact parameters.

    Transformers `tau` (any `tff.bijectors.Transformer`; two have names):

    - `"affine"` (`tff.bijectors.Affine(log_scale_bound, direction="inverse")`): the MADE
      parameterises the density direction, `u_i = x_i * exp(s_i) + t_i` and
      `x_i = (u_i - t_i) * exp(-s_i)`, with `(t_i, s_raw_i) = theta_i` and
      `s = c * tanh(s_raw / c)` (`c = log_scale_bound`); inverse log-det `sum(s)`, forward
      `-sum(s)`. This is the parameterisation of zuko's and nflows' MAF, and of the IAF
      paper's sampling pass; it trained to a better likelihood than the sampling-direction
      `tff.bijectors.Affine(log_scale_bound)` (`x_i = u_i * exp(s_i) + mu_i`), which any
      flow still takes as `transformer=` (docs/families/maf.md).
    - `"spline"` (`tff.bijectors.RationalQuadraticSpline(num_spline_bins, spline_range)`):
      a monotonic rational-quadratic spline (Durkan et al., arXiv:1906.04032) with
      `K = num_spline_bins` bins on `[-B, B]` (`B = spline_range`) and the identity
      outside; zero parameters are the identity map.

    The MADE's output layer starts at zero (`tfp_flows.nets.MADE(zero_init=True)`), so a
    fresh bijector is the identity for the shipped transformers. `tfp.bijectors.Invert` of this
    bijector is an inverse autoregressive flow (IAF): parallel sampling, sequential density.

    Reference: Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density
    Estimation", arXiv:1705.07057.

    Args:
        made: a Keras layer mapping `[..., D]` (and `context=` `[..., context_size]` when
            `conditional`) to `[..., D, params_per_dim]` with the autoregressive property,
            typically `tfp_flows.nets.MADE(D, transformer.num_params, hidden_units)`.
            A layer with a `precompute()` method (`tfp_flows.nets.SharedTrunkConditioner`,
            whose data-independent inputs are those of its flow step) is asked once per
            sampling call for a function computing the same as the layer (with the same
            `context=` keyword), which the `D` passes then call.
        event_shape: `[D]`.
        transformer: a `tff.bijectors.Transformer`, or `"affine"` or `"spline"` for the
            ones the next three arguments describe.
        log_scale_bound: positive bound `c` of the affine log-scales (`"affine"` only).
        num_spline_bins: number of spline bins `K >= 2` (`"spline"` only).
        spline_range: positive half-width `B` of the spline's interval `[-B, B]`
            (`"spline"` only).
        conditional: whether the MADE also takes a `context` tensor; `None` (the default)
            means "if a context size is known".
        context_size: size of the context's last axis; by default the MADE's
            `context_size`.
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> from tfp_flows.nets import MADE
        >>> transformer = Affine(log_scale_bound=3.0)
        >>> made = MADE(3, transformer.num_params, [16])
        >>> maf = MaskedAutoregressiveFlow(made, [3], transformer=transformer)
        >>> maf.forward(np.ones([2, 3], "float32")).numpy().tolist()  # fresh: the identity
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    def __init__(self, made, event_shape, transformer="affine", log_scale_bound=3.0,
                 num_spline_bins=8, spline_range=3.0, conditional=None, context_size=None,
                 validate_args=False, name="masked_autoregressive_flow"):
        parameters = dict(locals())
        if not isinstance(made, keras.layers.Layer):
            raise TypeError(f"made must be a keras.layers.Layer (such as tfp_flows.nets.MADE), "
                            f"got {type(made).__name__}")
        event_shape = check_event_shape(event_shape, ranks=(1,))
        self.transformer = make_transformer(transformer, log_scale_bound, num_spline_bins,
                                            spline_range)
        self.log_scale_bound = float(log_scale_bound)
        self.num_spline_bins = num_spline_bins
        self.spline_range = float(spline_range)
        expected = self.transformer.num_params
        size = getattr(made, "event_size", event_shape[0])
        if size != event_shape[0]:
            raise ValueError(f"made has event_size {size} but event_shape is {event_shape}")
        params_per_dim = getattr(made, "params_per_dim", expected)
        if params_per_dim != expected:
            described = (repr(transformer) if isinstance(transformer, str)
                         else type(transformer).__name__)
            detail = (f" (num_spline_bins={num_spline_bins})" if transformer == "spline"
                      else "")
            raise ValueError(
                f"a {described} transformer needs a MADE with params_per_dim={expected}"
                f"{detail}, got {params_per_dim}")
        self.made = made
        self.conditional, self.context_size = resolve_context_size(
            made, conditional, context_size, layer_name="MADE")
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    @staticmethod
    def made_params_per_dim(transformer="affine", num_spline_bins=8):
        """Parameters per dimension the MADE must return for `transformer`.

        The same as `transformer.num_params` for a `Transformer` instance.
        """
        return make_transformer(transformer, num_spline_bins=num_spline_bins).num_params

    # -- the shared pieces -------------------------------------------------------------------

    def _params(self, x, context, made=None):
        """MADE parameters `[N, D, P]` of `x` `[N, D]` (by `made`, else `self.made`), in the
        data dtype (log-dets stay float32 under a mixed-precision policy).

        A `tff.nets.MADE` (or NanoFlow's `tff.nets.SharedTrunkConditioner`) hands a
        transformer that takes parameter tuples the `P` blocks `[N, D]` instead, sparing the
        strided slices of `[N, D, P]` and their gradients. `offers_param_blocks` is read
        from `self.made`'s own class, so a subclass that overrides `call` keeps the tensor;
        `made` (the layer, or the function its `precompute()` returned) takes
        `param_blocks` as the layer does.
        """
        made = self.made if made is None else made
        kwargs = {} if context is None else {"context": context}
        if (takes_param_tuple(self.transformer)
                and class_declares(self.made, "offers_param_blocks")):
            return tuple(tf.cast(block, x.dtype)
                         for block in made(x, param_blocks=True, **kwargs))
        return tf.cast(made(x, **kwargs), x.dtype)

    def _elementwise(self, value, params, inverse):
        """Applies `tau` (or `tau^{-1}` when `inverse`) with `params` (`_params`' output).

        Returns the transformed `[N, D]` and the log-det of the applied map summed over the
        event, `[N]`.
        """
        if inverse:
            out, log_det = self.transformer.inverse(value, params)
        else:
            out, log_det = self.transformer.forward(value, params)
        return out, tf.reduce_sum(log_det, axis=-1)

    # -- the fused transform -----------------------------------------------------------------

    def _transform(self, x, inverse, context=None):
        size = self._event_shape_in[0]
        batch_shape = tf.shape(x)[:-1]
        flat = tf.reshape(x, [-1, size])
        context = self._flat_context(context, x)
        if inverse:
            out, log_det = self._elementwise(flat, self._params(flat, context), inverse=True)
        else:
            out, log_det = self._sequential(flat, context)
        return tf.reshape(out, tf.shape(x)), tf.reshape(log_det, batch_shape)

    def _sequential(self, noise, context):
        """The sampling direction: `D` MADE passes, each fixing one more dimension."""
        return sequential_passes(
            noise, self._event_shape_in[0], self.made,
            lambda x, made: self._elementwise(noise, self._params(x, context, made),
                                              inverse=False))


def sequential_passes(noise, num_passes, conditioner, one_pass):
    """The sampling direction of an autoregressive transform, solved by fixed-point passes.

    `one_pass(x, conditioner)` returns `(tau(noise; theta(x)), log_det)` with the
    parameters `theta` computed from the current `x` by `conditioner` (a callable equal
    to the layer); starting from zeros, a `tf.while_loop` of exactly `num_passes` passes
    makes one more group of entries exact each time, and the last pass's log-det, at exact
    parameters, is returned with `x`. The layer is built before the loop (variables cannot
    be created in its body); a layer with a `precompute()` method
    (`tff.nets.SharedTrunkConditioner`) is asked once for a function computing the same,
    so what it computes without reading `x` (a shared trunk's step embedding terms) is
    computed once, not in each pass.
    """
    if not conditioner.built:
        one_pass(noise, conditioner)
    call = conditioner.precompute() if hasattr(conditioner, "precompute") else conditioner

    def body(step, x, log_det):
        del log_det  # only the last pass's log-det, at exact parameters, is kept
        x, log_det = one_pass(x, call)
        return step + 1, x, log_det

    _, x, log_det = tf.while_loop(
        lambda step, x, log_det: step < num_passes, body,
        (tf.constant(0), tf.zeros_like(noise), tf.zeros(tf.shape(noise)[:1], noise.dtype)),
        maximum_iterations=num_passes)
    return x, log_det
