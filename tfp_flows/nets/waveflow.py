"""WaveFlow's estimator as a NanoFlow trunk: a WaveNet-like network, causal along the height."""

import keras
from keras import ops

from tfp_flows._validation import check_positive_int
from tfp_flows.nets.nanoflow import _Trunk

__all__ = ["CausalConvTrunk"]


@keras.saving.register_keras_serializable(package="tfp_flows")
class CausalConvTrunk(_Trunk):
    """A shared trunk whose features of row `i` see only the input rows before `i`:
    `[B, H, W, C_in]` -> `[B, H, W, hidden_channels]`.

    WaveFlow squeezes a waveform into an `H x W` image whose columns hold `H` adjacent
    samples and models the rows autoregressively, one row (group of samples) given the
    rows before it. This trunk is the WaveNet-like estimator of WaveFlow and of NanoFlow's
    audio model, without the spectrogram conditioning:

    - the input is shifted down one row (a zero row on top, the last row dropped), so row
      `i` of every later layer reads input rows `< i`;
    - a 1x1 input convolution to `F = hidden_channels` channels;
    - `num_blocks` gated residual blocks: block `b` convolves the stream with a
      `kernel_size x kernel_size` kernel, causal along the height (padded above only,
      dilation 1) and "same" along the width (dilation `2^b`), to `2F` channels `(a, g)`;
      the activation `tanh(a) * sigmoid(g)` goes through a 1x1 convolution to a residual
      (added to the stream) and a skip output (the last block has a skip output only);
    - the features are the sum of the skip outputs.

    So row `i` of the output depends on input rows `i - 1 - num_blocks (kernel_size - 1)`
    to `i - 1`, and row 0 on no data at all. A step's embedding (see
    `SharedTrunkConditioner`) modulates the `1 + num_blocks` convolutions that precede a
    nonlinearity (`F + 2F num_blocks` units): `"concat"` appends the step's map
    `e_k` (`[H, W, concat_channels]`) to the shifted input (computed as
    `conv(x) + conv_e(e_k)`, `conv_e` a 1x1 convolution); `"bias"` adds `B e_k` to each of
    them, `B` shared; `"gate"` multiplies each by the step's gate: `(c + B e_k) * g_k`.
    None of them depends on the data, so causality holds for every embedding.

    References: Ping, Peng, Zhao, Song, "WaveFlow: A Compact Flow-based Model for Raw
    Audio", arXiv:1912.01219; Lee, Kim, Yoon, "NanoFlow: Scalable Normalizing Flows with
    Sublinear Parameter Complexity", arXiv:2006.06280.

    Args:
        hidden_channels: width `F` of the residual stream, the skips and the output.
        num_blocks: number of gated residual blocks.
        kernel_size: height and width of the blocks' kernels.
        concat_channels: channels of a concatenated embedding, or `None`.
        bias_channels: size of a bias embedding vector, or `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> import numpy as np
        >>> trunk = CausalConvTrunk(8, num_blocks=2)
        >>> x = np.random.default_rng(0).normal(size=[1, 4, 5, 1]).astype("float32")
        >>> changed = x.copy()
        >>> changed[0, 2] += 1.0  # row 2
        >>> difference = np.abs(trunk(changed) - trunk(x)).max(axis=(0, 2, 3))
        >>> (difference > 0).tolist()  # only the rows below row 2 see it
        [False, False, False, True]
    """

    def __init__(self, hidden_channels, num_blocks=1, kernel_size=3, concat_channels=None,
                 bias_channels=None, **kwargs):
        super().__init__(concat_channels, bias_channels, **kwargs)
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        policy = self.dtype_policy
        width = self.hidden_channels
        self.input_conv = keras.layers.Conv2D(width, 1, dtype=policy, name="input")
        # Padding is explicit (causal along the height), so the convolutions are "valid".
        self.block_convs = [
            [keras.layers.Conv2D(2 * width, self.kernel_size, dilation_rate=(1, 2 ** i),
                                 dtype=policy, name=f"block_{i}_gated"),
             keras.layers.Conv2D(width if i == self.num_blocks - 1 else 2 * width, 1,
                                 dtype=policy, name=f"block_{i}_output")]
            for i in range(self.num_blocks)]
        self._embedding_layers(lambda: keras.layers.Conv2D(
            width, 1, use_bias=False, dtype=policy, name="concat"))

    @property
    def modulated_units(self):
        return [self.hidden_channels] + [2 * self.hidden_channels] * self.num_blocks

    def build(self, inputs_shape, embedding_shape=None, bias_embedding_shape=None,
              gates_shape=None):
        shape = tuple(inputs_shape)
        if len(shape) != 4:
            raise ValueError(f"CausalConvTrunk expects images [batch, height, width, "
                             f"channels], got shape {list(shape)}")
        self.input_conv.build(shape)
        # The blocks see padded maps: their weights depend on the channels only.
        stream = (shape[0], None, None, self.hidden_channels)
        for gated, output in self.block_convs:
            gated.build(stream)
            output.build(stream)
        self._build_embedding_layers((1, *shape[1:-1], self.concat_channels))

    def _features(self, inputs, concat, modulate):
        # Row i of the shifted input is row i - 1 of the input (a zero row first).
        shifted = ops.pad(inputs, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]
        hidden = self.input_conv(shifted)
        if concat is not None:
            hidden = hidden + concat
        hidden = modulate(0, hidden)
        width, skips = self.hidden_channels, None
        for i, (gated, output) in enumerate(self.block_convs):
            above = self.kernel_size - 1
            across = (self.kernel_size - 1) * 2 ** i
            padded = ops.pad(hidden, [[0, 0], [above, 0],
                                      [across // 2, across - across // 2], [0, 0]])
            activation = modulate(1 + i, gated(padded))
            out = output(ops.tanh(activation[..., :width])
                         * ops.sigmoid(activation[..., width:]))
            if i < self.num_blocks - 1:
                hidden = hidden + out[..., :width]
                out = out[..., width:]
            skips = out if skips is None else skips + out
        return skips

    def compute_output_shape(self, inputs_shape, embedding_shape=None,
                             bias_embedding_shape=None, gates_shape=None):
        return (*inputs_shape[:-1], self.hidden_channels)

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels,
                "num_blocks": self.num_blocks, "kernel_size": self.kernel_size}
