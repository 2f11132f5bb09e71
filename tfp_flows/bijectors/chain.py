"""A chain of bijectors that hands one `context` tensor to every conditional member."""

import tensorflow as tf

from tfp_flows.bijectors._tfp_private import Chain, Invert

__all__ = ["FlowChain"]


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
    """

    _exposed_variables = ()

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

    def _walk_forward(self, step_fn, x, **kwargs):
        for bijector in reversed(self._bijectors):
            x = step_fn(bijector, x, **self._member_kwargs(bijector, kwargs))
        return x

    def _walk_inverse(self, step_fn, y, **kwargs):
        for bijector in self._bijectors:
            y = step_fn(bijector, y, **self._member_kwargs(bijector, kwargs))
        return y
