"""rhn_recurrence_scan: the recurrence as a scan over time equals the reference's loop."""

from __future__ import annotations

import pytest
import torch

from rhn.nn import rhn_scan
from rhn.nn.rhn_reference import rhn_recurrence
from rhn.nn.rhn_scan import rhn_recurrence_scan
from rhn.nn.rhn_schedule import StepSchedule

F64 = torch.float64
pytestmark = pytest.mark.skipif(
    rhn_scan.scan is None, reason="this torch has no torch._higher_order_ops.scan"
)


@pytest.mark.parametrize("coupled", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_the_scan_gives_the_reference_loops_outputs_state_and_gates(
    coupled: bool, reverse: bool, bias: bool
) -> None:
    torch.manual_seed(0)
    steps, batch, hidden, depth = 6, 3, 4, 3
    blocks = 2 if coupled else 3
    x_proj = torch.randn(steps, batch, blocks * hidden, dtype=F64)
    s0 = torch.randn(batch, hidden, dtype=F64)
    weight_hh = torch.randn(depth, blocks * hidden, hidden, dtype=F64) * 0.5
    bias_hh = torch.randn(depth, blocks * hidden, dtype=F64) if bias else None
    mask = torch.bernoulli(torch.full((batch, hidden), 0.7, dtype=F64)) / 0.7
    out, s_n, gates = rhn_recurrence_scan(
        x_proj, s0, weight_hh, bias_hh, coupled=coupled, state_mask=mask,
        return_gates=True, reverse=reverse,
    )  # fmt: skip
    schedule = StepSchedule.dense(steps, batch, reverse=reverse)
    ref_out, ref_s, ref_gates = rhn_recurrence(
        x_proj.reshape(steps * batch, -1), s0, weight_hh.transpose(1, 2).unbind(0),
        None if bias_hh is None else bias_hh.unbind(0), coupled=coupled, state_mask=mask,
        return_gates=True, schedule=schedule,
    )  # fmt: skip
    assert out.shape == (steps, batch, hidden) and gates.shape == (steps, batch, depth, hidden)
    torch.testing.assert_close(out.flatten(0, 1), ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_n, ref_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gates.flatten(0, 1), ref_gates, rtol=1e-12, atol=1e-12)
    # Each step's output is that step's state: the last one run is the final state.
    torch.testing.assert_close(out[0 if reverse else -1], s_n)


def test_one_hand_checked_step() -> None:
    # depth 1, H = 1, coupled, no state: a = x, s' = tanh(a_H)·σ(a_T) + 0.
    x_proj = torch.tensor([[[0.5, 0.0]]], dtype=F64)  # (T=1, N=1, 2H)
    out, s_n, _ = rhn_recurrence_scan(
        x_proj, torch.zeros(1, 1, dtype=F64), torch.zeros(1, 2, 1, dtype=F64), None, coupled=True
    )
    expected = torch.tanh(torch.tensor(0.5, dtype=F64)) * 0.5
    torch.testing.assert_close(s_n, expected.view(1, 1))
    torch.testing.assert_close(out, expected.view(1, 1, 1))
