"""What the command's parser needs to know: its dataset names and the registered families.

The families, their settings and the toy densities are read from the library's own tables
(`tfp_flows.models.FAMILIES`, `tfp_flows.models.SETTINGS`,
`tfp_flows.datasets.TOY_DATASETS`), the one source of truth: a family registered at run
time is listed and trainable. None of them imports TensorFlow (the family table lives in
`tfp_flows._registry`), so neither does building the parser.
"""

import collections

from tfp_flows import _registry
from tfp_flows.datasets.toy import TOY_DATASETS

__all__ = [
    "DATA_KINDS",
    "IMAGE_DATASETS",
    "TEST_FRACTION",
    "TFDS_PREFIX",
    "FamilyInfo",
    "dataset_kind",
    "describe_families",
    "families",
    "settings",
    "toy_dataset_names",
]

# Image sets by name: tfds names with their preprocessing; `tfds:NAME` takes any other.
IMAGE_DATASETS = {
    "digits": None,  # scikit-learn's bundled digits, no download
    "mnist": {},
    "fashion_mnist": {},
    "cifar10": {},
    "celeb_a": {"center_crop": 148, "image_size": 64},
}
TFDS_PREFIX = "tfds:"
TEST_FRACTION = 0.2
# The command's kinds of dataset -> the kinds of data of `tfp_flows.models.FAMILIES`.
DATA_KINDS = {"toy": "vector", "image": "image"}

FamilyInfo = collections.namedtuple("FamilyInfo", "name description data_kinds options arguments")
FamilyInfo.__doc__ = """What the parser shows of a `tfp_flows.models.Family`.

`options` maps each data kind to the settings taken there; `arguments` maps a setting to
the builder keyword it becomes where the two names differ.
"""

def describe_families(registered):
    """`{name: FamilyInfo}` of a mapping of `tfp_flows.models.Family` objects."""
    return {name: FamilyInfo(name, family.description, tuple(family.data_kinds),
                             {kind: tuple(family.options.get(kind, ()))
                              for kind in family.data_kinds},
                             dict(family.arguments))
            for name, family in registered.items()}


def families():
    """The registered families as `{name: FamilyInfo}`, in registration order."""
    return describe_families(_registry.FAMILIES)


def settings():
    """The model settings a family can take, with what they set (`tff.models.SETTINGS`)."""
    return _registry.SETTINGS


def toy_dataset_names():
    """The names of the toy densities (`tfp_flows.datasets.TOY_DATASETS`)."""
    return tuple(TOY_DATASETS)


def dataset_kind(name):
    """`"toy"` or `"image"` for a dataset name, `None` if unknown."""
    if name in toy_dataset_names():
        return "toy"
    if name in IMAGE_DATASETS or (name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)):
        return "image"
    return None
