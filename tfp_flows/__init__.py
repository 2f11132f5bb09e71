"""Normalizing flows for TensorFlow Probability, built on Keras 3.

`import tfp_flows` imports every subpackage, so every Keras class of the package is
registered (as `keras.saving.load_model` needs) once the package is imported. The one
exception is the `tfp-flows` command: there the subpackages load when first used
(`tff.models`, `from tfp_flows import models`), so that `tfp-flows --help` and
command-line errors answer without importing TensorFlow; its commands import what they
need.
"""

import importlib
import os
import sys

__version__ = "0.1.0"

_SUBPACKAGES = ("bijectors", "datasets", "distributions", "models", "nets", "testing",
                "training")
# The name of the command's console script (see setup.cfg).
COMMAND = "tfp-flows"

__all__ = [*_SUBPACKAGES, "__version__"]


def __getattr__(name):
    if name in _SUBPACKAGES:
        # The import binds the subpackage in this module: later lookups do not come here.
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_SUBPACKAGES})


def _is_command():
    """Whether this process is the `tfp-flows` command: its console script, or
    `python -m tfp_flows.cli`."""
    argv = getattr(sys, "argv", None) or [""]
    if os.path.basename(argv[0]) in (COMMAND, f"{COMMAND}.exe", f"{COMMAND}-script.py"):
        return True
    # While `python -m` imports the module's packages, argv[0] is "-m"; the interpreter's
    # own command line says which module runs.
    command_line = list(getattr(sys, "orig_argv", []))
    return argv[0] == "-m" and any(
        first == "-m" and module in ("tfp_flows.cli", "tfp_flows.cli.__main__")
        for first, module in zip(command_line, command_line[1:]))


if not _is_command():
    for _name in _SUBPACKAGES:
        __getattr__(_name)
    del _name
