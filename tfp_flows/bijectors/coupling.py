"""Coupling layers: NICE's additive coupling and RealNVP's affine coupling."""

import keras
import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, check_event_shape, soft_clamp

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


class Coupling(FlowBijector):
    """Base class of coupling bijectors: part of the input conditions a transform of the rest.

    Masks:
        `"half"` splits the last axis (features of a vector, channels of an image) in two:
        with `parity=0` the first `n // 2` entries condition the rest, with `parity=1` the
        last `n - n // 2` entries condition the first ones. `"checkerboard"` alternates
        entries of a vector, or pixels of an image (`(h + w + parity) % 2`); the conditioner
        then sees the whole input with the transformed entries set to zero and returns
        parameters for every entry, of which only the transformed ones are used.

    The conditioner is any Keras layer mapping the conditioning part (`[batch, *shape]`) to
    `num_params` parameters per transformed entry, stacked on the last axis: use
    `conditioner_output_size` to size its output. A conditional coupling calls it as
    `conditioner(inputs, context=context)`.
    """

    num_params = None

    def __init__(self, conditioner, event_shape, mask="half", parity=0, conditional=False,
                 validate_args=False, name=None, parameters=None):
        if not isinstance(conditioner, keras.layers.Layer):
            raise TypeError(
                f"conditioner must be a keras.layers.Layer, got {type(conditioner).__name__}")
        event_shape = _check_mask(event_shape, mask, parity)
        self.conditioner = conditioner
        self.mask = mask
        self.parity = parity
        self.conditional = bool(conditional)
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    @classmethod
    def conditioner_output_size(cls, event_shape, mask="half", parity=0):
        """Size of the conditioner's last output axis for this coupling's parameters."""
        event_shape = _check_mask(event_shape, mask, parity)
        if mask == "checkerboard":
            return cls.num_params * event_shape[-1]
        split = event_shape[-1] // 2
        changed = event_shape[-1] - split if parity == 0 else split
        return cls.num_params * changed

    @classmethod
    def conditioner_input_size(cls, event_shape, mask="half", parity=0):
        """Size of the last axis of what the conditioner sees."""
        event_shape = _check_mask(event_shape, mask, parity)
        if mask == "checkerboard":
            return event_shape[-1]
        split = event_shape[-1] // 2
        return split if parity == 0 else event_shape[-1] - split

    def _checkerboard(self, dtype):
        shape = self._event_shape_in
        if len(shape) == 1:
            keep = tf.range(shape[0]) % 2 == self.parity
        else:
            rows = tf.range(shape[0])[:, None]
            cols = tf.range(shape[1])[None, :]
            keep = ((rows + cols) % 2 == self.parity)[..., None]
        return tf.cast(keep, dtype)

    def _conditioner_params(self, conditioning, context):
        event_ndims = len(self._event_shape_in)
        batch_shape = tf.shape(conditioning)[:-event_ndims]
        flat = tf.reshape(conditioning, tf.concat(
            [[-1], tf.shape(conditioning)[-event_ndims:]], axis=0))
        if context is None:
            params = self.conditioner(flat)
        else:
            context = tf.convert_to_tensor(context)
            context = tf.broadcast_to(context, tf.concat([batch_shape, tf.shape(context)[-1:]], 0))
            params = self.conditioner(flat, context=tf.reshape(
                context, [-1, tf.shape(context)[-1]]))
        # Log-dets stay in the data dtype (float32) even under a mixed-precision policy.
        params = tf.cast(params, conditioning.dtype)
        params = tf.reshape(params, tf.concat([batch_shape, tf.shape(params)[1:]], axis=0))
        return tf.split(params, self.num_params, axis=-1)

    def _transform(self, x, inverse, context=None):
        event_axes = list(range(-len(self._event_shape_in), 0))
        if self.mask == "checkerboard":
            keep_mask = self._checkerboard(x.dtype)
            params = self._conditioner_params(x * keep_mask, context)
            changed, log_det = self._elementwise(x, params, inverse)
            y = keep_mask * x + (1.0 - keep_mask) * changed
            return y, tf.reduce_sum((1.0 - keep_mask) * log_det, axis=event_axes)
        split = self._event_shape_in[-1] // 2
        first, second = x[..., :split], x[..., split:]
        keep, change = (first, second) if self.parity == 0 else (second, first)
        changed, log_det = self._elementwise(
            change, self._conditioner_params(keep, context), inverse)
        parts = [keep, changed] if self.parity == 0 else [changed, keep]
        return tf.concat(parts, axis=-1), tf.reduce_sum(log_det, axis=event_axes)

    def _elementwise(self, x, params, inverse):
        """Returns the transformed entries and the elementwise log-det of the applied map."""
        raise NotImplementedError


class AdditiveCoupling(Coupling):
    """NICE additive coupling.

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
        conditional: whether the conditioner also takes a `context` tensor.
        validate_args: TFP's argument validation flag.
        name: bijector name.
    """

    num_params = 1

    def __init__(self, conditioner, event_shape, mask="half", parity=0, conditional=False,
                 validate_args=False, name="additive_coupling"):
        super().__init__(conditioner, event_shape, mask=mask, parity=parity,
                         conditional=conditional, validate_args=validate_args, name=name,
                         parameters=dict(locals()))

    def _elementwise(self, x, params, inverse):
        (shift,) = params
        y = x - shift if inverse else x + shift
        return y, tf.zeros_like(x)


class AffineCoupling(Coupling):
    """RealNVP affine coupling with a bounded log-scale.

    With `x = (x_a, x_b)` split by the mask, `(t, s_raw) = conditioner(x_a)` and the soft
    clamp `s = c * tanh(s_raw / c)` (`c = log_scale_bound`):

    - forward: `y_a = x_a`, `y_b = x_b * exp(s) + t`
    - inverse: `x_a = y_a`, `x_b = (y_b - t) * exp(-s)`
    - log-det: `sum(s)` forward, `-sum(s)` inverse

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803.

    Args:
        conditioner: Keras layer returning `conditioner_output_size(...)` values
            (shift first, then raw log-scale).
        event_shape: `[D]` for vectors or `[H, W, C]` for images.
        mask: `"half"` or `"checkerboard"`.
        parity: `0` or `1`, which part is transformed.
        conditional: whether the conditioner also takes a `context` tensor.
        log_scale_bound: positive bound `c` of the soft clamp.
        validate_args: TFP's argument validation flag.
        name: bijector name.
    """

    num_params = 2

    def __init__(self, conditioner, event_shape, mask="half", parity=0, conditional=False,
                 log_scale_bound=3.0, validate_args=False, name="affine_coupling"):
        parameters = dict(locals())
        if not isinstance(log_scale_bound, int | float) or not log_scale_bound > 0:
            raise ValueError(f"log_scale_bound must be a positive number, got {log_scale_bound!r}")
        self.log_scale_bound = float(log_scale_bound)
        super().__init__(conditioner, event_shape, mask=mask, parity=parity,
                         conditional=conditional, validate_args=validate_args, name=name,
                         parameters=parameters)

    def _elementwise(self, x, params, inverse):
        shift, raw_log_scale = params
        log_scale = soft_clamp(raw_log_scale, self.log_scale_bound)
        if inverse:
            return (x - shift) * tf.exp(-log_scale), -log_scale
        return x * tf.exp(log_scale) + shift, log_scale
