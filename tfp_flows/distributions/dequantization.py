"""Uniform dequantization: integer data plus uniform noise, a lower bound on discrete NLL."""

import numpy as np
import tensorflow as tf

__all__ = ["uniform_dequantize"]

_FLOAT_DTYPES = (tf.float32, tf.float64)


def _as_seed(seed):
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
    seed = _as_seed(seed)
    shape = tf.shape(x_int)
    if seed is None:
        noise = tf.random.uniform(shape, dtype=dtype)
    else:
        noise = tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)
    x = tf.cast(x_int, dtype)
    # x + u rounds up to x + 1 when u is within half an ulp of 1 (for x >= 128 in float32
    # that happens about once per 10^5 draws): keep the result strictly below x + 1.
    return tf.minimum(x + noise, tf.math.nextafter(x + 1.0, x))
