"""Base class for tfp_flows bijectors: one fused transform serves all four methods."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors._tfp_private import BijectorCacheWithGreedyAttrs

__all__ = ["FlowBijector", "check_event_shape", "soft_clamp"]


def soft_clamp(log_scale, bound):
    """Smoothly bounds `log_scale` to `(-bound, bound)`: `bound * tanh(log_scale / bound)`."""
    bound = tf.cast(bound, log_scale.dtype)
    return bound * tf.tanh(log_scale / bound)


def check_event_shape(event_shape, ranks=(1, 3)):
    """Returns `event_shape` as a list of ints, checking its rank and sizes."""
    try:
        shape = [int(d) for d in tf.TensorShape(event_shape).as_list()]
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"event_shape must be a list of positive ints, got {event_shape!r}") from error
    if len(shape) not in ranks or any(d < 1 for d in shape):
        allowed = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"event_shape must have rank {allowed} with positive sizes, got {shape}")
    return shape


class FlowBijector(tfp.bijectors.Bijector):
    """A bijector whose subclasses implement one fused method, `_transform`.

    `_transform(x, inverse, context=None)` returns `(y, log_det)`: the transformed tensor and
    the log-determinant of the Jacobian of the map it applied (the forward map when
    `inverse=False`, the inverse map otherwise), summed over the event. Forward, inverse and
    both log-det methods are derived from it, and TFP's cache keeps the log-det computed with
    the transform, so `log_prob` of a `TransformedDistribution` calls each conditioner once.

    Subclasses that take a `context` tensor set `conditional = True`; `FlowChain` passes the
    `context` keyword to them.
    """

    conditional = False

    _cache = BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    def __init__(self, event_shape, parameters, name, validate_args=False):
        self._event_shape_in = tuple(event_shape)
        super().__init__(
            forward_min_event_ndims=len(self._event_shape_in),
            validate_args=validate_args,
            parameters=parameters,
            name=name,
        )

    @property
    def event_shape(self):
        """The event shape this bijector transforms (a list of ints)."""
        return list(self._event_shape_in)

    def _transform(self, x, inverse, context=None):
        raise NotImplementedError

    def _per_example(self, log_det, x):
        """Broadcasts an example-independent log-det over the batch dimensions of `x`."""
        return log_det * tf.ones(tf.shape(x)[:tf.rank(x) - len(self._event_shape_in)], x.dtype)

    def _check_input(self, x, context):
        expected = self._event_shape_in
        rank = x.shape.rank
        if (rank is None or rank < len(expected) or any(
                got is not None and got != want
                for got, want in zip(x.shape[rank - len(expected):], expected, strict=False))):
            shape = "unknown rank" if rank is None else x.shape.as_list()
            raise ValueError(
                f"{self.name} expects inputs with event shape {list(expected)}, got shape {shape}")
        if context is not None and not self.conditional:
            raise ValueError(f"{self.name} is not conditional but received a context tensor")
        if context is None and self.conditional:
            raise ValueError(f"{self.name} is conditional and needs a `context` tensor")

    def _checked_transform(self, x, inverse, context=None):
        self._check_input(x, context)
        return self._transform(x, inverse, context=context)

    def _augmented_forward(self, x, **kwargs):
        y, fldj = self._checked_transform(x, False, **kwargs)
        return y, {"ildj": -fldj}

    def _augmented_inverse(self, y, **kwargs):
        x, ildj = self._checked_transform(y, True, **kwargs)
        return x, {"ildj": ildj}

    def _forward(self, x, **kwargs):
        return self._augmented_forward(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._augmented_inverse(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x, **kwargs):
        return self._checked_transform(x, False, **kwargs)[1]

    def _inverse_log_det_jacobian(self, y, **kwargs):
        return self._checked_transform(y, True, **kwargs)[1]
