"""Bidirectional RHN, laid out as nn.LSTM lays out its bidirectional layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rhn
from tests.nn.rhn_reference import naive_rhn

F64 = torch.float64


def test_parameters_are_named_as_nn_lstm_names_them() -> None:
    model = rhn.RHN(5, 4, 2, bidirectional=True, depth=3)
    lstm = nn.LSTM(5, 4, 2, bidirectional=True)
    # The LSTM's names less bias_ih (the RHN folds the input bias into bias_hh's micro-layer 0).
    lstm_shared = {n for n, _ in lstm.named_parameters() if not n.startswith("bias_ih")}
    assert {n for n, _ in model.named_parameters()} == lstm_shared
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["weight_ih_l0_reverse"] == (8, 5)
    assert shapes["weight_ih_l1"] == shapes["weight_ih_l1_reverse"] == (8, 8)  # reads 2H
    assert shapes["weight_hh_l1_reverse"] == (3, 8, 4)
    assert shapes["bias_hh_l0_reverse"] == (3, 8)
    assert torch.all(model.bias_hh_l1_reverse[:, 4:] == -2.0)


def test_reverse_direction_is_a_one_direction_rhn_on_the_flipped_input() -> None:
    model = rhn.RHN(3, 5, 2, bidirectional=True, depth=2, dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    hx = torch.randn(4, 2, 5, dtype=F64)
    out, h_n = model(x, hx)
    assert out.shape == (6, 2, 10) and h_n.shape == (4, 2, 5)

    layer_in = x
    for k in range(2):
        halves = []
        for d, suffix in enumerate(("", "_reverse")):
            single = rhn.RHN(layer_in.shape[-1], 5, depth=2, dtype=F64)
            names = ("weight_ih", "weight_hh", "bias_hh")
            single.load_state_dict({f"{n}_l0": getattr(model, f"{n}_l{k}{suffix}") for n in names})
            source = layer_in if d == 0 else layer_in.flip(0)
            half, h_half = single(source, hx[2 * k + d].unsqueeze(0))
            halves.append(half if d == 0 else half.flip(0))
            # h_n index 2k is layer k's forward direction, 2k + 1 its reverse.
            torch.testing.assert_close(h_n[2 * k + d], h_half[0], rtol=1e-12, atol=1e-12)
        layer_in = torch.cat(halves, dim=-1)  # forward half first
    torch.testing.assert_close(out, layer_in, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_matches_the_naive_reference_with_gates(backend: str) -> None:
    model = rhn.RHN(4, 3, 2, bidirectional=True, depth=3, coupled=False, backend="reference",
                    dtype=F64)  # fmt: skip
    x = torch.randn(5, 2, 4, dtype=F64)
    hx = torch.randn(4, 2, 3, dtype=F64)
    ref_out, ref_h, ref_gates = naive_rhn(model, x, hx)
    out, h_n, gates = model(x, hx, return_gates=True)
    assert gates.shape == (4, 5, 2, 3, 3)  # (K·D, T, N, L, H), indexed like h_n
    torch.testing.assert_close(gates, ref_gates, rtol=1e-12, atol=1e-12)
    model.backend = backend
    out, h_n = model(x, hx)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, ref_h, rtol=1e-12, atol=1e-12)


def test_gradcheck_bidirectional() -> None:
    model = rhn.RHN(2, 3, 2, bidirectional=True, depth=2, dtype=F64)
    x = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    hx = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, hx: torch.cat([t.flatten() for t in model(x, hx)]),
                                    (x, hx))  # fmt: skip


def test_batch_first_and_unbatched_layouts() -> None:
    model = rhn.RHN(3, 4, 2, batch_first=True, bidirectional=True, depth=2)
    x = torch.randn(2, 6, 3)
    out, h_n = model(x)
    assert out.shape == (2, 6, 8) and h_n.shape == (4, 2, 4)
    out_u, h_u = model(x[1])
    torch.testing.assert_close(out_u, out[1])
    torch.testing.assert_close(h_u, h_n[:, 1])
    with pytest.raises(ValueError, match=r"hx of shape \(4, 2, 4\) \(num_layers \* num_dir"):
        model(x, torch.zeros(2, 2, 4))
