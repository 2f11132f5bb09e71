"""Glow's coupling network: 3x3 conv, ReLU, 1x1 conv, ReLU, zero-initialised 3x3 conv."""

import keras
import tensorflow as tf

from tfp_flows._validation import check_positive_int
from tfp_flows.nets.actnorm import ActNormParams
from tfp_flows.nets.conv_resnet import append_context, thin_output_conv

__all__ = ["GlowConvNet"]


@keras.saving.register_keras_serializable(package="tfp_flows")
class GlowConvNet(keras.layers.Layer):
    """The network of Glow's couplings, mapping `[B, H, W, C_in]` to `[B, H, W, output_channels]`.

    `h = relu(norm(conv3x3(x)))`, `h = relu(norm(conv1x1(h)))`, `out = conv3x3_zero(h)`: a
    3x3 convolution to `hidden_channels`, a 1x1 convolution keeping them and a 3x3 output
    convolution, zero-initialised so a fresh coupling is the identity. With `actnorm=True`
    each `norm` is an ActNorm, `(h + b) * exp(s)` per channel with `(s, b)` from an
    `ActNormParams` layer: data-dependent, it initialises itself from the first batch a
    training call (`model.fit`) passes through it, so that batch leaves each hidden
    convolution with zero mean and unit variance per channel; the two hidden convolutions
    then have no bias (the ActNorm's replaces it). With `actnorm=False`, `norm` is the
    identity and the hidden convolutions have biases. A context vector `[B, K]` is
    broadcast over the image and appended as K extra input channels.

    With `hidden_channels=512` this is the network of the paper (section 3.3 of the
    reference) and of the original code (`f()` in openai/glow's `model.py`), whose
    layers match these: `conv2d` (3x3, ActNorm, no bias), ReLU, `conv2d` (1x1, ActNorm, no
    bias), ReLU, `conv2d_zeros` (3x3, zero-initialised, bias). Where this layer differs
    from that code:

    - Padding: plain zero padding ("same"). The original concatenates to the input of each
      3x3 convolution an extra channel that is 1 on the padded border (`add_edge_padding`),
      so the network can tell the border from zero activations.
    - Output scale: the original's `conv2d_zeros` multiplies its output by a learned
      `exp(3 * logs)` per output channel (zero-initialised `logs`); here the output is the
      zero-initialised convolution plus bias, as in normflows' `ConvNet2d`.
    - ActNorm parameters: the original stores its log-scale divided by 3 (a
      `logscale_factor` that raises its effective learning rate); here the log-scale is the
      weight itself, as in the flow's own ActNorm steps. The original initialises every
      ActNorm from a separate initialisation batch before training; here each initialises
      from the first training batch.
    - Initialisation of the hidden kernels: Keras' Glorot uniform, not N(0, 0.05^2). With
      ActNorm after them their scale at initialisation does not matter.
    - The original network takes no context; a context enters here as extra input channels.

    normflows' `GlowBlock` builds the same three convolutions (`ConvNet2d` with kernel sizes
    3, 1, 3), by default with biases and without ActNorm (`net_actnorm=False`, here
    `actnorm=False`).

    Reference: Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    arXiv:1807.03039.

    Args:
        hidden_channels: channels of the two hidden convolutions (512 in the paper).
        output_channels: channels of the output (coupling parameters per pixel).
        actnorm: ActNorm after each hidden convolution (which then has no bias).
        zero_init: zero-initialise the output convolution.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> import numpy as np
        >>> net = GlowConvNet(8, output_channels=2)
        >>> net(np.zeros([2, 4, 4, 1], "float32")).shape
        TensorShape([2, 4, 4, 2])
    """

    def __init__(self, hidden_channels, output_channels, actnorm=True, zero_init=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        self.output_channels = check_positive_int("output_channels", output_channels)
        self.actnorm = bool(actnorm)
        self.zero_init = bool(zero_init)
        policy = self.dtype_policy
        self.input_conv = keras.layers.Conv2D(hidden_channels, 3, padding="same",
                                              use_bias=not self.actnorm, dtype=policy,
                                              name="input")
        self.input_actnorm = (ActNormParams(hidden_channels, dtype=policy, name="input_actnorm")
                              if self.actnorm else None)
        self.hidden_conv = keras.layers.Conv2D(hidden_channels, 1, padding="same",
                                               use_bias=not self.actnorm, dtype=policy,
                                               name="hidden")
        self.hidden_actnorm = (ActNormParams(hidden_channels, dtype=policy,
                                             name="hidden_actnorm")
                               if self.actnorm else None)
        self.output_conv = keras.layers.Conv2D(
            output_channels, 3, padding="same",
            kernel_initializer="zeros" if zero_init else "glorot_uniform",
            bias_initializer="zeros", dtype=policy, name="output")

    def build(self, inputs_shape, context_shape=None):
        shape = list(inputs_shape)
        if context_shape is not None:
            shape[-1] += context_shape[-1]
        self.input_conv.build(shape)
        hidden = (*shape[:-1], self.hidden_channels)
        self.hidden_conv.build(hidden)
        self.output_conv.build(hidden)

    @staticmethod
    def _hidden(conv, actnorm, inputs, training):
        """`relu(actnorm(conv(inputs)))`, the ActNorm folded into the convolution.

        `(conv(x, W) + b) * exp(s)` is `conv(x, W * exp(s)) + b * exp(s)`: scaling the
        kernel instead of the activations leaves one convolution with a bias (which oneDNN
        fuses with the ReLU) where two elementwise passes over the activations and their
        gradients took a fifth of a Glow training step's op time. The plain convolution
        runs only on the batch the ActNorm initialises from.
        """
        if actnorm is None:
            return keras.ops.relu(conv(inputs))
        log_scale, bias = actnorm.read(inputs.dtype, (lambda: conv(inputs)) if training
                                       else None)
        scale = tf.exp(log_scale)
        kernel = tf.cast(conv.kernel, inputs.dtype) * scale
        hidden = tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME")
        return tf.nn.relu(tf.nn.bias_add(hidden, bias * scale))

    def call(self, inputs, context=None, training=None):
        """Returns the coupling parameters `[B, H, W, output_channels]`.

        Args:
            inputs: `[B, H, W, C_in]`.
            context: `[B, K]` or `None`.
            training: whether the ActNorms may initialise from this batch (Keras passes
                true inside `fit`); initialised ones are unaffected.
        """
        inputs = append_context(inputs, context)
        hidden = self._hidden(self.input_conv, self.input_actnorm, inputs, training)
        hidden = self._hidden(self.hidden_conv, self.hidden_actnorm, hidden, training)
        return thin_output_conv(self.output_conv, hidden)

    def compute_output_shape(self, inputs_shape, context_shape=None):
        # Keras names the shape arguments after `call`'s arguments (`inputs`, `context`).
        return (*inputs_shape[:-1], self.output_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_channels": self.hidden_channels,
            "output_channels": self.output_channels,
            "actnorm": self.actnorm,
            "zero_init": self.zero_init,
        }
