"""The kernel self-check: a variant that disagrees or fails to build is replaced by the torch
ops after one warning, the others keep their kernels (CPU: Triton's interpreter)."""

from __future__ import annotations

import warnings

import pytest
import torch

from rhn.nn.checked_pointwise import SelfCheckingPointwise, check_rows, kernel_error
from rhn.nn.rhn_cell import TORCH_POINTWISE, Pointwise
from rhn.nn.rhn_fused import default_pointwise, rhn_recurrence_fused
from rhn.nn.rhn_reference import rhn_recurrence
from tests.triton_kernels import requires_triton_kernels

triton_module = pytest.importorskip("rhn.nn.rhn_triton", reason="Triton is not installed")
triton = pytest.importorskip("triton")
TRITON = triton_module.TRITON_POINTWISE


class OffByALittle(Pointwise):
    """Right backward, a forward whose new state is 1e-3 off: wrong, and plausibly so."""

    def forward(self, a, s, h, t, c, s_next, mask=None, s_next_in=None) -> None:
        TORCH_POINTWISE.forward(a, s, h, t, c, s_next, mask, s_next_in)
        s_next.add_(1e-3)


@triton.jit
def _broken_kernel(x_ptr):
    tl_undefined.store(x_ptr, 1.0)  # noqa: F821  (the build error under test)


class FailsToBuild(Pointwise):
    """A backward whose Triton kernel cannot be built."""

    def backward(self, ds, s, h, t, c, da, carry, g=None, mask=None) -> None:
        _broken_kernel[(1,)](ds)


class WrongWhenSpecialised(Pointwise):
    """Right except where Triton would have compiled another binary: a new state 1e-2 off
    when the element count is divisible by 16, or when the state's address is not."""

    def __init__(self, when: str) -> None:
        self.when = when

    def forward(self, a, s, h, t, c, s_next, mask=None, s_next_in=None) -> None:
        TORCH_POINTWISE.forward(a, s, h, t, c, s_next, mask, s_next_in)
        divisible, aligned = s.numel() % 16 == 0, s.data_ptr() % 16 == 0
        if (self.when == "divisible" and divisible) or (self.when == "unaligned" and not aligned):
            s_next.add_(1e-2)


def recurrence_case(coupled: bool = True, dropout: bool = True):
    g = torch.Generator().manual_seed(1)
    rows = (2 if coupled else 3) * 6
    x = torch.randn(5, 3, rows, generator=g, requires_grad=True)
    s0 = torch.randn(3, 6, generator=g, requires_grad=True)
    w = (0.5 * torch.randn(2, rows, 6, generator=g)).requires_grad_()
    b = torch.randn(2, rows, generator=g).requires_grad_()
    mask = (torch.rand(3, 6, generator=g) < 0.7).float() / 0.7 if dropout else None
    return x, s0, w, b, mask


def run(pointwise: Pointwise | None, coupled: bool = True, dropout: bool = True):
    x, s0, w, b, mask = recurrence_case(coupled, dropout)
    if pointwise is None:
        out = rhn_recurrence(
            x, s0, w.transpose(1, 2).unbind(0), b.unbind(0), coupled=coupled, state_mask=mask
        )
    else:
        out = rhn_recurrence_fused(
            x, s0, w, b, coupled=coupled, state_mask=mask, pointwise=pointwise
        )
    grads = torch.autograd.grad(out[0].sum() + out[1].pow(2).sum(), (x, s0, w, b))
    return [out[0], out[1], *grads]


def assert_matches_reference(got: list, coupled: bool = True, dropout: bool = True) -> None:
    for ours, expected in zip(got, run(None, coupled, dropout), strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@requires_triton_kernels
@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("coupled", [True, False])
def test_real_kernels_pass_their_checks_and_are_used(coupled: bool, dropout: bool) -> None:
    checked = SelfCheckingPointwise(TRITON)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = run(checked, coupled, dropout)
    assert_matches_reference(got, coupled, dropout)
    assert set(checked.verdicts.values()) == {True} and len(checked.verdicts) >= 2
    assert {v[0] for v in checked.verdicts} == {"forward", "backward"}


@requires_triton_kernels
def test_mixed_precision_variants_pass_their_checks() -> None:
    checked = SelfCheckingPointwise(TRITON)
    s = torch.randn(4, 5)
    a = torch.randn(4, 10).bfloat16()
    h, t, s_next = (torch.empty_like(s) for _ in range(3))
    s_next_in = torch.empty_like(s, dtype=torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checked.forward(a, s, h, t, None, s_next, None, s_next_in)
        da, carry = torch.empty_like(a), torch.empty_like(s)
        checked.backward(torch.randn_like(s), s, h, t, None, da, carry, s_next_in, None)
    assert list(checked.verdicts.values()) == [True, True]


def test_a_kernel_that_disagrees_warns_once_and_the_torch_ops_answer() -> None:
    checked = SelfCheckingPointwise(OffByALittle())
    with pytest.warns(
        RuntimeWarning,
        match=r"OffByALittle kernel for \('forward'.*failed its "
        r"check.*s_next differs from the torch ops by up to 0\.001",
    ):
        got = run(checked)
    assert_matches_reference(got)  # the wrong forward was never used
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per variant: no second warning
        assert_matches_reference(run(checked))
    forward = [v for v, ok in checked.verdicts.items() if v[0] == "forward"]
    assert forward and not any(checked.verdicts[v] for v in forward)
    backward = [v for v, ok in checked.verdicts.items() if v[0] == "backward"]
    assert backward and all(checked.verdicts[v] for v in backward)  # kept: it is right


def test_a_kernel_that_fails_to_build_warns_and_falls_back() -> None:
    checked = SelfCheckingPointwise(FailsToBuild())
    with pytest.warns(RuntimeWarning, match=r"FailsToBuild kernel for \('backward'.*failed"):
        got = run(checked)
    assert_matches_reference(got)


def test_the_default_on_cuda_is_the_checked_triton_kernel() -> None:
    from rhn.nn import rhn_fused

    checked = rhn_fused._checked_triton()
    assert isinstance(checked, SelfCheckingPointwise) and checked.kernels is TRITON
    assert rhn_fused._checked_triton() is checked  # one per process: each variant once
    assert default_pointwise(torch.device("cpu")) is TORCH_POINTWISE
    assert default_pointwise(torch.device("cuda")) is checked  # a device needs no GPU


def test_kernel_error_is_the_largest_difference_within_the_dtypes_tolerance() -> None:
    expected = torch.tensor([1.0, 2.0, -3.0])
    # float32: rtol 1e-5, atol 1e-5 × the largest |expected| (3), so at 2 an error of 1e-5
    # is within 2e-5 + 3e-5, one of 1e-4 is not
    worst, passed = kernel_error(expected + torch.tensor([0.0, 1e-5, 0.0]), expected)
    assert worst == pytest.approx(1e-5, rel=1e-2) and passed
    worst, passed = kernel_error(expected + torch.tensor([0.0, 1e-4, 0.0]), expected)
    assert worst == pytest.approx(1e-4, rel=1e-2) and not passed
    # A near-zero element among large ones (a saturated tanh's gradient u·(1 − h²) beside
    # unsaturated ones of size u = 8) may be off by a few ulp of 8 (~1e-6): within 8e-5,
    # while an error of 1e-3 there, far below 8 but a wrong kernel's, is not
    grads = torch.tensor([8.0, 1e-4, -6.0])
    assert kernel_error(grads + torch.tensor([0.0, 2e-6, 0.0]), grads)[1]
    assert not kernel_error(grads + torch.tensor([0.0, 1e-3, 0.0]), grads)[1]
    # and below a scale of 1 the atol is absolute: 1e-4 off at 0.5 fails
    assert not kernel_error(torch.tensor([0.5001]), torch.tensor([0.5]))[1]
    # bfloat16 is stored with 8 bits of mantissa: 2.0 + 1/64 (one ulp at 2) is within 2e-2
    assert kernel_error(torch.tensor([1.0, 2.0 + 1 / 64, -3.0]).bfloat16(), expected)[1]
    assert not kernel_error(torch.tensor([1.0, float("nan"), -3.0]), expected)[1]
    assert kernel_error(torch.empty(0), torch.empty(0)) == (0.0, True)


def test_check_rows_keep_the_element_counts_divisibility_by_16() -> None:
    assert [check_rows(n) for n in (1, 3, 16, 17, 20, 32, 33, 640)] == [1, 3, 16, 1, 4, 16, 1, 16]
    for rows in range(1, 70):
        for hidden in range(1, 40):
            assert ((check_rows(rows) * hidden) % 16 == 0) == ((rows * hidden) % 16 == 0)


def _forward_step(pointwise: Pointwise, rows: int, offset: int = 0) -> torch.Tensor:
    """One forward micro-step of ``pointwise`` with the state ``offset`` elements into its
    buffer (1: an address not 16-byte aligned); the new state."""
    g = torch.Generator().manual_seed(2)
    hidden = 8
    a = torch.randn(rows, 2 * hidden, generator=g)
    s = torch.randn(rows * hidden + offset, generator=g)[offset:].view(rows, hidden)
    h, t, s_next = (torch.empty_like(s) for _ in range(3))
    pointwise.forward(a, s, h, t, None, s_next)
    return s_next


@pytest.mark.parametrize(("when", "rows", "offset"), [("divisible", 32, 0), ("unaligned", 20, 1)])
def test_a_kernel_wrong_only_in_another_specialisation_is_caught(
    when: str, rows: int, offset: int
) -> None:
    # 32 rows × 8 are divisible by 16 where 3 check rows × 8 would not be; a state one
    # element into its buffer is unaligned where a fresh check tensor would be aligned.
    checked = SelfCheckingPointwise(WrongWhenSpecialised(when))
    expected = _forward_step(TORCH_POINTWISE, rows, offset)
    with pytest.warns(RuntimeWarning, match="s_next differs from the torch ops by up to 0.01"):
        got = _forward_step(checked, rows, offset)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the torch ops answered
    # The other specialisation is its own variant, checked on its own, and keeps the kernel.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _forward_step(checked, 3 if when == "divisible" else rows)  # 24 elements; aligned
    assert sorted(checked.verdicts.values()) == [False, True]


@requires_triton_kernels
def test_a_strided_view_is_given_to_the_torch_ops_not_to_a_kernel_checked_on_flat_memory() -> None:
    # A transposed state: the kernels read (N, H) memory flat, the check case is contiguous.
    checked = SelfCheckingPointwise(TRITON)
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 4, generator=g).t()  # (4, 8), column-major
    a = torch.randn(4, 16, generator=g)
    results = []
    for impl in (checked, TORCH_POINTWISE):
        h, t, s_next = (torch.empty(4, 8) for _ in range(3))
        impl.forward(a, s, h, t, None, s_next, None, None)
        results.append(s_next)
    torch.testing.assert_close(*results)
    assert checked.verdicts == {}  # no kernel ran, so none was checked
