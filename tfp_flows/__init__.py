"""Normalizing flows for TensorFlow Probability, built on Keras 3."""

__version__ = "0.1.0"

from tfp_flows import (  # noqa: E402
    bijectors,
    datasets,
    distributions,
    models,
    nets,
    testing,
    training,
)

__all__ = [
    "bijectors", "datasets", "distributions", "models", "nets", "testing", "training",
    "__version__",
]
