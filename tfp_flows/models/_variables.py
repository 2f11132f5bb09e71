"""`trainable_variables` in the sense of `tf.Module` and TFP: the `tf.Variable`s behind Keras.

A Keras 3 variable wraps a `tf.Variable` but is not one, and `tf.GradientTape.watch` takes
only tensors, `tf.Variable`s and extension types: TFP's `tfp.math.minimize` and
`tfp.vi.fit_surrogate_posterior` watch each entry of their `trainable_variables` argument,
so a list of Keras variables fails there. `ModuleVariables.trainable_variables` lists the
backing `tf.Variable`s instead (what `tf.keras` models, which were `tf.Module`s, listed),
so `trainable_variables=flow.trainable_variables` works as TFP's documentation writes it.
`trainable_weights` stays Keras' list of Keras variables, which `fit`, the optimizers and
saving use.

A few Keras methods key a model's state by its Keras variables through
`self.trainable_variables` (`stateless_call`, `stateless_compute_loss`, `get_state_tree`,
`set_state_tree`); they run with Keras' own list.
"""

import contextlib
import threading

import tensorflow as tf

__all__ = ["ModuleVariables", "backing_variable"]

# While a Keras method that keys state by Keras variables runs on this thread, models
# list Keras variables as Keras does (a count: such methods may nest).
_keras_lists = threading.local()


@contextlib.contextmanager
def _keras_variables():
    _keras_lists.depth = getattr(_keras_lists, "depth", 0) + 1
    try:
        yield
    finally:
        _keras_lists.depth -= 1


def backing_variable(variable):
    """The `tf.Variable` behind a Keras variable (a `tf.Variable` is returned as it is).

    Raises:
        TypeError: `variable` is neither, or a Keras variable not created yet.
    """
    backing = variable if isinstance(variable, tf.Variable) else getattr(
        variable, "value", None)
    if not isinstance(backing, tf.Variable):
        raise TypeError(f"expected a created Keras variable or a tf.Variable, got "
                        f"{variable!r}")
    return backing


class ModuleVariables:
    """Mixin of a `keras.Model` whose `trainable_variables` are `tf.Variable`s."""

    @property
    def trainable_variables(self):
        """The `tf.Variable`s behind `trainable_weights`, in the same order.

        The list `tf.GradientTape`, `tfp.math.minimize` and
        `tfp.vi.fit_surrogate_posterior(trainable_variables=...)` take; Keras and TFP
        optimizers update them in place, so the Keras weights change with them. A layer
        set `trainable = False` is left out, as from `trainable_weights`.
        """
        if getattr(_keras_lists, "depth", 0):
            return super().trainable_variables
        return [backing_variable(weight) for weight in self.trainable_weights]

    def stateless_call(self, *args, **kwargs):
        """Keras' `stateless_call`, keyed by Keras' list of trainable variables."""
        with _keras_variables():
            return super().stateless_call(*args, **kwargs)

    def stateless_compute_loss(self, *args, **kwargs):
        """Keras' `stateless_compute_loss`, keyed by Keras' list of trainable variables."""
        with _keras_variables():
            return super().stateless_compute_loss(*args, **kwargs)

    def get_state_tree(self, *args, **kwargs):
        """Keras' `get_state_tree`: the Keras variables by path."""
        with _keras_variables():
            return super().get_state_tree(*args, **kwargs)

    def set_state_tree(self, *args, **kwargs):
        """Keras' `set_state_tree`: assigns the Keras variables by path."""
        with _keras_variables():
            return super().set_state_tree(*args, **kwargs)
