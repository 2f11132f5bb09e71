"""Bits per dimension: one function used by the metric, the CLI and the docs."""

import math

import keras

__all__ = ["BitsPerDim", "bits_per_dim"]


def bits_per_dim(nll, num_dims):
    """Converts a negative log-likelihood in nats per example to bits per dimension.

    `bpd = nll / (num_dims * ln 2)`.

    Args:
        nll: negative log-likelihood in nats (a number or a tensor).
        num_dims: number of dimensions of one example (the event size).

    Example:
        >>> round(bits_per_dim(2 * math.log(2.0), 2), 6)
        1.0
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
    return nll / (num_dims * math.log(2.0))


@keras.saving.register_keras_serializable(package="tfp_flows")
class BitsPerDim(keras.metrics.Mean):
    """Running mean of bits per dimension, updated from per-example log-probabilities.

    Args:
        num_dims: number of dimensions of one example.
        name: metric name.
    """

    def __init__(self, num_dims, name="bits_per_dim", **kwargs):
        super().__init__(name=name, **kwargs)
        bits_per_dim(0.0, num_dims)  # validates num_dims
        self.num_dims = num_dims

    def update_state(self, log_prob, sample_weight=None):
        return super().update_state(bits_per_dim(-log_prob, self.num_dims), sample_weight)

    def get_config(self):
        return {**super().get_config(), "num_dims": self.num_dims}
