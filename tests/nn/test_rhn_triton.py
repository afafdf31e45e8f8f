"""Triton kernels of the RHN micro-step against the torch-op version (CPU: interpreter)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rhn.nn.rhn_cell import TORCH_POINTWISE
from rhn.nn.rhn_fused import rhn_recurrence_fused
from rhn.nn.rhn_reference import rhn_recurrence
from rhn.nn.rhn_schedule import StepSchedule
from tests.triton_kernels import requires_triton_kernels

triton_module = pytest.importorskip("rhn.nn.rhn_triton", reason="Triton is not installed")
TRITON = triton_module.TRITON_POINTWISE
pytestmark = requires_triton_kernels

if not torch.cuda.is_available():
    assert os.environ.get("TRITON_INTERPRET") == "1", "tests/conftest.py sets the interpreter"


def _step_tensors(coupled: bool, dtype: torch.dtype, n: int = 5, hidden: int = 7):
    g = torch.Generator().manual_seed(0)
    blocks = 2 if coupled else 3
    a = 3 * torch.randn(n, blocks * hidden, dtype=dtype, generator=g)
    s = torch.randn(n, hidden, dtype=dtype, generator=g)
    ds = torch.randn(n, hidden, dtype=dtype, generator=g)
    return a, s, ds


@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("coupled", [True, False])
def test_kernels_match_the_torch_ops(coupled: bool, dtype: torch.dtype, dropout: bool) -> None:
    a, s, ds = _step_tensors(coupled, dtype)
    mask = g = None
    if dropout:
        keep = torch.rand(s.shape, generator=torch.Generator().manual_seed(2)) < 0.7
        mask = keep.to(dtype) / 0.7
        g = torch.randn_like(s)
    results = []
    for pointwise in (TORCH_POINTWISE, TRITON):
        h, t, s_next, s_next_in = (torch.empty_like(s) for _ in range(4))
        c = None if coupled else torch.empty_like(s)
        pointwise.forward(a, s, h, t, c, s_next, mask, s_next_in)
        da, carry = torch.empty_like(a), torch.empty_like(s)
        pointwise.backward(ds, s, h, t, c, da, carry, g, mask)
        results.append([h, t, s_next, da, carry] + ([] if c is None else [c]))
        if dropout:
            results[-1].append(s_next_in)
            torch.testing.assert_close(s_next_in, s_next * mask)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for expected, got in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, **tol)


@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("coupled", [True, False])
def test_mixed_precision_kernels_match_the_torch_ops(coupled: bool, dropout: bool) -> None:
    # bfloat16 GEMM operands (a, g, the next input, da), float32 state and gates.
    a, s, ds = _step_tensors(coupled, torch.float32)
    a = a.bfloat16()
    g = torch.randn(s.shape, generator=torch.Generator().manual_seed(3)).bfloat16()
    mask = (torch.rand(s.shape, generator=torch.Generator().manual_seed(2)) < 0.7) / 0.7
    mask = mask if dropout else None
    results = []
    for pointwise in (TORCH_POINTWISE, TRITON):
        h, t, s_next = (torch.empty_like(s) for _ in range(3))
        c = None if coupled else torch.empty_like(s)
        s_next_in = torch.empty_like(s, dtype=torch.bfloat16)
        pointwise.forward(a, s, h, t, c, s_next, mask, s_next_in)
        da, carry = torch.empty_like(a), torch.empty_like(s)
        pointwise.backward(ds, s, h, t, c, da, carry, g, mask)
        results.append([h, t, s_next, carry, s_next_in, da] + ([] if c is None else [c]))
    # Both widen the bfloat16 inputs and compute in float32: float32 results agree to
    # float32 rounding; bfloat16 results within one bfloat16 step (2^-7 relative: the
    # interpreter truncates where a GPU rounds to nearest, see the sm_90 compile test).
    a_wide = a.float()
    torch.testing.assert_close(results[0][0], torch.tanh(a_wide[:, :7]), rtol=1e-6, atol=1e-6)
    for expected, got in zip(*results, strict=True):
        if got.dtype == torch.bfloat16:
            torch.testing.assert_close(got.float(), expected.float(), rtol=8e-3, atol=1e-5)
        else:
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("coupled", [True, False])
def test_recurrence_with_triton_kernels_matches_the_reference(coupled: bool) -> None:
    g = torch.Generator().manual_seed(1)
    rows = (2 if coupled else 3) * 4
    x = torch.randn(5, 3, rows, dtype=torch.float64, generator=g, requires_grad=True)
    s0 = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = (0.5 * torch.randn(3, rows, 4, dtype=torch.float64, generator=g)).requires_grad_()
    b = torch.randn(3, rows, dtype=torch.float64, generator=g).requires_grad_()
    mask = torch.tensor([[2.0, 0.0, 2.0, 2.0]] * 3, dtype=torch.float64)
    ref = rhn_recurrence(
        x, s0, w.transpose(1, 2).unbind(0), b.unbind(0), coupled=coupled, state_mask=mask
    )
    got = rhn_recurrence_fused(x, s0, w, b, coupled=coupled, state_mask=mask, pointwise=TRITON)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-12, atol=1e-12)
    expected = torch.autograd.grad(ref[0].sum() + ref[1].pow(2).sum(), (x, s0, w, b))
    grads = torch.autograd.grad(got[0].sum() + got[1].pow(2).sum(), (x, s0, w, b))
    for e, g_ in zip(expected, grads, strict=True):
        torch.testing.assert_close(g_, e, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(
    importlib.util.find_spec("triton.backends.nvidia") is None,
    reason="this Triton has no NVIDIA backend to compile with",
)
def test_kernels_compile_for_an_h100() -> None:
    # Outside the interpreter (a subprocess): every variant must build for sm_90.
    script = Path(__file__).with_name("triton_aot.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    variants = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(variants) == 2 * 4 * 2 * 2  # kernels × precisions × carry × dropout
    for v in variants:
        ptx = v["ptx"]
        # Results bound for bf16/fp16 GEMM operands are narrowed in the kernel, and only then.
        assert ("cvt.rn.bf16.f32" in ptx) == (v["compute"] == "bf16"), v["kernel"]
        assert ("cvt.rn.f16.f32" in ptx) == (v["compute"] == "fp16"), v["kernel"]

    def loads(kernel: str, **flags) -> int:
        (match,) = [
            v for v in variants
            if v["kernel"] == kernel and v["state"] == v["compute"] == "fp32"
            and all(v[k] == f for k, f in flags.items())
        ]  # fmt: skip
        return match["ptx"].count("ld.global")

    # The constexpr flags compile unused operands away: no mask load without dropout,
    # no carry gate for the coupled form.
    assert loads("_forward_kernel", COUPLED=True, DROPOUT=False) < loads(
        "_forward_kernel", COUPLED=True, DROPOUT=True
    )
    assert loads("_backward_kernel", COUPLED=True, DROPOUT=True) < loads(
        "_backward_kernel", COUPLED=False, DROPOUT=True
    )


def test_column_major_gradients_and_mask_reach_the_kernels_row_major() -> None:
    # The kernels index flat (N, H) arrays; autograd may hand over a transposed layout.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 8, dtype=torch.float64, generator=g, requires_grad=True)
    s0 = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = (0.5 * torch.randn(2, 8, 4, dtype=torch.float64, generator=g)).requires_grad_()
    mask = (torch.tensor([[2.0, 0.0, 2.0]] * 4, dtype=torch.float64)).t()  # strides (1, 3)
    weights = torch.randn(4, 3, dtype=torch.float64, generator=g).t()  # grad_last layout
    ref = rhn_recurrence(x, s0, w.transpose(1, 2).unbind(0), None, coupled=True, state_mask=mask)
    got = rhn_recurrence_fused(x, s0, w, None, coupled=True, state_mask=mask, pointwise=TRITON)
    expected = torch.autograd.grad(ref[0].sum() + (ref[1] * weights).sum(), (x, s0, w))
    grads = torch.autograd.grad(got[0].sum() + (got[1] * weights).sum(), (x, s0, w))
    for e, g_ in zip(expected, grads, strict=True):
        torch.testing.assert_close(g_, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("coupled", [True, False])
def test_length_masked_steps_with_triton_kernels_match_the_reference(
    coupled: bool, reverse: bool
) -> None:
    """Packed sequences: each step updates a row prefix; the kernels get the prefix views."""
    schedule = StepSchedule((4, 3, 3, 1), reverse=reverse)
    g = torch.Generator().manual_seed(4)
    rows = (2 if coupled else 3) * 5
    x = torch.randn(schedule.rows, rows, dtype=torch.float64, generator=g, requires_grad=True)
    s0 = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = (0.5 * torch.randn(2, rows, 5, dtype=torch.float64, generator=g)).requires_grad_()
    b = torch.randn(2, rows, dtype=torch.float64, generator=g).requires_grad_()
    mask = (torch.rand(4, 5, generator=g) < 0.6).double() / 0.6
    ref = rhn_recurrence(
        x, s0, w.transpose(1, 2).unbind(0), b.unbind(0), coupled=coupled, state_mask=mask,
        schedule=schedule,
    )  # fmt: skip
    got = rhn_recurrence_fused(
        x, s0, w, b, coupled=coupled, state_mask=mask, pointwise=TRITON, schedule=schedule
    )
    for e, g_ in zip(ref[:2], got, strict=True):
        torch.testing.assert_close(g_, e, rtol=1e-12, atol=1e-12)
    expected = torch.autograd.grad(ref[0].sum() + ref[1].pow(2).sum(), (x, s0, w, b))
    grads = torch.autograd.grad(got[0].sum() + got[1].pow(2).sum(), (x, s0, w, b))
    for e, g_ in zip(expected, grads, strict=True):
        torch.testing.assert_close(g_, e, rtol=1e-12, atol=1e-12)
