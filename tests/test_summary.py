"""`model.summary()` works for every family and lists its conditioner layers."""

import pytest

from tfp_flows import models

CASES = {
    "realnvp": lambda: models.RealNVP([2], num_layers=2, hidden_units=[8]),
    "realnvp_image": lambda: models.RealNVP([4, 4, 1], num_layers=2, hidden_channels=4,
                                            num_blocks=1),
    "nice": lambda: models.NICE([2], num_layers=2, hidden_units=[8]),
    "glow": lambda: models.Glow([8, 8, 1], num_levels=2, num_steps=1, hidden_channels=8),
    "maf": lambda: models.MAF([3], num_layers=2, hidden_units=[8]),
    "iaf": lambda: models.IAF([3], num_layers=2, hidden_units=[8]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_summary_lists_the_conditioners(name):
    flow = CASES[name]()
    lines = []
    flow.summary(line_length=200, print_fn=lambda line, *args, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert f"Total params: {flow.count_params():,}" in text
    conditioners = [layer for layer in flow.layers
                    if type(layer).__name__ in ("MLP", "ResidualMLP", "ConvResNet", "MADE")]
    assert conditioners
    for layer in conditioners:
        assert layer.name in text
