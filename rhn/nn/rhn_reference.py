"""The reference RHN recurrence: the cell's rule over a sequence, differentiated by autograd.

Shape legend: T steps, N batch, P rows of flat step-major data (T·N when padded), L depth,
H hidden, G = 2 (coupled) or 3 (free carry). Layouts and step order: :mod:`rhn.nn.rhn_schedule`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from rhn.nn.rhn_cell import rhn_micro_step
from rhn.nn.rhn_schedule import StepSchedule


def rhn_recurrence(
    x_proj: torch.Tensor,
    s: torch.Tensor,
    weight_hh_t: Sequence[torch.Tensor],
    bias_hh: Sequence[torch.Tensor] | None,
    *,
    coupled: bool,
    state_mask: torch.Tensor | None = None,
    return_gates: bool = False,
    schedule: StepSchedule | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run an RHN layer over a sequence whose input projection is already done.

    For each time step (in ``schedule``'s order) the active rows of the state pass through L
    micro-layers; the other rows are carried unchanged:

        a_l = W_hh[l] (s ⊙ m) + b_hh[l] (+ W_ih x_t at l = 0),   s ← micro_step(a_l, s)

    with one state dropout mask ``m`` shared by every step and micro-layer.

    Args:
        x_proj: ``W_ih x_t + b_hh[0]`` for every step, computed by the caller in one
            matmul: ``(T, N, G·H)`` for a padded batch run forward (``schedule`` None), else
            flat step-major ``(P, G·H)`` laid out by ``schedule``.
        s: ``(N, H)`` initial state.
        weight_hh_t: L tensors ``(H, G·H)``: ``W_hh[l]`` transposed, unbound from the
            stacked parameter once per call, never indexed inside the loop.
        bias_hh: L tensors ``(G·H,)`` (entry 0 unused: it is folded into ``x_proj``),
            or ``None`` for a layer without biases.
        state_mask: ``(N, H)`` variational dropout mask (already scaled) or ``None``.
        return_gates: also return the transform gates of every step and micro-layer.
        schedule: active rows per step and the direction (:class:`StepSchedule`).
    Returns:
        ``(outputs, final state (N, H), gates or None)``: outputs ``(T, N, H)`` and gates
        ``(T, N, L, H)`` for the padded form, ``(P, H)`` and ``(P, L, H)`` for the flat one.
    """
    padded = schedule is None
    if padded:
        schedule, x_proj = StepSchedule.of_padded(x_proj)
    depth, batch = len(weight_hh_t), s.shape[0]
    outputs: list[torch.Tensor] = []
    gates: list[torch.Tensor] = []
    for x_t in schedule.split(x_proj):
        active = x_t.shape[0]
        s_active = s if active == batch else s[:active]
        mask = None if state_mask is None else state_mask[:active]
        s_active, step_gates = rhn_time_step(x_t, s_active, weight_hh_t, bias_hh, coupled, mask)
        if return_gates:
            gates.extend(step_gates)
        s = s_active if active == batch else torch.cat([s_active, s[active:]])
        outputs.append(s_active)
    out = schedule.join(outputs)
    gate_tensor = None
    if return_gates:
        per_step = [torch.stack(gates[i : i + depth], 1) for i in range(0, len(gates), depth)]
        gate_tensor = schedule.join(per_step)
    if padded:
        out = out.view(schedule.steps, batch, -1)
        if gate_tensor is not None:
            gate_tensor = rearrange(gate_tensor, "(t n) l h -> t n l h", n=batch)
    return out, s, gate_tensor


def rhn_time_step(
    x_t: torch.Tensor,
    s: torch.Tensor,
    weight_hh_t: Sequence[torch.Tensor],
    bias_hh: Sequence[torch.Tensor] | None,
    coupled: bool,
    state_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One time step through the L micro-layers: ``x_t (n, G·H)`` (the input's projection
    with micro-layer 0's bias), ``s (n, H)`` → the new state ``(n, H)`` and the L transform
    gates ``(n, H)``; arguments as :func:`rhn_recurrence`'s, for the n rows given."""
    gates = []
    for layer, w_t in enumerate(weight_hh_t):
        s_in = s if state_mask is None else s * state_mask
        if layer == 0:
            a = torch.addmm(x_t, s_in, w_t)
        elif bias_hh is not None:
            a = torch.addmm(bias_hh[layer], s_in, w_t)
        else:
            a = torch.mm(s_in, w_t)
        s, t = rhn_micro_step(a, s, coupled)
        gates.append(t)
    return s, gates
