"""Normalizing flows for TensorFlow Probability, built on Keras 3."""

__version__ = "0.1.0"

from tfp_flows import bijectors, datasets, models, nets, testing, training  # noqa: E402

__all__ = [
    "bijectors", "datasets", "models", "nets", "testing", "training", "__version__",
]
