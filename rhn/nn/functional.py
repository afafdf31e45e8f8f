"""Stateless highway and RHN computations shared by the layers in :mod:`rhn.nn`.

Shape legend (einops style):
    T  time steps           N  batch            H  hidden / feature size
    L  recurrence depth     G  gate blocks: 2 (H, T) coupled, 3 (H, T, C) free carry

The modules own the parameters and their initialisation; these functions hold the
equations, so the dense, convolutional and recurrent layers apply one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange


def highway_combine(
    h: torch.Tensor, t: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None = None
) -> torch.Tensor:
    """The highway rule, Srivastava et al. 2015 (arXiv 1505.00387) eqs. 2 and 3.

        y = H·T + x·C,   C = 1 − T (coupled, eq. 3)  or  a free carry gate (eq. 2)

    ``h``, ``t``, ``x`` (and ``c``) broadcast to one shape; ``t`` and ``c`` are gate
    values in (0, 1), already through their sigmoid.
    """
    if c is not None:
        return h * t + x * c
    if h.dtype == x.dtype == t.dtype:
        # x + T·(H − x) in one fused op.
        return torch.lerp(x, h, t)
    # Under autocast H and T come out in low precision while x may not; arithmetic
    # promotes where lerp would refuse mixed dtypes.
    return x + t * (h - x)


def rhn_micro_step(
    a: torch.Tensor, s: torch.Tensor, coupled: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One RHN micro-layer from its pre-activation, Zilly et al. 2017 (arXiv 1607.03474).

        h = tanh(a[:H]),  t = σ(a[H:2H]),  (c = σ(a[2H:3H]))
        s' = h·t + s·(1 − t)   (coupled)   or   h·t + s·c   (free carry)

    Args:
        a: ``(N, G·H)`` pre-activation ``W_hh[l] s + b_hh[l] (+ W_ih x at l = 0)``.
        s: ``(N, H)`` state entering the micro-layer (undropped: dropout only
            touches what enters the matmuls).
    Returns:
        ``(s', t)``: the new state ``(N, H)`` and the transform gate ``(N, H)``.
    """
    hidden = s.shape[-1]
    h = torch.tanh(a[..., :hidden])
    t = torch.sigmoid(a[..., hidden : 2 * hidden])
    c = None if coupled else torch.sigmoid(a[..., 2 * hidden :])
    return highway_combine(h, t, s, c), t


def rhn_recurrence(
    x_proj: torch.Tensor,
    s: torch.Tensor,
    weight_hh_t: Sequence[torch.Tensor],
    bias_hh: Sequence[torch.Tensor] | None,
    *,
    coupled: bool,
    state_mask: torch.Tensor | None = None,
    return_gates: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run an RHN layer over a sequence whose input projection is already done.

    For each time step the state passes through L micro-layers:

        a_l = W_hh[l] (s ⊙ m) + b_hh[l] (+ W_ih x_t at l = 0),   s ← micro_step(a_l, s)

    with one state dropout mask ``m`` shared by every step and micro-layer.

    Args:
        x_proj: ``(T, N, G·H)`` — ``W_ih x_t + b_hh[0]`` for every step, computed
            by the caller in one matmul.
        s: ``(N, H)`` initial state.
        weight_hh_t: L tensors ``(H, G·H)``: ``W_hh[l]`` transposed, unbound from the
            stacked parameter once per call, never indexed inside the loop.
        bias_hh: L tensors ``(G·H,)`` (entry 0 unused: it is folded into ``x_proj``),
            or ``None`` for a layer without biases.
        state_mask: ``(N, H)`` variational dropout mask (already scaled) or ``None``.
        return_gates: also return the transform gates of every step and micro-layer.
    Returns:
        ``(outputs (T, N, H), final state (N, H), gates (T, N, L, H) or None)``.
    """
    depth = len(weight_hh_t)
    outputs: list[torch.Tensor] = []
    gates: list[torch.Tensor] = []
    for x_t in x_proj.unbind(0):
        for layer, w_t in enumerate(weight_hh_t):
            s_in = s if state_mask is None else s * state_mask
            if layer == 0:
                a = torch.addmm(x_t, s_in, w_t)
            elif bias_hh is not None:
                a = torch.addmm(bias_hh[layer], s_in, w_t)
            else:
                a = torch.mm(s_in, w_t)
            s, t = rhn_micro_step(a, s, coupled)
            if return_gates:
                gates.append(t)
        outputs.append(s)
    gate_tensor = None
    if return_gates:
        gate_tensor = rearrange(torch.stack(gates), "(t l) n h -> t n l h", l=depth)
    return torch.stack(outputs), s, gate_tensor
