"""A small convolutional ResNet conditioner for image couplings."""

import keras

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


@keras.saving.register_keras_serializable(package="tfp_flows")
class ConvResNet(keras.layers.Layer):
    """Convolutional residual network mapping `[B, H, W, C_in]` to `[B, H, W, output_channels]`.

    A 3x3 input convolution, `num_blocks` residual blocks (3x3 then 1x1 convolution, ReLU,
    pre-activation) and a zero-initialised 3x3 output convolution. A context vector
    `[B, K]` is broadcast over the image and appended as K extra input channels.

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
        return self.output_conv(keras.ops.relu(hidden))

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
