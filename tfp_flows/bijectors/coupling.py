"""Coupling layers: part of the input conditions an elementwise transform of the rest."""

import keras
import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, check_event_shape, resolve_context_size
from tfp_flows.bijectors.transformers import Additive, Affine, get_transformer, takes_param_tuple

__all__ = ["AdditiveCoupling", "AffineCoupling", "Coupling", "MASKS"]

MASKS = ("half", "checkerboard")


def _check_mask(event_shape, mask, parity):
    """Returns `event_shape` as a list after checking that `mask` and `parity` fit it."""
    event_shape = check_event_shape(event_shape)
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    if mask == "half" and event_shape[-1] < 2:
        raise ValueError(
            f"a 'half' mask splits the last axis, which needs size >= 2; got event_shape "
            f"{event_shape}")
    if mask == "checkerboard" and len(event_shape) == 1 and event_shape[0] < 2:
        raise ValueError(f"a checkerboard mask needs at least 2 entries, got {event_shape}")
    return event_shape


def _changed_size(event_shape, mask, parity):
    """Size of the last axis of the entries the conditioner returns parameters for."""
    if mask == "checkerboard":
        return event_shape[-1]
    split = event_shape[-1] // 2
    return event_shape[-1] - split if parity == 0 else split


class Coupling(FlowBijector):
    """Coupling bijector: the entries kept by a mask condition a transform of the others.

    With `x = (x_a, x_b)` split by the mask, `theta = conditioner(x_a)` and an elementwise
    `transformer` `tau` (`tff.bijectors.Additive`, `Affine`, `RationalQuadraticSpline`,
    `LogisticMixtureCDF` or your own `tff.bijectors.Transformer`):

    - forward: `y_a = x_a`, `y_b = tau(x_b; theta(x_a))`
    - inverse: `x_a = y_a`, `x_b = tau^{-1}(y_b; theta(y_a))`
    - log-det: `sum_i log|tau'(x_b,i; theta_i)|` forward, its negative inverse (the
      Jacobian is block triangular with identity and diagonal blocks).

    Masks:
        `"half"` splits the last axis (features of a vector, channels of an image) in two:
        with `parity=0` the first `n // 2` entries condition the rest, with `parity=1` the
        last `n - n // 2` entries condition the first ones. `"checkerboard"` alternates
        entries of a vector, or pixels of an image (`(h + w + parity) % 2`); the conditioner
        then sees the whole input with the transformed entries set to zero and returns
        parameters for every entry, of which only the transformed ones are used.

    The conditioner is any Keras layer mapping the conditioning part (`[batch, *shape]`) to
    `transformer.num_params` parameters per transformed entry on the last axis: parameter
    `p` of entry `i` is channel `p * n + i`, with `n` transformed entries per position (use
    `conditioner_output_size` to size it). A conditional coupling calls it as
    `conditioner(inputs, context=context)`, with the context broadcast against the batch.

    Reference: Dinh, Krueger, Bengio, "NICE: Non-linear Independent Components
    Estimation", arXiv:1410.8516; Dinh, Sohl-Dickstein, Bengio, "Density estimation using
    Real NVP", arXiv:1605.08803; Durkan, Bekasov, Murray, Papamakarios, "Neural Spline
    Flows", arXiv:1906.04032; Ho, Chen, Srinivas, Duan, Abbeel, "Flow++", arXiv:1902.00275.

    Args:
        conditioner: Keras layer returning `conditioner_output_size(...)` values.
        event_shape: `[D]` for vectors or `[H, W, C]` for images.
        transformer: a `tff.bijectors.Transformer`, or `"additive"`, `"affine"`,
            `"spline"` or `"logistic_mixture"` for one with default arguments.
        mask: `"half"` or `"checkerboard"`.
        parity: `0` or `1`, which part is transformed.
        conditional: whether the conditioner also takes a `context` tensor; `None` (the
            default) means "if a context size is known".
        context_size: size of the context's last axis; by default the conditioner's
            `context_size` attribute if it has one, else learned from the first context.
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> from tfp_flows import nets
        >>> from tfp_flows.bijectors import RationalQuadraticSpline
        >>> spline = RationalQuadraticSpline(num_bins=4)
        >>> size = Coupling.conditioner_output_size([4], transformer=spline)
        >>> coupling = Coupling(nets.MLP([8], size), [4], transformer=spline)
        >>> coupling.forward(np.ones([2, 4], "float32")).numpy().tolist()  # fresh: identity
        [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(self, conditioner, event_shape, transformer, mask="half", parity=0,
                 conditional=None, context_size=None, validate_args=False, name="coupling",
                 parameters=None):
        parameters = dict(locals()) if parameters is None else parameters
        if not isinstance(conditioner, keras.layers.Layer):
            raise TypeError(
                f"conditioner must be a keras.layers.Layer, got {type(conditioner).__name__}")
        event_shape = _check_mask(event_shape, mask, parity)
        self.conditioner = conditioner
        self.transformer = get_transformer(transformer)
        self.mask = mask
        self.parity = parity
        self.conditional, self.context_size = resolve_context_size(
            conditioner, conditional, context_size)
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    @property
    def num_params(self):
        """Parameters per transformed entry (`transformer.num_params`)."""
        return self.transformer.num_params

    @classmethod
    def conditioner_output_size(cls, event_shape, transformer, mask="half", parity=0):
        """Size of the conditioner's last output axis for this coupling's parameters.

        Args:
            event_shape: the coupling's event shape.
            transformer: a `tff.bijectors.Transformer` (or its name).
            mask: `"half"` or `"checkerboard"`.
            parity: `0` or `1`.

        Returns:
            `transformer.num_params` times the number of transformed entries per position
            (per vector, or per pixel of an image).
        """
        event_shape = _check_mask(event_shape, mask, parity)
        return get_transformer(transformer).num_params * _changed_size(event_shape, mask,
                                                                       parity)

    def _checkerboard(self):
        """Boolean mask of the kept entries, broadcastable against the event."""
        shape = self._event_shape_in
        if len(shape) == 1:
            return tf.range(shape[0]) % 2 == self.parity
        rows = tf.range(shape[0])[:, None]
        cols = tf.range(shape[1])[None, :]
        return ((rows + cols) % 2 == self.parity)[..., None]

    def _conditioner_params(self, conditioning, context):
        """Transformer parameters `[*batch, *changed, num_params]` from the conditioner
        (for a transformer that `takes_param_tuple`, a tuple of `num_params` tensors
        `[*batch, *changed]`).

        `context` is `None` or already flattened against the batch (`_flat_context`).
        """
        event_ndims = len(self._event_shape_in)
        batch_shape = tf.shape(conditioning)[:-event_ndims]
        flat = tf.reshape(conditioning, tf.concat(
            [[-1], tf.shape(conditioning)[-event_ndims:]], axis=0))
        params = self.conditioner(flat) if context is None else self.conditioner(
            flat, context=context)
        # Log-dets stay in the data dtype (float32) even under a mixed-precision policy.
        params = tf.cast(params, conditioning.dtype)
        # The conditioner stacks parameter p of all n changed entries as channels
        # [p * n, (p + 1) * n): move the parameter index to a trailing axis.
        num_params = self.num_params
        changed = _changed_size(self._event_shape_in, self.mask, self.parity)
        if params.shape[-1] is not None and params.shape[-1] != num_params * changed:
            raise ValueError(
                f"{self.name}: the conditioner returned {params.shape[-1]} values on its last "
                f"axis, expected {num_params * changed} ({num_params} parameters of "
                f"{type(self.transformer).__name__} x {changed} transformed entries; see "
                f"conditioner_output_size)")
        if takes_param_tuple(self.transformer):
            # Each parameter's block of channels as it stands: no transpose, no slices.
            shape = tf.concat([batch_shape, tf.shape(params)[1:-1], [changed]], axis=0)
            return tuple(tf.reshape(block, shape)
                         for block in tf.split(params, num_params, axis=-1))
        params = tf.reshape(params, tf.concat(
            [batch_shape, tf.shape(params)[1:-1], [num_params, changed]], axis=0))
        return tf.linalg.matrix_transpose(params)

    def _transform(self, x, inverse, context=None):
        event_axes = list(range(-len(self._event_shape_in), 0))
        context = self._flat_context(context, x)
        if self.mask == "checkerboard":
            keep = self._checkerboard()
            params = self._conditioner_params(tf.where(keep, x, tf.zeros_like(x)), context)
            changed, log_det = self._elementwise(x, params, inverse)
            y = tf.where(keep, x, changed)
            return y, tf.reduce_sum(tf.where(keep, tf.zeros_like(log_det), log_det),
                                    axis=event_axes)
        channels = self._event_shape_in[-1]
        # `tf.split` rather than two slices: the gradient of a slice scatters into a zero
        # tensor of the input's size, that of a split is one concat (benchmarks/glow_overhead.py).
        first, second = tf.split(x, [channels // 2, channels - channels // 2], axis=-1)
        kept, change = (first, second) if self.parity == 0 else (second, first)
        changed, log_det = self._elementwise(
            change, self._conditioner_params(kept, context), inverse)
        parts = [kept, changed] if self.parity == 0 else [changed, kept]
        return tf.concat(parts, axis=-1), tf.reduce_sum(log_det, axis=event_axes)

    def _elementwise(self, x, params, inverse):
        """The transformed entries and the elementwise log-det of the applied map."""
        if inverse:
            return self.transformer.inverse(x, params)
        return self.transformer.forward(x, params)


class AdditiveCoupling(Coupling):
    """NICE additive coupling: `Coupling` with the `Additive` transformer.

    With `x = (x_a, x_b)` split by the mask and `t = conditioner(x_a)`:

    - forward: `y_a = x_a`, `y_b = x_b + t(x_a)`
    - inverse: `x_a = y_a`, `x_b = y_b - t(y_a)`
    - log-det: `0` (volume preserving)

    Reference: Dinh, Krueger, Bengio, "NICE: Non-linear Independent Components
    Estimation", arXiv:1410.8516.

    Args:
        conditioner: Keras layer returning `conditioner_output_size(...)` values.
        event_shape: `[D]` for vectors or `[H, W, C]` for images.
        mask: `"half"` or `"checkerboard"`.
        parity: `0` or `1`, which part is transformed.
        conditional: whether the conditioner also takes a `context` tensor (`None`: if a
            context size is known).
        context_size: size of the context's last axis (see `Coupling`).
        validate_args: TFP's argument validation flag.
        name: bijector name.
    """

    num_params = 1

    def __init__(self, conditioner, event_shape, mask="half", parity=0, conditional=None,
                 context_size=None, validate_args=False, name="additive_coupling"):
        super().__init__(conditioner, event_shape, Additive(), mask=mask, parity=parity,
                         conditional=conditional, context_size=context_size,
                         validate_args=validate_args, name=name, parameters=dict(locals()))

    @classmethod
    def conditioner_output_size(cls, event_shape, mask="half", parity=0):
        """Size of the conditioner's last output axis (one shift per transformed entry)."""
        return Coupling.conditioner_output_size(event_shape, Additive(), mask=mask,
                                                parity=parity)


class AffineCoupling(Coupling):
    """RealNVP affine coupling: `Coupling` with the `Affine` transformer.

    With `x = (x_a, x_b)` split by the mask, `(t, s_raw) = conditioner(x_a)` and the
    log-scale `s` from `s_raw` (with `scale="exp"`, the soft clamp `s = c * tanh(s_raw /
    c)`, `c = log_scale_bound`; with `scale="sigmoid"`, Glow's `exp(-s) = sigmoid(s_raw +
    2) / sigmoid(2)`, so that the inverse can barely grow its output: see `Affine`):

    - forward: `y_a = x_a`, `y_b = x_b * exp(s) + t`
    - inverse: `x_a = y_a`, `x_b = (y_b - t) * exp(-s)`
    - log-det: `sum(s)` forward, `-sum(s)` inverse

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803.

    Args:
        conditioner: Keras layer returning `conditioner_output_size(...)` values
            (shifts first, then raw log-scales).
        event_shape: `[D]` for vectors or `[H, W, C]` for images.
        mask: `"half"` or `"checkerboard"`.
        parity: `0` or `1`, which part is transformed.
        conditional: whether the conditioner also takes a `context` tensor (`None`: if a
            context size is known).
        log_scale_bound: positive bound `c` of the soft clamp.
        context_size: size of the context's last axis (see `Coupling`).
        validate_args: TFP's argument validation flag.
        name: bijector name.
        scale: `"exp"` or `"sigmoid"`, the scale's parameterisation (see `Affine`).
    """

    num_params = 2

    def __init__(self, conditioner, event_shape, mask="half", parity=0, conditional=None,
                 log_scale_bound=3.0, context_size=None, validate_args=False,
                 name="affine_coupling", scale="exp"):
        parameters = dict(locals())
        transformer = Affine(log_scale_bound, scale=scale)
        self.log_scale_bound = transformer.log_scale_bound
        self.scale = transformer.scale
        super().__init__(conditioner, event_shape, transformer, mask=mask, parity=parity,
                         conditional=conditional, context_size=context_size,
                         validate_args=validate_args, name=name, parameters=parameters)

    @classmethod
    def conditioner_output_size(cls, event_shape, mask="half", parity=0):
        """Size of the conditioner's last output axis (a shift and a log-scale per entry)."""
        return Coupling.conditioner_output_size(event_shape, Affine(), mask=mask,
                                                parity=parity)
