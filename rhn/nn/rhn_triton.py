"""Triton kernels for the gate math of one RHN micro-step (forward and backward).

Each replaces the 4–9 separate torch ops of :class:`rhn.nn.rhn_cell.Pointwise` (the rule
and its derivative, written out in that module's docstring) with one
kernel launch — the variational dropout mask included (forward: the masked state the next
GEMM reads; backward: the GEMM's gradient through the mask) — so on a GPU each micro-step
is one cuBLAS GEMM (bias added in it) plus one fused kernel.
The kernels read ``a`` as ``(N, G·H)`` rows and everything else as contiguous ``(N, H)``.
A length-masked step (packed sequences: only the first n rows of the batch are running)
passes the row prefixes ``[:n]`` of those buffers, which are contiguous too, so the same
kernels serve it with ``numel = n·H``; the carried rows are never touched.
The arithmetic is done in the state's dtype (float32, or float64): a bfloat16/float16
pre-activation ``a`` and GEMM gradient ``g`` are widened on load, and the GEMM's next input
and ``da`` narrowed on store, so the mixed-precision casts cost no launches either.

Tested on CPU with ``TRITON_INTERPRET=1`` (set before this module is imported).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rhn.nn.rhn_cell import Pointwise

BLOCK = 1024


@triton.jit
def _tanh(x):
    # tanh(x) = 2σ(2x) − 1: saturates cleanly at ±1 for large |x|.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _positions(numel, HIDDEN: tl.constexpr, BLOCKS: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    """This program's offsets into the (N, H) tensors, their mask, and the matching offsets
    of the H block in the (N, BLOCKS·H) pre-activation rows."""
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    row = offs // HIDDEN
    return offs, offs < numel, row * (BLOCKS * HIDDEN) + (offs - row * HIDDEN)


@triton.jit
def _forward_kernel(
    a_ptr, s_ptr, h_ptr, t_ptr, c_ptr, out_ptr, drop_ptr, out_in_ptr, numel,
    HIDDEN: tl.constexpr, BLOCKS: tl.constexpr, COUPLED: tl.constexpr, DROPOUT: tl.constexpr,
    WRITE_INPUT: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):  # fmt: skip
    offs, mask, base = _positions(numel, HIDDEN, BLOCKS, BLOCK_SIZE)
    acc = s_ptr.dtype.element_ty  # the state's dtype does the arithmetic
    h = _tanh(tl.load(a_ptr + base, mask=mask).to(acc))
    t = tl.sigmoid(tl.load(a_ptr + base + HIDDEN, mask=mask).to(acc))
    s = tl.load(s_ptr + offs, mask=mask)
    tl.store(h_ptr + offs, h, mask=mask)
    tl.store(t_ptr + offs, t, mask=mask)
    if COUPLED:
        s_next = s + t * (h - s)
    else:
        c = tl.sigmoid(tl.load(a_ptr + base + 2 * HIDDEN, mask=mask).to(acc))
        tl.store(c_ptr + offs, c, mask=mask)
        s_next = h * t + s * c
    tl.store(out_ptr + offs, s_next, mask=mask)
    if WRITE_INPUT:  # the next GEMM's input: dropped out, in the GEMM's dtype
        if DROPOUT:
            s_next = s_next * tl.load(drop_ptr + offs, mask=mask)
        tl.store(out_in_ptr + offs, s_next.to(out_in_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(
    ds_ptr, s_ptr, h_ptr, t_ptr, c_ptr, da_ptr, carry_ptr, g_ptr, drop_ptr, numel,
    HIDDEN: tl.constexpr, BLOCKS: tl.constexpr, COUPLED: tl.constexpr, DROPOUT: tl.constexpr,
    HAS_G: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):  # fmt: skip
    offs, mask, base = _positions(numel, HIDDEN, BLOCKS, BLOCK_SIZE)
    ds = tl.load(ds_ptr + offs, mask=mask)
    if HAS_G:  # ∂s' = carry part + the GEMM's gradient of its input (through the mask)
        g = tl.load(g_ptr + offs, mask=mask).to(ds.dtype)
        if DROPOUT:
            g = g * tl.load(drop_ptr + offs, mask=mask)
        ds += g
    s = tl.load(s_ptr + offs, mask=mask)
    h = tl.load(h_ptr + offs, mask=mask)
    t = tl.load(t_ptr + offs, mask=mask)
    u = ds * t
    da_type = da_ptr.dtype.element_ty
    tl.store(da_ptr + base, (u * (1.0 - h * h)).to(da_type), mask=mask)
    if COUPLED:
        tl.store(da_ptr + base + HIDDEN, (u * (1.0 - t) * (h - s)).to(da_type), mask=mask)
        tl.store(carry_ptr + offs, ds - u, mask=mask)
    else:
        c = tl.load(c_ptr + offs, mask=mask)
        tl.store(da_ptr + base + HIDDEN, (u * (1.0 - t) * h).to(da_type), mask=mask)
        tl.store(da_ptr + base + 2 * HIDDEN, (ds * s * c * (1.0 - c)).to(da_type), mask=mask)
        tl.store(carry_ptr + offs, ds * c, mask=mask)


class TritonPointwise(Pointwise):
    """:class:`Pointwise` as two Triton kernels (one per direction)."""

    def forward(
        self,
        a: torch.Tensor,
        s: torch.Tensor,
        h: torch.Tensor,
        t: torch.Tensor,
        c: torch.Tensor | None,
        s_next: torch.Tensor,
        mask: torch.Tensor | None = None,
        s_next_in: torch.Tensor | None = None,
    ) -> None:
        numel, hidden = s.numel(), s.shape[1]
        grid = (triton.cdiv(numel, BLOCK),)
        # Unused pointers get a live tensor; the constexpr flags compile their use away.
        _forward_kernel[grid](
            a, s, h, t, h if c is None else c, s_next,
            s if mask is None else mask, s if s_next_in is None else s_next_in, numel,
            HIDDEN=hidden, BLOCKS=a.shape[1] // hidden, COUPLED=c is None,
            DROPOUT=mask is not None, WRITE_INPUT=s_next_in is not None, BLOCK_SIZE=BLOCK,
        )  # fmt: skip

    def backward(
        self,
        ds: torch.Tensor,
        s: torch.Tensor,
        h: torch.Tensor,
        t: torch.Tensor,
        c: torch.Tensor | None,
        da: torch.Tensor,
        carry: torch.Tensor,
        g: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        numel, hidden = s.numel(), s.shape[1]
        grid = (triton.cdiv(numel, BLOCK),)
        _backward_kernel[grid](
            ds, s, h, t, h if c is None else c, da, carry,
            s if g is None else g, s if mask is None else mask, numel,
            HIDDEN=hidden, BLOCKS=da.shape[1] // hidden, COUPLED=c is None,
            DROPOUT=mask is not None, HAS_G=g is not None, BLOCK_SIZE=BLOCK,
        )  # fmt: skip


TRITON_POINTWISE = TritonPointwise()
