"""Kernels that cannot answer wrong: a :class:`Pointwise` checked against the torch ops.

The Triton step kernels are compiled per variant — direction (forward, backward), the state's
and the GEMM's dtypes, coupled or free carry, with or without a dropout mask, with or without
the fused GEMM input / gradient, and the hidden size — on GPUs we may never have tried; and
Triton compiles a separate binary for each pattern of its runtime arguments' divisibility by
16 (the element count, each pointer's address). So on the first call of each variant in a
process — that pattern included — :class:`SelfCheckingPointwise` runs it once on a small case
with the call's own dtypes, hidden size, device and divisibility pattern (at most 16 rows of
random values, each tensor placed at an address as aligned as the call's) beside the torch
ops and compares every output. A variant that fails to compile, raises, or
disagrees beyond its dtype's tolerance is reported by one warning and served by the torch
ops from then on; the others keep the kernels. The check costs one extra small launch per
variant per process.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from rhn.nn.rhn_cell import TORCH_POINTWISE, Pointwise

ALIGN = 16  # bytes: Triton specialises pointers and integers on divisibility by 16
# (rtol, atol) by the dtype an output is stored in: the gate math runs in the state's dtype,
# bfloat16 / float16 outputs are that result rounded once. The atol is relative to the
# output's scale (see kernel_error): on a GPU Triton's sigmoid and tanh use the approximate
# ex2 and a 2-ulp division, and a gradient such as u·(1 − h²) of a saturated h is the
# difference of two terms of u's size, so its error is a few ulp of the largest terms, not
# of the (near-zero) result. A wrong kernel misses by the outputs' own size.
TOLERANCE = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-3, 2e-3),
}


def _dtype(x: torch.Tensor | None) -> torch.dtype | None:
    return None if x is None else x.dtype


def check_rows(rows: int) -> int:
    """Rows for the check of a call with ``rows`` rows: at most 16, and ≡ ``rows`` mod 16, so
    that its element count (rows × H) is divisible by 16 exactly when the call's is."""
    return rows if rows <= ALIGN else (rows % ALIGN or ALIGN)


def _aligned(x: torch.Tensor | None) -> bool | None:
    return None if x is None else x.data_ptr() % ALIGN == 0


def _empty(x: torch.Tensor | None, rows: int) -> Any:
    """An empty (rows, ·) tensor like ``x`` whose address is 16-byte aligned exactly when
    ``x``'s is (fresh allocations are; one element in is not)."""
    if x is None:
        return None
    shape = (rows, *x.shape[1:])
    numel = rows * math.prod(x.shape[1:])
    skip = 0 if _aligned(x) else 1
    flat = torch.empty(numel + skip, dtype=x.dtype, device=x.device)
    return flat[skip:].view(shape)


def _like(x: torch.Tensor | None, rows: int, g: torch.Generator, scale: float = 1.0) -> Any:
    """A random (rows, ·) tensor like ``x``, as aligned as ``x`` (None stays None)."""
    out = _empty(x, rows)
    if out is not None:
        values = torch.randn(out.shape, generator=g, dtype=torch.float64) * scale
        out.copy_(values)
    return out


def _mask_like(mask: torch.Tensor | None, rows: int, g: torch.Generator) -> Any:
    """A random dropout mask like ``mask`` (and as aligned): each entry 0 or 2 (keep 1/2,
    scaled)."""
    out = _like(mask, rows, g)
    return None if out is None else out.copy_((out > 0) * 2)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _flat(tensors: tuple) -> bool:
    """Whether every tensor is contiguous: the kernels index (N, H) memory flat, so a strided
    view (a transpose, a column slice) is the torch ops' — which no check case could catch,
    being built contiguous."""
    return all(x is None or x.is_contiguous() for x in tensors)


class KernelCheckError(AssertionError):
    """A kernel's outputs disagree with the torch ops."""


def kernel_error(ours: torch.Tensor, expected: torch.Tensor) -> tuple[float, bool]:
    """(largest absolute difference, whether ``ours`` is within its dtype's TOLERANCE of
    ``expected``): a kernel's output against the torch ops'. Every element must satisfy
    |ours − expected| ≤ atol · max(1, max |expected|) + rtol · |expected|; a NaN never
    passes."""
    rtol, atol = TOLERANCE.get(ours.dtype, (1e-5, 1e-5))
    a, b = ours.double(), expected.double()
    if not a.numel():
        return 0.0, True
    worst = (a - b).abs().max().item()
    scale = max(1.0, b.abs().max().item())
    return worst, torch.allclose(a, b, rtol=rtol, atol=atol * scale, equal_nan=False)


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

    @staticmethod
    def _variant(direction: str, s, gemm, c, mask, fused_io, tensors: tuple) -> tuple:
        """What selects a compiled kernel: the direction, device, dtypes, hidden size, carry,
        dropout, fused GEMM input / gradient, and the divisible-by-16 pattern."""
        return (
            direction, s.device.type, s.dtype, gemm.dtype, s.shape[1], c is None,
            mask is not None, _dtype(fused_io), s.numel() % ALIGN == 0,
            tuple(map(_aligned, tensors)),
        )  # fmt: skip

    def forward(self, a, s, h, t, c, s_next, mask=None, s_next_in=None) -> None:
        tensors = (a, s, h, t, c, s_next, mask, s_next_in)
        if not _flat(tensors):
            return self.reference.forward(*tensors)
        variant = self._variant("forward", s, a, c, mask, s_next_in, tensors)
        chosen = self._choose(variant, lambda: self._check_forward(*tensors))
        chosen.forward(*tensors)

    def backward(self, ds, s, h, t, c, da, carry, g=None, mask=None) -> None:
        tensors = (ds, s, h, t, c, da, carry, g, mask)
        if not _flat(tensors):
            return self.reference.backward(*tensors)
        variant = self._variant("backward", s, da, c, mask, g, tensors)
        chosen = self._choose(variant, lambda: self._check_backward(*tensors))
        chosen.backward(*tensors)

    # -- the small cases -----------------------------------------------------------------

    def _check_forward(self, a, s, h, t, c, s_next, mask, s_next_in) -> None:
        gen = torch.Generator().manual_seed(0)
        rows = check_rows(s.shape[0])
        a_, s_ = _like(a, rows, gen, 3.0), _like(s, rows, gen)
        mask_ = _mask_like(mask, rows, gen)
        results = []
        for impl in (self.kernels, self.reference):
            out = [_empty(x, rows) for x in (h, t, c, s_next, s_next_in)]
            h_, t_, c_, s_next_, s_in_ = out
            impl.forward(a_, s_, h_, t_, c_, s_next_, mask_, s_in_)
            results.append(out)
        names = ("h", "t", "c", "s_next", "s_next_in")
        for name, ours, expected in zip(names, *results, strict=True):
            if ours is not None:
                _compare(name, ours, expected)

    def _check_backward(self, ds, s, h, t, c, da, carry, g, mask) -> None:
        gen = torch.Generator().manual_seed(1)
        rows = check_rows(s.shape[0])
        s_, ds_ = _like(s, rows, gen), _like(ds, rows, gen)
        h_, t_ = _like(h, rows, gen).tanh_(), _like(t, rows, gen).sigmoid_()
        c_ = None if c is None else _like(c, rows, gen).sigmoid_()
        g_ = _like(g, rows, gen)
        mask_ = _mask_like(mask, rows, gen)
        results = []
        for impl in (self.kernels, self.reference):
            da_, carry_ = _empty(da, rows), _empty(carry, rows)
            impl.backward(ds_, s_, h_, t_, c_, da_, carry_, g_, mask_)
            results.append([da_, carry_])
        for name, ours, expected in zip(("da", "carry"), *results, strict=True):
            _compare(name, ours, expected)
