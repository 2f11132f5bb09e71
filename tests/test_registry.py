"""The family registry: its entries, its checks, temporary families and the docs table.

Run as a script, this file prints the families table of docs/families/index.md.
"""

import os
import re

import pytest

from tfp_flows import _registry, models, nets
from tfp_flows.cli import arguments
from tfp_flows.models import FAMILIES, Family, get_family, register_family, temporary_family
from tfp_flows.models.registry import SETTINGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES_PAGE = os.path.join(ROOT, "docs", "families", "index.md")
TABLE_START = "<!-- families: begin (generated from tfp_flows.models.FAMILIES) -->"
TABLE_END = "<!-- families: end -->"
DATA_NAMES = {"vector": "vectors", "image": "images"}


def _tiny(event_shape, num_layers, seed=0):
    return models.RealNVP(event_shape, num_layers=num_layers, hidden_units=[4], seed=seed)


def _family(**changes):
    fields = {"name": "tiny", "builder": _tiny, "description": "a tiny RealNVP",
              "data_kinds": ("vector",), "options": {"vector": ("num_layers",)}}
    return Family(**{**fields, **changes})


def families_table():
    """The markdown table of the registered families, as docs/families/index.md has it."""
    rows = ["| `--model` | builder | data | what it adds | reference |", "|---|---|---|---|---|"]
    for family in FAMILIES.values():
        builder = family.load_builder()
        path = (f"tff.models.{builder.__name__}"
                if getattr(models, builder.__name__, None) is builder
                else f"{builder.__module__}.{builder.__qualname__}")
        data = ", ".join(DATA_NAMES[kind] for kind in family.data_kinds)
        rows.append(f"| `{family.name}` | `{path}` | {data} | {family.description} | "
                    f"{family.reference} |")
    return "\n".join(rows)


# -- the built-in families -------------------------------------------------------------------


def test_builtin_families_and_their_builders():
    expected = {"nice": models.NICE, "realnvp": models.RealNVP, "glow": models.Glow,
                "maf": models.MAF, "iaf": models.IAF, "nanoflow": models.NanoFlow}
    assert {name: FAMILIES[name].load_builder() for name in expected} == expected
    # Named by import path: the table is read without importing TensorFlow.
    assert {name: FAMILIES[name].builder for name in expected} == {
        name: f"tfp_flows.models:{builder.__name__}" for name, builder in expected.items()}
    for name, family in FAMILIES.items():
        assert family.name == name and get_family(name) is family
        assert family.description and family.reference
        for kind in family.data_kinds:
            assert set(family.options[kind]) <= set(SETTINGS)
    assert get_family("glow").data_kinds == ("image",)
    assert get_family("maf").data_kinds == get_family("iaf").data_kinds == ("vector",)


def test_every_setting_has_a_command_line_option():
    assert set(arguments._MODEL_OPTIONS) == set(SETTINGS)


def test_settings_become_builder_keywords():
    image = {"num_levels": 2, "hidden_channels": 4, "num_blocks": 1, "num_layers": 99}
    realnvp = get_family("realnvp").build([4, 4, 1], image, seed=1)
    assert isinstance(realnvp, models.RealNVP) and realnvp.num_scales == 2  # --num-levels
    assert realnvp.hidden_channels == 4 and realnvp.seed == 1  # num_layers: not on images
    glow = get_family("glow").build([4, 4, 1], {**image, "num_steps": 1, "coupling": None})
    assert glow.num_levels == 2 and glow.num_steps == 1
    assert glow.coupling == "affine"  # None: the builder's default
    assert glow.conditioner == "glow"
    assert isinstance(glow.conditioners[0], nets.GlowConvNet)
    glow = get_family("glow").build([4, 4, 1], {**image, "num_steps": 1, "num_blocks": 2,
                                                "conditioner": "resnet"})
    assert glow.conditioner == "resnet" and glow.num_blocks == 2
    assert isinstance(glow.conditioners[0], nets.ConvResNet)
    nice = get_family("nice").build([2], {"num_layers": 2, "hidden_units": [8]})
    assert nice.num_layers == 2 and nice.hidden_units == [8]


def test_building_on_data_a_family_does_not_model_is_an_error():
    with pytest.raises(ValueError, match=r"glow models image data \(event shapes \[H, W, C\]\), "
                                         r"got event_shape \[2\]"):
        get_family("glow").build([2], {})
    with pytest.raises(ValueError, match=r"maf models vector data .* got event_shape \[4, 4\]"):
        get_family("maf").build([4, 4], {})


def test_family_fields_are_read_only():
    family = get_family("realnvp")
    with pytest.raises(AttributeError):
        family.name = "other"
    with pytest.raises(TypeError):
        family.options["vector"] = ()
    with pytest.raises(TypeError):
        FAMILIES["other"] = family


# -- checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, error, message", [
    ({"name": 3}, TypeError, "name must be a str, got 3 of type int"),
    ({"name": "Tiny Flow"}, ValueError, "name must be lower case letters, digits and "
                                        "underscores, starting with a letter; got 'Tiny Flow'"),
    ({"builder": 3}, TypeError, "builder of family 'tiny' must be callable or an import path "
                                "'package.module:name', got 3"),
    ({"builder": "RealNVP"}, ValueError, "builder of family 'tiny' must be callable or an "
                                         "import path 'package.module:name', got 'RealNVP'"),
    ({"builder": "tfp_flows.models:"}, ValueError, "got 'tfp_flows.models:'"),
    ({"description": None}, TypeError, "description must be a str, got None"),
    ({"data_kinds": "vector"}, TypeError, "data_kinds must be a tuple of data kinds"),
    ({"data_kinds": ("vector", "audio")}, ValueError,
     "a data kind of data_kinds must be one of 'vector', 'image'; got 'audio'"),
    ({"data_kinds": ()}, ValueError, "data_kinds must be non-empty without repeats"),
    ({"options": {"image": ("num_layers",)}}, ValueError,
     "a data kind of options of family 'tiny' must be one of 'vector'; got 'image'"),
    ({"options": {"vector": ("depth",)}}, ValueError,
     "options['vector'] of family 'tiny' must be one of 'num_layers', 'hidden_units'"),
    ({"options": [("vector", "num_layers")]}, TypeError,
     "options of family 'tiny' must be a mapping"),
    ({"arguments": {"hidden_units": "units"}}, ValueError,
     "a setting of arguments of family 'tiny' must be one of 'num_layers'; got 'hidden_units'"),
    ({"arguments": {"num_layers": 3}}, TypeError, "arguments['num_layers'] of family 'tiny' "
                                                  "must be a str"),
    ({"defaults": {"vector": {"num_steps": 2}}}, ValueError,
     "a setting of defaults['vector'] of family 'tiny' must be one of 'num_layers'; got "
     "'num_steps'"),
])
def test_bad_families_are_rejected(changes, error, message):
    with pytest.raises(error) as raised:
        _family(**changes)
    assert message in str(raised.value)


def test_options_and_defaults_are_normalised():
    family = _family(data_kinds=["vector", "image"], options={"vector": "num_layers"},
                     defaults={"vector": {"num_layers": 2}})
    assert family.data_kinds == ("vector", "image")
    assert dict(family.options) == {"vector": ("num_layers",), "image": ()}
    assert dict(family.defaults["vector"]) == {"num_layers": 2}
    assert dict(family.defaults["image"]) == {}
    assert family.settings() == family.settings("vector") == ("num_layers",)


def test_a_builder_named_by_import_path_is_imported_to_build():
    family = _family(builder="tests_registry_builders:tiny_flow")
    assert family.builder == "tests_registry_builders:tiny_flow"  # not imported yet
    with pytest.raises(ModuleNotFoundError, match="tests_registry_builders"):
        family.build([2], {"num_layers": 2})
    nested = _family(builder="tfp_flows.models:RealNVP.from_config")
    assert nested.load_builder() == models.RealNVP.from_config
    with pytest.raises(TypeError, match=r"builder of family 'tiny', "
                                        r"'tfp_flows.models:FAMILIES', is not callable"):
        _family(builder="tfp_flows.models:FAMILIES").load_builder()
    flow = _family(builder=f"{__name__}:_tiny").build([2], {"num_layers": 2})
    assert isinstance(flow, models.RealNVP) and flow.num_layers == 2


def test_register_and_get_check_their_arguments():
    with pytest.raises(TypeError, match="family must be a Family, got 'tiny' of type str"):
        register_family("tiny")
    with pytest.raises(ValueError, match="a family named 'realnvp' is registered already; "
                                         "pass replace=True"):
        register_family(_family(name="realnvp"))
    with pytest.raises(TypeError, match="name must be a str, got None"):
        get_family(None)
    with pytest.raises(ValueError,
                       match="unknown family 'tiny'; registered: denseflow, flowpp, glow, iaf"):
        get_family("tiny")


def test_temporary_family_restores_the_table():
    before = dict(FAMILIES)
    with temporary_family(_family()) as family:
        assert get_family("tiny") is family and list(FAMILIES)[-1] == "tiny"
    assert dict(FAMILIES) == before
    replacement = _family(name="realnvp")
    with pytest.raises(RuntimeError), temporary_family(replacement):
        assert get_family("realnvp") is replacement
        raise RuntimeError  # the table is restored on errors too
    assert dict(FAMILIES) == before and get_family("realnvp").load_builder() is models.RealNVP


def test_register_family_adds_until_removed():
    try:
        assert register_family(_family()) is get_family("tiny")
        replacement = _family(description="another tiny RealNVP")
        assert register_family(replacement, replace=True) is get_family("tiny")
    finally:
        _registry._FAMILIES.pop("tiny", None)
    assert "tiny" not in FAMILIES


# -- the documentation -------------------------------------------------------------------------


def test_docs_list_exactly_the_registered_families():
    with open(FAMILIES_PAGE) as file:
        page = file.read()
    match = re.search(re.escape(TABLE_START) + r"\n(.*?)\n" + re.escape(TABLE_END), page,
                      re.DOTALL)
    assert match, f"{FAMILIES_PAGE} lacks the markers {TABLE_START!r} ... {TABLE_END!r}"
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", match.group(1), re.MULTILINE)
    assert listed == list(FAMILIES), "the docs list other families than the registry"
    assert match.group(1) == families_table(), (
        "docs/families/index.md is out of date; its table should read:\n" + families_table())


if __name__ == "__main__":
    print(families_table())
