"""Variational dequantization (Flow++): integer data plus noise from a learned flow q(u | x)."""

import math

import keras
import numpy as np
import tensorflow as tf

from tfp_flows import nets
from tfp_flows._validation import check_bool, check_int, check_number, check_positive_int
from tfp_flows.bijectors import (
    Coupling,
    DiagonalScale,
    FlowChain,
    InvertibleConv1x1,
    LogisticMixtureCDF,
    get_transformer,
)
from tfp_flows.distributions.dequantization import decode_levels, within_level
from tfp_flows.distributions.surjection import InferenceSurjection, as_seed, check_shape

__all__ = ["VariationalDequantization"]


def _coupling_parts(event_shape, parity, transformer, *, filters, blocks, components, heads,
                    dropout, attention, context_channels, dtype, name):
    """The conditioner and transformer of one coupling of `q`: the one place both are chosen.

    The conditioner, Flow++'s `GatedConvAttentionNet`, maps the masked noise `[B, H, W, C]`
    and the flattened context `[B, H * W * context_channels]` to the transformer's
    parameters of every entry (`Coupling.conditioner_output_size` with a checkerboard
    mask); the transformer is `LogisticMixtureCDF(components)` unless one is given.
    """
    transformer = (LogisticMixtureCDF(components) if transformer is None
                   else get_transformer(transformer))
    size = Coupling.conditioner_output_size(event_shape, transformer, mask="checkerboard",
                                            parity=parity)
    net = nets.GatedConvAttentionNet(filters, blocks, size, heads=heads, dropout=dropout,
                                     attention=attention, context_channels=context_channels,
                                     dtype=dtype, name=name)
    return net, transformer


@keras.saving.register_keras_serializable(package="tfp_flows")
class VariationalDequantization(InferenceSurjection):
    """Variational dequantization (Flow++): `z = x + u` with `u ~ q(u | x)`, a learned flow.

    The data `x` are integers in `{0, ..., K-1}^D` (`K = num_bins`) of an image shape
    `[H, W, C]`; the latent `z` is continuous in `[0, K)^D` with the data's shape. `q(u | x)`
    is a conditional flow from standard Normal noise to the unit cube:

    - encode (data -> latent): `eps ~ N(0, I)`; `c = context(x / K - 1/2)`, a small
      convolutional network over the scaled image; `h = f(eps; c)` with `f` being
      `num_steps` x [per-element scale, invertible 1x1 convolution (when `C > 1`),
      checkerboard coupling conditioned on `c`, masks alternating]; `u = sigmoid(h)`,
      `z = x + u`, and

          log q(z | x) = log N(eps; 0, I) - log|det df/deps| - sum_i log sigmoid'(h_i),

      with `log sigmoid'(h) = -softplus(h) - softplus(-h)`: the sigmoid's log-det is what
      maps densities on `R^D` to densities on `(0, 1)^D`.
    - decode (latent -> data): `x = clip(floor(z), 0, K - 1)`, as `UniformDequantization`.

    The data's probability `P(x) = integral over [0,1)^D of p_flow(x + u) du` is then bounded
    below by `E_q[log p_flow(x + u) - log q(u | x)]`, and training `p_flow` and `q` together
    on this ELBO tightens the bound that uniform dequantization (`q = 1`) leaves loose
    (Ho et al., section 3.1). A `Flow` evaluates the IWBO with `num_eval_samples`
    importance samples, 64 unless given (`default_num_eval_samples`; the paper reports
    `k = 4096`).

    Fresh, `q` is a logit-normal density independent of `x`: zero-initialised conditioners
    make every coupling the identity, the per-element scales start at 1 and a 1x1
    convolution starts orthogonal, so `h` is standard Normal per pixel and each `u_i` has
    density `N(logit u_i; 0, 1) / (u_i (1 - u_i))` on `(0, 1)` (mean 1/2, standard
    deviation about 0.21).

    Following the original (`Dequant` and `dequant_flow` in its `run_cifar.py`), with these
    differences: couplings use a checkerboard mask over pixels at full resolution instead
    of splitting the columns into two half-width images, so the context keeps the image's
    resolution (a 3x3 convolution of the scaled image to `context_channels`, without the
    original's concatenation of the two halves, then three gated residual convolutions)
    and reaches each conditioner flattened to `[B, H * W * context_channels]`;
    the normalisation is a learned per-element scale (`DiagonalScale`) without the
    original's data-dependent initialisation and per-element shift: the noise entering `q`
    is already standard Normal and fresh couplings are the identity, so that
    initialisation would start near the identity anyway, and every coupling supplies a
    shift; the 1x1 convolution is shared by all pixels and omitted for one channel, where
    it would duplicate the scale. As in the original, the couplings' conditioner is the
    Flow++ network (`tfp_flows.nets.GatedConvAttentionNet`, the context entering every
    gated convolution) and their transformer the logistic-mixture CDF
    (`LogisticMixtureCDF(components)`) unless `transformer` is given. `q` ignores the
    `context` of a conditional flow.

    Every parameter of `q` lives in the Keras layers listed by `layers`; a `Flow` holds
    them, so Keras trains and saves them with the flow.

    References: Ho, Chen, Srinivas, Duan, Abbeel, "Flow++: Improving Flow-Based Generative
    Models with Variational Dequantization and Architecture Design", arXiv:1902.00275
    (section 3.1); Nielsen et al., "SurVAE Flows", arXiv:2007.02731.

    Args:
        num_bins: number of levels `K`, an int >= 2.
        event_shape: shape of one image, `[H, W, C]` with at least two pixels.
        num_steps: number of coupling steps of `q`.
        filters: width of the couplings' conditioners.
        blocks: residual blocks of each conditioner.
        components: mixture components of the logistic-mixture transformer.
        heads: attention heads of the conditioners (dividing `filters` with attention).
        dropout: dropout rate of the context network and the conditioners, in `[0, 1)`.
        attention: whether the conditioners have self-attention sublayers.
        context_channels: channels of the context computed from `x`.
        transformer: the couplings' elementwise transformer, a
            `tfp_flows.bijectors.Transformer`, one of its names or a serialized config;
            `None`: `LogisticMixtureCDF(components)`.
        dtype: dtype policy of the layers (a name such as `"float64"`), `None` for Keras'
            global policy. A `Flow` passes its own.
        name: a name for the surjection (and the prefix of its layers' names).

    Example:
        >>> import numpy as np
        >>> deq = VariationalDequantization(17, [4, 4, 1], num_steps=2, filters=8, blocks=1,
        ...                                 context_channels=4)
        >>> x = np.full([2, 4, 4, 1], 16.0, "float32")
        >>> z, log_q = deq.encode(x, seed=0)
        >>> bool(np.all((z >= x) & (z < x + 1))), log_q.shape
        (True, TensorShape([2]))
        >>> bool(np.all(deq.decode(z) == x))
        True
    """

    discrete = True
    default_num_eval_samples = 64

    def __init__(self, num_bins, event_shape, num_steps=4, filters=32, blocks=2, components=4,
                 heads=4, dropout=0.0, attention=True, context_channels=32, transformer=None,
                 dtype=None, name="variational_dequantization"):
        self.num_bins = check_int("num_bins", num_bins, minimum=2)
        shape = check_shape("event_shape", event_shape)
        if len(shape) != 3 or shape[0] * shape[1] < 2:
            raise ValueError(f"event_shape must be an image shape [H, W, C] with at least two "
                             f"pixels, got {shape}")
        super().__init__(shape, shape, name=name)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.filters = check_positive_int("filters", filters)
        self.blocks = check_positive_int("blocks", blocks)
        self.components = check_positive_int("components", components)
        self.heads = check_positive_int("heads", heads)
        self.dropout = check_number("dropout", dropout, minimum=0, maximum=1,
                                    exclusive_maximum=True)
        self.attention = check_bool("attention", attention)
        self.context_channels = check_positive_int("context_channels", context_channels)
        if transformer is not None:
            get_transformer(transformer)  # raises for an unknown one
        self._transformer_argument = transformer
        self.dtype = None if dtype is None else keras.dtype_policies.get(dtype).name
        height, width, channels = shape
        self.context_network = nets.GatedConvContextNet(
            self.context_channels, self.dropout, dtype=self.dtype, name=f"{name}_context")
        self.scales, self.kernels, self.conditioners = [], [], []
        steps = []  # noise -> h order
        for step in range(self.num_steps):
            prefix = f"{name}_step_{step}"
            scale = nets.LogScale(shape, dtype=self.dtype, name=f"{prefix}_scale")
            self.scales.append(scale)
            steps.append(DiagonalScale(scale, shape, name=f"{prefix}_scale"))
            if channels > 1:
                kernel = nets.Conv1x1Kernel(channels, seed=step, dtype=self.dtype,
                                            name=f"{prefix}_conv1x1")
                self.kernels.append(kernel)
                steps.append(InvertibleConv1x1(kernel, shape, name=f"{prefix}_conv1x1"))
            conditioner, coupling_transformer = _coupling_parts(
                shape, step % 2, transformer, filters=self.filters, blocks=self.blocks,
                components=self.components, heads=self.heads, dropout=self.dropout,
                attention=self.attention, context_channels=self.context_channels, dtype=self.dtype,
                name=f"{prefix}_conditioner")
            self.conditioners.append(conditioner)
            steps.append(Coupling(
                conditioner, shape, coupling_transformer, mask="checkerboard", parity=step % 2,
                conditional=True, context_size=height * width * self.context_channels,
                name=f"{prefix}_coupling"))
        # tfb.Chain applies its list last to first in the forward direction.
        self.flow = FlowChain(list(reversed(steps)), name=f"{name}_flow")

    @property
    def layers(self):
        return [self.context_network, *self.scales, *self.kernels, *self.conditioners]

    def context(self, x):
        """The context `[batch, H * W * context_channels]` that `q` computes from data `x`."""
        x = tf.convert_to_tensor(x)
        scaled = x / tf.constant(self.num_bins, x.dtype) - tf.constant(0.5, x.dtype)
        features = tf.cast(self.context_network(scaled), x.dtype)
        return tf.reshape(features, [-1, math.prod(self.event_shape[:2]) *
                                     self.context_channels])

    def encode(self, x, seed=None, context=None):
        x = tf.convert_to_tensor(x)
        seed = as_seed(seed)
        if seed is None:
            noise = tf.random.normal(tf.shape(x), dtype=x.dtype)
        else:
            noise = tf.random.stateless_normal(tf.shape(x), seed=seed, dtype=x.dtype)
        return self.encode_noise(x, noise)

    def encode_noise(self, x, noise):
        """`(z, log q(z | x))` for the given standard Normal `noise` (the sampling map of `q`).

        `encode(x, seed)` is `encode_noise(x, eps)` with `eps` drawn from the seed; this
        deterministic form lets tests and analyses differentiate the map `eps -> z`.

        Args:
            x: data `[batch, H, W, C]`, levels in `[0, num_bins)` as floats.
            noise: `eps`, of the shape and dtype of `x`.

        Returns:
            `z` (of the shape of `x`) and `log q(z | x)` (`[batch]`).
        """
        x = tf.convert_to_tensor(x)
        noise = tf.convert_to_tensor(noise, x.dtype)
        context = self.context(x)
        h = self.flow.forward(noise, context=context)
        log_det = self.flow.forward_log_det_jacobian(noise, event_ndims=3, context=context)
        # The sigmoid of a float reaches 1 for h above about 17 (float32): keep u inside the
        # open interval. The density is that of the unclipped u, which differs by an ulp.
        u = tf.clip_by_value(tf.sigmoid(h), tf.constant(np.finfo(x.dtype.as_numpy_dtype).tiny,
                                                        x.dtype),
                             tf.math.nextafter(tf.ones([], x.dtype), tf.zeros([], x.dtype)))
        log_sigmoid_derivative = -tf.nn.softplus(h) - tf.nn.softplus(-h)
        log_normal = -0.5 * tf.square(noise) - tf.constant(0.5 * math.log(2.0 * math.pi),
                                                           x.dtype)
        log_q = tf.reduce_sum(log_normal - log_sigmoid_derivative, axis=[1, 2, 3]) - log_det
        return within_level(x, u), log_q

    def decode(self, z, context=None):
        return decode_levels(z, self.num_bins)

    def get_config(self):
        transformer = self._transformer_argument
        if transformer is not None and not isinstance(transformer, str | dict):
            transformer = keras.saving.serialize_keras_object(transformer)
        return {**super().get_config(), "num_bins": self.num_bins,
                "num_steps": self.num_steps, "filters": self.filters, "blocks": self.blocks,
                "components": self.components, "heads": self.heads, "dropout": self.dropout,
                "attention": self.attention, "context_channels": self.context_channels,
                "transformer": transformer, "dtype": self.dtype}

    def __repr__(self):
        return (f"VariationalDequantization(num_bins={self.num_bins}, "
                f"event_shape={self.event_shape}, num_steps={self.num_steps}, "
                f"filters={self.filters}, context_channels={self.context_channels})")
