"""Uniform dequantization: integer data plus uniform noise, a lower bound on discrete NLL."""

import keras
import numpy as np
import tensorflow as tf

from tfp_flows._validation import check_int
from tfp_flows.distributions.surjection import InferenceSurjection, as_seed

# within_level and decode_levels serve the dequantizer modules; they are not public API.
__all__ = ["UniformDequantization", "uniform_dequantize"]

_FLOAT_DTYPES = (tf.float32, tf.float64)


def uniform_dequantize(x_int, seed=None, dtype=tf.float32):
    """Returns `x + u` with `u ~ U[0, 1)` elementwise: discrete levels made continuous.

    For integer data `x in {0, ..., K-1}^D` and any density `p` over `[0, K)^D`, the
    probability mass `P(x) = integral over [0,1)^D of p(x + u) du` satisfies, by Jensen,
    `log P(x) >= E_u[log p(x + u)]`: training a flow on `x + u` maximises a lower bound on
    the discrete log-likelihood, and the noise keeps the flow from collapsing onto the
    integer points (Theis, van den Oord, Bethge, "A note on the evaluation of generative
    models", arXiv:1511.01844; Ho et al., "Flow++", arXiv:1902.00275, section 3.1). The
    noise density is 1 on the unit cube, so `log q(u | x) = 0` and nothing is added to
    the NLL.

    Works eagerly, inside `tf.function` and as a `tf.data` map function
    (`dataset.map(uniform_dequantize)`). With `seed=None` the noise comes from TensorFlow's
    stateful random ops (reproducible under `keras.utils.set_random_seed`); an int or a
    shape-[2] tensor seed makes it a stateless draw, the same for the same seed and shape.
    Do not pass a fixed int seed to a `tf.data` map: every element would get the same
    noise; `tfp_flows.datasets.dequantize_dataset` gives each element its own seed.

    Args:
        x_int: an integer array or tensor (uint8, int32, ...) of any shape.
        seed: `None`, an int, or a shape-[2] integer tensor (a stateless seed).
        dtype: dtype of the result, float32 or float64.

    Returns:
        A tensor of `dtype` and the shape of `x_int`, with values in `[x, x + 1)`.

    Raises:
        TypeError: if `x_int` is not of an integer dtype (already dequantized or scaled
            data must not be dequantized again), or `dtype` is not float32 or float64.

    Example:
        >>> import numpy as np
        >>> y = uniform_dequantize(np.array([0, 3, 16], "uint8"), seed=0)
        >>> bool(np.all((y >= [0, 3, 16]) & (y < [1, 4, 17])))
        True
    """
    dtype = tf.as_dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype.name}")
    if not tf.is_tensor(x_int):
        array = np.asarray(x_int)
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise TypeError(
                f"uniform_dequantize expects integer data (e.g. uint8 pixel levels), got "
                f"dtype {array.dtype}; data that is already float was probably dequantized "
                f"or scaled already")
        x_int = tf.convert_to_tensor(array)
    if not x_int.dtype.is_integer:
        raise TypeError(
            f"uniform_dequantize expects integer data (e.g. uint8 pixel levels), got dtype "
            f"{x_int.dtype.name}; data that is already float was probably dequantized or "
            f"scaled already")
    return _add_uniform_noise(tf.cast(x_int, dtype), as_seed(seed))


def _add_uniform_noise(x, seed):
    """`x + u`, `u ~ U[0, 1)` elementwise (stateless when `seed` is a tensor), below `x + 1`."""
    shape = tf.shape(x)
    if seed is None:
        noise = tf.random.uniform(shape, dtype=x.dtype)
    else:
        noise = tf.random.stateless_uniform(shape, seed=seed, dtype=x.dtype)
    return within_level(x, noise)


def within_level(x, offset):
    """`x + offset` for offsets in `[0, 1)`, kept strictly below `x + 1` (the next level).

    `x + u` rounds up to `x + 1` when `u` is within half an ulp of 1 (for `x >= 128` in
    float32 that happens about once per 10^5 uniform draws).
    """
    return tf.minimum(x + offset, tf.math.nextafter(x + 1.0, x))


def decode_levels(z, num_bins):
    """`clip(floor(z), 0, num_bins - 1)`: the level a dequantized latent came from."""
    z = tf.convert_to_tensor(z)
    return tf.clip_by_value(tf.floor(z), tf.zeros([], z.dtype),
                            tf.constant(num_bins - 1, z.dtype))


@keras.saving.register_keras_serializable(package="tfp_flows")
class UniformDequantization(InferenceSurjection):
    """Uniform dequantization as an inference surjection: `z = x + u`, `u ~ U[0, 1)^D`.

    The data `x` are integers in `{0, ..., K-1}^D` (`K = num_bins`); the latent `z` is
    continuous in `[0, K)^D` and has the data's shape.

    - encode (data -> latent): `z = x + u` with `u ~ U[0, 1)^D`, `log q(z | x) = 0` (the
      noise density is 1 on the unit cube).
    - decode (latent -> data): `x = clip(floor(z), 0, K - 1)`. Clipping maps latents that
      a flow puts outside `[0, K)` to the nearest level, so samples are always valid data.

    A flow `p_flow` over `z` then gives the discrete data the probability
    `P(x) = integral over [0,1)^D of p_flow(x + u) du`, and `log p_flow(x + u)` is a
    one-sample lower bound on `log P(x)` (Theis et al., arXiv:1511.01844; Ho et al.,
    "Flow++", arXiv:1902.00275, section 3.1). The same noise as `uniform_dequantize` for
    the same stateless seed, so training through this surjection and training on
    `uniform_dequantize`d data are the same computation.

    Reference: Nielsen et al., "SurVAE Flows", arXiv:2007.02731 (dequantization as an
    inference surjection).

    Args:
        num_bins: number of levels `K`, an int >= 2.
        event_shape: shape of one example, `[D]` or `[H, W, C]`.
        name: a name for the surjection.

    Example:
        >>> import numpy as np
        >>> deq = UniformDequantization(17, [3])
        >>> z, log_q = deq.encode(np.array([[0.0, 5.0, 16.0]], "float32"), seed=0)
        >>> bool(np.all((z >= [0, 5, 16]) & (z < [1, 6, 17]))), float(log_q[0])
        (True, 0.0)
        >>> deq.decode(z).numpy()
        array([[ 0.,  5., 16.]], dtype=float32)
    """

    discrete = True

    def __init__(self, num_bins, event_shape, name="uniform_dequantization"):
        self.num_bins = check_int("num_bins", num_bins, minimum=2)
        super().__init__(event_shape, event_shape, name=name)

    def encode(self, x, seed=None, context=None):
        x = tf.convert_to_tensor(x)
        z = _add_uniform_noise(x, as_seed(seed))
        return z, tf.zeros(tf.shape(x)[:1], x.dtype)

    def decode(self, z, context=None):
        return decode_levels(z, self.num_bins)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}
