"""The Flow++ coupling network: gated residual convolutions and gated self-attention."""

import math

import keras
from keras import ops

from tfp_flows._validation import check_bool, check_number, check_positive_int

__all__ = ["GatedConvAttentionNet", "GatedConvContextNet"]

# Gated residual convolutions of the dequantizer's context network, as in the original.
_CONTEXT_BLOCKS = 3

# The original's layer norm epsilon and positional-embedding initial scale.
_LAYER_NORM_EPSILON = 1e-5
_POSITION_STDDEV = 0.01
# The original initialises the last projection of every gated sublayer (and `proj_out`)
# to a tenth of the unit output scale of its other convolutions.
_GATE_INIT_SCALE = 0.1


def _init(scale):
    """Fan-in scaling: unit-variance inputs give outputs of standard deviation `scale`.

    Stands in for the original's data-dependent initialisation, which rescales each
    convolution on the first batch so that its outputs have zero mean and standard
    deviation `init_scale`.
    """
    return keras.initializers.VarianceScaling(scale=scale**2, mode="fan_in",
                                              distribution="untruncated_normal")


def _concat_elu(x):
    return ops.elu(ops.concatenate([x, -x], axis=-1))


def _gate(x):
    a, b = ops.split(x, 2, axis=-1)
    return a * ops.sigmoid(b)


@keras.saving.register_keras_serializable(package="tfp_flows")
class GatedConvAttentionNet(keras.layers.Layer):
    """The Flow++ coupling network, mapping `[B, H, W, C_in]` to `[B, H, W, output_channels]`.

    From "Flow++: Improving Flow-Based Generative Models with Variational Dequantization
    and Architecture Design" (Ho, Chen, Srinivas, Duan, Abbeel 2019, arXiv:1902.00275),
    section 3.3, following the authors' `MixLogisticAttnCoupling` in `flows/flows.py`.
    With `F = filters`:

    ```
    h = proj_in(x)                                     # 3x3 conv to F channels
    repeat `blocks` times:
        # gated residual convolution
        c = conv3x3(concat_elu(h)) [+ nin(concat_elu(context))]
        c = nin(dropout(concat_elu(c)))                # 1x1 to 2F
        h = layer_norm(h + a * sigmoid(b))             # (a, b) = split(c)
        # gated multi-head self-attention over all H * W positions
        q, k, v = nin(h + pos_emb)                     # 1x1 to F each, split into heads
        c = merge_heads(softmax(q k^T / sqrt(F / heads)) v)
        c = nin(dropout(c))                            # 1x1 to 2F
        h = layer_norm(h + a * sigmoid(b))             # (a, b) = split(c)
    y = proj_out(h)                                    # 3x3 conv, zero-initialised
    ```

    where `concat_elu(x) = elu([x, -x])` doubles the channels, `nin` is a 1x1 convolution
    and `pos_emb` is one learned `[H, W, F]` positional embedding shared by all blocks.

    Where this follows the original: the order and kinds of the sublayers above, concat-ELU,
    the gates, post-sublayer layer norm (epsilon 1e-5), dropout on the gated conv's hidden
    activation and on the merged attention heads, one positional embedding per network
    (normal, standard deviation 0.01), and the context entering every gated convolution
    as `nin(concat_elu(context))` added to the first convolution's output.

    Where it differs:

    - Initialisation. The original's convolutions use data-dependent initialisation (the
      first batch rescales each kernel and bias so that every output channel has zero
      mean and standard deviation `init_scale`: 1, and 0.1 for the gate projections and
      `proj_out`). Here kernels use fan-in variance scaling with those same output scales
      and biases start at zero, so the network is built without data and initialises
      identically under `jit_compile` and `tf.distribute`.
    - `proj_out` starts at exactly zero (`zero_init=True`), so a fresh coupling is the
      identity; `zero_init=False` gives the 0.1 output scale instead.
    - The query/key/value projection is three `F`-wide 1x1 projections instead of one
      `3F`-wide one: the same function (the wide kernel split in three) and the same
      number of parameters, but faster here since no slicing of the wide output is
      needed. The attention logits go through softmax in float32 under mixed precision.
    - Context: besides a spatial map the network accepts a vector broadcast over the
      positions (see `call`).
    - `heads` must divide `filters` only when `attention=True`.

    Attention costs memory `O(B * heads * (H * W)^2)`, which is why Flow++ applies it after
    squeezing. The positional embedding fixes the image size: the network is built for
    the `H, W` of its first input and rejects other sizes.

    Args:
        filters: `F`, the channels of the residual stream; a positive int.
        blocks: the number of (gated conv, attention) blocks; a positive int.
        output_channels: channels of the output (coupling parameters per pixel).
        heads: attention heads; must divide `filters` when `attention` is on.
        dropout: dropout rate in `[0, 1)`, applied only in training.
        attention: `False` drops every attention sublayer, its layer norm and the
            positional embedding (the paper's ablation).
        context_channels: channels of the context, or `None` for an unconditional net.
        zero_init: zero-initialise `proj_out`.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range, or `filters % heads != 0`.

    Example:
        >>> import numpy as np
        >>> net = GatedConvAttentionNet(8, blocks=1, output_channels=6, heads=2)
        >>> net(np.zeros([2, 4, 4, 3], "float32")).shape
        TensorShape([2, 4, 4, 6])
    """

    def __init__(self, filters, blocks, output_channels, heads=4, dropout=0.0, attention=True,
                 context_channels=None, zero_init=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.blocks = check_positive_int("blocks", blocks)
        self.output_channels = check_positive_int("output_channels", output_channels)
        self.heads = check_positive_int("heads", heads)
        self.dropout = check_number("dropout", dropout, minimum=0, maximum=1,
                                    exclusive_maximum=True)
        self.attention = check_bool("attention", attention)
        self.context_channels = check_positive_int("context_channels", context_channels,
                                                   allow_none=True)
        self.zero_init = check_bool("zero_init", zero_init)
        if self.attention and self.filters % self.heads:
            raise ValueError(f"filters ({self.filters}) must be divisible by heads "
                             f"({self.heads})")

        policy = self.dtype_policy
        width = self.filters

        def conv(units, size, name, scale=1.0):
            return keras.layers.Conv2D(units, size, padding="same", kernel_initializer=_init(scale),
                                       dtype=policy, name=name)

        def dense(units, name, scale=1.0):
            return keras.layers.Dense(units, kernel_initializer=_init(scale), dtype=policy,
                                      name=name)

        def norm(name):
            return keras.layers.LayerNormalization(epsilon=_LAYER_NORM_EPSILON, dtype=policy,
                                                   name=name)

        self.proj_in = conv(width, 3, "proj_in")
        self.conv_layers = [conv(width, 3, f"block_{i}_conv") for i in range(self.blocks)]
        self.context_layers = [dense(width, f"block_{i}_context") for i in range(self.blocks)
                               ] if self.context_channels else []
        self.conv_gate_layers = [dense(2 * width, f"block_{i}_conv_gate", _GATE_INIT_SCALE)
                                 for i in range(self.blocks)]
        self.conv_norms = [norm(f"block_{i}_conv_norm") for i in range(self.blocks)]
        self.attention_layers = [
            [dense(width, f"block_{i}_{part}") for part in ("query", "key", "value")]
            + [dense(2 * width, f"block_{i}_attention_gate", _GATE_INIT_SCALE),
               norm(f"block_{i}_attention_norm")]
            for i in range(self.blocks)
        ] if self.attention else []
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy, name="dropout")
        self.proj_out = keras.layers.Conv2D(
            self.output_channels, 3, padding="same",
            kernel_initializer="zeros" if self.zero_init else _init(_GATE_INIT_SCALE),
            dtype=policy, name="proj_out")

    def build(self, inputs_shape, context_shape=None):
        # Keras names the shape arguments after `call`'s arguments (`inputs`, `context`).
        shape = tuple(inputs_shape)
        if len(shape) != 4 or any(size is None for size in shape[1:]):
            raise ValueError("GatedConvAttentionNet expects images [batch, height, width, "
                             f"channels] with known height, width and channels, got shape "
                             f"{list(shape)}")
        self._spatial_shape = shape[1:3]
        width = self.filters
        stream = (*shape[:-1], width)
        doubled = (*shape[:-1], 2 * width)
        self.proj_in.build(shape)
        for i in range(self.blocks):
            self.conv_layers[i].build(doubled)
            if self.context_layers:
                self.context_layers[i].build((None, 2 * self.context_channels))
            self.conv_gate_layers[i].build(doubled)
            self.conv_norms[i].build(stream)
        if self.attention:
            self.position_embedding = self.add_weight(
                shape=(*self._spatial_shape, width), name="position_embedding",
                initializer=keras.initializers.RandomNormal(stddev=_POSITION_STDDEV))
            for *projections, gate, layer_norm in self.attention_layers:
                for projection in projections:
                    projection.build(stream)
                gate.build(stream)
                layer_norm.build(stream)
        self.proj_out.build(stream)

    def call(self, inputs, context=None, training=None):
        """Computes the coupling parameters.

        Args:
            inputs: images `[B, H, W, C_in]` of the size the network was built for.
            context: required if and only if `context_channels` was given: either a vector
                `[B, context_channels]` broadcast over all positions, or a flattened map
                `[B, H * W * context_channels]` (row-major `[H, W, context_channels]`, as
                `reshape` gives), read back as `[B, H, W, context_channels]`.
            training: whether dropout is active.

        Returns:
            `[B, H, W, output_channels]`.

        Raises:
            ValueError: the image size differs from the one the network was built for, or
                the context is missing, unexpected or of the wrong size.
        """
        height, width = self._spatial_shape
        if tuple(inputs.shape[1:3]) != (height, width) and None not in inputs.shape[1:3]:
            raise ValueError(f"GatedConvAttentionNet was built for {height}x{width} images, "
                             f"got inputs of shape {list(inputs.shape)}")
        context = self._context_features(context, inputs)
        dtype = self.compute_dtype
        hidden = self.proj_in(inputs)
        for i in range(self.blocks):
            gated = self.conv_layers[i](_concat_elu(hidden))
            if context is not None:
                gated = gated + self.context_layers[i](context)
            gated = self.dropout_layer(_concat_elu(gated), training=training)
            hidden = self.conv_norms[i](hidden + _gate(self.conv_gate_layers[i](gated)))
            if self.attention:
                position = ops.cast(self.position_embedding, dtype)
                hidden = self._attention(hidden, position, *self.attention_layers[i],
                                         training=training)
        return self.proj_out(hidden)

    def _attention(self, hidden, position, query, key, value, gate, layer_norm, training):
        """Gated multi-head self-attention over all positions, then the residual and norm."""
        shape = ops.shape(hidden)
        height, width = self._spatial_shape
        head_dim = self.filters // self.heads
        heads_shape = (shape[0], height * width, self.heads, head_dim)
        with_position = hidden + position[None]
        q, k, v = (ops.reshape(projection(with_position), heads_shape)
                   for projection in (query, key, value))
        q = q * ops.cast(1.0 / math.sqrt(head_dim), q.dtype)
        logits = ops.einsum("bqhd,bkhd->bhqk", q, k)
        # Softmax in (at least) float32: half-precision exp/sum of many positions is lossy.
        softmax_dtype = "float64" if logits.dtype == "float64" else "float32"
        weights = ops.softmax(ops.cast(logits, softmax_dtype), axis=-1)
        attended = ops.einsum("bhqk,bkhd->bqhd", ops.cast(weights, v.dtype), v)
        attended = ops.reshape(attended, (shape[0], height, width, self.filters))
        attended = self.dropout_layer(attended, training=training)
        return layer_norm(hidden + _gate(gate(attended)))

    def _context_features(self, context, inputs):
        """`concat_elu(context)` as `[B, 1, 1, 2K]` (vector) or `[B, H, W, 2K]` (map)."""
        if self.context_channels is None:
            if context is not None:
                raise ValueError("this GatedConvAttentionNet has context_channels=None and "
                                 f"takes no context, got a context of shape "
                                 f"{list(context.shape)}")
            return None
        if context is None:
            raise ValueError(f"this GatedConvAttentionNet has context_channels="
                             f"{self.context_channels} and needs a context")
        height, width = self._spatial_shape
        channels = self.context_channels
        size = context.shape[-1] if len(context.shape) == 2 else -1
        if size == channels:
            spatial = (1, 1)
        elif size == height * width * channels:
            spatial = (height, width)
        else:
            raise ValueError(
                f"context must have shape [batch, {channels}] (context_channels) or "
                f"[batch, {height * width * channels}] (a flattened {height}x{width}x"
                f"{channels} map), got shape {list(context.shape)} for inputs of shape "
                f"{list(inputs.shape)}")
        context = ops.cast(context, self.compute_dtype)
        context = ops.reshape(context, (ops.shape(context)[0], *spatial, channels))
        return _concat_elu(context)

    def compute_output_shape(self, inputs_shape, context_shape=None):
        # Keras names the shape arguments after `call`'s arguments (`inputs`, `context`).
        return (*inputs_shape[:-1], self.output_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "blocks": self.blocks,
            "output_channels": self.output_channels,
            "heads": self.heads,
            "dropout": self.dropout,
            "attention": self.attention,
            "context_channels": self.context_channels,
            "zero_init": self.zero_init,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class GatedConvContextNet(keras.layers.Layer):
    """The context network of Flow++'s dequantizer `q(u | x)`: `[B, H, W, C]` ->
    `[B, H, W, channels]`.

    A 3x3 convolution to `channels`, then `_CONTEXT_BLOCKS` gated residual convolutions
    (`h + a * sigmoid(b)`, `(a, b)` from two 3x3 convolutions with concatenated ELUs in
    between and dropout before the second), Flow++'s `shallow_processor`. The second
    convolution of each block starts small (variance scale 0.01), like the original's
    `init_scale=0.1`, so each block starts close to the identity.

    Args:
        channels: channels of the context (and of the residual stream).
        dropout: dropout rate inside the blocks, in `[0, 1)`.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, channels, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_positive_int("channels", channels)
        self.dropout = check_number("dropout", dropout, minimum=0, maximum=1,
                                    exclusive_maximum=True)
        policy = self.dtype_policy
        self.projection = keras.layers.Conv2D(channels, 3, padding="same", dtype=policy,
                                              name="projection")
        small = keras.initializers.VarianceScaling(0.01, mode="fan_in")
        self.blocks = [
            [keras.layers.Conv2D(channels, 3, padding="same", dtype=policy, name=f"block_{i}_0"),
             keras.layers.Conv2D(2 * channels, 3, padding="same", kernel_initializer=small,
                                 dtype=policy, name=f"block_{i}_1")]
            for i in range(_CONTEXT_BLOCKS)
        ]
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy)

    def build(self, inputs_shape):
        self.projection.build(inputs_shape)
        # Each convolution sees concatenated ELUs: twice the channels of its input.
        doubled = (*inputs_shape[:-1], 2 * self.channels)
        for first, second in self.blocks:
            first.build(doubled)
            second.build(doubled)

    def call(self, inputs, training=None):
        hidden = self.projection(inputs)
        for first, second in self.blocks:
            gates = second(self.dropout_layer(_concat_elu(first(_concat_elu(hidden))),
                                              training=training))
            value, gate = keras.ops.split(gates, 2, axis=-1)
            hidden = hidden + value * keras.ops.sigmoid(gate)
        return hidden

    def compute_output_shape(self, inputs_shape):
        return (*inputs_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "dropout": self.dropout}
