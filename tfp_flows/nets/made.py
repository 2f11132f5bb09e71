"""MADE: a masked dense network whose output `i` sees only the inputs before `i` in an order."""

import keras
import numpy as np

from tfp_flows._validation import check_int, check_positive_int
from tfp_flows.nets._validation import check_units

__all__ = ["MADE", "ORDERINGS", "fan_in_uniform"]

ORDERINGS = ("left-to-right", "right-to-left", "random")
_HIDDEN_DEGREES = ("equal", "random")


def _input_degrees(event_size, ordering, seed):
    """Degrees `1..D` of the inputs: input `j` is the `degree[j]`-th in the order."""
    if isinstance(ordering, str):
        if ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {ORDERINGS} or a permutation of "
                             f"1..{event_size}, got {ordering!r}")
        if ordering == "left-to-right":
            return np.arange(1, event_size + 1)
        if ordering == "right-to-left":
            return np.arange(event_size, 0, -1)
        return np.random.default_rng(seed).permutation(event_size) + 1
    degrees = np.asarray(ordering)
    if (degrees.shape != (event_size,) or not np.issubdtype(degrees.dtype, np.integer)
            or sorted(degrees.tolist()) != list(range(1, event_size + 1))):
        raise ValueError(f"an explicit ordering must be a permutation of 1..{event_size} "
                         f"(the position of each input in the order), got {ordering!r}")
    return degrees.astype(np.int64)


def _hidden_degrees(units, event_size, previous, method, rng):
    """Degrees of one hidden layer: each unit may see inputs of degree <= its own."""
    top = max(1, event_size - 1)
    if method == "equal":
        return np.arange(units) % top + min(1, event_size - 1)
    low = min(int(previous.min()), top)
    return rng.integers(low, top + 1, size=units)


def _check_hidden_degrees(hidden_degrees):
    if hidden_degrees not in _HIDDEN_DEGREES:
        raise ValueError(f"hidden_degrees must be one of {_HIDDEN_DEGREES}, got "
                         f"{hidden_degrees!r}")
    return hidden_degrees


def _layer_degrees(event_size, widths, ordering, hidden_degrees, seed):
    """Degrees of the inputs (their positions `1..D` in `ordering`), then of each hidden
    layer of `widths`: `[input_order, hidden_0, hidden_1, ...]`."""
    degrees = [_input_degrees(event_size, ordering, seed)]
    rng = np.random.default_rng(seed + 1)
    for units in widths:
        degrees.append(_hidden_degrees(units, event_size, degrees[-1], hidden_degrees, rng))
    return degrees


def _hidden_masks(degrees):
    """Masks of the layers between consecutive `degrees`: a unit sees degrees <= its own."""
    return [lower[:, None] <= upper[None, :]
            for lower, upper in zip(degrees[:-1], degrees[1:], strict=True)]


def _output_mask(hidden_degrees, input_order, params_per_dim):
    """Mask of an output layer `[H, D * params_per_dim]` from hidden units of degrees
    `hidden_degrees`: output `(i, p)` is column `i * params_per_dim + p` and sees the
    hidden units of degree `< d(i)`."""
    output_degrees = np.repeat(np.asarray(input_order), params_per_dim)
    return np.asarray(hidden_degrees)[:, None] < output_degrees[None, :]


def fan_in_uniform():
    """PyTorch's default for `nn.Linear` kernels: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.

    `VarianceScaling(scale=1/3, mode="fan_in", distribution="uniform")` draws from
    `U(-sqrt(3 * scale / fan_in), +sqrt(3 * scale / fan_in))`, the same interval (`fan_in`
    counts every input of the layer, masked ones included, as PyTorch's masked layers do).
    """
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in",
                                              distribution="uniform")


def _fresh(initializer):
    """A new instance of `initializer` (a name, config or instance): an unseeded instance
    called twice draws the same numbers, so each weight gets its own, as a name gives."""
    if isinstance(initializer, keras.initializers.Initializer):
        initializer = keras.initializers.serialize(initializer)
    return keras.initializers.get(initializer)


class _MaskedDense(keras.layers.Layer):
    """`x @ (kernel * mask) + bias` with a constant 0/1 mask (not a weight)."""

    def __init__(self, mask, zero_init=False, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, dtype="float32")
        self.zero_init = zero_init
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=self.mask.shape, name="kernel",
            initializer="zeros" if self.zero_init else _fresh(self.kernel_initializer))
        self.bias = self.add_weight(
            shape=self.mask.shape[1:], name="bias",
            initializer="zeros" if self.zero_init else _fresh(self.bias_initializer))

    def call(self, inputs, num_blocks=None):
        """With `num_blocks=P`, the tuple of the `P` outputs from columns `p, p + P, ...`
        (strided columns of the kernel and bias: far cheaper than slicing the outputs)."""
        kernel = self.kernel * keras.ops.convert_to_tensor(self.mask, dtype=self.kernel.dtype)
        if num_blocks is None:
            return keras.ops.matmul(inputs, kernel) + self.bias
        return tuple(keras.ops.matmul(inputs, kernel[:, p::num_blocks])
                     + self.bias[p::num_blocks] for p in range(num_blocks))


@keras.saving.register_keras_serializable(package="tfp_flows")
class MADE(keras.layers.Layer):
    """Masked autoencoder for distribution estimation (MADE), with residual blocks (ResMADE).

    Maps `x` of shape `[..., D]` to parameters `[..., D, params_per_dim]` such that the
    parameters of dimension `i` depend only on the inputs that come before `i` in the
    `ordering` (and on the unmasked `context`). That is the autoregressive property a
    masked autoregressive flow needs: its Jacobian is triangular in that order.

    Each input `j` gets a degree `d(j)`, its position `1..D` in the order; each hidden unit
    a degree `m` in `1..D-1`. A hidden unit sees the units of the layer below whose degree
    is `<= m`, and the outputs of dimension `i` see the hidden units of degree `< d(i)`.
    The masks are constants (recomputed from the configuration), not weights.

    With `num_blocks > 0` the hidden layers are a residual stream of width
    `hidden_units[0]` with `num_blocks` pre-activation blocks of two masked layers each
    (ResMADE); the hidden degrees are the same in the whole stream, so the sum keeps the
    property. A `context` vector enters the first hidden layer and the output layer through
    unmasked dense layers, so the parameters of every dimension, the first in the order
    included, depend on it.

    References: Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for
    Distribution Estimation", arXiv:1502.03509; Nash, Durkan, "Autoregressive Energy
    Machines", arXiv:1904.05626 (ResMADE).

    Args:
        event_size: number of dimensions `D`.
        params_per_dim: parameters per dimension (2 for an affine transform).
        hidden_units: widths of the hidden layers (one width with `num_blocks > 0`).
        ordering: `"left-to-right"`, `"right-to-left"`, `"random"` (drawn with `seed`), or
            a permutation of `1..D` giving each input's position in the order.
        hidden_degrees: `"equal"` (degrees cycle through `1..D-1`) or `"random"` (drawn
            with `seed`).
        num_blocks: residual blocks (0: a plain MADE).
        context_size: size of an unmasked context input, or `None`.
        activation: hidden activation.
        zero_init: zero-initialise the output layer (kernel and bias), so a flow starts as
            the identity.
        kernel_initializer: initializer of the masked kernels (and of the context kernels),
            a Keras initializer or its name; `None` is `fan_in_uniform()`, PyTorch's
            `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, under which a MAF trained to a better
            likelihood than under Glorot's (docs/families/maf.md).
        bias_initializer: initializer of the biases (a zero-initialised output layer keeps
            a zero bias).
        seed: seed of random orderings and degrees.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`).

    `made(x, context=None, param_blocks=True)` returns the same parameters as a tuple of
    `params_per_dim` tensors `[..., D]` (parameter `p` of every dimension): what a
    transformer that takes parameter tuples (`tff.bijectors.Affine`) reads, without the
    strided slices, and their gradients, of the `[..., D, params_per_dim]` form.

    Example:
        >>> made = MADE(3, params_per_dim=2, hidden_units=[16], zero_init=False)
        >>> made(np.zeros([5, 3], "float32")).shape
        TensorShape([5, 3, 2])
        >>> made.input_order.tolist()  # input j comes input_order[j]-th
        [1, 2, 3]
    """

    # `call(..., param_blocks=True)` is supported (read by `MaskedAutoregressiveFlow` from
    # this class itself, not inherited by subclasses that override `call`).
    offers_param_blocks = True

    def __init__(self, event_size, params_per_dim, hidden_units=(256, 256),
                 ordering="left-to-right", hidden_degrees="equal", num_blocks=0,
                 context_size=None, activation="relu", zero_init=True, kernel_initializer=None,
                 bias_initializer="zeros", seed=0, **kwargs):
        super().__init__(**kwargs)
        self.event_size = check_positive_int("event_size", event_size)
        self.params_per_dim = check_positive_int("params_per_dim", params_per_dim)
        self.hidden_units = check_units("hidden_units", hidden_units)
        check_int("num_blocks", num_blocks, minimum=0)
        if num_blocks and len(self.hidden_units) != 1:
            raise ValueError(f"a residual MADE (num_blocks > 0) has one hidden width, got "
                             f"hidden_units={self.hidden_units}")
        _check_hidden_degrees(hidden_degrees)
        if context_size is not None:
            check_positive_int("context_size", context_size)
        check_int("seed", seed)
        self.ordering = ordering if isinstance(ordering, str) else [int(d) for d in ordering]
        self.hidden_degrees = hidden_degrees
        self.num_blocks = num_blocks
        self.context_size = context_size
        self.activation = keras.activations.get(activation)
        self.zero_init = bool(zero_init)
        self.kernel_initializer = keras.initializers.get(
            fan_in_uniform() if kernel_initializer is None else kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        initializers = {"kernel_initializer": self.kernel_initializer,
                        "bias_initializer": self.bias_initializer}

        widths = self.hidden_units if not num_blocks else self.hidden_units[:1]
        degrees = _layer_degrees(event_size, widths, ordering, hidden_degrees, seed)
        self.input_order = degrees[0]
        policy = self.dtype_policy
        self.hidden_layers = [
            _MaskedDense(mask, **initializers, dtype=policy, name=f"hidden_{i}")
            for i, mask in enumerate(_hidden_masks(degrees))]
        stream = degrees[-1]
        (same,) = _hidden_masks([stream, stream])
        self.block_layers = [
            [_MaskedDense(same, **initializers, dtype=policy, name=f"block_{i}_0"),
             _MaskedDense(same, **initializers, dtype=policy, name=f"block_{i}_1")]
            for i in range(num_blocks)]
        self.output_layer = _MaskedDense(
            _output_mask(stream, self.input_order, self.params_per_dim),
            zero_init=self.zero_init, **initializers, dtype=policy, name="output")
        self.context_layers = []
        if context_size is not None:
            # Into the first hidden layer, and straight to the output: the first dimension
            # in the order sees no hidden unit, yet its parameters must depend on the context.
            self.context_layers = [
                keras.layers.Dense(widths[0], use_bias=False,
                                   kernel_initializer=_fresh(self.kernel_initializer),
                                   dtype=policy, name="context"),
                keras.layers.Dense(event_size * self.params_per_dim, use_bias=False,
                                   kernel_initializer="zeros" if self.zero_init
                                   else _fresh(self.kernel_initializer), dtype=policy,
                                   name="context_output")]

    def build(self, inputs_shape, context_shape=None):
        if inputs_shape[-1] != self.event_size:
            raise ValueError(f"{self.name} expects inputs [..., {self.event_size}], got shape "
                             f"{list(inputs_shape)}")
        if (context_shape is None) != (self.context_size is None):
            raise ValueError(f"{self.name}: context_size is {self.context_size} but the "
                             f"context shape is {context_shape}")
        shape = list(inputs_shape)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = [*shape[:-1], layer.mask.shape[1]]
        for first, second in self.block_layers:
            first.build(shape)
            second.build(shape)
        self.output_layer.build(shape)
        for layer in self.context_layers:
            layer.build(list(context_shape))

    def call(self, inputs, context=None, param_blocks=False):
        if (context is None) != (self.context_size is None):
            raise ValueError(f"{self.name}: context_size is {self.context_size} but got "
                             f"{'no' if context is None else 'a'} context")
        if context is not None:
            context = keras.ops.cast(context, inputs.dtype)
        hidden = inputs
        for index, layer in enumerate(self.hidden_layers):
            hidden = layer(hidden)
            if index == 0 and context is not None:
                hidden = hidden + self.context_layers[0](context)
            if not self.block_layers:
                hidden = self.activation(hidden)
        for first, second in self.block_layers:
            hidden = hidden + second(self.activation(first(self.activation(hidden))))
        if self.block_layers:
            hidden = self.activation(hidden)
        if param_blocks:
            # Output column `i * params_per_dim + p` holds parameter `p` of dimension `i`.
            blocks = self.output_layer(hidden, num_blocks=self.params_per_dim)
            if context is not None:
                # The context's term from the same strided columns of its kernel.
                kernel = keras.ops.cast(self.context_layers[1].kernel, context.dtype)
                blocks = tuple(
                    block + keras.ops.matmul(context, kernel[:, p::self.params_per_dim])
                    for p, block in enumerate(blocks))
            return blocks
        params = self.output_layer(hidden)
        if context is not None:
            params = params + self.context_layers[1](context)
        shape = keras.ops.shape(inputs)
        return keras.ops.reshape(params, (*shape[:-1], self.event_size, self.params_per_dim))

    def compute_output_shape(self, inputs_shape, context_shape=None):
        return (*inputs_shape[:-1], self.event_size, self.params_per_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "event_size": self.event_size,
            "params_per_dim": self.params_per_dim,
            "hidden_units": self.hidden_units,
            "ordering": self.ordering,
            "hidden_degrees": self.hidden_degrees,
            "num_blocks": self.num_blocks,
            "context_size": self.context_size,
            "activation": keras.activations.serialize(self.activation),
            "zero_init": self.zero_init,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "seed": self.seed,
        }
