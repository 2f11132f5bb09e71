"""Fixed permutations of the last axis, built from TFP's `Permute`."""

import numpy as np
import tensorflow_probability as tfp

from tfp_flows._validation import check_positive_int

__all__ = ["random_permutation", "reverse_permutation"]


def _check_size(size):
    return check_positive_int("size", size)


def reverse_permutation(size, name="reverse"):
    """A `tfb.Permute` reversing the last axis (features or channels) of length `size`."""
    size = _check_size(size)
    return tfp.bijectors.Permute(list(range(size - 1, -1, -1)), axis=-1, name=name)


def random_permutation(size, seed, name="random_permutation"):
    """A `tfb.Permute` with a fixed random order of the last axis, reproducible from `seed`."""
    size = _check_size(size)
    order = np.random.default_rng(seed).permutation(size)
    return tfp.bijectors.Permute([int(i) for i in order], axis=-1, name=name)
