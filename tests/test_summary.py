"""`model.summary()` works for every registered family and lists its conditioner layers."""

import keras
import pytest

from tfp_flows.models import FAMILIES

# The command-line settings of a tiny flow of any family, and an event of each data kind.
TINY_SETTINGS = {"num_layers": 2, "hidden_units": [8], "num_levels": 2, "num_steps": 1,
                 "hidden_channels": 4, "num_blocks": 1, "coupling": "affine"}
EVENT_SHAPES = {"vector": [4], "image": [4, 4, 2]}


@pytest.mark.parametrize("name, kind", [
    pytest.param(name, kind, id=f"{name}-{kind}")
    for name, family in FAMILIES.items() for kind in family.data_kinds])
def test_summary_lists_the_conditioners(name, kind):
    flow = FAMILIES[name].build(EVENT_SHAPES[kind], TINY_SETTINGS, seed=0)
    lines = []
    flow.summary(line_length=200, print_fn=lambda line, *args, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert f"Total params: {flow.count_params():,}" in text
    layers = [layer for layer in flow.layers if layer.trainable_weights]
    assert layers
    for layer in layers:
        assert isinstance(layer, keras.layers.Layer) and layer.name in text
