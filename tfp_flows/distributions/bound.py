"""Lower-bound densities of flows with an inference surjection: ELBO and IWBO."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows._validation import check_positive_int
from tfp_flows.distributions.surjection import InferenceSurjection, as_seed

__all__ = ["LowerBoundDistribution", "importance_weighted_bound"]

tfd = tfp.distributions


def importance_weighted_bound(latent_log_prob, surjection, x, num_samples, seed=None,
                              context=None):
    """The importance-weighted lower bound (IWBO) on `log p(x)`, vectorised over samples.

    With `z_1..z_k ~ q(z | x)` drawn by `surjection.encode` and weights
    `w_i = p_flow(z_i) / q(z_i | x)`:

        IWBO_k(x) = log (1/k) sum_i w_i
                  = logsumexp_i(log p_flow(z_i) - log q(z_i | x)) - log k.

    `IWBO_1` is the ELBO. `E[IWBO_k]` is non-decreasing in `k` and tends to `log p(x)`
    (Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", arXiv:1509.00519).
    The batch is tiled `k` times and encoded in one call (no loop over samples), so memory
    grows as `k * batch`: split large batches for large `k`.

    Args:
        latent_log_prob: a callable `(z, context) -> [batch]`, the flow's exact density of
            the latent.
        surjection: an `InferenceSurjection`.
        x: data, `[batch, *surjection.event_shape]`.
        num_samples: `k`, a positive int or an int32 scalar tensor.
        seed: `None` or a stateless seed (see `InferenceSurjection.encode`). For a given
            seed, `k = 1` uses the same noise as the first of the `k` samples.
        context: conditioning data `[batch, ...]` or `None`.

    Returns:
        `[batch]` bounds, in nats.
    """
    x = tf.convert_to_tensor(x)
    rank = len(surjection.event_shape) + 1
    if isinstance(num_samples, int) and num_samples == 1:
        tiled, tiled_context = x, context
    else:
        tiled = tf.tile(x, tf.concat([[num_samples], tf.ones([rank - 1], tf.int32)], 0))
        tiled_context = None if context is None else tf.tile(
            context, tf.concat([[num_samples], tf.ones([tf.rank(context) - 1], tf.int32)], 0))
    z, log_q = surjection.encode(tiled, seed=seed, context=tiled_context)
    log_weights = latent_log_prob(z, tiled_context) - tf.cast(log_q, z.dtype)
    if isinstance(num_samples, int) and num_samples == 1:
        return log_weights
    log_weights = tf.reshape(log_weights, [num_samples, -1])  # sample-major, like the tile
    log_k = tf.math.log(tf.cast(num_samples, log_weights.dtype))
    return tf.reduce_logsumexp(log_weights, axis=0) - log_k


class LowerBoundDistribution(tfd.Distribution):
    """The data distribution of a flow with an inference surjection, as a TFP distribution.

    Samples are exact: `x = surjection.decode(z)` with `z ~ latent_distribution`.
    `log_prob(x)` is the importance-weighted bound with `num_samples` samples (the ELBO for
    `num_samples=1`, see `importance_weighted_bound`): a *stochastic lower bound* on the
    exact `log p(x)` that tightens as `num_samples` grows. The exact density of the latent
    `z` stays available as `latent_distribution`, an ordinary
    `tfd.TransformedDistribution`.

    `log_prob` takes TFP's usual extra keyword arguments: `seed` (an int or a stateless
    shape-[2] seed for a reproducible bound) and `bijector_kwargs` (`{"context": c}` for a
    conditional flow, with `c` having the leading shape of the values). Values may carry
    extra leading sample dimensions.

    Args:
        latent_distribution: the exact distribution of the latent `z`, with scalar batch
            shape and event shape `surjection.latent_event_shape`.
        surjection: the `InferenceSurjection` linking data and latent.
        num_samples: number `k` of importance samples of `log_prob`, an int >= 1.
        validate_args: TFP's flag.
        allow_nan_stats: TFP's flag.
        name: distribution name.

    Example:
        >>> import numpy as np
        >>> from tfp_flows.distributions import NormalAugmentation
        >>> latent = tfd.MultivariateNormalDiag(loc=np.zeros(3, "float32"))
        >>> dist = LowerBoundDistribution(latent, NormalAugmentation([1], 2), num_samples=4)
        >>> dist.event_shape, dist.sample(5, seed=0).shape
        (TensorShape([1]), TensorShape([5, 1]))
        >>> # The noise is independent of x here: every weight is N(x; 0, 1), bound = exact.
        >>> round(float(dist.log_prob(np.zeros([1, 1], "float32"), seed=1)[0]), 4)
        -0.9189
    """

    def __init__(self, latent_distribution, surjection, num_samples=1, validate_args=False,
                 allow_nan_stats=True, name="LowerBoundDistribution"):
        parameters = dict(locals())
        if not isinstance(latent_distribution, tfd.Distribution):
            raise TypeError(f"latent_distribution must be a tfd.Distribution, got "
                            f"{type(latent_distribution).__name__}")
        if not isinstance(surjection, InferenceSurjection):
            raise TypeError(f"surjection must be an InferenceSurjection, got "
                            f"{type(surjection).__name__}")
        event = latent_distribution.event_shape
        if event.is_fully_defined() and event.as_list() != surjection.latent_event_shape:
            raise ValueError(
                f"latent_distribution has event shape {event.as_list()} but the surjection's "
                f"latent_event_shape is {surjection.latent_event_shape}")
        batch = latent_distribution.batch_shape
        if batch.rank is None or batch.rank != 0:
            raise ValueError(f"latent_distribution must have scalar batch shape, got "
                             f"{batch}")
        self._latent_distribution = latent_distribution
        self._surjection = surjection
        self._num_samples = check_positive_int("num_samples", num_samples)
        with tf.name_scope(name) as name:
            super().__init__(dtype=latent_distribution.dtype,
                             reparameterization_type=tfd.NOT_REPARAMETERIZED,
                             validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                             parameters=parameters, name=name)

    @property
    def latent_distribution(self):
        """The exact distribution of the latent `z` (a `tfd.TransformedDistribution`)."""
        return self._latent_distribution

    @property
    def surjection(self):
        return self._surjection

    @property
    def num_samples(self):
        """Number of importance samples of `log_prob`."""
        return self._num_samples

    @property
    def estimator(self):
        """What `log_prob` returns: `"elbo"` (one sample) or `"iwbo(k=K)"`."""
        return "elbo" if self._num_samples == 1 else f"iwbo(k={self._num_samples})"

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _batch_shape(self):
        return tf.TensorShape([])

    def _batch_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _event_shape(self):
        return tf.TensorShape(self._surjection.event_shape)

    def _event_shape_tensor(self):
        return tf.constant(self._surjection.event_shape, tf.int32)

    def _context(self, bijector_kwargs):
        return (bijector_kwargs or {}).get("context")

    def _sample_n(self, n, seed=None, bijector_kwargs=None):
        kwargs = {} if bijector_kwargs is None else {"bijector_kwargs": bijector_kwargs}
        z = self._latent_distribution.sample(n, seed=seed, **kwargs)
        return self._surjection.decode(z, context=self._context(bijector_kwargs))

    def _log_prob(self, x, seed=None, bijector_kwargs=None):
        x = tf.convert_to_tensor(x, self.dtype)
        event_shape = self._surjection.event_shape
        leading = tf.shape(x)[:tf.rank(x) - len(event_shape)]
        flat = tf.reshape(x, [-1, *event_shape])
        context = self._context(bijector_kwargs)
        if context is not None:
            context = tf.convert_to_tensor(context, self.dtype)
            context = tf.reshape(context, tf.concat([[-1], tf.shape(context)[-1:]], 0))

        def latent_log_prob(z, context):
            kwargs = {} if context is None else {"bijector_kwargs": {"context": context}}
            return self._latent_distribution.log_prob(z, **kwargs)

        bound = importance_weighted_bound(latent_log_prob, self._surjection, flat,
                                          self._num_samples, seed=as_seed(seed),
                                          context=context)
        return tf.reshape(bound, leading)

    def _default_event_space_bijector(self):
        return None

