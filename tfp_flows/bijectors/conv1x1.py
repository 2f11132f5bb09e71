"""Glow's invertible 1x1 convolution, with its kernel held by a Keras layer."""

import math

import keras
import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, check_event_shape

__all__ = ["InvertibleConv1x1"]


class InvertibleConv1x1(FlowBijector):
    """Invertible 1x1 convolution: the same learned `[C, C]` matrix mixes the channels of
    every pixel (Glow's learned generalisation of a channel permutation).

    With `W` the kernel read from `weights_layer`, an event `x` of shape `[H, W, C]` (or a
    vector `[C]`, treated as a single pixel) and `x_ij` the channel vector of pixel `(i, j)`:

    - forward: `y_ij = x_ij W` (row vector times matrix, the convolution with a `1x1xCxC`
      kernel)
    - inverse: `x_ij = y_ij W^-1`
    - log-det: `H * W * log|det W|` forward, its negative inverse

    The layer supplies `W`, `W^-1` and `log|det W|` (`tfp_flows.nets.Conv1x1Kernel`, with the
    plain or LU parameterisation); the bijector applies them as a matmul on the last axis.

    Reference: Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    arXiv:1807.03039 (section 3.2).

    Args:
        weights_layer: a Keras layer such as `tfp_flows.nets.Conv1x1Kernel`; its call
            `weights_layer(x, inverse=...)` returns `(W or W^-1, log|det W|)`.
        event_shape: `[H, W, C]` or `[C]`; `C` must match the layer's `channels`.
        validate_args: TFP's argument validation flag.
        name: bijector name.
    """

    def __init__(self, weights_layer, event_shape, validate_args=False,
                 name="invertible_conv1x1"):
        parameters = dict(locals())
        if not isinstance(weights_layer, keras.layers.Layer):
            raise TypeError(f"weights_layer must be a keras.layers.Layer, got "
                            f"{type(weights_layer).__name__}")
        event_shape = check_event_shape(event_shape)
        channels = getattr(weights_layer, "channels", event_shape[-1])
        if channels != event_shape[-1]:
            raise ValueError(f"weights_layer mixes {channels} channels but the last axis of "
                             f"event_shape {event_shape} has size {event_shape[-1]}")
        self.weights_layer = weights_layer
        self._num_pixels = math.prod(event_shape[:-1])
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    def _transform(self, x, inverse, context=None):
        kernel, log_abs_det = self.weights_layer(x, inverse=inverse)
        # A matmul on the pixels flattened to rows: several times faster than the equivalent
        # `tf.einsum("...i,ij->...j")` forward and backward (benchmarks/glow_overhead.py).
        channels = self._event_shape_in[-1]
        y = tf.reshape(tf.matmul(tf.reshape(x, [-1, channels]), tf.cast(kernel, x.dtype)),
                       tf.shape(x))
        log_det = tf.cast(self._num_pixels * log_abs_det, x.dtype)
        if inverse:
            log_det = -log_det
        return y, self._per_example(log_det, x)
