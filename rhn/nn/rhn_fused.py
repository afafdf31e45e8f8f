"""A hand-written backward for the RHN recurrence: fewer ops per micro-step, and every
recurrent weight gradient in one batched matmul instead of one per time step.

Same equations as :func:`rhn.nn.rhn_reference.rhn_recurrence` (Zilly et al. 2017), the
rule and its derivative from :mod:`rhn.nn.rhn_cell`. Shape legend: T steps, N batch, P rows
of flat step-major data, L depth, H hidden, G = 2 (coupled) or 3 (free carry), K = T·L.

Forward keeps, for every micro-step k = i·L + l (i-th step run), the state entering it
``S[k]`` and its gate values ``h_k``, ``t_k`` (, ``c_k``) in preallocated buffers written
with ``out=``. Backward walks the micro-steps in reverse applying the rule's derivative
(:class:`rhn.nn.rhn_cell.Pointwise`) and collects ∂W_l = Σ_t ∂a_{t,l}ᵀ (s_{t,l}·m) for all l
in one ``bmm`` at the end.

Precision: the GEMMs run in the *compute* dtype — the autocast dtype inside
``torch.autocast``, else the weights' dtype — and the state, the gates and the pointwise
math in float32 when that is bfloat16/float16 (the compute dtype otherwise). Keeping the
state in float32 matters: with transform gates near σ(−2..−4) each micro-step changes s by
a few percent, below bfloat16's resolution of 2⁻⁸ after many steps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange

from rhn.nn.checked_pointwise import SelfCheckingPointwise
from rhn.nn.rhn_cell import TORCH_POINTWISE, Pointwise
from rhn.nn.rhn_gemm import RecurrentMatmul, recurrent_matmul
from rhn.nn.rhn_graph import GraphedStepLoops, GraphRunner
from rhn.nn.rhn_schedule import StepSchedule

# Builds the recurrent matmul ``addend + x·weightᵀ`` for a weight and a batch size.
MatmulFactory = Callable[[torch.Tensor, int], RecurrentMatmul]


def gemm_reads_a_copy(
    state_mask: torch.Tensor | None, compute: torch.dtype, state: torch.dtype
) -> bool:
    """Whether the recurrent GEMM reads a copy of the state (dropped out, or in the
    compute dtype) that the pointwise step writes, rather than the state itself; then
    backward also takes the GEMM's gradient ``g`` of that copy through the pointwise step."""
    return state_mask is not None or compute != state


@dataclass(frozen=True)
class StepLoops:
    """The forward and backward step loops of one recurrence configuration.

    Pure functions of their tensor arguments: each allocates what it returns, so
    :mod:`rhn.nn.rhn_graph` can capture either loop in a CUDA graph and replay it.
    ``forward`` returns the buffers backward needs, ``(states (K+1, N, H), h (K, N, H),
    t, c or None)``, indexed by micro-step in run order; ``backward`` the gradients
    ``(x_proj, s0, weight_hh, bias_hh or None)``. ``x_proj`` and the outputs are flat
    step-major ``(P, ·)`` data laid out by ``schedule``; rows a step does not update carry
    their state (:mod:`rhn.nn.rhn_schedule`), and their buffer rows are copies of it.
    """

    coupled: bool
    has_bias: bool
    pointwise: Pointwise
    matmul: MatmulFactory
    schedule: StepSchedule

    def forward(
        self, *inputs: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(x_proj, s0, weight_hh, bias_hh, state_mask)`` → the buffers backward needs."""
        return self._steps(*inputs, keep=True)

    def infer(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        """``forward`` (the same inputs) where no gradient is asked: the state after each
        step ``(T + 1, N, H)``, the initial one first, and nothing for backward, so memory
        grows with T, not with T·L (evaluation and sampling of long sequences)."""
        return self._steps(*inputs, keep=False)[0]

    def _steps(
        self,
        x_proj: torch.Tensor,
        s0: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_hh: torch.Tensor | None,
        state_mask: torch.Tensor | None,
        *,
        keep: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The step loop. ``keep``: every micro-step's state and gates (``forward``'s
        buffers); else each step's final state, the micro-states between in two slots
        used in turn and the gates in one."""
        batch, rows = s0.shape[0], x_proj.shape[1]
        depth, hidden = weight_hh.shape[0], s0.shape[1]
        k_total = self.schedule.steps * depth
        kept = k_total if keep else 1  # gate slots
        # x_proj and the weights come in the compute dtype, s0 and the mask in the state's.
        state_buffer = {"device": s0.device, "dtype": s0.dtype}
        states = torch.empty(
            (k_total if keep else self.schedule.steps) + 1, batch, hidden, **state_buffer
        )
        h_buf = torch.empty(kept, batch, hidden, **state_buffer)
        t_buf = torch.empty(kept, batch, hidden, **state_buffer)
        c_buf = None if self.coupled else torch.empty(kept, batch, hidden, **state_buffer)
        a = x_proj.new_empty(batch, rows)
        matmuls = [self.matmul(w, batch) for w in weight_hh.unbind(0)]
        biases = None if bias_hh is None else bias_hh.unbind(0)
        states[0].copy_(s0)
        # The GEMM reads the state itself, or a copy — dropped out, in the compute dtype —
        # that the pointwise step writes beside the new state.
        separate_input = gemm_reads_a_copy(state_mask, weight_hh.dtype, s0.dtype)
        s_in_buffer = states[0]
        if separate_input:
            s_in_buffer = (s0 if state_mask is None else s0 * state_mask).to(weight_hh.dtype)
        # Per-step views made once (unbind) rather than by indexing inside the loop.
        state_k, h_k, t_k = states.unbind(0), h_buf.unbind(0), t_buf.unbind(0)
        c_k = (None,) * kept if c_buf is None else c_buf.unbind(0)
        between = (
            () if keep or depth == 1 else torch.empty(2, batch, hidden, **state_buffer).unbind(0)
        )
        k = 0
        for step, x_t in enumerate(self.schedule.split(x_proj)):
            n = x_t.shape[0]
            # The active rows' views: the whole batch unless some sequences are not running.
            a_n, s_in, mask = a, s_in_buffer, state_mask
            if n < batch:
                a_n, s_in = a[:n], s_in_buffer[:n]
                mask = None if state_mask is None else state_mask[:n]
            for layer, layer_matmul in enumerate(matmuls):
                if keep:
                    s, s_next, h, t, c = state_k[k], state_k[k + 1], h_k[k], t_k[k], c_k[k]
                else:
                    s = state_k[step] if layer == 0 else between[(layer - 1) % 2]
                    s_next = state_k[step + 1] if layer == depth - 1 else between[layer % 2]
                    h, t, c = h_k[0], t_k[0], c_k[0]
                if n < batch:
                    s_next[n:].copy_(s[n:])  # the rows this step does not update
                    s, s_next, h, t = s[:n], s_next[:n], h[:n], t[:n]
                    c = None if c is None else c[:n]
                if not separate_input:
                    s_in = s
                addend = x_t if layer == 0 else None if biases is None else biases[layer]
                pre = layer_matmul(s_in, addend, out=a_n)
                self.pointwise.forward(
                    pre, s, h, t, c, s_next, mask, s_in if separate_input else None
                )
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
        batch = states.shape[1]
        compute = weight_hh.dtype
        k_total = self.schedule.steps * depth
        dense = self.schedule.is_dense
        # Rows a step does not update get ∂a = 0, which the weight and bias sums rely on.
        d_a = (torch.empty if dense else torch.zeros)(
            k_total, batch, rows, dtype=compute, device=grad_out.device
        )
        # ∂s = ∂a·W_l: the matmul of Wᵀ.
        matmuls = [self.matmul(w.t(), batch) for w in weight_hh.unbind(0)]
        # ∂s entering each micro-step = ds, plus g (·mask) when the GEMM read a separate
        # input: g, the GEMM's gradient of that input, is folded in by the next pointwise
        # step (which also brings it from the compute dtype to the state's).
        # Row-major: the Triton kernels index ds, carry and the mask as flat (N, H) arrays.
        g = None
        if gemm_reads_a_copy(state_mask, compute, states.dtype):
            g = grad_last.new_zeros(batch, hidden, dtype=compute)
        state_k, h_k, t_k, d_a_k = states.unbind(0), h_buf.unbind(0), t_buf.unbind(0), d_a.unbind(0)
        c_k = (None,) * k_total if c_buf is None else c_buf.unbind(0)
        # ds and carry hold the rows being updated, [:live]. Going back in time, rows join
        # (forward direction: a sequence's last step; its ∂s is still grad_last) or leave
        # (reverse direction: its first step is done; its ∂s is final, as nothing earlier
        # touches it).
        grad_s0 = grad_last.new_empty(batch, hidden) if not dense else None
        per_step = self.schedule.split(grad_out)
        live = per_step[-1].shape[0]
        ds = grad_last[:live].clone(memory_format=torch.contiguous_format)
        carry = torch.empty_like(ds)
        k = k_total
        for grad_t in reversed(per_step):
            n = grad_t.shape[0]
            if n > live:
                ds = torch.cat([ds, grad_last[live:n]])
                carry = torch.empty_like(ds)
            elif n < live:
                grad_s0[n:live] = _with_gemm_gradient(ds[n:], g, state_mask, n, live)
                ds, carry = ds[:n], carry[:n]
            live = n
            ds += grad_t
            g_n, mask = g, state_mask
            if n < batch:
                g_n = None if g is None else g[:n]
                mask = None if state_mask is None else state_mask[:n]
            for layer in reversed(range(depth)):
                k -= 1
                s, h, t, c, d_a_n = state_k[k], h_k[k], t_k[k], c_k[k], d_a_k[k]
                if n < batch:
                    s, h, t, d_a_n = s[:n], h[:n], t[:n], d_a_n[:n]
                    c = None if c is None else c[:n]
                self.pointwise.backward(ds, s, h, t, c, d_a_n, carry, g_n, mask)
                if g is None:
                    ds = matmuls[layer](d_a_n, carry)
                else:
                    product = matmuls[layer](d_a_n, out=g_n)
                    if n == batch:
                        g = g_n = product
                    elif product.data_ptr() != g_n.data_ptr():  # a matmul that ignores out=
                        g_n.copy_(product)
                    ds, carry = carry, ds
        ds = _with_gemm_gradient(ds, g, state_mask, 0, live)
        if grad_s0 is not None:
            grad_s0[:live] = ds
            ds = grad_s0
        per_layer = rearrange(d_a, "(t l) n g -> l (t n) g", l=depth)
        inputs = rearrange(states[:-1], "(t l) n h -> l (t n) h", l=depth)
        if state_mask is not None:
            inputs = inputs * state_mask.repeat(self.schedule.steps, 1)
        inputs = inputs.to(compute)
        grad_weight = torch.bmm(per_layer.transpose(1, 2), inputs)
        grad_bias = None
        if self.has_bias:
            grad_bias = per_layer.sum(1)
            grad_bias[0] = 0  # micro-layer 0's bias reaches the loss through x_proj
        grad_x = self.schedule.join_active(d_a[::depth].unbind(0))  # micro-layer 0's ∂a
        return grad_x, ds, grad_weight, grad_bias


def _with_gemm_gradient(
    ds: torch.Tensor,
    g: torch.Tensor | None,
    state_mask: torch.Tensor | None,
    start: int,
    stop: int,
) -> torch.Tensor:
    """∂s of rows ``[start:stop]`` with the last GEMM's gradient ``g`` (·mask) folded in."""
    if g is None:
        return ds
    g = g[start:stop]
    if state_mask is None:
        return ds + g
    return torch.addcmul(ds, g, state_mask[start:stop])


class _RHNRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x_proj: torch.Tensor,
        s0: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_hh: torch.Tensor | None,
        state_mask: torch.Tensor | None,
        loops: StepLoops | GraphedStepLoops,
        schedule: StepSchedule,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states, h_buf, t_buf, c_buf = loops.forward(x_proj, s0, weight_hh, bias_hh, state_mask)
        ctx.loops = loops
        # An empty output, never handed to the caller: saved, it comes back in a
        # create_graph backward joined to this node, so to every input (see _FirstOrderOnly).
        anchor = x_proj.new_empty(0)
        ctx.save_for_backward(states, h_buf, t_buf, c_buf, weight_hh, state_mask, anchor)
        # The state after each step's last micro-layer, its active rows, in time order: a
        # new tensor (join copies), so the saved states don't change if the caller edits
        # the outputs in place.
        outputs = schedule.join_active(states[weight_hh.shape[0] :: weight_hh.shape[0]].unbind(0))
        return outputs, states[-1].clone(), anchor

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor, grad_last: torch.Tensor, _grad_anchor: torch.Tensor
    ) -> tuple:
        *saved, anchor = ctx.saved_tensors
        # Unused outputs get zero gradients (autograd materialises them).
        with torch.no_grad():
            grads = ctx.loops.backward(grad_out, grad_last, *saved)
        if torch.is_grad_enabled():  # create_graph=True: a second derivative would be asked
            # The incoming gradients too: a penalty reaches layers after the RHN through
            # them (a head's weight), a path the anchor alone does not lie on.
            grads = _FirstOrderOnly.apply(
                anchor,
                grad_out,
                grad_last,
                *(None if g is None else g.detach().requires_grad_() for g in grads),
            )
        return *grads, None, None, None  # none for the mask, the loops or the schedule


class _FirstOrderOnly(torch.autograd.Function):
    """The hand-written backward's gradients, passed through unchanged; differentiating
    them (a gradient penalty: ``autograd.grad(..., create_graph=True)`` then backward)
    fails with the way out. Every one is made to require grad, so a penalty can't silently
    lose its terms through the recurrence (torch's ``once_differentiable`` lets them drop
    when no incoming gradient requires grad). Its first input, the recurrence's saved
    empty output, puts it on the path to every input of the recurrence: without it,
    ``autograd.grad(penalty, [weight])`` (not ``.backward()``) never reached this node and
    returned the penalty's gradient less its terms through the recurrence, unwarned."""

    @staticmethod
    def forward(
        ctx: Any,
        anchor: torch.Tensor,
        grad_out: torch.Tensor,
        grad_last: torch.Tensor,
        *grads: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        # Copies, not views: a caller may edit a create_graph gradient in place.
        return tuple(None if g is None else g.clone() for g in grads)

    @staticmethod
    def backward(ctx: Any, *_: torch.Tensor) -> tuple:
        raise RuntimeError(
            "the RHN's fused backward is first-order only, so its gradients can't be "
            "differentiated again (double backward, create_graph=True); build the RHN with "
            "backend='reference' for higher-order gradients"
        )


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
    schedule: StepSchedule | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rhn.nn.rhn_reference.rhn_recurrence` without gates, with the hand-written
    backward.

    The GEMMs run in :func:`compute_dtype`; bfloat16/float16 GEMMs keep the state and
    the gate math in float32 (module docstring). Outputs and the final state come back in
    ``s``'s dtype, as from :func:`rhn_recurrence`.

    Args:
        x_proj: ``W_ih x_t + b_hh[0]``: ``(T, N, G·H)`` for a padded batch run forward
            (``schedule`` None), else flat step-major ``(P, G·H)`` laid out by ``schedule``.
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
        schedule: active rows per step and the direction (:mod:`rhn.nn.rhn_schedule`).
    Returns:
        ``(outputs, final state (N, H))``, outputs ``(T, N, H)`` in the padded form, else
        flat ``(P, H)``.
    """
    padded = schedule is None
    if padded:
        schedule, x_proj = StepSchedule.of_padded(x_proj)
    if pointwise is None:
        pointwise = default_pointwise(x_proj.device)
    compute = compute_dtype(weight_hh)
    state = torch.float32 if compute in LOW_PRECISION else compute
    loops = StepLoops(coupled, bias_hh is not None, pointwise, matmul, schedule)
    if graph_runner is not None:
        loops = GraphedStepLoops(loops, graph_runner)
    # Differentiable casts (no-ops when the dtypes already agree): autograd brings each
    # gradient back to its input's dtype.
    inputs = (
        x_proj.to(compute),
        s.to(state),
        weight_hh.to(compute),
        None if bias_hh is None else bias_hh.to(compute),
        None if state_mask is None else state_mask.to(state).contiguous(),
    )
    wanted = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    with torch.autocast(x_proj.device.type, enabled=False):
        if wanted:
            outputs, last, _ = _RHNRecurrence.apply(*inputs, loops, schedule)
        else:  # evaluation, sampling: nothing kept for a backward
            states = loops.infer(*inputs)
            outputs, last = schedule.join_active(states[1:].unbind(0)), states[-1].clone()
    if padded:
        outputs = outputs.view(schedule.steps, schedule.batch, -1)
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
    """Triton kernels on CUDA when Triton is importable — each variant checked against the
    torch ops on its first use, and replaced by them if it fails
    (:class:`~rhn.nn.checked_pointwise.SelfCheckingPointwise`) — torch ops otherwise."""
    if device.type == "cuda":
        checked = _checked_triton()
        return TORCH_POINTWISE if checked is None else checked
    return TORCH_POINTWISE


@functools.cache
def _checked_triton() -> Pointwise | None:
    """One checker per process, so each variant is checked once."""
    try:
        from rhn.nn.rhn_triton import TRITON_POINTWISE
    except ImportError:
        return None
    return SelfCheckingPointwise(TRITON_POINTWISE)


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
