"""Dense conditioners: a multilayer perceptron and a residual MLP."""

import keras

from tfp_flows._validation import check_positive_int
from tfp_flows.nets._validation import check_units

__all__ = ["MLP", "ResidualMLP"]


def _output_layer(units, zero_init, dtype, name):
    # A zero last layer makes a freshly built flow the identity map.
    initializer = "zeros" if zero_init else "glorot_uniform"
    return keras.layers.Dense(
        units,
        kernel_initializer=initializer,
        bias_initializer="zeros" if zero_init else "random_normal",
        dtype=dtype,
        name=name,
    )


def _with_context(inputs, context):
    if context is None:
        return inputs
    context = keras.ops.cast(context, inputs.dtype)
    return keras.ops.concatenate([inputs, context], axis=-1)


@keras.saving.register_keras_serializable(package="tfp_flows")
class MLP(keras.layers.Layer):
    """Multilayer perceptron mapping `[..., d_in]` (plus optional context) to `[..., output_units]`.

    Args:
        hidden_units: widths of the hidden layers.
        output_units: size of the output (the number of coupling parameters).
        activation: hidden activation.
        zero_init: zero-initialise the output layer so a new flow starts as the identity.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Example:
        >>> import numpy as np
        >>> net = MLP([16, 16], output_units=4)
        >>> net(np.zeros([3, 2], "float32")).shape
        TensorShape([3, 4])
    """

    def __init__(self, hidden_units, output_units, activation="relu", zero_init=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = check_units("hidden_units", hidden_units)
        self.output_units = check_positive_int("output_units", output_units)
        self.activation = keras.activations.get(activation)
        self.zero_init = bool(zero_init)
        self.hidden_layers = [
            keras.layers.Dense(u, activation=self.activation, dtype=self.dtype_policy,
                               name=f"hidden_{i}")
            for i, u in enumerate(self.hidden_units)
        ]
        self.output_layer = _output_layer(output_units, self.zero_init, self.dtype_policy, "output")

    def build(self, inputs_shape, context_shape=None):
        shape = list(inputs_shape)
        if context_shape is not None:
            shape[-1] += context_shape[-1]
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.output_layer.build(shape)

    def call(self, inputs, context=None):
        hidden = _with_context(inputs, context)
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        return self.output_layer(hidden)

    def compute_output_shape(self, inputs_shape, context_shape=None):
        # Keras names the shape arguments after `call`'s arguments (`inputs`, `context`).
        return (*inputs_shape[:-1], self.output_units)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "output_units": self.output_units,
            "activation": keras.activations.serialize(self.activation),
            "zero_init": self.zero_init,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class ResidualMLP(keras.layers.Layer):
    """MLP with pre-activation residual blocks of constant width.

    `hidden = Dense(input); hidden += Dense(act(Dense(act(hidden))))` per block, then a
    (zero-initialised) output layer.

    Args:
        hidden_units: width of the residual stream.
        num_blocks: number of residual blocks.
        output_units: size of the output.
        activation: activation inside the blocks.
        zero_init: zero-initialise the output layer.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, hidden_units, num_blocks, output_units, activation="relu", zero_init=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = check_positive_int("hidden_units", hidden_units)
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        self.output_units = check_positive_int("output_units", output_units)
        self.activation = keras.activations.get(activation)
        self.zero_init = bool(zero_init)
        policy = self.dtype_policy
        self.input_layer = keras.layers.Dense(hidden_units, dtype=policy, name="input")
        self.block_layers = [
            [
                keras.layers.Dense(hidden_units, dtype=policy, name=f"block_{i}_0"),
                keras.layers.Dense(hidden_units, dtype=policy, name=f"block_{i}_1"),
            ]
            for i in range(self.num_blocks)
        ]
        self.output_layer = _output_layer(output_units, self.zero_init, policy, "output")

    def build(self, inputs_shape, context_shape=None):
        shape = list(inputs_shape)
        if context_shape is not None:
            shape[-1] += context_shape[-1]
        self.input_layer.build(shape)
        stream = (*shape[:-1], self.hidden_units)
        for first, second in self.block_layers:
            first.build(stream)
            second.build(stream)
        self.output_layer.build(stream)

    def call(self, inputs, context=None):
        hidden = self.input_layer(_with_context(inputs, context))
        for first, second in self.block_layers:
            hidden = hidden + second(self.activation(first(self.activation(hidden))))
        return self.output_layer(self.activation(hidden))

    def compute_output_shape(self, inputs_shape, context_shape=None):
        # Keras names the shape arguments after `call`'s arguments (`inputs`, `context`).
        return (*inputs_shape[:-1], self.output_units)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "num_blocks": self.num_blocks,
            "output_units": self.output_units,
            "activation": keras.activations.serialize(self.activation),
            "zero_init": self.zero_init,
        }
