"""Training utilities: bits-per-dim metric and callbacks."""

from tfp_flows.training.callbacks import NaNGuard
from tfp_flows.training.metrics import BitsPerDim, bits_per_dim

__all__ = ["BitsPerDim", "NaNGuard", "bits_per_dim"]
