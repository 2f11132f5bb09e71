"""What the command's parser needs to know, importable without TensorFlow.

`tfp-flows --help` and `tfp-flows train --help` answer in a fraction of a second because
building the parser imports neither TensorFlow nor the modules that do (the family
builders, the datasets). The parser reads:

- the dataset names of the command (`IMAGE_DATASETS`, `TFDS_PREFIX`, toy densities);
- the families: their names, data kinds, descriptions and command-line settings.

Both come from the library itself (`tfp_flows.datasets.TOY_DATASETS`,
`tfp_flows.models.FAMILIES`, `tfp_flows.models.SETTINGS`) once those modules are loaded:
a family registered at run time is listed and trainable. Before that (a fresh `tfp-flows`
process), the parser reads the snapshot below of the built-in ones, which the test suite
holds equal to the library's own tables.
"""

import collections
import sys
import types

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

# Snapshots of the library's tables (tests/test_cli.py holds them equal).
_TOY_DATASET_NAMES = ("two_moons", "checkerboard", "eight_gaussians", "spirals", "pinwheel")
_SETTINGS = types.MappingProxyType({
    "num_layers": "number of couplings or autoregressive steps",
    "hidden_units": "hidden layer widths of each MLP conditioner",
    "num_levels": "levels (scales) of a multi-scale flow",
    "num_steps": "flow steps per level",
    "hidden_channels": "width of the conv ResNet conditioners",
    "num_blocks": "residual blocks per conditioner",
    "coupling": "coupling transformer: affine or additive",
})
_VECTOR = ("num_layers", "hidden_units")
_FAMILIES = {family.name: family for family in (
    FamilyInfo("nice", "additive coupling, diagonal rescaling", ("vector", "image"),
               {"vector": _VECTOR, "image": ("num_layers", "hidden_channels", "num_blocks")},
               {}),
    FamilyInfo("realnvp", "affine coupling, checkerboard/channel masks, squeeze, multi-scale",
               ("vector", "image"),
               {"vector": _VECTOR, "image": ("num_levels", "hidden_channels", "num_blocks")},
               {"num_levels": "num_scales"}),
    FamilyInfo("glow", "ActNorm (data-dependent init), invertible 1x1 conv (LU), split priors",
               ("image",), {"image": ("num_levels", "num_steps", "hidden_channels",
                                      "num_blocks", "coupling")}, {}),
    FamilyInfo("maf", "masked autoregressive density estimation (MADE conditioners)",
               ("vector",), {"vector": _VECTOR}, {}),
    FamilyInfo("iaf", "inverse autoregressive flow: parallel sampling", ("vector",),
               {"vector": _VECTOR}, {}),
)}


def describe_families(registered):
    """`{name: FamilyInfo}` of a mapping of `tfp_flows.models.Family` objects."""
    return {name: FamilyInfo(name, family.description, tuple(family.data_kinds),
                             {kind: tuple(family.options.get(kind, ()))
                              for kind in family.data_kinds},
                             dict(family.arguments))
            for name, family in registered.items()}


def families():
    """The registered families as `{name: FamilyInfo}`, in registration order."""
    registry = sys.modules.get("tfp_flows.models.registry")
    if registry is None:
        return dict(_FAMILIES)
    return describe_families(registry.FAMILIES)


def settings():
    """The model settings a family can take, with what they set (`tff.models.SETTINGS`)."""
    registry = sys.modules.get("tfp_flows.models.registry")
    return _SETTINGS if registry is None else registry.SETTINGS


def toy_dataset_names():
    """The names of the toy densities (`tfp_flows.datasets.TOY_DATASETS`)."""
    toy = sys.modules.get("tfp_flows.datasets.toy")
    return _TOY_DATASET_NAMES if toy is None else tuple(toy.TOY_DATASETS)


def dataset_kind(name):
    """`"toy"` or `"image"` for a dataset name, `None` if unknown."""
    if name in toy_dataset_names():
        return "toy"
    if name in IMAGE_DATASETS or (name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)):
        return "image"
    return None
