"""Package hygiene: what each subpackage exports, and where TFP's private names are used."""

import importlib
import os
import pkgutil
import re

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
