"""NICE's diagonal rescaling, with its log-scale held by a Keras layer."""

import keras
import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, check_event_shape, soft_clamp

__all__ = ["DiagonalScale"]


class DiagonalScale(FlowBijector):
    """Elementwise rescaling by a learned, bounded scale (NICE's final layer).

    With `s = c * tanh(l / c)`, `l` the log-scale read from `scale_layer` and
    `c = log_scale_bound`:

    - forward: `y = x * exp(s)`
    - inverse: `x = y * exp(-s)`
    - log-det: `sum(s)` forward, `-sum(s)` inverse

    Reference: Dinh, Krueger, Bengio, "NICE: Non-linear Independent Components
    Estimation", arXiv:1410.8516 (section 3.3).

    Args:
        scale_layer: a Keras layer such as `tfp_flows.nets.LogScale` whose call on `x`
            returns the log-scale, broadcastable to the event shape.
        event_shape: event shape the scale applies to.
        log_scale_bound: positive bound `c` of the soft clamp.
        validate_args: TFP's argument validation flag.
        name: bijector name.
    """

    def __init__(self, scale_layer, event_shape, log_scale_bound=5.0, validate_args=False,
                 name="diagonal_scale"):
        parameters = dict(locals())
        if not isinstance(scale_layer, keras.layers.Layer):
            raise TypeError(
                f"scale_layer must be a keras.layers.Layer, got {type(scale_layer).__name__}")
        if not isinstance(log_scale_bound, int | float) or not log_scale_bound > 0:
            raise ValueError(f"log_scale_bound must be a positive number, got {log_scale_bound!r}")
        self.scale_layer = scale_layer
        self.log_scale_bound = float(log_scale_bound)
        super().__init__(check_event_shape(event_shape), parameters=parameters, name=name,
                         validate_args=validate_args)

    def _transform(self, x, inverse, context=None):
        log_scale = soft_clamp(tf.cast(self.scale_layer(x), x.dtype), self.log_scale_bound)
        log_scale = tf.broadcast_to(log_scale, tf.shape(x)[-len(self._event_shape_in):])
        if inverse:
            log_scale = -log_scale
        return x * tf.exp(log_scale), self._per_example(tf.reduce_sum(log_scale), x)
