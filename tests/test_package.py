"""Package hygiene: what each subpackage exports, and where TFP's private names are used."""

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import tfp_flows

ROOT = os.path.dirname(tfp_flows.__file__)
# The library's layers. `tfp_flows.cli` is the command: its modules are its own parts.
SUBPACKAGES = ("bijectors", "datasets", "distributions", "models", "nets", "testing",
               "training")


def _public_modules(package):
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{package.__name__}.{info.name}")


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_public_module_exports_what_its_package_re_exports(name):
    package = importlib.import_module(f"tfp_flows.{name}")
    exported = set(package.__all__)
    for attribute in exported:
        assert hasattr(package, attribute), f"tfp_flows.{name}.__all__ names {attribute}"
    for module in _public_modules(package):
        missing = set(getattr(module, "__all__", ())) - exported
        assert not missing, f"{module.__name__}.__all__ has {sorted(missing)}, which " \
                            f"tfp_flows.{name} does not re-export"


def test_tfp_private_names_are_imported_in_one_module():
    private = re.compile(r"^\s*(from|import) tensorflow_probability\.python", re.M)
    users = []
    for directory, _, files in os.walk(ROOT):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(directory, file)
                with open(path) as source:
                    if private.search(source.read()):
                        users.append(os.path.relpath(path, ROOT))
    assert users == [os.path.join("bijectors", "_tfp_private.py")]


# -- loading on first use ----------------------------------------------------------------------

_FRESH_PROCESS = """
import json, sys
import tfp_flows as tff
import keras
report = {"models after import tfp_flows": "tfp_flows.models" in sys.modules,
          "dir": dir(tff)}
model = keras.saving.load_model(sys.argv[1])  # finds the package's registered classes
report["loaded"] = type(model).__name__
from tfp_flows import models
report["same models"] = tff.models is models and tff.models.RealNVP is models.RealNVP
print(json.dumps(report))
"""

_COMMAND_PROCESS = """
import json, sys
sys.argv[0] = "/some/where/bin/tfp-flows"  # as the console script starts
import tfp_flows as tff
report = {"tensorflow after import tfp_flows": "tensorflow" in sys.modules,
          "dir": dir(tff)}
import tfp_flows._registry, tfp_flows.cli, tfp_flows.datasets.toy  # what --help reads
report["tensorflow after the command's tables"] = "tensorflow" in sys.modules
from tfp_flows import models
report["same models"] = tff.models is models and tff.models.Glow is models.glow.Glow
print(json.dumps(report))
"""


def _fresh_process(script, *args):
    result = subprocess.run([sys.executable, "-c", script, *args],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_package_registers_its_keras_classes(tmp_path):
    """`import tfp_flows` alone is enough for `keras.saving.load_model` of a saved flow."""
    flow = tfp_flows.models.RealNVP([2], num_layers=1, hidden_units=[4])
    path = str(tmp_path / "flow.keras")
    flow.save(path)
    report = _fresh_process(_FRESH_PROCESS, path)
    assert report["models after import tfp_flows"] is True
    assert report["loaded"] == "RealNVP"
    assert set(SUBPACKAGES) <= set(report["dir"])
    assert report["same models"] is True


def test_the_command_loads_subpackages_when_first_used():
    """In the `tfp-flows` command, importing the package and the tables `--help` reads
    imports no TensorFlow; every way of reaching a subpackage still works."""
    report = _fresh_process(_COMMAND_PROCESS)
    assert report["tensorflow after import tfp_flows"] is False
    assert report["tensorflow after the command's tables"] is False
    assert set(SUBPACKAGES) <= set(report["dir"])
    assert report["same models"] is True


def test_the_package_lists_and_rejects_names_like_a_module():
    assert set(tfp_flows.__all__) == {*SUBPACKAGES, "__version__"}
    assert set(SUBPACKAGES) <= set(dir(tfp_flows))
    with pytest.raises(AttributeError, match="module 'tfp_flows' has no attribute 'nets2'"):
        tfp_flows.nets2  # noqa: B018
    datasets = importlib.import_module("tfp_flows.datasets")
    assert set(datasets.__all__) <= set(dir(datasets))
    assert datasets.load_digits is importlib.import_module("tfp_flows.datasets.images").load_digits
    with pytest.raises(AttributeError, match="has no attribute 'load_cifar'"):
        datasets.load_cifar  # noqa: B018
