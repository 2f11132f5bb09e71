"""A small convolutional ResNet conditioner for image couplings."""

import keras
import tensorflow as tf

from tfp_flows._validation import check_positive_int

__all__ = ["ConvResNet"]


def append_context(inputs, context):
    """`inputs` `[B, H, W, C]` with a context `[B, K]` (or `None`) as K more channels."""
    if context is None:
        return inputs
    context = keras.ops.cast(context, inputs.dtype)
    shape = keras.ops.shape(inputs)
    context = keras.ops.broadcast_to(context[:, None, None, :],
                                     (shape[0], shape[1], shape[2], keras.ops.shape(context)[-1]))
    return keras.ops.concatenate([inputs, context], axis=-1)


# The fewest pixels per image (14x14) at which `thin_output_conv`'s two-stage form measured
# faster than one convolution on a 2-core CPU (Glow at 28x28: 7% of a training step); at
# 7x7 it was slower.
TWO_STAGE_MIN_PIXELS = 196


def thin_output_conv(conv, hidden):
    """`conv(hidden)` for a 3x3 "same" `keras.layers.Conv2D` with a bias (stride and
    dilation 1), the zero-initialised output convolution of a coupling network.

    With few output channels (`9 * out < in`) on images of at least `TWO_STAGE_MIN_PIXELS`
    pixels it runs in two stages, which oneDNN runs faster than a 3x3 convolution with a
    thin output: a 1x1 convolution computes the contribution of each of the 9 kernel taps
    (`[B, H, W, 9 * out]`, from the same kernel's columns), then a fixed 0/1 3x3
    convolution sums each tap's contribution from the pixel it belongs to. Same weights,
    same result up to float rounding.
    """
    in_channels, pixels = hidden.shape[-1], hidden.shape[1:3]
    out = conv.filters
    if (None in pixels or pixels[0] * pixels[1] < TWO_STAGE_MIN_PIXELS
            or in_channels is None or 9 * out >= in_channels):
        return conv(hidden)
    kernel = tf.cast(conv.kernel, hidden.dtype)  # [3, 3, in, out]
    taps = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [1, 1, in_channels, 9 * out])
    per_tap = tf.nn.conv2d(hidden, taps, strides=1, padding="SAME")
    # Channel (3 * i + j) * out + o of `per_tap` goes to output channel o from the pixel at
    # offset (i - 1, j - 1), the plain convolution's tap (i, j): `gather[i, j, c, o]` is 1
    # exactly when c = (3 * i + j) * out + o, an identity regrouped by tap.
    gather = tf.reshape(tf.transpose(tf.reshape(tf.eye(9 * out, dtype=hidden.dtype),
                                                [9 * out, 9, out]), [1, 0, 2]),
                        [3, 3, 9 * out, out])
    summed = tf.nn.conv2d(per_tap, gather, strides=1, padding="SAME")
    return tf.nn.bias_add(summed, tf.cast(conv.bias, hidden.dtype))


@keras.saving.register_keras_serializable(package="tfp_flows")
class ConvResNet(keras.layers.Layer):
    """Convolutional residual network mapping `[B, H, W, C_in]` to `[B, H, W, output_channels]`.

    A 3x3 input convolution, `num_blocks` residual blocks (3x3 then 1x1 convolution, ReLU,
    pre-activation) and a zero-initialised 3x3 output convolution (run by
    `thin_output_conv`). A context vector `[B, K]` is broadcast over the image and appended
    as K extra input channels.

    Args:
        hidden_channels: width of the residual stream.
        num_blocks: number of residual blocks.
        output_channels: channels of the output (coupling parameters per pixel).
        zero_init: zero-initialise the output convolution.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> import numpy as np
        >>> net = ConvResNet(8, num_blocks=1, output_channels=2)
        >>> net(np.zeros([2, 4, 4, 1], "float32")).shape
        TensorShape([2, 4, 4, 2])
    """

    def __init__(self, hidden_channels, num_blocks, output_channels, zero_init=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        self.output_channels = check_positive_int("output_channels", output_channels)
        self.zero_init = bool(zero_init)
        policy = self.dtype_policy
        self.input_conv = keras.layers.Conv2D(hidden_channels, 3, padding="same", dtype=policy,
                                              name="input")
        self.block_convs = [
            [
                keras.layers.Conv2D(hidden_channels, 3, padding="same", dtype=policy,
                                    name=f"block_{i}_0"),
                keras.layers.Conv2D(hidden_channels, 1, padding="same", dtype=policy,
                                    name=f"block_{i}_1"),
            ]
            for i in range(self.num_blocks)
        ]
        self.output_conv = keras.layers.Conv2D(
            output_channels, 3, padding="same",
            kernel_initializer="zeros" if zero_init else "glorot_uniform",
            bias_initializer="zeros", dtype=policy, name="output")

    def build(self, inputs_shape, context_shape=None):
        shape = list(inputs_shape)
        if context_shape is not None:
            shape[-1] += context_shape[-1]
        self.input_conv.build(shape)
        stream = (*shape[:-1], self.hidden_channels)
        for first, second in self.block_convs:
            first.build(stream)
            second.build(stream)
        self.output_conv.build(stream)

    def call(self, inputs, context=None):
        inputs = append_context(inputs, context)
        hidden = self.input_conv(inputs)
        for first, second in self.block_convs:
            hidden = hidden + second(keras.ops.relu(first(keras.ops.relu(hidden))))
        return thin_output_conv(self.output_conv, keras.ops.relu(hidden))

    def compute_output_shape(self, inputs_shape, context_shape=None):
        # Keras names the shape arguments after `call`'s arguments (`inputs`, `context`).
        return (*inputs_shape[:-1], self.output_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_channels": self.hidden_channels,
            "num_blocks": self.num_blocks,
            "output_channels": self.output_channels,
            "zero_init": self.zero_init,
        }
