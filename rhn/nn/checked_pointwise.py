"""Kernels that cannot answer wrong: a :class:`Pointwise` checked against the torch ops.

The Triton step kernels are compiled per variant — direction (forward, backward), the state's
and the GEMM's dtypes, coupled or free carry, with or without a dropout mask, with or without
the fused GEMM input / gradient, and the hidden size — on GPUs we may never have tried. So on
the first call of each variant in a process, :class:`SelfCheckingPointwise` runs it once on a
small case (the call's own dtypes, hidden size and device; a few rows of random values)
beside the torch ops and compares every output. A variant that fails to compile, raises, or
disagrees beyond its dtype's tolerance is reported by one warning and served by the torch
ops from then on; the others keep the kernels. The check costs one extra small launch per
variant per process.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from rhn.nn.rhn_cell import TORCH_POINTWISE, Pointwise

CHECK_ROWS = 3
# (rtol, atol) by the dtype an output is stored in: the gate math runs in the state's dtype,
# bfloat16 / float16 outputs are that result rounded once.
TOLERANCE = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-3, 2e-3),
}


def _dtype(x: torch.Tensor | None) -> torch.dtype | None:
    return None if x is None else x.dtype


def _like(x: torch.Tensor | None, rows: int, g: torch.Generator, scale: float = 1.0) -> Any:
    """A random (rows, ·) tensor like ``x`` (None stays None)."""
    if x is None:
        return None
    shape = (rows, *x.shape[1:])
    values = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    return values.to(device=x.device, dtype=x.dtype)


def _mask_like(mask: torch.Tensor | None, rows: int, g: torch.Generator) -> Any:
    """A random dropout mask like ``mask``: each entry 0 or 2 (keep 1/2, scaled)."""
    return None if mask is None else (_like(mask, rows, g) > 0).to(mask.dtype) * 2


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class KernelCheckError(AssertionError):
    """A kernel's outputs disagree with the torch ops."""


def kernel_error(ours: torch.Tensor, expected: torch.Tensor) -> tuple[float, bool]:
    """(largest absolute difference, whether ``ours`` is within its dtype's TOLERANCE of
    ``expected``): a kernel's output against the torch ops'. A NaN never passes."""
    rtol, atol = TOLERANCE.get(ours.dtype, (1e-5, 1e-6))
    a, b = ours.double(), expected.double()
    worst = (a - b).abs().max().item() if a.numel() else 0.0
    return worst, torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False)


def _compare(name: str, ours: torch.Tensor, expected: torch.Tensor) -> None:
    worst, passed = kernel_error(ours, expected)
    if not passed:
        raise KernelCheckError(f"{name} differs from the torch ops by up to {worst:.3g}")


class SelfCheckingPointwise(Pointwise):
    """``kernels`` where each variant has passed its check, the torch ops elsewhere."""

    def __init__(self, kernels: Pointwise, reference: Pointwise = TORCH_POINTWISE) -> None:
        self.kernels = kernels
        self.reference = reference
        self.verdicts: dict[tuple, bool] = {}  # variant → passed

    def _choose(self, variant: tuple, check: Any) -> Pointwise:
        passed = self.verdicts.get(variant)
        if passed is None and _capturing():
            # No check can run inside a CUDA graph capture (it syncs to compare); the
            # graph backend's warm-up runs check every variant before it captures.
            return self.reference
        if passed is None:
            try:
                check()
                passed = True
            except Exception as err:  # a compile error, a launch failure or a wrong answer
                passed = False
                warnings.warn(
                    f"rhn: the {type(self.kernels).__name__} kernel for {variant} failed its "
                    f"check against the torch ops ({type(err).__name__}: {err}); that variant "
                    f"uses the torch ops in this process",
                    RuntimeWarning,
                    stacklevel=4,
                )
            self.verdicts[variant] = passed
        return self.kernels if passed else self.reference

    # -- the two directions ------------------------------------------------------------

    def forward(self, a, s, h, t, c, s_next, mask=None, s_next_in=None) -> None:
        variant = (
            "forward", s.device.type, s.dtype, a.dtype, s.shape[1], c is None,
            mask is not None, _dtype(s_next_in),
        )  # fmt: skip
        chosen = self._choose(variant, lambda: self._check_forward(a, s, c, mask, s_next_in))
        chosen.forward(a, s, h, t, c, s_next, mask, s_next_in)

    def backward(self, ds, s, h, t, c, da, carry, g=None, mask=None) -> None:
        variant = (
            "backward", s.device.type, s.dtype, da.dtype, s.shape[1], c is None,
            mask is not None, _dtype(g),
        )  # fmt: skip
        chosen = self._choose(variant, lambda: self._check_backward(s, c, da, g, mask))
        chosen.backward(ds, s, h, t, c, da, carry, g, mask)

    # -- the small cases -----------------------------------------------------------------

    def _check_forward(self, a, s, c, mask, s_next_in) -> None:
        gen = torch.Generator().manual_seed(0)
        rows = CHECK_ROWS
        a_, s_ = _like(a, rows, gen, 3.0), _like(s, rows, gen)
        mask_ = _mask_like(mask, rows, gen)
        results = []
        for impl in (self.kernels, self.reference):
            out = [torch.empty_like(s_) for _ in range(3)]  # h, t, s_next
            c_ = None if c is None else torch.empty_like(s_)
            s_in = None if s_next_in is None else torch.empty(
                (rows, *s_next_in.shape[1:]), dtype=s_next_in.dtype, device=s_next_in.device
            )  # fmt: skip
            impl.forward(a_, s_, out[0], out[1], c_, out[2], mask_, s_in)
            results.append([*out, c_, s_in])
        names = ("h", "t", "s_next", "c", "s_next_in")
        for name, ours, expected in zip(names, *results, strict=True):
            if ours is not None:
                _compare(name, ours, expected)

    def _check_backward(self, s, c, da, g, mask) -> None:
        gen = torch.Generator().manual_seed(1)
        rows = CHECK_ROWS
        s_, ds_ = _like(s, rows, gen), _like(s, rows, gen)
        h_ = torch.tanh(_like(s, rows, gen))
        t_ = torch.sigmoid(_like(s, rows, gen))
        c_ = None if c is None else torch.sigmoid(_like(s, rows, gen))
        g_ = _like(g, rows, gen)
        mask_ = _mask_like(mask, rows, gen)
        results = []
        for impl in (self.kernels, self.reference):
            da_ = torch.empty((rows, *da.shape[1:]), dtype=da.dtype, device=da.device)
            carry_ = torch.empty_like(s_)
            impl.backward(ds_, s_, h_, t_, c_, da_, carry_, g_, mask_)
            results.append([da_, carry_])
        for name, ours, expected in zip(("da", "carry"), *results, strict=True):
            _compare(name, ours, expected)
