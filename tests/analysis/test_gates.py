"""Gate statistics against a direct computation from the layers' own equations."""

from __future__ import annotations

import math

import pytest
import torch

from rhn.analysis.gates import gate_statistics
from rhn.models.conv_highway_net import ConvHighwayNet
from rhn.models.highway_mlp import HighwayMLP


def test_mlp_gate_statistics_by_hand() -> None:
    model = HighwayMLP(6, 3, depth=3, width=4, gate_bias=-1.0).double()
    with torch.no_grad():
        model.blocks[1].bias[4:].copy_(torch.tensor([-1.0, -2.0, -3.0, -4.0]))
    x = torch.randn(5, 6, dtype=torch.float64)
    stats = gate_statistics(model, x, example=2, batch_size=2)
    assert stats.bias.shape == (4, 2)
    assert stats.bias[:, 1].tolist() == [-1.0, -2.0, -3.0, -4.0]
    # the gates recomputed from the weights, layer by layer
    h = torch.relu(model.first(x))
    gates, outputs = [], []
    for layer in model.blocks:
        t = torch.sigmoid(h @ layer.weight[4:].T + layer.bias[4:])
        h = torch.relu(h @ layer.weight[:4].T + layer.bias[:4]) * t + h * (1 - t)
        gates.append(t)
        outputs.append(h)
    for i in range(2):
        assert torch.allclose(stats.mean_gate[:, i].double(), gates[i].mean(0), atol=1e-6)
        assert torch.allclose(stats.example_gate[:, i].double(), gates[i][2], atol=1e-6)
        assert torch.allclose(stats.example_output[:, i].double(), outputs[i][2], atol=1e-6)


def test_conv_channels_are_averaged_and_stages_padded() -> None:
    model = ConvHighwayNet("highway_a", (3, 32, 32), 10, dropout=False)
    x = torch.randn(3, 3, 32, 32)
    stats = gate_statistics(model, x)
    assert stats.mean_gate.shape == (64, 6)  # widest stage: 64 channels; 6 highway layers
    assert math.isnan(stats.mean_gate[16, 0]) and not math.isnan(stats.mean_gate[15, 0])
    _, trace = model(x, trace=True)
    assert torch.allclose(stats.mean_gate[:16, 0], trace.gates[0].mean(dim=(0, 2, 3)), atol=1e-6)
    # untrained: every gate sits near σ(−2) = 0.119
    assert stats.mean_gate[:16, 0].sub(1 / (1 + math.exp(2))).abs().max() < 0.1


@pytest.mark.parametrize("example", [2, 5, -1, True, 1.0])
def test_plain_nets_and_bad_examples_are_refused(example: object) -> None:
    with pytest.raises(ValueError, match="no highway layers"):
        gate_statistics(HighwayMLP(4, 2, depth=3, block="plain"), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"example must index one of the 2 analysed images"):
        gate_statistics(HighwayMLP(4, 2, depth=3), torch.randn(2, 4), example=example)
