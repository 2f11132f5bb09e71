"""The affine map of appended noise channels, conditioned on other representations."""

import keras
import tensorflow as tf

from tfp_flows._validation import check_positive_int
from tfp_flows.bijectors.base import FlowBijector, check_event_shape

__all__ = ["NoiseAffine"]


class NoiseAffine(FlowBijector):
    """Scales and shifts the last `num_noise` channels by parameters of a context.

    The deterministic part of DenseFlow's cross-unit coupling: the input is a
    representation `h` with `num_noise` standard Normal noise channels `e` appended on the
    last axis, and the output keeps `h` and replaces `e` by `mu + sigma * e`, where
    `(mu, log_sigma) = params_net(context)` are computed from the `context` keyword (in
    DenseFlow, the previous representations of the block), not from `h` or `e`:

    - forward: `y = concat(h, mu + exp(log_sigma) * e)`
    - inverse: `x = concat(h, (y_e - mu) * exp(-log_sigma))`
    - log-det: forward `sum(log_sigma)` over the noise entries, inverse the negative.

    `params_net` is a Keras layer mapping the context to `(mu, log_sigma)`, each of the
    noise's shape `[..., num_noise]` (`tfp_flows.nets.CrossUnitParams`, which bounds
    `log_sigma` to `(-2, 2)` and starts at `mu = 0, log_sigma = 0`). The bijector creates
    no variables; the model that uses it tracks `params_net`.

    Reference: Grcic, Grubisic, Segvic, "Densely connected normalizing flows",
    arXiv:2106.04627 (section 3, cross-unit coupling).

    Args:
        params_net: a Keras layer, `context -> (mu, log_sigma)`.
        event_shape: event shape of the input, `[D + num_noise]` or
            `[H, W, C + num_noise]`.
        num_noise: number of trailing noise channels (features), `>= 1`.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> from tfp_flows.nets import CrossUnitParams
        >>> bijector = NoiseAffine(CrossUnitParams(2), [3], num_noise=2)
        >>> context = np.ones([1, 4], "float32")
        >>> bijector.forward(np.ones([1, 3], "float32"), context=context).numpy()
        array([[1., 1., 1.]], dtype=float32)
    """

    conditional = True

    def __init__(self, params_net, event_shape, num_noise, validate_args=False,
                 name="noise_affine"):
        parameters = dict(locals())
        if not isinstance(params_net, keras.layers.Layer):
            raise TypeError(f"params_net must be a Keras layer, got "
                            f"{type(params_net).__name__}")
        event_shape = check_event_shape(event_shape)
        check_positive_int("num_noise", num_noise)
        if num_noise > event_shape[-1]:
            raise ValueError(f"num_noise={num_noise} exceeds the {event_shape[-1]} channels of "
                             f"event_shape {event_shape}")
        self.params_net = params_net
        self.num_noise = num_noise
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    def noise_params(self, context, dtype):
        """`(mu, log_sigma)` of the noise from `context`, in `dtype`."""
        mu, log_sigma = self.params_net(context)
        return tf.cast(mu, dtype), tf.cast(log_sigma, dtype)

    def _transform(self, x, inverse, context=None):
        kept, noise = x[..., :-self.num_noise], x[..., -self.num_noise:]
        mu, log_sigma = self.noise_params(context, x.dtype)
        if inverse:
            noise, log_sigma = (noise - mu) * tf.exp(-log_sigma), -log_sigma
        else:
            noise = mu + tf.exp(log_sigma) * noise
        axes = list(range(-len(self._event_shape_in), 0))
        log_det = tf.reduce_sum(log_sigma, axis=axes)
        return tf.concat([kept, noise], axis=-1), log_det
