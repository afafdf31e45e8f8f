"""Lesioning: a closed gate is pure carry, and closing an already closed gate changes nothing."""

from __future__ import annotations

import pytest
import torch

from rhn.analysis.lesion import closed_transform_gate, lesion_errors
from rhn.models.conv_highway_net import ConvHighwayNet
from rhn.models.highway_mlp import HighwayMLP


def test_closed_gate_makes_the_layer_the_identity() -> None:
    model = HighwayMLP(8, 3, depth=4, width=5, gate_bias=0.0)
    layer = model.blocks[1]
    x = torch.randn(7, 5)
    with closed_transform_gate(layer):
        assert torch.equal(layer(x), x)
        y, t = layer(x, return_gates=True)
        assert torch.equal(y, x) and torch.equal(t, torch.zeros_like(t))
    assert not torch.equal(layer(x), x)  # the hook is gone afterwards


def test_free_carry_lesion_keeps_the_carry_gate() -> None:
    model = HighwayMLP(8, 3, depth=3, width=5, coupled=False)
    layer = model.blocks[0]
    x = torch.randn(4, 5)
    c = torch.sigmoid(x @ layer.weight[10:].T + layer.bias[10:])
    with closed_transform_gate(layer):
        assert torch.allclose(layer(x), x * c)


@pytest.mark.parametrize("conv", [False, True])
def test_lesioning_an_already_closed_layer_changes_nothing(conv: bool) -> None:
    if conv:
        model = ConvHighwayNet("mnist_conv", (1, 28, 28), 10, width=4, gate_bias=0.0)
        x = torch.randn(40, 1, 28, 28)
    else:
        model = HighwayMLP(20, 10, depth=6, width=8, gate_bias=0.0)
        x = torch.randn(40, 20)
    labels = torch.randint(0, 10, (40,))
    closed = model.highway_layers()[2]
    with torch.no_grad():  # σ(−1e4) is exactly 0 in float32: the gate is shut
        closed.bias[closed.features : 2 * closed.features].fill_(-1e4)
    model.eval()
    baseline, errors = lesion_errors(model, x, labels, batch_size=16)
    assert errors[2] == baseline
    with closed_transform_gate(closed):
        lesioned = model(x)
    assert torch.equal(lesioned, model(x))
    # an open layer's lesion does change the logits (so the test above can fail)
    with closed_transform_gate(model.highway_layers()[0]):
        assert not torch.allclose(model(x), lesioned)


@pytest.mark.parametrize("conv", [False, True])
def test_each_lesion_error_is_the_error_with_that_gate_shut_by_its_bias(conv: bool) -> None:
    import copy

    if conv:
        model = ConvHighwayNet("mnist_conv", (1, 28, 28), 10, width=4, gate_bias=0.0)
        x = torch.randn(60, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    else:
        model = HighwayMLP(20, 10, depth=6, width=8, gate_bias=0.0)
        x = torch.randn(60, 20, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        labels = model(x).argmax(-1)  # the unlesioned model is right on every example
    baseline, errors = lesion_errors(model, x, labels, batch_size=16)
    assert baseline == 0.0
    expected = []
    for i in range(len(model.highway_layers())):
        shut = copy.deepcopy(model)  # the gate closed another way: T's bias at −1e4, σ = 0
        layer = shut.highway_layers()[i]
        with torch.no_grad():
            layer.bias[layer.features : 2 * layer.features].fill_(-1e4)
            expected.append((shut(x).argmax(-1) != labels).float().mean().item())
    assert errors == pytest.approx(expected)
    assert any(e > 0 for e in expected)  # some lesion matters, so the check can fail
