"""The base class of inference surjections: a stochastic encoder and an exact decoder."""

import numpy as np
import tensorflow as tf

# as_seed and check_shape serve the surjection modules; they are not public API.
__all__ = ["InferenceSurjection"]


def as_seed(seed):
    """`None`, a Python int or a shape-[2] integer tensor -> `None` or a stateless seed."""
    if seed is None:
        return None
    if isinstance(seed, bool):
        raise TypeError(f"seed must be None, an int or a shape-[2] integer tensor, got {seed!r}")
    if isinstance(seed, int | np.integer):
        return tf.constant([int(seed), 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] not in (None, 2):
        raise TypeError(f"seed must be None, an int or a shape-[2] integer tensor, got "
                        f"{seed.dtype.name} tensor of shape {seed.shape.as_list()}")
    return seed


def check_shape(name, shape):
    """Returns `shape` as a list of positive ints, else raises TypeError/ValueError."""
    if isinstance(shape, str) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{name} must be a list of positive ints, got {shape!r}")
    shape = list(shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1
                        for d in shape):
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {shape!r}")
    return [int(d) for d in shape]


class InferenceSurjection:
    """A surjection `x -> z` used in its stochastic inverse direction (SurVAE Flows).

    A flow with an inference surjection models the *latent* `z` (for example dequantized
    levels, or data with noise features appended) with an ordinary bijective flow
    `p_flow(z)`, and the data `x` through a many-to-one map `x = decode(z)`. Going from
    data to noise, `z` is drawn from a conditional `q(z | x)` whose support is the set of
    `z` that decode to `x`; going from noise to data, `decode` is deterministic. The data
    log-likelihood is then bounded below (Jensen):

        log p(x) >= E_{z ~ q(z|x)} [log p_flow(z) - log q(z | x)]      (the ELBO)

    and `log mean_k exp(log p_flow(z_k) - log q(z_k | x))` over `k` samples is the tighter
    importance-weighted bound (IWBO, Burda et al., arXiv:1509.00519), whose expectation is
    non-decreasing in `k` and tends to `log p(x)`.

    Subclasses set `event_shape` (of `x`) and `latent_event_shape` (of `z`) and implement
    `encode` and `decode`. A learned `q` keeps its parameters in Keras layers listed by
    `layers`; the flow model that uses the surjection holds them as attributes, so Keras
    tracks, trains and saves them. A surjection never creates variables itself.

    Reference: Nielsen, Jaini, Hoogeboom, Winther, Welling, "SurVAE Flows: Surjections to
    Bridge the Gap between VAEs and Flows", arXiv:2007.02731.

    Args:
        event_shape: shape of one data example `x`.
        latent_event_shape: shape of one latent `z`, the flow's event shape.
        name: a name for the surjection.
    """

    # Whether data are discrete levels (integers in [0, num_bins)); see `num_bins`.
    discrete = False
    # The number of levels of discrete data, or None for continuous data.
    num_bins = None
    # Importance samples of a flow's log_prob and evaluate when its num_eval_samples is not
    # given: 1 (the ELBO, the training objective) unless a learned q makes the IWBO's gap
    # worth its cost.
    default_num_eval_samples = 1

    def __init__(self, event_shape, latent_event_shape, name="surjection"):
        self.event_shape = check_shape("event_shape", event_shape)
        self.latent_event_shape = check_shape("latent_event_shape", latent_event_shape)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        self.name = name

    @property
    def layers(self):
        """The Keras layers holding the parameters of `q` (none for a fixed `q`)."""
        return []

    def encode(self, x, seed=None, context=None):
        """Draws `z ~ q(z | x)`: data -> latent (the density direction).

        Args:
            x: data, `[batch, *event_shape]`, a float tensor.
            seed: `None` (TensorFlow's stateful random ops), an int or a shape-[2] integer
                tensor (a stateless draw: the same seed gives the same `z`).
            context: conditioning data of a conditional flow, or `None`.

        Returns:
            `(z, log_q)`: `z` of shape `[batch, *latent_event_shape]` and `log q(z | x)` of
            shape `[batch]`.
        """
        raise NotImplementedError

    def decode(self, z, context=None):
        """Maps a latent `z` to the data `x` it came from: exact and deterministic."""
        raise NotImplementedError

    def get_config(self):
        return {"event_shape": list(self.event_shape), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (f"{type(self).__name__}(event_shape={self.event_shape}, "
                f"latent_event_shape={self.latent_event_shape})")

