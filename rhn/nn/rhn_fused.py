"""A hand-written backward for the RHN recurrence: fewer ops per micro-step, and every
recurrent weight gradient in one batched matmul instead of one per time step.

Same equations as :func:`rhn.nn.functional.rhn_recurrence` (Zilly et al. 2017). Shape
legend: T steps, N batch, L depth, H hidden, G = 2 (coupled) or 3 (free carry), K = T·L.

Forward keeps, for every micro-step k = t·L + l, the state entering it ``S[k]`` and its
gate values ``h_k``, ``t_k`` (, ``c_k``) in preallocated buffers written with ``out=``.
Backward walks the steps in reverse with the derivatives of

    s' = h·t + s·(1 − t)                      (coupled)
    s' = h·t + s·c                            (free carry)

    ∂a_H = ∂s'·t·(1 − h²),  ∂a_T = ∂s'·(h − s)·t·(1 − t)   (coupled; free carry: ∂s'·h·t·(1 − t),
    ∂a_C = ∂s'·s·c·(1 − c)),  ∂s = ∂s'·(1 − t) (or ·c) + (∂a W_l)·m

and collects ∂W_l = Σ_t ∂a_{t,l}ᵀ (s_{t,l}·m) for all l in one ``bmm`` at the end.

Precision: the GEMMs run in the *compute* dtype — the autocast dtype inside
``torch.autocast``, else the weights' dtype — and the state, the gates and the pointwise
math in float32 when that is bfloat16/float16 (the compute dtype otherwise). Keeping the
state in float32 matters: with transform gates near σ(−2..−4) each micro-step changes s by
a few percent, below bfloat16's resolution of 2⁻⁸ after many steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch.autograd.function import once_differentiable

from rhn.nn.rhn_gemm import RecurrentMatmul, recurrent_matmul
from rhn.nn.rhn_graph import GraphedStepLoops, GraphRunner

# Builds the recurrent matmul ``addend + x·weightᵀ`` for a weight and a batch size.
MatmulFactory = Callable[[torch.Tensor, int], RecurrentMatmul]


def gemm_reads_a_copy(
    state_mask: torch.Tensor | None, compute: torch.dtype, state: torch.dtype
) -> bool:
    """Whether the recurrent GEMM reads a copy of the state (dropped out, or in the
    compute dtype) that the pointwise step writes, rather than the state itself; then
    backward also takes the GEMM's gradient ``g`` of that copy through the pointwise step."""
    return state_mask is not None or compute != state


class Pointwise:
    """The gate math of one micro-step, in torch ops (any device). Writes into ``out=``.

    ``forward(a (N, G·H), s, h, t, c, s_next, mask, s_next_in)``: h = tanh(a_H),
    t = σ(a_T), c = σ(a_C), s_next = h·t + s·(1 − t) (or + s·c), all (N, H) and written in
    place; given ``s_next_in`` also the next GEMM's input ``s_next·mask`` (or ``s_next``
    without a dropout mask) in that buffer's dtype, the compute dtype.
    ``backward(ds, s, h, t, c, da (N, G·H), carry, g, mask)``: the pre-activation gradient
    ``da`` and the part of ∂s that flows along the carry, written in place. The incoming
    ∂s' is ``ds``, or ``ds + g·mask`` (``ds + g``) when the recurrent GEMM's gradient ``g``
    of the GEMM's input is passed (so the mask and the dtype cast cost no separate op).
    """

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
        hidden = s.shape[1]
        if a.dtype != s.dtype:  # widen a bfloat16/float16 GEMM result: gate math in float32
            a = a.to(s.dtype)
        torch.tanh(a[:, :hidden], out=h)
        torch.sigmoid(a[:, hidden : 2 * hidden], out=t)
        if c is None:
            torch.lerp(s, h, t, out=s_next)
        else:
            torch.sigmoid(a[:, 2 * hidden :], out=c)
            torch.addcmul(h * t, s, c, out=s_next)
        if s_next_in is not None:
            if mask is None:
                s_next_in.copy_(s_next)
            else:
                torch.mul(s_next, mask, out=s_next_in)

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
        hidden = s.shape[1]
        if g is not None:
            ds = ds + g if mask is None else torch.addcmul(ds, g, mask)
        u = ds * t  # ∂h = ∂s'·t
        torch.addcmul(u, u, h * h, value=-1.0, out=da[:, :hidden])  # ∂a_H = ∂h·(1 − h²)
        dt = torch.addcmul(u, u, t, value=-1.0)  # ∂s'·t·(1 − t)
        if c is None:
            torch.mul(dt, h - s, out=da[:, hidden : 2 * hidden])  # × (h − s)
            torch.sub(ds, u, out=carry)  # ∂s'·(1 − t)
        else:
            torch.mul(dt, h, out=da[:, hidden : 2 * hidden])
            sc = ds * s
            torch.mul(torch.addcmul(sc, sc, c, value=-1.0), c, out=da[:, 2 * hidden :])
            torch.mul(ds, c, out=carry)


TORCH_POINTWISE = Pointwise()


@dataclass(frozen=True)
class StepLoops:
    """The forward and backward step loops of one recurrence configuration.

    Pure functions of their tensor arguments: each allocates what it returns, so
    :mod:`rhn.nn.rhn_graph` can capture either loop in a CUDA graph and replay it.
    ``forward`` returns the buffers backward needs, ``(states (K+1, N, H), h (K, N, H),
    t, c or None)``; ``backward`` the gradients ``(x_proj, s0, weight_hh, bias_hh or None)``.
    """

    coupled: bool
    has_bias: bool
    pointwise: Pointwise
    matmul: MatmulFactory

    def forward(
        self,
        x_proj: torch.Tensor,
        s0: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_hh: torch.Tensor | None,
        state_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        steps, batch, rows = x_proj.shape
        depth, hidden = weight_hh.shape[0], s0.shape[1]
        k_total = steps * depth
        # x_proj and the weights come in the compute dtype, s0 and the mask in the state's.
        state_buffer = {"device": s0.device, "dtype": s0.dtype}
        states = torch.empty(k_total + 1, batch, hidden, **state_buffer)
        h_buf = torch.empty(k_total, batch, hidden, **state_buffer)
        t_buf = torch.empty(k_total, batch, hidden, **state_buffer)
        c_buf = None if self.coupled else torch.empty(k_total, batch, hidden, **state_buffer)
        a = x_proj.new_empty(batch, rows)
        matmuls = [self.matmul(w, batch) for w in weight_hh.unbind(0)]
        biases = None if bias_hh is None else bias_hh.unbind(0)
        states[0].copy_(s0)
        # The GEMM reads the state itself, or a copy — dropped out, in the compute dtype —
        # that the pointwise step writes beside the new state.
        separate_input = gemm_reads_a_copy(state_mask, weight_hh.dtype, s0.dtype)
        s_in = states[0]
        if separate_input:
            s_in = (s0 if state_mask is None else s0 * state_mask).to(weight_hh.dtype)
        # Per-step views made once (unbind) rather than by indexing inside the loop.
        state_k, h_k, t_k = states.unbind(0), h_buf.unbind(0), t_buf.unbind(0)
        c_k = (None,) * k_total if c_buf is None else c_buf.unbind(0)
        k = 0
        for x_t in x_proj.unbind(0):
            for layer, layer_matmul in enumerate(matmuls):
                s = state_k[k]
                if not separate_input:
                    s_in = s
                addend = x_t if layer == 0 else None if biases is None else biases[layer]
                a = layer_matmul(s_in, addend, out=a)
                self.pointwise.forward(
                    a, s, h_k[k], t_k[k], c_k[k], state_k[k + 1], state_mask,
                    s_in if separate_input else None,
                )  # fmt: skip
                k += 1
        return states, h_buf, t_buf, c_buf

    def backward(
        self,
        grad_out: torch.Tensor,
        grad_last: torch.Tensor,
        states: torch.Tensor,
        h_buf: torch.Tensor,
        t_buf: torch.Tensor,
        c_buf: torch.Tensor | None,
        weight_hh: torch.Tensor,
        state_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        depth, rows, hidden = weight_hh.shape
        steps = grad_out.shape[0]
        batch = states.shape[1]
        compute = weight_hh.dtype
        d_a = grad_out.new_empty(steps * depth, batch, rows, dtype=compute)
        # ∂s = ∂a·W_l: the matmul of Wᵀ.
        matmuls = [self.matmul(w.t(), batch) for w in weight_hh.unbind(0)]
        # ∂s entering each micro-step = ds, plus g (·mask) when the GEMM read a separate
        # input: g, the GEMM's gradient of that input, is folded in by the next pointwise
        # step (which also brings it from the compute dtype to the state's).
        # Row-major: the Triton kernels index ds, carry and the mask as flat (N, H) arrays.
        ds = grad_last.clone(memory_format=torch.contiguous_format)
        carry = torch.empty_like(ds)
        g = None
        if gemm_reads_a_copy(state_mask, compute, states.dtype):
            g = ds.new_zeros(batch, hidden, dtype=compute)
        state_k, h_k, t_k, d_a_k = states.unbind(0), h_buf.unbind(0), t_buf.unbind(0), d_a.unbind(0)
        c_k = (None,) * len(h_k) if c_buf is None else c_buf.unbind(0)
        for step in reversed(range(steps)):
            ds += grad_out[step]
            for layer in reversed(range(depth)):
                k = step * depth + layer
                self.pointwise.backward(
                    ds, state_k[k], h_k[k], t_k[k], c_k[k], d_a_k[k], carry, g, state_mask
                )
                if g is None:
                    ds = matmuls[layer](d_a_k[k], carry)
                else:
                    g = matmuls[layer](d_a_k[k], out=g)
                    ds, carry = carry, ds
        if g is not None:
            ds = ds + g if state_mask is None else torch.addcmul(ds, g, state_mask)
        per_layer = rearrange(d_a, "(t l) n g -> l (t n) g", l=depth)
        inputs = rearrange(states[:-1], "(t l) n h -> l (t n) h", l=depth)
        if state_mask is not None:
            inputs = inputs * state_mask.repeat(steps, 1)
        inputs = inputs.to(compute)
        grad_weight = torch.bmm(per_layer.transpose(1, 2), inputs)
        grad_bias = None
        if self.has_bias:
            grad_bias = per_layer.sum(1)
            grad_bias[0] = 0  # micro-layer 0's bias reaches the loss through x_proj
        grad_x = rearrange(d_a, "(t l) n g -> t l n g", l=depth)[:, 0]
        return grad_x, ds, grad_weight, grad_bias


class _RHNRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x_proj: torch.Tensor,
        s0: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_hh: torch.Tensor | None,
        state_mask: torch.Tensor | None,
        loops: StepLoops,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states, h_buf, t_buf, c_buf = loops.forward(x_proj, s0, weight_hh, bias_hh, state_mask)
        ctx.loops = loops
        ctx.save_for_backward(states, h_buf, t_buf, c_buf, weight_hh, state_mask)
        depth = weight_hh.shape[0]
        outputs = rearrange(states[1:], "(t l) n h -> t l n h", l=depth)[:, -1]
        # A copy even at depth 1, where the view would be contiguous: the saved states
        # must not change if the caller edits the outputs in place.
        return outputs.clone(memory_format=torch.contiguous_format), states[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor, grad_last: torch.Tensor) -> tuple:
        # Unused outputs get zero gradients (autograd materialises them).
        grads = ctx.loops.backward(grad_out, grad_last, *ctx.saved_tensors)
        return *grads, None, None  # no gradient for the mask or the loops


def rhn_recurrence_fused(
    x_proj: torch.Tensor,
    s: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: torch.Tensor | None,
    *,
    coupled: bool,
    state_mask: torch.Tensor | None = None,
    pointwise: Pointwise | None = None,
    matmul: MatmulFactory = recurrent_matmul,
    graph_runner: Callable[[], GraphRunner] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rhn_recurrence` without gates, with the hand-written backward.

    The GEMMs run in :func:`compute_dtype`; bfloat16/float16 GEMMs keep the state and
    the gate math in float32 (module docstring). Outputs and the final state come back in
    ``s``'s dtype, as from :func:`rhn_recurrence`.

    Args:
        x_proj: ``(T, N, G·H)``, ``W_ih x_t + b_hh[0]``.
        s: ``(N, H)`` initial state.
        weight_hh: ``(L, G·H, H)`` the stacked recurrent weights (not transposed).
        bias_hh: ``(L, G·H)`` or None; row 0 is ignored here (it is in ``x_proj``).
        state_mask: ``(N, H)`` scaled dropout mask or None.
        pointwise: the gate math: torch ops (default off CUDA), or the Triton kernels of
            :mod:`rhn.nn.rhn_triton` (default on CUDA when Triton is installed).
        matmul: builds the per-micro-layer matmul (:mod:`rhn.nn.rhn_gemm`); the default
            picks oneDNN's packed weights for large float32 GEMMs on CPU, else ``addmm``.
        graph_runner: replay both step loops from graphs (:mod:`rhn.nn.rhn_graph`):
            ``CudaGraphRunner`` on CUDA; None runs them eagerly.
    Returns:
        ``(outputs (T, N, H), final state (N, H))``.
    """
    if pointwise is None:
        pointwise = default_pointwise(x_proj.device)
    compute = compute_dtype(weight_hh)
    state = torch.float32 if compute in LOW_PRECISION else compute
    loops = StepLoops(coupled, bias_hh is not None, pointwise, matmul)
    if graph_runner is not None:
        loops = GraphedStepLoops(loops, graph_runner)
    # Differentiable casts (no-ops when the dtypes already agree): autograd brings each
    # gradient back to its input's dtype.
    with torch.autocast(x_proj.device.type, enabled=False):
        outputs, last = _RHNRecurrence.apply(
            x_proj.to(compute),
            s.to(state),
            weight_hh.to(compute),
            None if bias_hh is None else bias_hh.to(compute),
            None if state_mask is None else state_mask.to(state).contiguous(),
            loops,
        )
    return outputs.to(s.dtype), last.to(s.dtype)


LOW_PRECISION = (torch.bfloat16, torch.float16)


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The GEMMs' dtype: autocast's where it is on for the weight's device (autocast
    leaves float64 alone, and so does this), else the weight's own."""
    device_type = weight.device.type
    if torch.is_autocast_enabled(device_type) and weight.dtype != torch.float64:
        return torch.get_autocast_dtype(device_type)
    return weight.dtype


def default_pointwise(device: torch.device) -> Pointwise:
    """Triton kernels on CUDA when Triton is importable, torch ops otherwise."""
    if device.type == "cuda":
        try:
            from rhn.nn.rhn_triton import TRITON_POINTWISE
        except ImportError:
            return TORCH_POINTWISE
        return TRITON_POINTWISE
    return TORCH_POINTWISE


FLOATING = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def fused_supports(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether the fused path can run: floating tensors of one dtype, or any floating
    dtypes under autocast (which decides the GEMMs' dtype). No double backward."""
    first = tensors[0]
    if not all(t.dtype in FLOATING for t in tensors):
        return False
    return torch.is_autocast_enabled(first.device.type) or all(
        t.dtype == first.dtype for t in tensors
    )
