"""Normalizing flows for TensorFlow Probability, built on Keras 3.

The subpackages load when first used (`tff.models`, `from tfp_flows import models`,
`import tfp_flows.models`): importing `tfp_flows` alone imports no TensorFlow, so that the
`tfp-flows` command answers `--help` without it. Importing `tfp_flows.models` registers
every Keras class of the package, as `keras.saving.load_model` needs.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("bijectors", "datasets", "distributions", "models", "nets", "testing",
                "training")

__all__ = [*_SUBPACKAGES, "__version__"]


def __getattr__(name):
    if name in _SUBPACKAGES:
        # The import binds the subpackage in this module: later lookups do not come here.
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_SUBPACKAGES})
