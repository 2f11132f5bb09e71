"""Noise augmentation: extra Normal features appended to the data, dropped when sampling."""

import math

import keras
import tensorflow as tf

from tfp_flows._validation import check_positive_int
from tfp_flows.bijectors.augmentation import NoiseAffine
from tfp_flows.distributions.surjection import InferenceSurjection, as_seed, check_shape

__all__ = ["NormalAugmentation"]


@keras.saving.register_keras_serializable(package="tfp_flows")
class NormalAugmentation(InferenceSurjection):
    """Appends `num_features` Normal noise features on the last axis.

    For data `x` of shape `[..., C]` (`[D]` vectors or `[H, W, C]` images, where the noise
    becomes extra channels), the latent is `z = concat(x, n)` of shape `[..., C + M]`
    with `M = num_features`:

    - encode (data -> latent): `e ~ N(0, I)`, `n = mu + sigma * e`, `z = concat(x, n)`,
      `log q(z | x) = sum(log N(e; 0, 1)) - sum(log sigma)`, the log-density of `n` under
      `N(mu, sigma^2)`.
    - decode (latent -> data): `x = z[..., :C]`, dropping the noise.

    Without `params_net`, `mu = 0` and `sigma = 1`: a fixed standard Normal (augmented
    normalizing flows). With `params_net`, `(mu, log_sigma) = params_net(c)` are learned
    functions of a conditioning tensor `c`: the `context` passed to `encode` (DenseFlow's
    cross-unit coupling conditions on the previous representations of its block, see
    `CrossUnitBlock`), or `x` itself without one. The affine map of the noise is the
    bijector `NoiseAffine`. The data density is the marginal
    `p(x) = integral of p_flow(x, n) dn`; `log p_flow(z) - log q(z | x)` is its one-sample
    lower bound (ELBO), and averaging `k` importance weights gives the tighter IWBO (64
    samples by default when `q` is learned).

    References: Huang, Dinh, Courville, "Augmented Normalizing Flows", arXiv:2002.07101;
    Nielsen et al., "SurVAE Flows", arXiv:2007.02731; Grcic, Grubisic, Segvic,
    "Densely connected normalizing flows", arXiv:2106.04627.

    Args:
        event_shape: shape of one data example, `[D]` or `[H, W, C]`.
        num_features: number `M` of noise features (channels) appended, an int >= 1.
        params_net: `None` (standard Normal noise) or a Keras layer mapping the
            conditioning tensor to `(mu, log_sigma)`, each `[..., M]` like the noise
            (`tfp_flows.nets.CrossUnitParams`).
        name: a name for the surjection.

    Example:
        >>> import numpy as np
        >>> augment = NormalAugmentation([2], 3)
        >>> z, log_q = augment.encode(np.zeros([4, 2], "float32"), seed=0)
        >>> z.shape, log_q.shape, augment.latent_event_shape
        (TensorShape([4, 5]), TensorShape([4]), [5])
        >>> augment.decode(z).numpy().tolist()[0]
        [0.0, 0.0]
    """

    def __init__(self, event_shape, num_features, params_net=None,
                 name="normal_augmentation"):
        self.num_features = check_positive_int("num_features", num_features)
        shape = check_shape("event_shape", event_shape)
        super().__init__(shape, [*shape[:-1], shape[-1] + self.num_features], name=name)
        self.noise_affine = None
        if params_net is not None:
            self.noise_affine = NoiseAffine(params_net, self.latent_event_shape,
                                            self.num_features, name=f"{name}_noise_affine")
            self.default_num_eval_samples = 64

    @property
    def params_net(self):
        return None if self.noise_affine is None else self.noise_affine.params_net

    @property
    def layers(self):
        return [] if self.noise_affine is None else [self.params_net]

    def encode(self, x, seed=None, context=None):
        x = tf.convert_to_tensor(x)
        shape = tf.concat([tf.shape(x)[:-1], [self.num_features]], axis=0)
        seed = as_seed(seed)
        if seed is None:
            noise = tf.random.normal(shape, dtype=x.dtype)
        else:
            noise = tf.random.stateless_normal(shape, seed=seed, dtype=x.dtype)
        axes = list(range(-len(self.event_shape), 0))
        log_density = -0.5 * tf.square(noise) - tf.constant(0.5 * math.log(2.0 * math.pi),
                                                            x.dtype)
        log_q = tf.reduce_sum(log_density, axis=axes)
        z = tf.concat([x, noise], axis=-1)
        if self.noise_affine is None:
            return z, log_q
        # q is the density of mu + sigma * e: the Normal's, less the log-det of the map.
        params_input = x if context is None else tf.convert_to_tensor(context, x.dtype)
        y = self.noise_affine.forward(z, context=params_input)
        log_det = self.noise_affine.forward_log_det_jacobian(
            z, len(self.latent_event_shape), context=params_input)
        return y, log_q - log_det

    def decode(self, z, context=None):
        return tf.convert_to_tensor(z)[..., :self.event_shape[-1]]

    def get_config(self):
        config = {**super().get_config(), "num_features": self.num_features}
        if self.params_net is not None:
            config["params_net"] = keras.saving.serialize_keras_object(self.params_net)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("params_net"), dict):
            config["params_net"] = keras.saving.deserialize_keras_object(config["params_net"])
        return cls(**config)
