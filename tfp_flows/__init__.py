"""Normalizing flows for TensorFlow Probability, built on Keras 3."""

__version__ = "0.1.0"

import importlib  # noqa: E402
import sys  # noqa: E402

_SUBPACKAGES = ("bijectors", "datasets", "distributions", "models", "nets", "testing",
                "training")

__all__ = [
    "bijectors", "datasets", "distributions", "models", "nets", "testing", "training",
    "__version__",
]


def _imported_for_the_command():
    """Whether this import of the package is the `tfp-flows` command's own.

    The command (`tfp-flows ...`, `python -m tfp_flows.cli ...`) builds its parser and
    answers `--help` without TensorFlow, so importing `tfp_flows.cli` must not import the
    subpackages, which all import TensorFlow. Any other import of `tfp_flows` loads them
    at once: that registers every Keras class for `keras.saving.load_model`. The import
    in progress is read from the import machinery's frames; if they cannot be read, the
    subpackages load, as they always did.
    """
    outermost = None
    try:
        frame = sys._getframe(1)
    except (AttributeError, ValueError):  # pragma: no cover - not CPython
        return False
    while frame is not None:
        code = frame.f_code.co_name
        if code == "_find_and_load":
            outermost = frame.f_locals.get("name", outermost)
        elif code == "_run_module_as_main":  # python -m NAME
            outermost = frame.f_locals.get("mod_name", outermost)
        frame = frame.f_back
    return isinstance(outermost, str) and (outermost == "tfp_flows.cli"
                                           or outermost.startswith("tfp_flows.cli."))


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _imported_for_the_command():
    from tfp_flows import (  # noqa: E402
        bijectors,
        datasets,
        distributions,
        models,
        nets,
        testing,
        training,
    )
