"""RealNVP's squeeze: space-to-depth on image events."""

import tensorflow as tf

from tfp_flows._validation import check_int
from tfp_flows.bijectors.base import FlowBijector, check_event_shape

__all__ = ["Squeeze"]


class Squeeze(FlowBijector):
    """Trades space for channels: `[H, W, C] -> [H/f, W/f, f*f*C]` (`tf.nn.space_to_depth`).

    Each `f x f` block of pixels becomes one pixel with the block's values stacked on the
    channel axis, in `tf.nn.space_to_depth` order: output channel `(a * f + b) * C + c` of
    pixel `(i, j)` is input channel `c` of pixel `(i * f + a, j * f + b)`.

    - forward: `y = space_to_depth(x, f)`
    - inverse: `x = depth_to_space(y, f)`
    - log-det: `0` (a permutation of the entries)

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803 (section 3.6); used between the levels of Glow (arXiv:1807.03039).

    Args:
        event_shape: `[H, W, C]`, with `H` and `W` divisible by `factor`.
        factor: block size `f`, an int >= 2.
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> squeeze = Squeeze([4, 4, 2])
        >>> squeeze.forward(np.zeros([5, 4, 4, 2], "float32")).shape
        TensorShape([5, 2, 2, 8])
        >>> squeeze.forward_event_shape([4, 4, 2])
        TensorShape([2, 2, 8])
    """

    def __init__(self, event_shape, factor=2, validate_args=False, name="squeeze"):
        parameters = dict(locals())
        event_shape = check_event_shape(event_shape, ranks=(3,))
        check_int("factor", factor, minimum=2)
        height, width, channels = event_shape
        if height % factor or width % factor:
            raise ValueError(f"Squeeze with factor {factor} needs height and width divisible "
                             f"by {factor}, got event_shape {event_shape}")
        self.factor = factor
        self._event_shape_out = (height // factor, width // factor, factor * factor * channels)
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    @property
    def output_event_shape(self):
        """The event shape of `forward`'s output, `[H/f, W/f, f*f*C]`."""
        return list(self._event_shape_out)

    def _checked_transform(self, x, inverse, context=None):
        if not inverse:
            return super()._checked_transform(x, inverse, context=context)
        # The base class checks against the forward input shape; the inverse takes squeezed
        # events.
        expected = self._event_shape_out
        rank = x.shape.rank
        if rank is None or rank < 3 or any(got is not None and got != want
                                           for got, want in zip(x.shape[-3:], expected)):
            shape = "unknown rank" if rank is None else x.shape.as_list()
            raise ValueError(f"{self.name} inverse expects inputs with event shape "
                             f"{list(expected)}, got shape {shape}")
        if context is not None:
            raise ValueError(f"{self.name} is not conditional but received a context tensor")
        return self._transform(x, inverse, context=context)

    def _transform(self, x, inverse, context=None):
        target = self._event_shape_in if inverse else self._event_shape_out
        batch_shape = tf.shape(x)[:-3]
        # space_to_depth wants exactly one batch axis: fold all of them into it.
        images = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], axis=0))
        images = (tf.nn.depth_to_space(images, self.factor) if inverse
                  else tf.nn.space_to_depth(images, self.factor))
        y = tf.reshape(images, tf.concat([batch_shape, target], axis=0))
        return y, tf.zeros(batch_shape, x.dtype)

    @staticmethod
    def _replace_event(shape, event):
        shape = tf.TensorShape(shape)
        if shape.rank is None:
            return tf.TensorShape(None)
        return shape[:-3].concatenate(event)

    def _forward_event_shape(self, input_shape):
        return self._replace_event(input_shape, self._event_shape_out)

    def _inverse_event_shape(self, output_shape):
        return self._replace_event(output_shape, self._event_shape_in)

    def _forward_event_shape_tensor(self, input_shape):
        return tf.concat([input_shape[:-3], self._event_shape_out], axis=0)

    def _inverse_event_shape_tensor(self, output_shape):
        return tf.concat([output_shape[:-3], self._event_shape_in], axis=0)
