"""Normalizing flows for TensorFlow Probability, built on Keras 3."""

__version__ = "0.1.0"

from tfp_flows import bijectors, models, nets, training  # noqa: E402

__all__ = ["bijectors", "models", "nets", "training", "__version__"]
