"""Noise augmentation: extra Normal features appended to the data, dropped when sampling."""

import math

import keras
import tensorflow as tf

from tfp_flows._validation import check_positive_int
from tfp_flows.distributions.surjection import InferenceSurjection, as_seed, check_shape

__all__ = ["NormalAugmentation"]


@keras.saving.register_keras_serializable(package="tfp_flows")
class NormalAugmentation(InferenceSurjection):
    """Appends `num_features` standard Normal noise features on the last axis.

    For data `x` of shape `[..., C]` (`[D]` vectors or `[H, W, C]` images, where the noise
    becomes extra channels), the latent is `z = concat(x, e)` of shape `[..., C + M]`
    with `M = num_features`:

    - encode (data -> latent): `e ~ q(e | x) = N(0, I)`, `z = concat(x, e)`,
      `log q(z | x) = sum(log N(e; 0, 1))`.
    - decode (latent -> data): `x = z[..., :C]`, dropping the noise.

    A flow over the wider `z` can be more expressive than one over `x` alone (augmented
    normalizing flows; DenseFlow's cross-unit coupling learns `q(e | x)` instead of this
    fixed Normal). The data density is the marginal `p(x) = integral of p_flow(x, e) de`;
    `log p_flow(z) - log q(z | x)` is its one-sample lower bound (ELBO), and averaging
    `k` importance weights gives the tighter IWBO.

    References: Huang, Dinh, Courville, "Augmented Normalizing Flows", arXiv:2002.07101;
    Nielsen et al., "SurVAE Flows", arXiv:2007.02731; Grcic, Grubisic, Segvic,
    "Densely connected normalizing flows", arXiv:2106.04627.

    Args:
        event_shape: shape of one data example, `[D]` or `[H, W, C]`.
        num_features: number `M` of noise features (channels) appended, an int >= 1.
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

    def __init__(self, event_shape, num_features, name="normal_augmentation"):
        self.num_features = check_positive_int("num_features", num_features)
        shape = check_shape("event_shape", event_shape)
        super().__init__(shape, [*shape[:-1], shape[-1] + self.num_features], name=name)

    def encode(self, x, seed=None, context=None):
        x = tf.convert_to_tensor(x)
        shape = tf.concat([tf.shape(x)[:-1], [self.num_features]], axis=0)
        seed = as_seed(seed)
        if seed is None:
            noise = tf.random.normal(shape, dtype=x.dtype)
        else:
            noise = tf.random.stateless_normal(shape, seed=seed, dtype=x.dtype)
        log_density = -0.5 * tf.square(noise) - tf.constant(0.5 * math.log(2.0 * math.pi),
                                                            x.dtype)
        log_q = tf.reduce_sum(log_density, axis=list(range(-len(self.event_shape), 0)))
        return tf.concat([x, noise], axis=-1), log_q

    def decode(self, z, context=None):
        return tf.convert_to_tensor(z)[..., :self.event_shape[-1]]

    def get_config(self):
        return {**super().get_config(), "num_features": self.num_features}
