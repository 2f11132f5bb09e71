"""Masked autoregressive flow: one MADE pass for the density, `D` passes to sample."""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors.base import FlowBijector, check_event_shape, soft_clamp

__all__ = ["TRANSFORMERS", "MaskedAutoregressiveFlow"]

TRANSFORMERS = ("affine", "spline")

# Lower bounds keeping every spline bin and knot slope away from zero (Durkan et al.).
_MIN_BIN_SIZE = 1e-3
_MIN_SLOPE = 1e-3


def _positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _num_bins(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"num_spline_bins must be an int >= 2, got {value!r}")
    return value


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

    Transformers `tau`:

    - `"affine"`: `x_i = u_i * exp(s_i) + mu_i`, `u_i = (x_i - mu_i) * exp(-s_i)` with
      `(mu_i, s_raw_i) = theta_i` and `s = c * tanh(s_raw / c)` (`c = log_scale_bound`);
      forward log-det `sum(s)`, inverse `-sum(s)`.
    - `"spline"`: a monotonic rational-quadratic spline (Durkan et al., arXiv:1906.04032;
      `tfp.bijectors.RationalQuadraticSpline`) with `K = num_spline_bins` bins on
      `[-B, B]` (`B = spline_range`) and the identity outside. `theta_i` holds `K` bin
      widths, `K` bin heights (softmax, scaled to `2B`, each at least `1e-3`) and `K - 1`
      interior knot slopes (`softplus(v + log(expm1(1 - 1e-3))) + 1e-3`, so `v = 0` is
      slope 1); zero parameters are the identity map.

    The MADE's output layer starts at zero (`tfp_flows.nets.MADE(zero_init=True)`), so a
    fresh bijector is the identity for both transformers. `tfp.bijectors.Invert` of this
    bijector is an inverse autoregressive flow (IAF): parallel sampling, sequential density.

    Reference: Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density
    Estimation", arXiv:1705.07057.

    Args:
        made: a Keras layer mapping `[..., D]` (and `context=` `[..., context_size]` when
            `conditional`) to `[..., D, params_per_dim]` with the autoregressive property,
            typically `tfp_flows.nets.MADE`; size it with `made_params_per_dim`.
        event_shape: `[D]`.
        transformer: `"affine"` or `"spline"`.
        log_scale_bound: positive bound `c` of the affine log-scales.
        num_spline_bins: number of spline bins `K >= 2`.
        spline_range: positive half-width `B` of the spline's interval `[-B, B]`.
        conditional: whether the MADE also takes a `context` tensor.
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> from tfp_flows.nets import MADE
        >>> made = MADE(3, MaskedAutoregressiveFlow.made_params_per_dim("affine"), [16])
        >>> maf = MaskedAutoregressiveFlow(made, [3])
        >>> maf.forward(np.ones([2, 3], "float32")).numpy().tolist()  # fresh: the identity
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    def __init__(self, made, event_shape, transformer="affine", log_scale_bound=3.0,
                 num_spline_bins=8, spline_range=3.0, conditional=False, validate_args=False,
                 name="masked_autoregressive_flow"):
        parameters = dict(locals())
        if not isinstance(made, keras.layers.Layer):
            raise TypeError(f"made must be a keras.layers.Layer (such as tfp_flows.nets.MADE), "
                            f"got {type(made).__name__}")
        event_shape = check_event_shape(event_shape, ranks=(1,))
        self.transformer = transformer
        self.log_scale_bound = _positive_number("log_scale_bound", log_scale_bound)
        self.num_spline_bins = _num_bins(num_spline_bins)
        self.spline_range = _positive_number("spline_range", spline_range)
        expected = self.made_params_per_dim(transformer, num_spline_bins)
        size = getattr(made, "event_size", event_shape[0])
        if size != event_shape[0]:
            raise ValueError(f"made has event_size {size} but event_shape is {event_shape}")
        params_per_dim = getattr(made, "params_per_dim", expected)
        if params_per_dim != expected:
            raise ValueError(
                f"a {transformer!r} transformer needs a MADE with params_per_dim={expected}"
                f"{'' if transformer == 'affine' else f' (num_spline_bins={num_spline_bins})'}"
                f", got {params_per_dim}")
        if hasattr(made, "context_size") and (made.context_size is not None) != bool(
                conditional):
            raise ValueError(f"conditional={conditional!r} does not match the MADE's "
                             f"context_size={made.context_size!r}")
        self.made = made
        self.conditional = bool(conditional)
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    @staticmethod
    def made_params_per_dim(transformer="affine", num_spline_bins=8):
        """Parameters per dimension the MADE must return for `transformer`."""
        if transformer not in TRANSFORMERS:
            raise ValueError(f"transformer must be one of {TRANSFORMERS}, got {transformer!r}")
        return 2 if transformer == "affine" else 3 * _num_bins(num_spline_bins) - 1

    # -- the shared pieces -------------------------------------------------------------------

    def _params(self, x, context):
        """MADE parameters `[N, D, P]` of `x` `[N, D]`, in the data dtype."""
        params = self.made(x) if context is None else self.made(x, context=context)
        # Log-dets stay in the data dtype (float32) even under a mixed-precision policy.
        return tf.cast(params, x.dtype)

    def _elementwise(self, value, params, inverse):
        """Applies `tau` (or `tau^{-1}` when `inverse`) with `params` `[N, D, P]`.

        Returns the transformed `[N, D]` and the log-det of the applied map summed over the
        event, `[N]`.
        """
        if self.transformer == "affine":
            shift, log_scale = params[..., 0], soft_clamp(params[..., 1], self.log_scale_bound)
            if inverse:
                out, log_det = (value - shift) * tf.exp(-log_scale), -log_scale
            else:
                out, log_det = value * tf.exp(log_scale) + shift, log_scale
            return out, tf.reduce_sum(log_det, axis=-1)
        spline = self._spline(params)
        if inverse:
            out = spline.inverse(value)
            log_det = spline.inverse_log_det_jacobian(value, event_ndims=0)
        else:
            out = spline.forward(value)
            log_det = spline.forward_log_det_jacobian(value, event_ndims=0)
        return out, tf.reduce_sum(log_det, axis=-1)

    def _spline(self, params):
        bins = self.num_spline_bins
        dtype = params.dtype
        width = tf.constant(2.0 * self.spline_range - bins * _MIN_BIN_SIZE, dtype)

        def bin_sizes(raw):
            return tf.math.softmax(raw, axis=-1) * width + _MIN_BIN_SIZE

        raw_slopes = params[..., 2 * bins:] + math.log(math.expm1(1.0 - _MIN_SLOPE))
        return tfp.bijectors.RationalQuadraticSpline(
            bin_widths=bin_sizes(params[..., :bins]),
            bin_heights=bin_sizes(params[..., bins:2 * bins]),
            knot_slopes=tf.math.softplus(raw_slopes) + _MIN_SLOPE,
            range_min=tf.constant(-self.spline_range, dtype))

    # -- the fused transform -----------------------------------------------------------------

    def _transform(self, x, inverse, context=None):
        size = self._event_shape_in[0]
        batch_shape = tf.shape(x)[:-1]
        flat = tf.reshape(x, [-1, size])
        if context is not None:
            context = tf.convert_to_tensor(context)
            context = tf.broadcast_to(context, tf.concat([batch_shape, tf.shape(context)[-1:]],
                                                         0))
            context = tf.reshape(context, [-1, tf.shape(context)[-1]])
        if inverse:
            out, log_det = self._elementwise(flat, self._params(flat, context), inverse=True)
        else:
            out, log_det = self._sequential(flat, context)
        return tf.reshape(out, tf.shape(x)), tf.reshape(log_det, batch_shape)

    def _sequential(self, noise, context):
        """The sampling direction: `D` MADE passes, each fixing one more dimension."""
        size = self._event_shape_in[0]
        if not self.made.built:
            # Weights must exist before the loop: variables cannot be created in its body.
            self._params(noise, context)

        def body(step, x, log_det):
            del log_det  # only the last pass's log-det, at exact parameters, is kept
            x, log_det = self._elementwise(noise, self._params(x, context), inverse=False)
            return step + 1, x, log_det

        _, x, log_det = tf.while_loop(
            lambda step, x, log_det: step < size, body,
            (tf.constant(0), tf.zeros_like(noise), tf.zeros(tf.shape(noise)[:1], noise.dtype)),
            maximum_iterations=size)
        return x, log_det
