"""Base class for tfp_flows bijectors: one fused transform serves all four methods."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows._validation import check_bool, check_positive_int
from tfp_flows.bijectors._tfp_private import BijectorCacheWithGreedyAttrs

# check_event_shape, flatten_context and resolve_context_size are shared by the bijector
# modules but are not part of the public API.
__all__ = ["FlowBijector", "soft_clamp"]


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


def resolve_context_size(layer, conditional, context_size, layer_name="conditioner"):
    """Returns `(conditional, context_size)` of a bijector calling `layer`.

    The context size comes from `context_size` or, when the layer declares one (as
    `tfp_flows.nets.MADE` does), from `layer.context_size`; `conditional=None` means
    "conditional if a context size is known".

    Raises:
        TypeError: `conditional` is not a bool or `None`, or `context_size` is not an int.
        ValueError: the arguments contradict each other or the layer.
    """
    if conditional is not None:
        conditional = check_bool("conditional", conditional)
    context_size = check_positive_int("context_size", context_size, allow_none=True)
    declared = getattr(layer, "context_size", None)
    if hasattr(layer, "context_size") and conditional is not None and (
            declared is not None) != conditional:
        raise ValueError(f"conditional={conditional!r} does not match the {layer_name}'s "
                         f"context_size={declared!r}")
    if declared is not None and context_size is not None and declared != context_size:
        raise ValueError(f"context_size={context_size} does not match the {layer_name}'s "
                         f"context_size={declared}")
    context_size = context_size if context_size is not None else declared
    if conditional is None:
        conditional = context_size is not None
    elif context_size is not None and not conditional:
        raise ValueError(f"context_size={context_size} needs conditional=True, got "
                         f"conditional=False")
    return conditional, context_size


def _shape_str(shape):
    return "unknown" if shape.rank is None else str(shape.as_list())


def flatten_context(context, x, event_ndims, context_size=None, name="bijector"):
    """Checks `context` against `x` and returns it as `[prod(batch), context_size]`.

    `x` has shape `[*batch, *event]` (`event_ndims` event axes) and `context` shape
    `[*context_batch, context_size]`, where `context_batch` broadcasts to `batch` (a single
    context vector `[context_size]` serves the whole batch). The result lines up with `x`
    reshaped to `[-1, *event]`, which is how conditioners see their inputs.

    Args:
        context: the context tensor (or array).
        x: the input tensor of the bijector.
        event_ndims: number of event axes of `x`.
        context_size: expected size of the context's last axis, or `None` (unchecked).
        name: name of the bijector, for messages.

    Raises:
        ValueError: the context's size or batch shape does not fit (statically known
            shapes), naming the expected and received shapes.
    """
    context = tf.convert_to_tensor(context)
    batch = x.shape[:x.shape.rank - event_ndims] if x.shape.rank is not None else None
    expected = (f"[*batch, {'context_size' if context_size is None else context_size}]"
                if batch is None or batch.rank is None
                else str([*batch.as_list(), context_size or "context_size"]))

    def fail(reason):
        raise ValueError(
            f"{name} expects a context of shape {expected} for inputs of shape "
            f"{_shape_str(x.shape)}, got a context of shape {_shape_str(context.shape)}: "
            f"{reason}")

    if context.shape.rank is not None:
        if context.shape.rank == 0:
            fail("a context needs at least one axis")
        size = context.shape[-1]
        if context_size is not None and size is not None and size != context_size:
            fail(f"its last axis has size {size}, not context_size={context_size}")
        if batch is not None and batch.rank is not None:
            context_batch = context.shape[:-1]
            if context_batch.rank > batch.rank:
                fail("it has more batch axes than the inputs")
            for got, want in zip(reversed(context_batch.as_list()),
                                 reversed(batch.as_list()), strict=False):
                if got is not None and want is not None and got not in (1, want):
                    fail("its batch axes do not broadcast to the inputs' batch shape")
    batch_shape = tf.shape(x)[:tf.rank(x) - event_ndims]
    size = tf.shape(context)[-1:]
    context = tf.broadcast_to(context, tf.concat([batch_shape, size], axis=0))
    return tf.reshape(context, tf.concat([[-1], size], axis=0))


class FlowBijector(tfp.bijectors.Bijector):
    """A bijector whose subclasses implement one fused method, `_transform`.

    `_transform(x, inverse, context=None)` returns `(y, log_det)`: the transformed tensor and
    the log-determinant of the Jacobian of the map it applied (the forward map when
    `inverse=False`, the inverse map otherwise), summed over the event. Forward, inverse and
    both log-det methods are derived from it, and TFP's cache keeps the log-det computed with
    the transform, so `log_prob` of a `TransformedDistribution` calls each conditioner once.

    Subclasses that take a `context` tensor set `conditional = True` and, when they know
    it, `context_size`; `FlowChain` passes the `context` keyword to them, and
    `_flat_context` checks and flattens it against the batch.
    """

    conditional = False
    context_size = None

    _cache = BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    # TFP hashes and compares a bijector by its parameters, recursively, and its cache
    # hashes the bijector at every lookup: tracing a deep flow spent seconds there. A flow
    # bijector is equal only to itself (its conditioner layers compare by identity anyway).
    __hash__ = object.__hash__
    __eq__ = object.__eq__

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

    def _flat_context(self, context, x):
        """`context` checked against `context_size` and `x`, as `[prod(batch), size]`.

        A conditional bijector that does not know its context size yet learns it from the
        first context it sees, so that a later context of another size is a clear error
        rather than a failure deep inside the conditioner.
        """
        if context is None:
            return None
        flat = flatten_context(context, x, len(self._event_shape_in), self.context_size,
                               self.name)
        if self.context_size is None and flat.shape[-1] is not None:
            self.context_size = int(flat.shape[-1])
        return flat

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
