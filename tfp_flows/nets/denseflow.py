"""The DenseFlow networks: the coupling network (a dense block fused with Nystrom
self-attention) and the noise-parameter network of cross-unit coupling."""

import keras
from keras import ops

from tfp_flows._validation import check_bool, check_number, check_positive_int

__all__ = ["CrossUnitParams", "DenseAttentionNet", "NystromAttention"]

# Epsilon of the fusion's layer norm: the original's BatchNorm2d epsilon.
_LAYER_NORM_EPSILON = 1e-5


def _torch_default():
    """PyTorch's default convolution kernel initialisation, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.

    The original's networks use it everywhere except in their zero-initialised last layers.
    Each call makes a new initialiser, one per layer.
    """
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in",
                                              distribution="uniform")


def _last_layer_init(zero_init):
    return "zeros" if zero_init else _torch_default()


def _math_dtype(dtype):
    """Attention runs in float32 (float64 if the layer computes in float64)."""
    return "float64" if dtype == "float64" else "float32"


def _softmax(logits):
    """Softmax over the last (key) axis; a single key gets weight 1 (one landmark)."""
    if logits.shape[-1] == 1:  # Keras warns about a softmax over one entry
        return ops.ones_like(logits)
    return ops.softmax(logits, axis=-1)


def _segment_means(positions, landmarks, dtype):
    """The `[landmarks, positions]` matrix whose rows average consecutive segments.

    Position `p` belongs to segment `floor(p * landmarks / positions)`: with
    `landmarks <= positions` every segment holds `floor` or `ceil` of
    `positions / landmarks` positions, and none is empty. With `landmarks == positions`
    it is the identity. Both sizes are static, so the matrix is a constant of the graph.
    """
    segments = ops.floor_divide(ops.arange(positions, dtype="int32") * landmarks, positions)
    membership = ops.one_hot(segments, landmarks, dtype=dtype)  # [positions, landmarks]
    return ops.transpose(membership / ops.sum(membership, axis=0, keepdims=True))


def _newton_schulz_pinv(matrix, iterations):
    """Moore-Penrose pseudo-inverse of each `[m, m]` matrix of `matrix` by iteration.

    The iteration of Nystromformer (Xiong et al. 2021, arXiv:2102.03902, after Razavi
    et al. 2014): `V <- V (13 I - K V (15 I - K V (7 I - K V))) / 4`, started from
    `V = K^T / (max_j sum_i |K_ij| * max_i sum_j |K_ij|)` per matrix, which makes it
    converge to `pinv(K)`.
    """
    absolute = ops.abs(matrix)
    max_column_sum = ops.max(ops.sum(absolute, axis=-2), axis=-1)
    max_row_sum = ops.max(ops.sum(absolute, axis=-1), axis=-1)
    inverse = ops.swapaxes(matrix, -1, -2) / (max_column_sum * max_row_sum)[..., None, None]
    identity = ops.eye(matrix.shape[-1], dtype=matrix.dtype)
    for _ in range(iterations):
        product = ops.matmul(matrix, inverse)
        inner = ops.matmul(product, 7.0 * identity - product)
        inverse = ops.matmul(0.25 * inverse,
                             13.0 * identity - ops.matmul(product, 15.0 * identity - inner))
    return inverse


def _check_image_shape(name, shape):
    shape = tuple(shape)
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(f"{name} expects images [batch, height, width, channels] with known "
                         f"channels, got shape {list(shape)}")
    return shape


@keras.saving.register_keras_serializable(package="tfp_flows")
class NystromAttention(keras.layers.Layer):
    """Nystrom self-attention over the positions of an image, `[B, H, W, C]` -> `[B, H, W, C]`.

    From "Nystromformer: A Nystrom-Based Algorithm for Approximating Self-Attention"
    (Xiong et al. 2021, arXiv:2102.03902), as DenseFlow's coupling networks use it
    (Grcic, Grubisic, Segvic 2021, arXiv:2106.04627; the original's `NystromAttention`).
    With `E = embed_dim`, `n = H * W` positions as tokens and `m = min(landmarks, n)`:

    ```
    q, k, v = split(qkv(x))                       # 1x1 projection to 3E, as [B, n, E] each
    q, k = q / E**0.25, k / E**0.25
    q_l, k_l = A q, A k                           # landmarks: means of m segments, [B, m, E]
    out = softmax(q k_l^T) pinv(softmax(q_l k_l^T)) softmax(q_l k^T) v + v
    y = proj_out(out)                             # 1x1 projection back to C
    ```

    Every softmax runs over its last (key) axis. `A` is the constant `[m, n]` averaging
    matrix of `m` consecutive segments of the row-major positions, of sizes
    `floor(n / m)` or `ceil(n / m)`, so any `n` works; with `landmarks >= n` it is the
    identity and `out` equals exact softmax attention `softmax(q k^T) v + v` up to the
    accuracy of the pseudo-inverse. `pinv` is the Newton-Schulz iteration of the original
    (`iterations` steps, started from `K^T / (max column sum * max row sum)` of each matrix).
    The attention math runs in float32 under a mixed-precision policy (float64 in a float64
    layer); the projections run in the compute dtype.

    Where this differs from the original code (github matejgrcic/DenseFlow,
    `denseflow/nn/blocks/attention.py`), which it fixes:

    - The original reads the `[N, 3E, H, W]` output of its projection as tokens with
      `reshape(N, H * W, 3E)`, which mixes channels and positions (each "token" holds
      values of several channels at several positions), and writes the result back the
      same way. Here tokens are positions and features are channels, `[B, H * W, E]`.
    - The original takes segment means with `reshape(N, m, n // m, E)`, which needs `n`
      divisible by the number of landmarks; the averaging matrix removes that constraint,
      and `m = min(landmarks, n)` covers maps smaller than the number of landmarks
      (down to 1x1).
    - The original's softmaxes normalise over the query axis (`dim=-2`) and scale only the
      landmarks, by `1 / sqrt(H * W)`; here they follow the paper: queries and keys are
      scaled by `E**-0.25` (so the logits by `1 / sqrt(E)`) and each softmax normalises
      over keys, which is what makes the approximation exact for `m = n`.

    Kept: the single 1x1 query/key/value projection, the `+ v` skip, the pseudo-inverse
    iteration and its initialisation, the output projection; kernels are initialised as
    PyTorch's default (`U(+-1 / sqrt(fan_in))`), biases at zero.

    The sizes `H` and `W` must be known when the layer is called (they fix `A`); the
    weights do not depend on them, so one layer serves any image size.

    Args:
        embed_dim: `E`, the width of queries, keys and values; a positive int.
        landmarks: the number of landmarks `m` (at most `H * W` are used); a positive int.
        iterations: Newton-Schulz iterations of the pseudo-inverse; a positive int.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.

    Example:
        >>> import numpy as np
        >>> attention = NystromAttention(4, landmarks=4)
        >>> attention(np.ones([2, 3, 5, 6], "float32")).shape
        TensorShape([2, 3, 5, 6])
    """

    def __init__(self, embed_dim, landmarks=4, iterations=6, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.landmarks = check_positive_int("landmarks", landmarks)
        self.iterations = check_positive_int("iterations", iterations)
        policy = self.dtype_policy
        self.qkv = keras.layers.Dense(3 * self.embed_dim, kernel_initializer=_torch_default(),
                                      dtype=policy, name="qkv")
        # Its width is the input's channels, known in `build`.
        self.proj_out = None

    def build(self, inputs_shape):
        shape = _check_image_shape("NystromAttention", inputs_shape)
        self.proj_out = keras.layers.Dense(shape[-1], kernel_initializer=_torch_default(),
                                           dtype=self.dtype_policy, name="proj_out")
        self.qkv.build(shape)
        self.proj_out.build((*shape[:-1], self.embed_dim))

    def call(self, inputs):
        """Attends over the positions of `inputs`, `[B, H, W, C]` with known `H` and `W`."""
        height, width = inputs.shape[1:3]
        if height is None or width is None:
            raise ValueError("NystromAttention needs the height and width of its inputs when "
                             f"called, got inputs of shape {list(inputs.shape)}")
        positions = height * width
        landmarks = min(self.landmarks, positions)
        dtype = _math_dtype(self.compute_dtype)
        tokens = ops.reshape(self.qkv(inputs), (-1, positions, 3 * self.embed_dim))
        query, key, value = ops.split(ops.cast(tokens, dtype), 3, axis=-1)
        scale = self.embed_dim**-0.25
        query, key = query * scale, key * scale
        averaging = _segment_means(positions, landmarks, dtype)
        query_landmarks = ops.einsum("ln,bne->ble", averaging, query)
        key_landmarks = ops.einsum("ln,bne->ble", averaging, key)
        kernel_1 = _softmax(ops.einsum("bne,ble->bnl", query, key_landmarks))
        kernel_2 = _softmax(ops.einsum("ble,bme->blm", query_landmarks, key_landmarks))
        kernel_3 = _softmax(ops.einsum("ble,bne->bln", query_landmarks, key))
        attended = ops.matmul(ops.matmul(kernel_1, _newton_schulz_pinv(kernel_2, self.iterations)),
                              ops.matmul(kernel_3, value)) + value
        attended = ops.reshape(ops.cast(attended, self.compute_dtype),
                               (-1, height, width, self.embed_dim))
        return self.proj_out(attended)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "landmarks": self.landmarks,
            "iterations": self.iterations,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class DenseAttentionNet(keras.layers.Layer):
    """The DenseFlow coupling network, `[B, H, W, C_in]` -> `[B, H, W, output_channels]`.

    From "Densely connected normalizing flows" (Grcic, Grubisic, Segvic, NeurIPS 2021,
    arXiv:2106.04627), following the original's `DenseNetMultihead` with one
    `MultiHeadDenseBlock` (github matejgrcic/DenseFlow, `denseflow/nn/nets/matching/` and
    `denseflow/nn/blocks/`), as its affine couplings use it. With `F = filters`,
    `g = growth`, `d = depth`:

    ```
    h = proj_in(x)                                   # 1x1 conv to F
    # dense branch
    u = h
    repeat d times (layer i sees F + i g channels):
        u = concat(u, relu(conv3x3(dropout(relu(conv1x1(u))))))   # 1x1 keeps the width,
                                                                  # 3x3 adds g channels
    a, b, c = split(conv1x1(u))                      # gated 1x1 conv to 3F
    dense = a + b * sigmoid(c)
    # attention branch
    attention = NystromAttention(F // 2, landmarks)(h)           # F channels
    # fusion
    f = conv1x1_no_bias(relu(layer_norm(concat(attention, dense))))   # to F
    y = proj_out(f)                                  # 1x1 conv, zero-initialised
    ```

    With `attention=False` the attention branch is dropped and the fusion takes the dense
    branch alone: `f = conv1x1_no_bias(relu(layer_norm(dense)))`.

    Where this follows the original: the layer order and widths above (each dense layer's
    1x1 convolution keeps its input width, as the original's `DenseLayer`), the gated 1x1
    convolution closing the dense block (`gated_conv=True` in the original's couplings),
    dropout after the first ReLU of each dense layer, the attention branch on `h` with
    embedding `F // 2` and 4 landmarks by default, the bias-free fusion convolution, the
    zero-initialised last convolution, and PyTorch's default kernel initialisation
    (`U(+-1 / sqrt(fan_in))`; biases start at zero here). The paper's couplings use
    `depth=7`, `growth=64` and `filters=48` (the original's `--layer_mid_chnls 48`).

    Where it differs:

    - The original normalises the fused branches with `BatchNorm2d`, whose output depends
      on the other examples of the batch in training and on running averages in
      inference. A flow's coupling network must be the same function whenever it is
      evaluated, or `log_prob` depends on the batch and on the mode (and the inverse of a
      training-mode forward is not exact); here a `LayerNormalization` over the channels
      of each position (epsilon 1e-5) takes its place.
    - The attention is the corrected `NystromAttention` (positions as tokens, softmax over
      keys, any number of positions); see its documentation.

    Args:
        filters: `F`, the narrow width of the network; a positive int, at least 2 with
            attention (the attention embeds to `F // 2`).
        depth: `d`, the number of dense layers; a positive int.
        growth: `g`, the channels each dense layer adds; a positive int.
        output_channels: channels of the output (coupling parameters per pixel).
        attention: `False` drops the attention branch (the paper's ablation).
        landmarks: landmarks of the attention; a positive int.
        dropout: dropout rate in `[0, 1)` inside the dense layers, active only in training.
        zero_init: zero-initialise the last convolution (a fresh coupling is the identity).
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range, or `filters < 2` with attention.

    Example:
        >>> import numpy as np
        >>> net = DenseAttentionNet(8, depth=2, growth=4, output_channels=6)
        >>> net(np.zeros([2, 4, 4, 3], "float32")).shape
        TensorShape([2, 4, 4, 6])
    """

    def __init__(self, filters, depth, growth, output_channels, attention=True, landmarks=4,
                 dropout=0.0, zero_init=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.depth = check_positive_int("depth", depth)
        self.growth = check_positive_int("growth", growth)
        self.output_channels = check_positive_int("output_channels", output_channels)
        self.attention = check_bool("attention", attention)
        self.landmarks = check_positive_int("landmarks", landmarks)
        self.dropout = check_number("dropout", dropout, minimum=0, maximum=1,
                                    exclusive_maximum=True)
        self.zero_init = check_bool("zero_init", zero_init)
        if self.attention and self.filters < 2:
            raise ValueError(f"filters must be at least 2 with attention=True (the attention "
                             f"embeds to filters // 2), got {self.filters}")

        policy = self.dtype_policy
        width = self.filters

        def conv1x1(units, name, use_bias=True, kernel_initializer=None):
            return keras.layers.Dense(units, use_bias=use_bias,
                                      kernel_initializer=kernel_initializer or _torch_default(),
                                      dtype=policy, name=name)

        self.proj_in = conv1x1(width, "proj_in")
        self.dense_layers = [
            [conv1x1(width + i * self.growth, f"dense_{i}_conv1x1"),
             keras.layers.Conv2D(self.growth, 3, padding="same",
                                 kernel_initializer=_torch_default(), dtype=policy,
                                 name=f"dense_{i}_conv3x3")]
            for i in range(self.depth)
        ]
        self.dense_gate = conv1x1(3 * width, "dense_gate")
        self.attention_layer = NystromAttention(
            width // 2, landmarks=self.landmarks, dtype=policy, name="attention"
        ) if self.attention else None
        self.fusion_norm = keras.layers.LayerNormalization(epsilon=_LAYER_NORM_EPSILON,
                                                           dtype=policy, name="fusion_norm")
        self.fusion = conv1x1(width, "fusion", use_bias=False)
        self.proj_out = conv1x1(self.output_channels, "proj_out",
                                kernel_initializer=_last_layer_init(self.zero_init))
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy, name="dropout")

    def build(self, inputs_shape):
        shape = _check_image_shape("DenseAttentionNet", inputs_shape)
        width = self.filters

        def channels(count):
            return (*shape[:-1], count)

        self.proj_in.build(shape)
        for i, (conv1x1, conv3x3) in enumerate(self.dense_layers):
            conv1x1.build(channels(width + i * self.growth))
            conv3x3.build(channels(width + i * self.growth))
        self.dense_gate.build(channels(width + self.depth * self.growth))
        fused = width
        if self.attention:
            self.attention_layer.build(channels(width))
            fused += width
        self.fusion_norm.build(channels(fused))
        self.fusion.build(channels(fused))
        self.proj_out.build(channels(width))

    def call(self, inputs, training=None):
        """Computes the coupling parameters of images `[B, H, W, C_in]`.

        Args:
            inputs: images `[B, H, W, C_in]`; with attention, `H` and `W` must be known.
            training: whether dropout is active.

        Returns:
            `[B, H, W, output_channels]`.
        """
        hidden = self.proj_in(inputs)
        features = hidden
        for conv1x1, conv3x3 in self.dense_layers:
            grown = self.dropout_layer(ops.relu(conv1x1(features)), training=training)
            features = ops.concatenate([features, ops.relu(conv3x3(grown))], axis=-1)
        value, scale, gate = ops.split(self.dense_gate(features), 3, axis=-1)
        fused = value + scale * ops.sigmoid(gate)
        if self.attention:
            fused = ops.concatenate([self.attention_layer(hidden), fused], axis=-1)
        fused = self.fusion(ops.relu(self.fusion_norm(fused)))
        return self.proj_out(fused)

    def compute_output_shape(self, inputs_shape):
        return (*inputs_shape[:-1], self.output_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "depth": self.depth,
            "growth": self.growth,
            "output_channels": self.output_channels,
            "attention": self.attention,
            "landmarks": self.landmarks,
            "dropout": self.dropout,
            "zero_init": self.zero_init,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class CrossUnitParams(keras.layers.Layer):
    """The noise parameters of DenseFlow's cross-unit coupling, `x` -> `(mu, log_sigma)`.

    From "Densely connected normalizing flows" (Grcic, Grubisic, Segvic 2021,
    arXiv:2106.04627), the original's `_BNReLUConv` (github matejgrcic/DenseFlow,
    `experiments/image/model/flow_modules.py`): on images `[B, H, W, C]`

    ```
    raw = conv1x1(relu(conv3x3(x)))            # 3x3 to expansion * C, 1x1 to 2 * growth_rate
    mu, s = split(raw)                          # growth_rate channels each
    log_sigma = 2 * tanh(s / 2)                 # a soft bound to (-2, 2)
    ```

    and on vectors `[B, D]` the same with dense layers (hidden width `expansion * D`). The
    last layer starts at zero (`zero_init=True`), so a fresh layer gives `mu = 0` and
    `log_sigma = 0`: the noise starts as the unconditional `N(0, I)`. As in the original,
    there is no normalisation despite its name; the first layer's kernel starts as
    PyTorch's default (`U(+-1 / sqrt(fan_in))`), biases at zero. Its widths follow the
    input, so the layers are created in `build`.

    Args:
        growth_rate: channels (or features) of the noise; a positive int.
        expansion: the hidden width as a multiple of the input's channels; a positive int.
        zero_init: zero-initialise the last layer.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.

    Example:
        >>> import numpy as np
        >>> mu, log_sigma = CrossUnitParams(3)(np.ones([2, 4, 4, 5], "float32"))
        >>> mu.shape, float(np.abs(log_sigma).max())
        (TensorShape([2, 4, 4, 3]), 0.0)
    """

    def __init__(self, growth_rate, expansion=4, zero_init=True, **kwargs):
        super().__init__(**kwargs)
        self.growth_rate = check_positive_int("growth_rate", growth_rate)
        self.expansion = check_positive_int("expansion", expansion)
        self.zero_init = check_bool("zero_init", zero_init)
        self.hidden_layer = None
        self.output_layer = None

    def build(self, inputs_shape):
        shape = tuple(inputs_shape)
        if len(shape) not in (2, 4) or shape[-1] is None:
            raise ValueError("CrossUnitParams expects vectors [batch, features] or images "
                             "[batch, height, width, channels] with known features or "
                             f"channels, got shape {list(shape)}")
        policy = self.dtype_policy
        hidden = self.expansion * shape[-1]
        if len(shape) == 4:
            self.hidden_layer = keras.layers.Conv2D(
                hidden, 3, padding="same", kernel_initializer=_torch_default(), dtype=policy,
                name="hidden")
        else:
            self.hidden_layer = keras.layers.Dense(hidden, kernel_initializer=_torch_default(),
                                                   dtype=policy, name="hidden")
        self.output_layer = keras.layers.Dense(
            2 * self.growth_rate, kernel_initializer=_last_layer_init(self.zero_init),
            dtype=policy, name="output")
        self.hidden_layer.build(shape)
        self.output_layer.build((*shape[:-1], hidden))

    def call(self, inputs):
        """Returns `(mu, log_sigma)`, each of the input's shape with `growth_rate` channels."""
        raw = self.output_layer(ops.relu(self.hidden_layer(inputs)))
        mu, raw_log_sigma = ops.split(raw, 2, axis=-1)
        return mu, 2.0 * ops.tanh(raw_log_sigma / 2.0)

    def compute_output_shape(self, inputs_shape):
        shape = (*inputs_shape[:-1], self.growth_rate)
        return shape, shape

    def get_config(self):
        return {
            **super().get_config(),
            "growth_rate": self.growth_rate,
            "expansion": self.expansion,
            "zero_init": self.zero_init,
        }
