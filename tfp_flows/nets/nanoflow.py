"""NanoFlow's shared estimator: one trunk for many flow steps, per-step projections and
flow indication embeddings."""

import keras
import numpy as np
from keras import ops

from tfp_flows._validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive_int,
    class_declares,
)
from tfp_flows.nets._validation import check_units
from tfp_flows.nets.made import (
    _check_hidden_degrees,
    _hidden_masks,
    _layer_degrees,
    _MaskedDense,
    _output_mask,
)

__all__ = ["EMBEDDINGS", "ConvTrunk", "MADETrunk", "MLPTrunk", "MaskedStepProjection",
           "SharedTrunkConditioner", "StepProjection", "embedding_kinds"]

# How a step's flow indication embedding enters the shared trunk.
EMBEDDINGS = ("concat", "bias", "gate")


def embedding_kinds(embedding):
    """The embedding kinds `embedding` names, as a tuple in `EMBEDDINGS` order.

    Args:
        embedding: `None` (no embedding), one of `"concat"`, `"bias"`, `"gate"`, or a
            list/tuple of distinct ones (the original image model is `("concat", "gate")`).

    Raises:
        TypeError: `embedding` is none of these types.
        ValueError: an unknown or repeated kind, or an empty list.
    """
    if embedding is None:
        return ()
    kinds = [embedding] if isinstance(embedding, str) else embedding
    if not isinstance(kinds, list | tuple) or not all(isinstance(k, str) for k in kinds):
        raise TypeError(f"embedding must be None, one of {EMBEDDINGS} or a list of them, got "
                        f"{embedding!r} of type {type(embedding).__name__}")
    for kind in kinds:
        check_choice("embedding", kind, EMBEDDINGS)
    if not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"embedding must list distinct kinds of {EMBEDDINGS}, got "
                         f"{embedding!r}")
    return tuple(kind for kind in EMBEDDINGS if kind in kinds)


class _Trunk(keras.layers.Layer):
    """The part of a trunk that reads flow embeddings; subclasses supply the layers.

    A subclass creates, through `_embedding_layers`, `concat_layer` (maps a step's
    concatenated embedding to the first hidden layer's pre-activation) and
    `bias_projection` (maps a step's bias embedding to a bias of every modulated hidden
    layer) when those embeddings are on, lists its
    modulated widths in `modulated_units` and computes its features in `_features`.
    """

    def __init__(self, concat_channels=None, bias_channels=None, **kwargs):
        super().__init__(**kwargs)
        self.concat_channels = check_positive_int("concat_channels", concat_channels,
                                                  allow_none=True)
        self.bias_channels = check_positive_int("bias_channels", bias_channels,
                                                allow_none=True)

    @property
    def modulated_units(self):
        """Widths of the hidden layers that biases and gates act on, in order."""
        raise NotImplementedError

    @property
    def num_gates(self):
        """Size of a step's flat gate vector: the sum of `modulated_units`."""
        return sum(self.modulated_units)

    def _embedding_layers(self, concat_layer):
        """Creates `concat_layer` (by calling `concat_layer()`) and `bias_projection` for
        the embeddings this trunk takes; call it once the layers behind
        `modulated_units` exist."""
        if self.concat_channels:
            self.concat_layer = concat_layer()
        if self.bias_channels:
            # One matrix maps a step's embedding to the biases of all hidden layers at once.
            self.bias_projection = keras.layers.Dense(
                self.num_gates, use_bias=False, dtype=self.dtype_policy,
                name="bias_projection")

    def _build_embedding_layers(self, concat_shape):
        if self.concat_channels:
            self.concat_layer.build(concat_shape)
        if self.bias_channels:
            self.bias_projection.build((1, self.bias_channels))

    def _check_embeddings(self, embedding, bias_embedding, gates):
        for kind, given, size in (("embedding", embedding, self.concat_channels),
                                  ("bias_embedding", bias_embedding, self.bias_channels)):
            if (given is None) != (size is None):
                argument = "concat_channels" if kind == "embedding" else "bias_channels"
                raise ValueError(
                    f"{self.name} has {argument}={size} and "
                    f"{'needs' if size else 'takes no'} {kind}, got "
                    f"{'none' if given is None else 'one of shape ' + str(list(given.shape))}")
        if gates is not None and gates.shape[-1] not in (None, self.num_gates):
            raise ValueError(f"{self.name} takes gates of shape [{self.num_gates}] (the sum "
                             f"of its hidden widths {self.modulated_units}), got shape "
                             f"{list(gates.shape)}")

    def call(self, inputs, embedding=None, bias_embedding=None, gates=None):
        """The trunk's features for one step.

        Args:
            inputs: `[B, ..., C_in]`.
            embedding: the step's concatenated embedding (`[H, W, concat_channels]` for
                the conv trunk, `[concat_channels]` for the MLP); required if and only if
                `concat_channels` is set.
            bias_embedding: the step's bias embedding `[bias_channels]`; required if and
                only if `bias_channels` is set.
            gates: `None` or the step's positive gates `[num_gates]`, one per hidden unit
                of every modulated layer.

        Returns:
            `[B, ..., hidden]` features.
        """
        return self._apply(inputs, self._step_terms(embedding, bias_embedding, gates))

    def _step_terms(self, embedding=None, bias_embedding=None, gates=None):
        """What a step adds to the trunk, `(concat, biases, gates)`: none of it depends on
        the data, so it is computed without a batch axis and broadcast (the same as
        concatenating the embedding to every input), and a caller making many passes of
        one step (autoregressive sampling) computes it once for all of them."""
        self._check_embeddings(embedding, bias_embedding, gates)
        dtype = self.compute_dtype
        concat = None if embedding is None else self.concat_layer(
            ops.cast(embedding, dtype)[None])
        biases = None if bias_embedding is None else self.bias_projection(
            ops.cast(bias_embedding, dtype)[None])[0]
        gates = None if gates is None else ops.cast(gates, dtype)
        return concat, biases, gates

    def _apply(self, inputs, terms):
        """The trunk's features of `inputs` with a step's `_step_terms`."""
        concat, biases, gates = terms
        offsets = [0]
        for units in self.modulated_units:
            offsets.append(offsets[-1] + units)

        def modulate(index, hidden):
            start, stop = offsets[index], offsets[index + 1]
            if biases is not None:
                hidden = hidden + biases[start:stop]
            if gates is not None:
                hidden = hidden * gates[start:stop]
            return hidden

        return self._features(inputs, concat, modulate)

    def get_config(self):
        return {**super().get_config(), "concat_channels": self.concat_channels,
                "bias_channels": self.bias_channels}


@keras.saving.register_keras_serializable(package="tfp_flows")
class ConvTrunk(_Trunk):
    """NanoFlow's shared convolutional trunk: `[B, H, W, C_in]` -> `[B, H, W, hidden]`.

    The hidden part of a conv ResNet conditioner (`ConvResNet` without its output
    convolution): a 3x3 input convolution, `num_blocks` pre-activation residual blocks
    (3x3 then 1x1 convolution) and a final ReLU. Every step of a level calls the same
    trunk; a step's own parts (its projection and flow indication embedding, see
    `SharedTrunkConditioner`) modulate it:

    - `"concat"`: the step's embedding map `e_k` (`[H, W, concat_channels]`) is appended
      to the input channels. The input convolution of `[x, e_k]` is computed as
      `conv(x) + conv_e(e_k)`, the same map, with `conv_e(e_k)` computed once per call
      without a batch axis.
    - `"bias"`: a shared matrix maps the step's embedding vector `e_k` to a channel-wise
      bias added to the output of every convolution.
    - `"gate"`: the output of every convolution is multiplied by the step's channel-wise
      gate.

    Biases and gates act on each of the `1 + 2 num_blocks` convolutions (`hidden_channels`
    channels each) as `(conv(h) + b_k) * g_k`, before the next ReLU.

    Reference: Lee, Kim, Yoon, "NanoFlow: Scalable Normalizing Flows with Sublinear
    Parameter Complexity", arXiv:2006.06280.

    Args:
        hidden_channels: width `F` of the residual stream.
        num_blocks: number of residual blocks.
        concat_channels: channels of a concatenated embedding, or `None`.
        bias_channels: size of a bias embedding vector, or `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> import numpy as np
        >>> trunk = ConvTrunk(8, num_blocks=1)
        >>> trunk(np.zeros([2, 4, 4, 3], "float32")).shape
        TensorShape([2, 4, 4, 8])
    """

    def __init__(self, hidden_channels, num_blocks=1, concat_channels=None, bias_channels=None,
                 **kwargs):
        super().__init__(concat_channels, bias_channels, **kwargs)
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        policy = self.dtype_policy
        width = self.hidden_channels
        self.input_conv = keras.layers.Conv2D(width, 3, padding="same", dtype=policy,
                                              name="input")
        self.block_convs = [
            [keras.layers.Conv2D(width, 3, padding="same", dtype=policy, name=f"block_{i}_0"),
             keras.layers.Conv2D(width, 1, padding="same", dtype=policy, name=f"block_{i}_1")]
            for i in range(self.num_blocks)]
        self._embedding_layers(lambda: keras.layers.Conv2D(
            width, 3, padding="same", use_bias=False, dtype=policy, name="concat"))

    @property
    def modulated_units(self):
        return [self.hidden_channels] * (1 + 2 * self.num_blocks)

    def build(self, inputs_shape, embedding_shape=None, bias_embedding_shape=None,
              gates_shape=None):
        shape = tuple(inputs_shape)
        if len(shape) != 4:
            raise ValueError(f"ConvTrunk expects images [batch, height, width, channels], got "
                             f"shape {list(shape)}")
        self.input_conv.build(shape)
        stream = (*shape[:-1], self.hidden_channels)
        for first, second in self.block_convs:
            first.build(stream)
            second.build(stream)
        self._build_embedding_layers((1, *shape[1:-1], self.concat_channels))

    def _features(self, inputs, concat, modulate):
        hidden = self.input_conv(inputs)
        if concat is not None:
            hidden = hidden + concat
        hidden = modulate(0, hidden)
        for i, (first, second) in enumerate(self.block_convs):
            inner = modulate(1 + 2 * i, first(ops.relu(hidden)))
            hidden = hidden + modulate(2 + 2 * i, second(ops.relu(inner)))
        return ops.relu(hidden)

    def compute_output_shape(self, inputs_shape, embedding_shape=None,
                             bias_embedding_shape=None, gates_shape=None):
        return (*inputs_shape[:-1], self.hidden_channels)

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels,
                "num_blocks": self.num_blocks}


def _dense_features(hidden_layers, inputs, concat, modulate):
    """`h_i = relu(modulate_i(layer_i(h_{i-1}) [+ concat if i = 0]))`, the last `h`."""
    hidden = inputs
    for i, layer in enumerate(hidden_layers):
        hidden = layer(hidden)
        if i == 0 and concat is not None:
            hidden = hidden + concat
        hidden = ops.relu(modulate(i, hidden))
    return hidden


@keras.saving.register_keras_serializable(package="tfp_flows")
class MLPTrunk(_Trunk):
    """NanoFlow's shared dense trunk: `[B, D_in]` -> `[B, hidden_units[-1]]`.

    Dense layers of `hidden_units` widths, each followed by a ReLU; the last hidden
    activation is the output. A step's embedding enters as in `ConvTrunk`: `"concat"`
    appends the vector `e_k` to the input (computed as `W x + W_e e_k`), `"bias"` adds
    `B_i e_k` to the pre-activation of every hidden layer `i`, `"gate"` multiplies every
    pre-activation by the step's gate: `h_i = relu((W_i h_{i-1} + c_i + b_{k,i}) g_{k,i})`.

    Reference: Lee, Kim, Yoon, "NanoFlow: Scalable Normalizing Flows with Sublinear
    Parameter Complexity", arXiv:2006.06280.

    Args:
        hidden_units: widths of the hidden layers.
        concat_channels: size of a concatenated embedding vector, or `None`.
        bias_channels: size of a bias embedding vector, or `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> import numpy as np
        >>> MLPTrunk([16, 8])(np.zeros([3, 2], "float32")).shape
        TensorShape([3, 8])
    """

    def __init__(self, hidden_units, concat_channels=None, bias_channels=None, **kwargs):
        super().__init__(concat_channels, bias_channels, **kwargs)
        self.hidden_units = check_units("hidden_units", hidden_units)
        policy = self.dtype_policy
        self.hidden_layers = [keras.layers.Dense(units, dtype=policy, name=f"hidden_{i}")
                              for i, units in enumerate(self.hidden_units)]
        self._embedding_layers(lambda: keras.layers.Dense(
            self.hidden_units[0], use_bias=False, dtype=policy, name="concat"))

    @property
    def modulated_units(self):
        return list(self.hidden_units)

    def build(self, inputs_shape, embedding_shape=None, bias_embedding_shape=None,
              gates_shape=None):
        shape = tuple(inputs_shape)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self._build_embedding_layers((1, self.concat_channels))

    def _features(self, inputs, concat, modulate):
        return _dense_features(self.hidden_layers, inputs, concat, modulate)

    def compute_output_shape(self, inputs_shape, embedding_shape=None,
                             bias_embedding_shape=None, gates_shape=None):
        return (*inputs_shape[:-1], self.hidden_units[-1])

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


@keras.saving.register_keras_serializable(package="tfp_flows")
class MADETrunk(_Trunk):
    """NanoFlow's shared autoregressive trunk: `[B, D]` -> `[B, hidden_units[-1]]` masked
    features.

    The hidden part of a `MADE` (its masked hidden layers with ReLUs, without its output
    layer): input `j` has the degree `d(j)`, its position `1..D` in `ordering`, each hidden
    unit a degree `m` in `1..D-1`, and a unit sees the units of the layer below of degree
    `<= m`. A `MaskedStepProjection` built from `input_order` and `feature_degrees` then
    gives the parameters of dimension `i` from the features of degree `< d(i)` only, so
    every step's conditioner has the autoregressive property MAF needs.

    A step's embedding enters as in `MLPTrunk`, and none of the three ways reads the data,
    so none breaks the property: `"concat"` adds `W_e e_k` (unmasked: every hidden unit of
    the first layer may see the embedding) to the first pre-activation, `"bias"` adds
    `B_i e_k` to the pre-activation of every hidden layer `i`, and `"gate"` multiplies
    every hidden unit by its own gate:
    `h_i = relu((M_i(h_{i-1}) + b_{k,i}) g_{k,i})`, `M_i` the masked dense map.

    References: Lee, Kim, Yoon, "NanoFlow: Scalable Normalizing Flows with Sublinear
    Parameter Complexity", arXiv:2006.06280; Germain, Gregor, Murray, Larochelle, "MADE:
    Masked Autoencoder for Distribution Estimation", arXiv:1502.03509.

    Args:
        event_size: number of dimensions `D`.
        hidden_units: widths of the hidden layers.
        concat_channels: size of a concatenated embedding vector, or `None`.
        bias_channels: size of a bias embedding vector, or `None`.
        ordering: `"left-to-right"`, `"right-to-left"`, `"random"` (drawn with `seed`), or
            a permutation of `1..D` giving each input's position in the order (as `MADE`).
        hidden_degrees: `"equal"` (degrees cycle through `1..D-1`) or `"random"` (drawn
            with `seed`).
        seed: seed of random orderings and degrees (the same draws as `MADE`'s).
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> import numpy as np
        >>> trunk = MADETrunk(3, [8, 4])
        >>> trunk(np.zeros([5, 3], "float32")).shape
        TensorShape([5, 4])
        >>> trunk.input_order.tolist(), trunk.feature_degrees.tolist()
        ([1, 2, 3], [1, 2, 1, 2])
    """

    def __init__(self, event_size, hidden_units, concat_channels=None, bias_channels=None,
                 ordering="left-to-right", hidden_degrees="equal", seed=0, **kwargs):
        super().__init__(concat_channels, bias_channels, **kwargs)
        self.event_size = check_positive_int("event_size", event_size)
        self.hidden_units = check_units("hidden_units", hidden_units)
        self.hidden_degrees = _check_hidden_degrees(hidden_degrees)
        self.seed = check_int("seed", seed)
        degrees = _layer_degrees(self.event_size, self.hidden_units, ordering,
                                 hidden_degrees, seed)
        self.ordering = ordering if isinstance(ordering, str) else degrees[0].tolist()
        self.input_order = degrees[0]
        self.feature_degrees = degrees[-1]
        policy = self.dtype_policy
        self.hidden_layers = [_MaskedDense(mask, dtype=policy, name=f"hidden_{i}")
                              for i, mask in enumerate(_hidden_masks(degrees))]
        self._embedding_layers(lambda: keras.layers.Dense(
            self.hidden_units[0], use_bias=False, dtype=policy, name="concat"))

    @property
    def modulated_units(self):
        return list(self.hidden_units)

    def build(self, inputs_shape, embedding_shape=None, bias_embedding_shape=None,
              gates_shape=None):
        shape = tuple(inputs_shape)
        if shape[-1] != self.event_size:
            raise ValueError(f"{self.name} expects inputs [..., {self.event_size}], got shape "
                             f"{list(shape)}")
        for layer, units in zip(self.hidden_layers, self.hidden_units, strict=True):
            layer.build(shape)
            shape = (*shape[:-1], units)
        self._build_embedding_layers((1, self.concat_channels))

    def _features(self, inputs, concat, modulate):
        return _dense_features(self.hidden_layers, inputs, concat, modulate)

    def compute_output_shape(self, inputs_shape, embedding_shape=None,
                             bias_embedding_shape=None, gates_shape=None):
        return (*inputs_shape[:-1], self.hidden_units[-1])

    def get_config(self):
        return {**super().get_config(), "event_size": self.event_size,
                "hidden_units": self.hidden_units, "ordering": self.ordering,
                "hidden_degrees": self.hidden_degrees, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfp_flows")
class StepProjection(keras.layers.Layer):
    """A step's projection of shared features to its transformer parameters.

    `kernel_size=1` is a dense map of the last axis (a 1x1 convolution on images, a dense
    layer on vectors); a larger odd `kernel_size` is a "same"-padded convolution of
    images. Zero-initialised by default, so the coupling it feeds starts as the identity.

    Args:
        output_channels: size of the output's last axis.
        kernel_size: `1`, or an odd convolution size for images.
        zero_init: zero-initialise the kernel and bias (else Glorot-uniform kernel).
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> import numpy as np
        >>> projection = StepProjection(4)
        >>> projection(np.ones([2, 3, 3, 8], "float32")).numpy().tolist()[0][0][0]
        [0.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, output_channels, kernel_size=1, zero_init=True, **kwargs):
        super().__init__(**kwargs)
        self.output_channels = check_positive_int("output_channels", output_channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size!r}")
        self.zero_init = check_bool("zero_init", zero_init)

    def build(self, inputs_shape):
        if self.kernel_size > 1 and len(inputs_shape) != 4:
            raise ValueError(f"a StepProjection with kernel_size={self.kernel_size} needs "
                             f"images [batch, height, width, channels], got shape "
                             f"{list(inputs_shape)}")
        size = self.kernel_size
        shape = ((inputs_shape[-1], self.output_channels) if size == 1
                 else (size, size, inputs_shape[-1], self.output_channels))
        self.kernel = self.add_weight(
            shape=shape, name="kernel",
            initializer="zeros" if self.zero_init else "glorot_uniform")
        self.bias = self.add_weight(shape=(self.output_channels,), name="bias",
                                    initializer="zeros")

    def call(self, inputs):
        kernel = ops.cast(self.kernel, inputs.dtype)
        if self.kernel_size == 1:
            outputs = ops.matmul(inputs, kernel)
        else:
            outputs = ops.conv(inputs, kernel, padding="same")
        return outputs + ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, inputs_shape):
        return (*inputs_shape[:-1], self.output_channels)

    def get_config(self):
        return {**super().get_config(), "output_channels": self.output_channels,
                "kernel_size": self.kernel_size, "zero_init": self.zero_init}


def _int_list(name, value):
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must be a list of ints, got {value!r}")
    if not value:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return [int(v) for v in value]


@keras.saving.register_keras_serializable(package="tfp_flows")
class MaskedStepProjection(_MaskedDense):
    """A step's masked projection of `MADETrunk` features to `[..., D, params_per_dim]`.

    MADE's output layer as a step's own part: output `(i, p)` is
    `sum_u W[u, (i, p)] h_u + c_{i, p}` over the hidden units `u` of degree `< d(i)`, with
    `d(i)` input `i`'s position in the order, so the parameters of dimension `i` depend on
    the inputs before `i` only. The mask comes from the trunk (`trunk.input_order`,
    `trunk.feature_degrees`) and is a constant, not a weight. Zero-initialised by default,
    so the autoregressive step it feeds starts as the identity.

    Args:
        params_per_dim: parameters per dimension `P` (the transformer's `num_params`).
        input_order: each input's position `1..D` in the order (`MADETrunk.input_order`).
        feature_degrees: the degrees of the features it reads
            (`MADETrunk.feature_degrees`), each in `0..D-1`.
        zero_init: zero-initialise the kernel and bias (else Glorot-uniform kernel).
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> import numpy as np
        >>> trunk = MADETrunk(3, [8])
        >>> projection = MaskedStepProjection(2, trunk.input_order, trunk.feature_degrees)
        >>> projection(trunk(np.ones([4, 3], "float32"))).shape
        TensorShape([4, 3, 2])
    """

    def __init__(self, params_per_dim, input_order, feature_degrees, zero_init=True,
                 **kwargs):
        params_per_dim = check_positive_int("params_per_dim", params_per_dim)
        order = _int_list("input_order", input_order)
        if sorted(order) != list(range(1, len(order) + 1)):
            raise ValueError(f"input_order must be a permutation of 1..{len(order)} (the "
                             f"position of each input in the order), got {input_order!r}")
        degrees = _int_list("feature_degrees", feature_degrees)
        if not all(0 <= degree < len(order) for degree in degrees):
            raise ValueError(f"feature_degrees must lie in 0..{len(order) - 1} for "
                             f"{len(order)} inputs, got {feature_degrees!r}")
        zero_init = check_bool("zero_init", zero_init)
        super().__init__(_output_mask(degrees, order, params_per_dim), zero_init=zero_init,
                         **kwargs)
        self.params_per_dim = params_per_dim
        self.event_size = len(order)
        self.input_order = np.asarray(order)
        self.feature_degrees = np.asarray(degrees)

    def build(self, inputs_shape):
        if inputs_shape[-1] != len(self.feature_degrees):
            raise ValueError(f"{self.name} reads {len(self.feature_degrees)} features, got "
                             f"shape {list(inputs_shape)}")
        super().build(inputs_shape)

    # `call(..., param_blocks=True)` is supported (read from this class itself, as MADE's).
    offers_param_blocks = True

    def call(self, inputs, param_blocks=False):
        """`[..., D, params_per_dim]`, or with `param_blocks=True` (as `MADE`'s) the tuple of
        the `params_per_dim` blocks `[..., D]`, from strided columns of the kernel."""
        if param_blocks:
            return super().call(inputs, num_blocks=self.params_per_dim)
        params = super().call(inputs)
        return ops.reshape(params, (*ops.shape(inputs)[:-1], self.event_size,
                                    self.params_per_dim))

    def compute_output_shape(self, inputs_shape):
        return (*inputs_shape[:-1], self.event_size, self.params_per_dim)

    def get_config(self):
        return {**super().get_config(), "params_per_dim": self.params_per_dim,
                "input_order": self.input_order.tolist(),
                "feature_degrees": self.feature_degrees.tolist(), "zero_init": self.zero_init}


def _check_masking(trunk, projection):
    """A `MADETrunk` needs the masked projection of its own degrees, and only it takes one:
    any other projection would let the parameters of dimension `i` read dimension `i`."""
    masked_trunk = isinstance(trunk, MADETrunk)
    if masked_trunk != isinstance(projection, MaskedStepProjection):
        raise ValueError(
            f"a MADETrunk needs a MaskedStepProjection and only a MADETrunk takes one, got "
            f"trunk {trunk.name} ({type(trunk).__name__}) with projection {projection.name} "
            f"({type(projection).__name__})")
    if masked_trunk and (
            projection.input_order.tolist() != trunk.input_order.tolist()
            or projection.feature_degrees.tolist() != trunk.feature_degrees.tolist()):
        raise ValueError(
            f"projection {projection.name} is masked for input_order "
            f"{projection.input_order.tolist()} and feature_degrees "
            f"{projection.feature_degrees.tolist()}, but trunk {trunk.name} has "
            f"{trunk.input_order.tolist()} and {trunk.feature_degrees.tolist()}")


@keras.saving.register_keras_serializable(package="tfp_flows")
class SharedTrunkConditioner(keras.layers.Layer):
    """One flow step's conditioner: a shared trunk, this step's embedding, a projection.

    `theta_k(x) = P_k(g(x; e_k))`: the trunk `g` is one Keras layer that any number of
    conditioners reference (Keras tracks and saves its weights once), `P_k` is the step's
    projection (its own in NanoFlow, a shared one in the "naive" variant) and `e_k` the
    step's flow indication embedding, which this layer owns:

    - `"concat"`: a map `[*spatial, concat_channels]` (a vector `[concat_channels]` for
      the MLP trunk), standard normal at initialisation (as the original's `torch.randn`);
    - `"bias"`: a vector `[bias_channels]`, standard normal, that the trunk projects to a
      bias of each hidden layer;
    - `"gate"`: a log-gate `[trunk.num_gates]`, zero at initialisation: the gates
      `exp(log_gate)` start at one.

    The trunk must be made for the embeddings named (`concat_channels` for `"concat"`,
    `bias_channels` for `"bias"`, and neither for kinds not named).

    Over a `MADETrunk` with a `MaskedStepProjection` of the trunk's degrees, the
    conditioner maps `[..., D]` to `[..., D, params_per_dim]` with the autoregressive
    property: it is the `made` of a `tff.bijectors.MaskedAutoregressiveFlow`, which reads
    its `event_size` and `params_per_dim` and, when sampling, calls `precompute()` once
    for its `D` passes.

    Reference: Lee, Kim, Yoon, "NanoFlow: Scalable Normalizing Flows with Sublinear
    Parameter Complexity", arXiv:2006.06280.

    Args:
        trunk: a `ConvTrunk`, `MLPTrunk`, `MADETrunk` or `CausalConvTrunk`, usually
            shared with other conditioners.
        projection: a Keras layer from the trunk's features to the step's parameters
            (a `StepProjection`; a `MaskedStepProjection` of the same degrees for a
            `MADETrunk`, and only then), own or shared.
        embedding: `None`, `"concat"`, `"bias"`, `"gate"`, or a list of distinct kinds.
        **kwargs: passed to `keras.layers.Layer`.

    Raises:
        TypeError: `trunk` or `projection` is not such a layer, or a bad `embedding` type.
        ValueError: an unknown embedding kind, or one the trunk is not made for; a
            `MADETrunk` without a `MaskedStepProjection` of its degrees, or such a
            projection on another trunk.

    Example:
        >>> import numpy as np
        >>> trunk = MLPTrunk([8], bias_channels=4)
        >>> steps = [SharedTrunkConditioner(trunk, StepProjection(2), embedding="bias")
        ...          for _ in range(3)]
        >>> outputs = [step(np.zeros([5, 3], "float32")) for step in steps]
        >>> outputs[0].shape
        TensorShape([5, 2])
        >>> # The trunk's 3 weights once, and each step's projection (2) and embedding (1).
        >>> len({id(w) for step in steps for w in step.trainable_weights})
        12
    """

    def __init__(self, trunk, projection, embedding=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(trunk, _Trunk):
            raise TypeError(f"trunk must be a tfp_flows.nets.ConvTrunk, MLPTrunk, MADETrunk "
                            f"or CausalConvTrunk, got {trunk!r} of type {type(trunk).__name__}")
        if not isinstance(projection, keras.layers.Layer):
            raise TypeError(f"projection must be a keras.layers.Layer, got {projection!r} of "
                            f"type {type(projection).__name__}")
        self.embedding_kinds = embedding_kinds(embedding)
        self._embedding_argument = (list(embedding) if isinstance(embedding, list | tuple)
                                    else embedding)
        for kind, argument in (("concat", "concat_channels"), ("bias", "bias_channels")):
            size = getattr(trunk, argument)
            if (kind in self.embedding_kinds) != (size is not None):
                raise ValueError(
                    f"embedding {embedding!r} and the trunk {trunk.name} ({argument}={size}) "
                    f"do not fit: a {kind!r} embedding needs a trunk with {argument}, and "
                    f"only it")
        _check_masking(trunk, projection)
        self.trunk = trunk
        self.projection = projection

    @property
    def event_size(self):
        """`D` of a `MADETrunk`'s conditioner; other conditioners have no such attribute."""
        if not isinstance(self.trunk, MADETrunk):
            raise AttributeError(f"{self.name} has no event_size: its trunk is not a "
                                 f"MADETrunk")
        return self.trunk.event_size

    @property
    def params_per_dim(self):
        """`P` of a `MADETrunk`'s conditioner; other conditioners have no such attribute."""
        if not isinstance(self.trunk, MADETrunk):
            raise AttributeError(f"{self.name} has no params_per_dim: its trunk is not a "
                                 f"MADETrunk")
        return self.projection.params_per_dim

    def build(self, inputs_shape):
        if not self.trunk.built:
            self.trunk.build(inputs_shape)
        if not self.projection.built:
            self.projection.build(self.trunk.compute_output_shape(inputs_shape))
        normal = keras.initializers.RandomNormal(stddev=1.0)
        if "concat" in self.embedding_kinds:
            self.embedding = self.add_weight(
                shape=(*inputs_shape[1:-1], self.trunk.concat_channels), name="embedding",
                initializer=normal)
        if "bias" in self.embedding_kinds:
            self.bias_embedding = self.add_weight(
                shape=(self.trunk.bias_channels,), name="bias_embedding", initializer=normal)
        if "gate" in self.embedding_kinds:
            self.log_gate = self.add_weight(shape=(self.trunk.num_gates,), name="log_gate",
                                            initializer="zeros")

    def step_inputs(self):
        """The step's data-independent inputs of the trunk, as `trunk`'s keyword arguments."""
        inputs = {}
        if "concat" in self.embedding_kinds:
            inputs["embedding"] = ops.convert_to_tensor(self.embedding)
        if "bias" in self.embedding_kinds:
            inputs["bias_embedding"] = ops.convert_to_tensor(self.bias_embedding)
        if "gate" in self.embedding_kinds:
            inputs["gates"] = ops.exp(ops.convert_to_tensor(self.log_gate))
        return inputs

    # `call(..., param_blocks=True)` is supported (read by `MaskedAutoregressiveFlow` from
    # this class itself, not inherited by subclasses that override `call`).
    offers_param_blocks = True

    def call(self, inputs, param_blocks=False):
        """The step's parameters; with `param_blocks=True` (a `MADETrunk`'s conditioner, as
        `MADE`'s) the tuple of the `params_per_dim` blocks `[..., D]`."""
        return self._project(self.trunk(inputs, **self.step_inputs()), param_blocks)

    def _project(self, features, param_blocks):
        if not param_blocks:
            return self.projection(features)
        if class_declares(self.projection, "offers_param_blocks"):
            return self.projection(features, param_blocks=True)
        return tuple(ops.unstack(self.projection(features), axis=-1))

    def precompute(self):
        """`self(inputs)` as a function whose data-independent part is computed now, once.

        The gates `exp(log_gate)`, the trunk's map of a concatenated embedding and its
        biases from a bias embedding do not depend on the data; a caller that runs one
        step many times (`MaskedAutoregressiveFlow` sampling: `D` passes) computes them
        once with this method, then calls the returned function in its loop.

        Returns:
            A function `(inputs, param_blocks=False) -> params` equal to
            `self(inputs, param_blocks=...)` for this step's current weights.

        Raises:
            RuntimeError: the conditioner is not built (call it once first).
        """
        if not self.built:
            raise RuntimeError(f"{self.name} is not built: call it once before precompute()")
        terms = self.trunk._step_terms(**self.step_inputs())

        def conditioner(inputs, param_blocks=False):
            return self._project(self.trunk._apply(inputs, terms), param_blocks)

        return conditioner

    def compute_output_shape(self, inputs_shape):
        return self.projection.compute_output_shape(
            self.trunk.compute_output_shape(inputs_shape))

    def get_config(self):
        return {**super().get_config(),
                "trunk": keras.saving.serialize_keras_object(self.trunk),
                "projection": keras.saving.serialize_keras_object(self.projection),
                "embedding": self._embedding_argument}

    @classmethod
    def from_config(cls, config):
        # A conditioner rebuilt on its own gets its own trunk; a model that shares one
        # trunk rebuilds the sharing from its own config.
        config = dict(config)
        config["trunk"] = keras.saving.deserialize_keras_object(config["trunk"])
        config["projection"] = keras.saving.deserialize_keras_object(config["projection"])
        return cls(**config)
