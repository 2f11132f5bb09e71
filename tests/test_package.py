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
report = {"tensorflow after import tfp_flows": "tensorflow" in sys.modules,
          "dir": dir(tff)}
import tfp_flows._registry, tfp_flows.cli, tfp_flows.datasets.toy  # what --help reads
report["tensorflow after the command's tables"] = "tensorflow" in sys.modules
from tfp_flows.training import resume
report["models before resume"] = "tfp_flows.models" in sys.modules
model, epoch = resume(sys.argv[1])
report["resumed"] = [type(model).__name__, epoch]
from tfp_flows import models
report["same models"] = tff.models is models and tff.models.Glow is models.glow.Glow
print(json.dumps(report))
"""


def test_subpackages_load_when_first_used(tmp_path):
    """`import tfp_flows` imports no TensorFlow; every way of reaching a subpackage works,
    and a checkpoint resumes in a process that never imported `tfp_flows.models`."""
    flow = tfp_flows.models.RealNVP([2], num_layers=1, hidden_units=[4])
    flow.compile()
    flow.save(tfp_flows.training.checkpoint_path(tmp_path, 3))
    result = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(tmp_path)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["tensorflow after import tfp_flows"] is False
    assert report["tensorflow after the command's tables"] is False
    assert set(SUBPACKAGES) <= set(report["dir"])
    assert report["models before resume"] is False
    assert report["resumed"] == ["RealNVP", 3]
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
