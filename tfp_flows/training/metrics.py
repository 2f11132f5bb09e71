"""Bits per dimension: one function used by the metric, the CLI and the docs."""

import math

import keras

from tfp_flows._validation import check_int, check_positive_int

__all__ = ["DENSITY_SPACES", "BitsPerDim", "bits_per_dim"]

# Where the evaluated density lives, relative to the data's K discrete levels.
DENSITY_SPACES = ("bins", "unit")


def _check_discrete(num_bins, density_space):
    if num_bins is None:
        if density_space is not None:
            raise ValueError(
                f"density_space={density_space!r} needs num_bins (the number of discrete "
                f"levels K of the data); got num_bins=None")
        return
    check_int("num_bins", num_bins, minimum=2, allow_none=True)
    if density_space not in DENSITY_SPACES:
        raise ValueError(
            f"with num_bins={num_bins}, density_space must say where the density lives: "
            f"'bins' (dequantized data in [0, {num_bins})) or 'unit' (data divided by "
            f"{num_bins}, in [0, 1) or [-0.5, 0.5)); got {density_space!r}")


def bits_per_dim(nll, num_dims, *, num_bins=None, density_space=None):
    """Converts a negative log-likelihood in nats per example to bits per dimension.

    Continuous data (the default, `num_bins=None`): `bpd = nll / (D ln 2)`, with
    `D = num_dims`.

    Discrete data with `K = num_bins` levels per dimension (256 for 8-bit images, 17 for
    the scikit-learn digits, whose pixels take the values 0..16), uniformly dequantized to
    `y = x + u` in `[0, K)^D`: the bits per dimension of the discrete data, an upper bound
    on its true value, are `-log p_Y(y) / (D ln 2)` with `p_Y` the density over `y` itself.
    `density_space` names the space of the density whose NLL you pass:

    - `"bins"`: the density is over `y in [0, K)^D`, in units of one level; the log-det
      of any rescaling (e.g. `tfp_flows.bijectors.LevelScaling`) is part of the flow.
      `bpd = nll / (D ln 2)`.
    - `"unit"`: the density is over `y / K` (in `[0, 1)^D`, or `[-1/2, 1/2)^D` after a
      shift, which does not change densities); the rescaling happened outside the flow.
      Since `p_Y(y) = p(y / K) / K^D`: `bpd = (nll + D ln K) / (D ln 2)`.

    Densities over other spaces (logits, standardized data) must include those maps in the
    flow and use `"bins"`.

    For a flow whose density is a bound (`Flow.log_prob_estimator` is `"elbo"` or
    `"iwbo(k=K)"`), `nll` is the negative bound and the result an upper bound on the bits
    per dimension; report it with the estimator. A flow with a dequantizer already gives
    the log-probability of the discrete data (no `density_space` correction).

    Args:
        nll: negative log-likelihood in nats per example (a number or a tensor).
        num_dims: number of dimensions of one example (the event size `D`).
        num_bins: number of discrete levels `K` of the data, or `None` for continuous
            data.
        density_space: `"bins"` or `"unit"`; required with `num_bins` and not allowed
            without it.

    Returns:
        Bits per dimension, of the type of `nll`.

    Raises:
        ValueError: `num_dims` is not a positive int, `num_bins` is not an int >= 2, or
            `density_space` is missing, unknown, or given without `num_bins`.

    Example:
        >>> round(bits_per_dim(2 * math.log(2.0), 2), 6)
        1.0
        >>> # A flow over [0, 1) that assigns density 1 everywhere: 8 bits per 8-bit pixel.
        >>> bits_per_dim(0.0, 3, num_bins=256, density_space="unit")
        8.0
    """
    check_positive_int("num_dims", num_dims)
    _check_discrete(num_bins, density_space)
    if density_space == "unit":
        nll = nll + num_dims * math.log(num_bins)
    return nll / (num_dims * math.log(2.0))


@keras.saving.register_keras_serializable(package="tfp_flows")
class BitsPerDim(keras.metrics.Mean):
    """Running mean of bits per dimension, updated from per-example log-probabilities.

    Each `log_prob` is converted with `bits_per_dim(-log_prob, num_dims,
    num_bins=num_bins, density_space=density_space)`.

    Args:
        num_dims: number of dimensions of one example.
        num_bins: number of discrete levels of the data, or `None` (continuous data).
        density_space: `"bins"` or `"unit"` with `num_bins`; see `bits_per_dim`.
        estimator: what the `log_prob`s are, for reports: `"exact"` (a bijective flow's
            density), `"elbo"` or `"iwbo(k=K)"` (a bound flow's lower bounds, which make
            the bits per dim an upper bound); a `Flow` sets it to its
            `log_prob_estimator`.
        name: metric name.
    """

    def __init__(self, num_dims, num_bins=None, density_space=None, estimator="exact",
                 name="bits_per_dim", **kwargs):
        super().__init__(name=name, **kwargs)
        bits_per_dim(0.0, num_dims, num_bins=num_bins,
                     density_space=density_space)  # validates the arguments
        if not isinstance(estimator, str):
            raise TypeError(f"estimator must be a str, got {estimator!r}")
        self.num_dims = num_dims
        self.num_bins = num_bins
        self.density_space = density_space
        self.estimator = estimator

    def update_state(self, log_prob, sample_weight=None):
        return super().update_state(
            bits_per_dim(-log_prob, self.num_dims, num_bins=self.num_bins,
                         density_space=self.density_space), sample_weight)

    def get_config(self):
        return {**super().get_config(), "num_dims": self.num_dims,
                "num_bins": self.num_bins, "density_space": self.density_space,
                "estimator": self.estimator}
