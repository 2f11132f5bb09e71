"""A chain of bijectors that hands one `context` tensor to every conditional member."""

import tensorflow as tf

from tfp_flows.bijectors._tfp_private import BijectorCacheWithGreedyAttrs, Chain, Invert
from tfp_flows.bijectors.base import FlowBijector

__all__ = ["FlowChain"]


def _is_rank(event_ndims, rank):
    """Whether `event_ndims` is `None` or statically the int `rank`."""
    if event_ndims is None:
        return True
    try:
        return int(event_ndims) == rank
    except TypeError:  # a nested structure, or a tensor without a static value
        return False


class FlowChain(Chain):
    """`tfb.Chain` that passes a `context` keyword to each member with `conditional = True`.

    TFP's `Chain` routes keyword arguments by bijector name
    (`bijector_kwargs={"coupling_3": {"context": c}}`); a conditional flow wants the same
    context in every step, so here `forward(x, context=c)` (and
    `distribution.log_prob(x, bijector_kwargs={"context": c})`) reaches all conditional
    members. Name-keyed arguments keep working as in `tfb.Chain`.

    `tf.Module` introspection (`chain.trainable_variables`, and through it
    `distribution.trainable_variables`, which `tfp.vi` and `tfp.math.minimize` use by
    default) cannot see the weights of Keras 3 layers: a layer is not a `tf.Module` and a
    Keras variable is not a `tf.Variable`. `expose_variables` lists the `tf.Variable`s
    behind the Keras variables the members use, so TFP finds them; the Keras layers keep
    owning (creating, training, saving) them.

    When every member is a tfp_flows bijector (or a `tfb.Invert` of one, or a `FlowChain`
    of such), the chain computes its transform and log-det in one walk over the members'
    fused transforms, with the log-det of the whole event kept in the chain's cache:
    `TransformedDistribution.log_prob` then traces each member once and none of TFP's
    per-member log-det reduction bookkeeping (thousands of graph nodes in a deep flow).
    Other members, and log-dets asked for other event ranks, take `tfb.Chain`'s path.
    """

    _exposed_variables = ()
    _cache = BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    # Identity, like `FlowBijector`: TFP's parameter hash walks every member at each cache
    # lookup.
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    @property
    def conditional(self):
        """Whether any member takes a context (so an enclosing chain passes it on)."""
        return any(getattr(self._unwrap(b), "conditional", False) for b in self._bijectors)

    def expose_variables(self, variables):
        """Makes `variables` visible to `tf.Module` introspection of this chain.

        Args:
            variables: Keras variables (whose backing `tf.Variable`s are stored) or
                `tf.Variable`s, already created (call the chain, or build the layers, first).
                Their `trainable` flags are those they were created with.

        Raises:
            TypeError: an entry is neither, or a Keras variable is not initialised yet.
        """
        exposed = []
        for variable in variables:
            backing = variable if isinstance(variable, tf.Variable) else getattr(
                variable, "value", None)
            if not isinstance(backing, tf.Variable):
                raise TypeError(
                    f"expose_variables takes created Keras variables or tf.Variables, got "
                    f"{variable!r}")
            exposed.append(backing)
        # An instance attribute (tf.Module walks vars(self)), never a new variable.
        self._exposed_variables = tuple(exposed)

    @staticmethod
    def _unwrap(bijector):
        # tfb.Invert passes keyword arguments through to
        # the bijector it wraps.
        return bijector.bijector if isinstance(bijector, Invert) else bijector

    def _member_kwargs(self, bijector, kwargs):
        member = dict(kwargs.get(bijector.name, {}))
        if kwargs.get("context") is not None and getattr(
                self._unwrap(bijector), "conditional", False):
            member.setdefault("context", kwargs["context"])
        return member

    @property
    def _fused(self):
        """Whether every member has a fused transform (see the class docstring)."""
        def fused(bijector):
            bijector = self._unwrap(bijector)
            return isinstance(bijector, FlowBijector) or (
                isinstance(bijector, FlowChain) and bijector._fused)
        # An empty chain (the identity) takes tfb.Chain's path, which shapes its zero log-det.
        return bool(self._bijectors) and all(fused(b) for b in self._bijectors)

    def _fused_transform(self, x, inverse, kwargs):
        """`(y, log_det)` of the chain's map (its inverse if `inverse`), by the members'
        fused transforms; `log_det` is per example, summed over the event."""
        members = self._bijectors if inverse else list(reversed(self._bijectors))
        log_det = None
        for bijector in members:
            member_kwargs = self._member_kwargs(bijector, kwargs)
            member_inverse = inverse != isinstance(bijector, Invert)
            bijector = self._unwrap(bijector)
            if isinstance(bijector, FlowChain):
                x, member_log_det = bijector._fused_transform(x, member_inverse, member_kwargs)
            else:
                x, member_log_det = bijector._checked_transform(x, member_inverse,
                                                                **member_kwargs)
            log_det = member_log_det if log_det is None else log_det + member_log_det
        return x, log_det

    def _augmented_forward(self, x, **kwargs):
        if not self._fused:
            return self._forward(x, **kwargs), None
        y, log_det = self._fused_transform(x, False, kwargs)
        return y, {"ildj": -log_det}

    def _augmented_inverse(self, y, **kwargs):
        if not self._fused:
            return self._inverse(y, **kwargs), None
        x, log_det = self._fused_transform(y, True, kwargs)
        return x, {"ildj": log_det}

    def _cached_ildj(self, value, inverse, name, kwargs):
        """The chain's ildj at `value` (a `y` if `inverse`, else an `x`) from its cache,
        filled by one fused walk if missing."""
        with self._name_and_control_scope(name):
            dtype = (self.forward_dtype if inverse else self.inverse_dtype)(**kwargs)
            value = tf.convert_to_tensor(value, dtype_hint=dtype)
            attributes = (self._cache.inverse_attributes if inverse
                          else self._cache.forward_attributes)(value, **kwargs)
            if "ildj" not in attributes:
                (self._cache.inverse if inverse else self._cache.forward)(value, **kwargs)
            return attributes["ildj"]

    def _call_inverse_log_det_jacobian(self, y, event_ndims, name, **kwargs):
        if not (self._fused and _is_rank(event_ndims, self.inverse_min_event_ndims)):
            return super()._call_inverse_log_det_jacobian(y, event_ndims, name, **kwargs)
        return self._cached_ildj(y, True, name, kwargs)

    def _call_forward_log_det_jacobian(self, x, event_ndims, name, **kwargs):
        if not (self._fused and _is_rank(event_ndims, self.forward_min_event_ndims)):
            return super()._call_forward_log_det_jacobian(x, event_ndims, name, **kwargs)
        return -self._cached_ildj(x, False, name, kwargs)

    def _walk_forward(self, step_fn, x, **kwargs):
        for bijector in reversed(self._bijectors):
            x = step_fn(bijector, x, **self._member_kwargs(bijector, kwargs))
        return x

    def _walk_inverse(self, step_fn, y, **kwargs):
        for bijector in self._bijectors:
            y = step_fn(bijector, y, **self._member_kwargs(bijector, kwargs))
        return y
