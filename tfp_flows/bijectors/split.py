"""Multi-scale factor-out: a bijector that acts on some channels and passes the rest."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows._validation import check_int
from tfp_flows.bijectors.base import FlowBijector, check_event_shape

__all__ = ["SplitChannels"]


class SplitChannels(FlowBijector):
    """Applies `bijector` to the first `keep_channels` channels; the others pass unchanged.

    This is the factor-out of multi-scale flows (RealNVP, Glow): after a level, half of the
    channels leave the flow (they are already Gaussian under the base, possibly after a
    split-prior coupling) and the deeper levels transform only the kept half. With
    `x = (x_keep, x_out)` split on the last axis and `g = bijector`:

    - forward: `y = (g(x_keep), x_out)`
    - inverse: `x = (g^{-1}(y_keep), y_out)`
    - log-det: that of `g` on `x_keep`

    `bijector` must preserve its event shape `[*event_shape[:-1], keep_channels]`, so the
    whole flow keeps one event shape and one standard Normal base.

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803 (section 3.6).

    Args:
        bijector: the bijector for the kept channels (for example the next Glow level).
        event_shape: event shape of the whole input.
        keep_channels: how many leading channels `bijector` transforms.
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> import tensorflow_probability as tfp
        >>> split = SplitChannels(tfp.bijectors.Scale(2.0), [2, 2, 4], keep_channels=2)
        >>> split.forward(np.ones([1, 2, 2, 4], "float32"))[0, 0, 0].numpy()
        array([2., 2., 1., 1.], dtype=float32)
    """

    def __init__(self, bijector, event_shape, keep_channels, validate_args=False,
                 name="split_channels"):
        parameters = dict(locals())
        if not isinstance(bijector, tfp.bijectors.Bijector):
            raise TypeError(
                f"bijector must be a tfp.bijectors.Bijector, got {type(bijector).__name__}")
        event_shape = check_event_shape(event_shape)
        check_int(f"keep_channels (for event_shape {event_shape})", keep_channels,
                  minimum=1, maximum=event_shape[-1] - 1)
        inner_shape = [*event_shape[:-1], keep_channels]
        if bijector.forward_event_shape(inner_shape).as_list() != inner_shape:
            raise ValueError(
                f"bijector must keep its event shape {inner_shape}, but maps it to "
                f"{bijector.forward_event_shape(inner_shape).as_list()}")
        self.bijector = bijector
        self.keep_channels = keep_channels
        self.conditional = bool(getattr(bijector, "conditional", False))
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    def _transform(self, x, inverse, context=None):
        # `tf.split` rather than two slices: cheaper gradients (see `Coupling._transform`).
        kept, passed = tf.split(
            x, [self.keep_channels, self._event_shape_in[-1] - self.keep_channels], axis=-1)
        kwargs = {} if context is None else {"context": context}
        event_ndims = len(self._event_shape_in)
        if inverse:
            # Same `kept` tensor twice: the cache serves the log-det computed with the map.
            y = self.bijector.inverse(kept, **kwargs)
            log_det = self.bijector.inverse_log_det_jacobian(kept, event_ndims, **kwargs)
        else:
            y = self.bijector.forward(kept, **kwargs)
            log_det = self.bijector.forward_log_det_jacobian(kept, event_ndims, **kwargs)
        return tf.concat([y, passed], axis=-1), log_det
