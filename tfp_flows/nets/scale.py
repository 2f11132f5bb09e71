"""A layer that owns one learned log-scale vector (NICE's diagonal rescaling)."""

import keras

__all__ = ["LogScale"]


@keras.saving.register_keras_serializable(package="tfp_flows")
class LogScale(keras.layers.Layer):
    """Holds a trainable log-scale of a given shape, initialised to zero.

    `layer(x)` returns the log-scale in the dtype of `x` (broadcastable against `x`).

    Bijectors must not create variables, so the diagonal scaling of NICE keeps its parameter
    here and reads it through this layer.

    Args:
        shape: shape of the log-scale (the event shape it multiplies).
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        shape = list(shape)
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"shape must be a non-empty list of positive ints, got {shape!r}")
        self.shape = shape
        self.log_scale = self.add_weight(shape=self.shape, initializer="zeros", name="log_scale")

    def call(self, inputs):
        return keras.ops.cast(self.log_scale, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "shape": self.shape}
