"""The Recurrent Highway Network cell (Zilly, Srivastava, Koutník & Schmidhuber, ICML 2017,
arXiv 1607.03474): the step rule, its derivative and the parameter layout, in one place.

One time step passes the state through L highway micro-layers ("recurrence depth"); the
input enters only the first:

    s⁰ = s_{t−1}
    a_l = W_hh[l] (sˡ·m) + b_hh[l] + [l = 0]·W_ih x_t                   (G·H)
    h_l = tanh(a_l[:H]),  t_l = σ(a_l[H:2H]),  c_l = σ(a_l[2H:3H])
    sˡ⁺¹ = h_l·t_l + sˡ·(1 − t_l)    (coupled)   or   h_l·t_l + sˡ·c_l   (free carry)
    s_t = sᴸ

with ``m`` an optional state-dropout mask (it touches only what enters the matmul). The
derivatives that the fused backend's backward applies, for an incoming ∂s' = ∂sˡ⁺¹:

    ∂a_H = ∂s'·t·(1 − h²)
    ∂a_T = ∂s'·(h − s)·t·(1 − t)      (coupled)   or   ∂s'·h·t·(1 − t)   (free carry)
    ∂a_C = ∂s'·s·c·(1 − c)                          (free carry)
    ∂s   = ∂s'·(1 − t) (or ·c)  +  (∂a W_hh[l])·m

Parameters (I input, H hidden, L depth, G = 2 coupled or 3 free carry), row blocks
``[H | T | C]`` of every stacked weight and bias (:func:`gate_blocks`, :func:`split_gates`):
    weight_ih  (G·H, I)     the input projection, micro-layer 0 only
    weight_hh  (L, G·H, H)  micro-layer l's recurrent weights
    bias_hh    (L, G·H)     micro-layer l's biases; the T block starts at ``gate_bias``

Every backend applies this rule from here: :func:`rhn_micro_step` (autograd, the reference
backend and :class:`RHNCell`), :class:`Pointwise` (in place, forward and derivative, the
fused backend); :mod:`rhn.nn.rhn_triton` is the same two functions as GPU kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rhn.nn._parametrized import initialising
from rhn.nn._validate import (
    DtypeError,
    check_bool,
    check_finite,
    check_init_range,
    check_positive_int,
    check_tensor_like,
    check_tensor_on,
)
from rhn.nn.functional import highway_combine


def gate_blocks(coupled: bool) -> int:
    """G: rows per hidden unit in the stacked weights (H, T, and C when not coupled)."""
    return 2 if coupled else 3


def split_gates(
    a: torch.Tensor, hidden: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Views of the H, T and (free carry only) C blocks of ``(..., G·H)`` rows."""
    blocks = a.shape[-1] // hidden
    a_h, a_t = a[..., :hidden], a[..., hidden : 2 * hidden]
    return a_h, a_t, (a[..., 2 * hidden :] if blocks == 3 else None)


def reset_rhn_parameters(
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: torch.Tensor | None,
    *,
    gate_bias: float,
    init_range: float | None = None,
) -> None:
    """Initialise one RHN layer's parameters in place.

    Weights and H's bias: uniform ±``init_range``, by default ±1/√H (torch's convention for
    recurrent layers, biases included; the RHN paper's language models use ±0.04, and its
    code's H bias, a ``get_variable`` without initialiser, takes the model scope's uniform
    one). Biases ``gate_bias`` (negative: carry) for T, and −``gate_bias`` for a free carry
    gate C, so C ≈ 1 − T at initialisation — as the official code's
    ``linear(..., bias_start)``.
    """
    hidden = weight_hh.shape[-1]
    bound = init_range if init_range is not None else 1.0 / math.sqrt(hidden)
    with torch.no_grad():
        weight_ih.uniform_(-bound, bound)
        weight_hh.uniform_(-bound, bound)
        if bias_hh is not None:
            b_h, b_t, b_c = split_gates(bias_hh, hidden)
            b_h.uniform_(-bound, bound)
            b_t.fill_(gate_bias)
            if b_c is not None:
                b_c.fill_(-gate_bias)


def rhn_micro_step(
    a: torch.Tensor, s: torch.Tensor, coupled: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-layer from its pre-activation (the module docstring's rule), with autograd.

    Args:
        a: ``(N, G·H)`` pre-activation ``W_hh[l] s + b_hh[l] (+ W_ih x at l = 0)``.
        s: ``(N, H)`` state entering the micro-layer (undropped: dropout only
            touches what enters the matmuls).
    Returns:
        ``(s', t)``: the new state ``(N, H)`` and the transform gate ``(N, H)``.
    """
    a_h, a_t, a_c = split_gates(a, s.shape[-1])
    h, t = torch.tanh(a_h), torch.sigmoid(a_t)
    c = None if coupled else torch.sigmoid(a_c)
    return highway_combine(h, t, s, c), t


class Pointwise:
    """The micro-step rule and its derivative in place, in torch ops (any device); the fused
    backend's gate math, written into preallocated buffers with ``out=``.

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
        if a.dtype != s.dtype:  # widen a bfloat16/float16 GEMM result: gate math in float32
            a = a.to(s.dtype)
        a_h, a_t, a_c = split_gates(a, s.shape[1])
        torch.tanh(a_h, out=h)
        torch.sigmoid(a_t, out=t)
        if c is None:
            torch.lerp(s, h, t, out=s_next)
        else:
            torch.sigmoid(a_c, out=c)
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
        if g is not None:
            ds = ds + g if mask is None else torch.addcmul(ds, g, mask)
        da_h, da_t, da_c = split_gates(da, s.shape[1])
        u = ds * t  # ∂h = ∂s'·t
        torch.addcmul(u, u, h * h, value=-1.0, out=da_h)  # ∂a_H = ∂h·(1 − h²)
        dt = torch.addcmul(u, u, t, value=-1.0)  # ∂s'·t·(1 − t)
        if c is None:
            torch.mul(dt, h - s, out=da_t)  # × (h − s)
            torch.sub(ds, u, out=carry)  # ∂s'·(1 − t)
        else:
            torch.mul(dt, h, out=da_t)
            sc = ds * s
            torch.mul(torch.addcmul(sc, sc, c, value=-1.0), c, out=da_c)
            torch.mul(ds, c, out=carry)


TORCH_POINTWISE = Pointwise()


class RHNCell(nn.Module):
    """One RHN time step with ``depth`` stacked highway micro-layers.

    Args:
        input_size: I, features of ``x``.
        hidden_size: H, size of the state.
        depth: L ≥ 1, the recurrence depth (micro-layers per time step).
        gate_bias: initial bias of every transform gate T (negative: carry).
        coupled: C = 1 − T (True) or a free carry gate C.
        bias: learn ``bias_hh``.
        init_range: the weights start uniform in ±init_range (None: ±1/√H).

    Shapes: ``forward(x (N, I) or (I,), s (N, H) or (H,) or None) → s' (N, H) or (H,)``.
    ``input_mask`` ``(N, I)`` and ``state_mask`` ``(N, H)`` are optional dropout masks the
    caller draws once per sequence (variational dropout); the state mask multiplies what
    enters every micro-layer's matmul, never the carried state itself.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        depth: int,
        *,
        gate_bias: float = -2.0,
        coupled: bool = True,
        bias: bool = True,
        init_range: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.depth = check_positive_int("depth", depth)
        self.gate_bias = check_finite("gate_bias", gate_bias)
        self.init_range = check_init_range(init_range)
        self.coupled = check_bool("coupled", coupled)
        rows = gate_blocks(self.coupled) * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(depth, rows, hidden_size, **factory))
        has_bias = check_bool("bias", bias)
        self.bias_hh = nn.Parameter(torch.empty(depth, rows, **factory)) if has_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with initialising(self, ("weight_ih", "weight_hh", "bias_hh")) as tensors:
            reset_rhn_parameters(*tensors, gate_bias=self.gate_bias, init_range=self.init_range)

    def no_weight_decay(self) -> set[str]:
        """``bias_hh`` is ``(L, G·H)``: name it, as rank alone can't tell it from a weight."""
        return set() if self.bias_hh is None else {"bias_hh"}

    def forward(
        self,
        x: torch.Tensor,
        s: torch.Tensor | None = None,
        *,
        input_mask: torch.Tensor | None = None,
        state_mask: torch.Tensor | None = None,
        return_gates: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The next state; with ``return_gates`` also T of each micro-layer ``(N, L, H)``."""
        check_tensor_like("x", x, self.weight_ih)
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"RHNCell expected x of shape (N, {self.input_size}) or ({self.input_size},), "
                f"got {tuple(x.shape)}"
            )
        unbatched = x.dim() == 1
        if unbatched:
            x = x.unsqueeze(0)
        expected = (x.shape[0], self.hidden_size)
        if s is None:
            s = x.new_zeros(expected, dtype=self.weight_hh.dtype)
        else:
            check_tensor_like("s", s, self.weight_hh)
            if unbatched and s.dim() == 1:
                s = s.unsqueeze(0)
            if tuple(s.shape) != expected:
                raise ValueError(
                    f"RHNCell expected state s of shape {expected} for this x, got {tuple(s.shape)}"
                )
        _check_mask("input_mask", input_mask, tuple(x.shape), self.weight_ih)
        _check_mask("state_mask", state_mask, expected, self.weight_hh)
        return_gates = check_bool("return_gates", return_gates)
        if input_mask is not None:
            x = x * input_mask
        x_proj = F.linear(x, self.weight_ih)  # enters micro-layer 0 only
        biases = (None,) * self.depth if self.bias_hh is None else self.bias_hh.unbind(0)
        gates = []
        for layer, (weight, bias) in enumerate(zip(self.weight_hh.unbind(0), biases, strict=True)):
            a = F.linear(s if state_mask is None else s * state_mask, weight, bias)
            s, t = rhn_micro_step(a + x_proj if layer == 0 else a, s, self.coupled)
            gates.append(t)
        if unbatched:
            s = s.squeeze(0)
        if not return_gates:
            return s
        gate_tensor = torch.stack(gates, dim=-2)  # (N, L, H)
        return s, gate_tensor.squeeze(0) if unbatched else gate_tensor

    def extra_repr(self) -> str:
        init = f", init_range={self.init_range}" if self.init_range is not None else ""
        return (
            f"{self.input_size}, {self.hidden_size}, depth={self.depth}, "
            f"gate_bias={self.gate_bias}, coupled={self.coupled}, bias={self.bias_hh is not None}"
            f"{init}"
        )


def _check_mask(
    name: str, mask: torch.Tensor | None, shape: tuple[int, ...], param: torch.Tensor
) -> None:
    """A dropout mask must be a tensor on ``param``'s device that broadcasts to ``shape``
    (the tensor it scales) without growing it, and must not promote the product past the
    parameters' dtype (a bool or float16 mask on float32 weights is fine; float64 is not,
    outside autocast)."""
    if mask is None:
        return
    check_tensor_on(name, mask, param)
    promoted = torch.promote_types(mask.dtype, param.dtype)
    if promoted != param.dtype and not torch.is_autocast_enabled(param.device.type):
        raise DtypeError(
            f"{name} has dtype {mask.dtype} but the parameters have dtype {param.dtype}; "
            f"the product would be {promoted} (cast the mask to match)"
        )
    try:
        fits = torch.broadcast_shapes(tuple(mask.shape), shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"RHNCell expected {name} of a shape that broadcasts to {shape}, got "
            f"{tuple(mask.shape)}"
        )
