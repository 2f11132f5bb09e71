"""The family registry: one table from a family's name to how it is built and trained.

Everything that depends on which flow families exist reads `FAMILIES` (public as
`tff.models.FAMILIES`): the `tfp-flows train --model NAME` choices and help, the options
each model takes on each kind of data, the building of the flow, the families index of the
documentation and the model tests. A new family is one module with its builder plus one
`register_family(Family(...))` call.

The table imports no TensorFlow, so that the command lists the families in `--help`
without loading it: a built-in family names its builder by import path
(`"tfp_flows.models:Glow"`), which is imported when the family first builds a flow.

A family names the command-line settings it takes (`SETTINGS`) for each kind of data it
models, `"vector"` (events `[D]`) or `"image"` (events `[H, W, C]`), and how a setting maps
onto a keyword argument of its builder: the command line's `--num-levels` is RealNVP's
`num_scales` and Glow's `num_levels`.

Example:
    >>> from tfp_flows.models import FAMILIES, get_family
    >>> sorted(FAMILIES)
    ['denseflow', 'flowpp', 'glow', 'iaf', 'maf', 'nanoflow', 'nice', 'realnvp']
    >>> get_family("glow").data_kinds
    ('image',)
    >>> get_family("glow").builder
    'tfp_flows.models:Glow'
    >>> flow = get_family("realnvp").build([2], {"num_layers": 2, "hidden_units": [8]})
    >>> flow.num_layers
    2
"""

import contextlib
import dataclasses
import importlib
import re
import types
from collections.abc import Callable, Mapping
from typing import Any

from tfp_flows._validation import check_choice

__all__ = [
    "DATA_KINDS",
    "FAMILIES",
    "SETTINGS",
    "Family",
    "get_family",
    "register_family",
    "temporary_family",
]

DATA_KINDS = ("vector", "image")
# The model settings a family can take from the command line, with what they set. The
# command parses each of them (tfp_flows/cli/arguments.py); a family picks among them.
SETTINGS = types.MappingProxyType({
    "num_layers": "number of couplings or autoregressive steps",
    "hidden_units": "hidden layer widths of each MLP conditioner",
    "num_levels": "levels (scales) of a multi-scale flow",
    "num_steps": "flow steps per level",
    "hidden_channels": "width of the conv ResNet conditioners",
    "num_blocks": "residual blocks per conditioner (Glow: with --conditioner resnet only)",
    "coupling": "coupling transformer: affine, additive (NICE, Glow, NanoFlow) or "
                "logistic_mixture (Flow++, NanoFlow)",
    "conditioner": "the network of each coupling and split prior: glow (the paper's 3x3, "
                   "1x1, 3x3 convolutions with ActNorm) or resnet (a conv ResNet of "
                   "--num-blocks blocks)",
})
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def _frozen(mapping, what):
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping, got {mapping!r} of type "
                        f"{type(mapping).__name__}")
    return types.MappingProxyType(dict(mapping))


def _check_str(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} of type {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed by identity
class Family:
    """One flow family: its builder, the data it models and its command-line settings.

    Args:
        name: the name `tfp-flows train --model NAME` takes: lower case letters, digits and
            underscores, starting with a letter.
        builder: a callable `builder(event_shape, **kwargs)` returning a `tff.models.Flow`,
            usually the family's class, or its import path `"package.module:name"`,
            imported when the family first builds (`load_builder`). Image families also
            receive `num_bins` and `logit_alpha` (see `Flow`); every family receives
            `seed`.
        description: what the family adds, one line (shown by `--help` and the docs).
        reference: the paper(s) it follows, for example `"Dinh et al. 2014,
            arXiv:1410.8516"`.
        data_kinds: the kinds of data it models, a non-empty subset of `("vector",
            "image")`.
        options: for each data kind, the `SETTINGS` names it takes there (a kind left out
            takes none). Any other setting given on the command line is an error.
        arguments: the builder keyword of a setting whose name differs from it, for
            example `{"num_levels": "num_scales"}`.
        defaults: for each data kind, defaults of its settings that differ from the
            command's defaults for that kind of data. A setting with no default anywhere is
            not passed, so the builder's own default applies.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a bad name or import path, an unknown data kind or setting, or
            options, arguments or defaults for a kind or setting the family does not take.
    """

    name: str
    builder: Callable[..., Any] | str
    description: str
    reference: str = ""
    data_kinds: tuple = DATA_KINDS
    options: Mapping = dataclasses.field(default_factory=dict)
    arguments: Mapping = dataclasses.field(default_factory=dict)
    defaults: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not _NAME.match(_check_str("name", self.name)):
            raise ValueError(f"name must be lower case letters, digits and underscores, "
                             f"starting with a letter; got {self.name!r}")
        if isinstance(self.builder, str):
            if not _IMPORT_PATH.match(self.builder):
                raise ValueError(f"builder of family {self.name!r} must be callable or an "
                                 f"import path 'package.module:name', got {self.builder!r}")
        elif not callable(self.builder):
            raise TypeError(f"builder of family {self.name!r} must be callable or an import "
                            f"path 'package.module:name', got {self.builder!r}")
        _check_str("description", self.description)
        _check_str("reference", self.reference)
        # Frozen: the checked, read-only values replace the given ones once, here.
        set_field = lambda field, value: object.__setattr__(self, field, value)  # noqa: E731
        set_field("data_kinds", self._checked_kinds(self.data_kinds))
        set_field("options", self._checked_options(self.options))
        set_field("arguments", self._checked_arguments(self.arguments))
        set_field("defaults", self._checked_defaults(self.defaults))

    def _per_kind(self, mapping, what):
        """`mapping` with its keys checked to be data kinds of this family."""
        mapping = _frozen(mapping, f"{what} of family {self.name!r}")
        for kind in mapping:
            check_choice(f"a data kind of {what} of family {self.name!r}", kind,
                         self.data_kinds)
        return mapping

    def _checked_options(self, options):
        options = self._per_kind(options, "options")
        checked = {}
        for kind in self.data_kinds:
            settings = options.get(kind, ())
            settings = (settings,) if isinstance(settings, str) else tuple(settings)
            for setting in settings:
                check_choice(f"options[{kind!r}] of family {self.name!r}", setting, SETTINGS)
            checked[kind] = settings
        return types.MappingProxyType(checked)

    def _checked_arguments(self, arguments):
        arguments = _frozen(arguments, f"arguments of family {self.name!r}")
        for setting, keyword in arguments.items():
            check_choice(f"a setting of arguments of family {self.name!r}", setting,
                         self.settings())
            _check_str(f"arguments[{setting!r}] of family {self.name!r}", keyword)
        return arguments

    def _checked_defaults(self, defaults):
        defaults = self._per_kind(defaults, "defaults")
        checked = {}
        for kind in self.data_kinds:
            values = _frozen(defaults.get(kind, {}), f"defaults[{kind!r}]")
            for setting in values:
                check_choice(f"a setting of defaults[{kind!r}] of family {self.name!r}",
                             setting, self.options[kind])
            checked[kind] = values
        return types.MappingProxyType(checked)

    @staticmethod
    def _checked_kinds(data_kinds):
        if isinstance(data_kinds, str) or not isinstance(data_kinds, (tuple, list)):
            raise TypeError(f"data_kinds must be a tuple of data kinds, got {data_kinds!r}")
        for kind in data_kinds:
            check_choice("a data kind of data_kinds", kind, DATA_KINDS)
        if not data_kinds or len(set(data_kinds)) != len(data_kinds):
            raise ValueError(f"data_kinds must be non-empty without repeats, got "
                             f"{data_kinds!r}")
        return tuple(data_kinds)

    def settings(self, data_kind=None):
        """The settings taken on `data_kind` (default: on any kind), in `SETTINGS` order."""
        kinds = self.data_kinds if data_kind is None else (data_kind,)
        taken = {setting for kind in kinds for setting in self.options.get(kind, ())}
        return tuple(setting for setting in SETTINGS if setting in taken)

    def load_builder(self):
        """The builder: `builder` itself, or the object its import path names.

        Raises:
            ImportError: the module of the import path cannot be imported.
            AttributeError: the module has no such attribute.
            TypeError: what the path names is not callable.
        """
        if not isinstance(self.builder, str):
            return self.builder
        module, _, attribute = self.builder.partition(":")
        builder = importlib.import_module(module)
        for part in attribute.split("."):
            builder = getattr(builder, part)
        if not callable(builder):
            raise TypeError(f"builder of family {self.name!r}, {self.builder!r}, is not "
                            f"callable: {builder!r}")
        return builder

    def build(self, event_shape, settings, **kwargs):
        """Builds a flow on `event_shape` from the command-line `settings`.

        Args:
            event_shape: `[D]` (vector data) or `[H, W, C]` (image data).
            settings: a mapping from setting names to values; those this family takes on
                this kind of data are passed on (renamed by `arguments`), a value of `None`
                is left to the builder's default, and other keys are ignored.
            **kwargs: passed to the builder as they are (`seed`, `num_bins`, ...).

        Returns:
            The builder's flow.

        Raises:
            ValueError: the family does not model this kind of data, or the builder
                rejects the arguments.
        """
        rank = len(event_shape)
        kind = {1: "vector", 3: "image"}.get(rank)
        if kind not in self.data_kinds:
            raise ValueError(f"{self.name} models {' and '.join(self.data_kinds)} data (event "
                             f"shapes {' or '.join(_SHAPES[k] for k in self.data_kinds)}), "
                             f"got event_shape {list(event_shape)}")
        chosen = {self.arguments.get(key, key): settings[key] for key in self.options[kind]
                  if settings.get(key) is not None}
        return self.load_builder()(event_shape, **chosen, **kwargs)


_SHAPES = {"vector": "[D]", "image": "[H, W, C]"}
_FAMILIES = {}
FAMILIES = types.MappingProxyType(_FAMILIES)
"""The registered families by name, in registration order (a read-only view)."""


def register_family(family, replace=False):
    """Adds `family` to `FAMILIES`; returns it.

    Args:
        family: a `Family`.
        replace: whether a family of the same name may be replaced.

    Raises:
        TypeError: `family` is not a `Family`.
        ValueError: a family of that name is registered and `replace` is false.
    """
    if not isinstance(family, Family):
        raise TypeError(f"family must be a Family, got {family!r} of type "
                        f"{type(family).__name__}")
    if family.name in _FAMILIES and not replace:
        raise ValueError(f"a family named {family.name!r} is registered already; pass "
                         "replace=True to replace it")
    _FAMILIES[family.name] = family
    return family


def get_family(name):
    """The registered `Family` called `name`.

    Raises:
        TypeError: `name` is not a str.
        ValueError: no family of that name is registered (the message lists those that
            are).
    """
    _check_str("name", name)
    if name not in _FAMILIES:
        raise ValueError(f"unknown family {name!r}; registered: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


@contextlib.contextmanager
def temporary_family(family):
    """Registers `family` inside a `with` block, then restores `FAMILIES` as it was.

    A family of the same name is replaced inside the block and put back after it; for
    tests and experiments.
    """
    previous = _FAMILIES.get(getattr(family, "name", None))
    register_family(family, replace=True)
    try:
        yield family
    finally:
        if previous is None:
            _FAMILIES.pop(family.name, None)
        else:
            _FAMILIES[family.name] = previous


_VECTOR = ("num_layers", "hidden_units")
for _family in (
    Family("nice", "tfp_flows.models:NICE", "additive coupling, diagonal rescaling",
           "Dinh et al. 2014, arXiv:1410.8516",
           options={"vector": _VECTOR,
                    "image": ("num_layers", "hidden_channels", "num_blocks")}),
    Family("realnvp", "tfp_flows.models:RealNVP", "affine coupling, checkerboard/channel "
           "masks, squeeze, multi-scale", "Dinh et al. 2016, arXiv:1605.08803",
           options={"vector": _VECTOR,
                    "image": ("num_levels", "hidden_channels", "num_blocks")},
           arguments={"num_levels": "num_scales"}),
    Family("glow", "tfp_flows.models:Glow", "ActNorm (data-dependent init), invertible 1x1 "
           "conv (LU), split priors", "Kingma & Dhariwal 2018, arXiv:1807.03039",
           data_kinds=("image",),
           options={"image": ("num_levels", "num_steps", "hidden_channels", "num_blocks",
                              "coupling", "conditioner")},
           defaults={"image": {"conditioner": "glow"}}),
    Family("flowpp", "tfp_flows.models:FlowPlusPlus", "mixture-of-logistics CDF coupling, "
           "variational dequantization, attention in coupling nets",
           "Ho et al. 2019, arXiv:1902.00275", data_kinds=("image",),
           options={"image": ("num_levels", "num_steps", "hidden_channels", "num_blocks",
                              "coupling")},
           arguments={"hidden_channels": "filters", "num_blocks": "blocks"},
           # num_steps unset: the builder's (4, 2, 3) couplings per level, the paper's.
           defaults={"image": {"num_steps": None, "hidden_channels": 32, "num_blocks": 2,
                               "coupling": "logistic_mixture"}}),
    Family("denseflow", "tfp_flows.models:DenseFlow", "cross-unit coupling (noise "
           "augmentation between units), dense blocks with Nystrom attention in coupling nets",
           "Grcic et al. 2021, arXiv:2106.04627", data_kinds=("image",),
           options={"image": ("num_levels", "num_steps", "hidden_channels")},
           arguments={"num_levels": "num_blocks", "num_steps": "units_per_block",
                      "hidden_channels": "filters"},
           # num_steps unset: the builder's (3, 2) units in its two blocks.
           defaults={"image": {"num_steps": None, "hidden_channels": 32}}),
    Family("maf", "tfp_flows.models:MAF", "masked autoregressive density estimation (MADE "
           "conditioners)", "Papamakarios et al. 2017, arXiv:1705.07057; Germain et al. "
           "2015, arXiv:1502.03509", data_kinds=("vector",), options={"vector": _VECTOR}),
    Family("iaf", "tfp_flows.models:IAF", "inverse autoregressive flow: parallel sampling",
           "Kingma et al. 2016, arXiv:1606.04934", data_kinds=("vector",),
           options={"vector": _VECTOR}),
    Family("nanoflow", "tfp_flows.models:NanoFlow", "one shared estimator over K flow steps, "
           "per-step projections, flow indication embedding", "Lee et al. 2020, "
           "arXiv:2006.06280",
           options={"vector": ("num_layers", "hidden_units", "coupling"),
                    "image": ("num_levels", "num_steps", "hidden_channels", "num_blocks",
                              "coupling")},
           arguments={"num_layers": "num_steps", "coupling": "transformer"},
           # Twice Glow's steps: the shared trunk keeps them cheap in parameters.
           defaults={"image": {"num_steps": 16}}),
):
    register_family(_family)
del _family
