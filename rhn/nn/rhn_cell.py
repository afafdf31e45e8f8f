"""The Recurrent Highway Network cell (Zilly, Srivastava, Koutník & Schmidhuber, ICML 2017,
arXiv 1607.03474).

One time step passes the state through L highway micro-layers ("recurrence depth"); the
input enters only the first:

    s⁰ = s_{t−1}
    a_l = W_hh[l] sˡ + b_hh[l] + [l = 0]·W_ih x_t                       (G·H)
    h_l = tanh(a_l[:H]),  t_l = σ(a_l[H:2H]),  c_l = σ(a_l[2H:3H])
    sˡ⁺¹ = h_l·t_l + sˡ·(1 − t_l)    (coupled)   or   h_l·t_l + sˡ·c_l   (free carry)
    s_t = sᴸ

Parameters (I input, H hidden, L depth, G = 2 coupled or 3 free carry):
    weight_ih  (G·H, I)     the input projection, micro-layer 0 only
    weight_hh  (L, G·H, H)  micro-layer l's recurrent weights
    bias_hh    (L, G·H)     micro-layer l's biases; the T block starts at ``gate_bias``
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rhn.nn._validate import check_finite, check_positive_int
from rhn.nn.functional import rhn_recurrence


def gate_blocks(coupled: bool) -> int:
    """G: rows per hidden unit in the stacked weights (H, T, and C when not coupled)."""
    return 2 if coupled else 3


def reset_rhn_parameters(
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: torch.Tensor | None,
    *,
    gate_bias: float,
) -> None:
    """Initialise one RHN layer's parameters in place.

    Weights: uniform ±1/√H, torch's convention for recurrent layers (the RHN paper's
    language models use ±0.04, which their model code sets). Biases: 0 for H, ``gate_bias``
    (negative: carry) for T, and −``gate_bias`` for a free carry gate C, so C ≈ 1 − T at
    initialisation.
    """
    hidden = weight_hh.shape[-1]
    bound = 1.0 / math.sqrt(hidden)
    with torch.no_grad():
        weight_ih.uniform_(-bound, bound)
        weight_hh.uniform_(-bound, bound)
        if bias_hh is not None:
            bias_hh.zero_()
            bias_hh[:, hidden : 2 * hidden].fill_(gate_bias)
            bias_hh[:, 2 * hidden :].fill_(-gate_bias)


def check_tensor_like(name: str, x: torch.Tensor, param: torch.Tensor) -> None:
    """Refuse a tensor whose device or dtype can't meet the parameters' (autocast aside)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device != param.device:
        raise ValueError(
            f"{name} is on {x.device} but the parameters are on {param.device}; move one with .to()"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{name} has dtype {x.dtype} but the parameters have dtype {param.dtype}; "
            f"cast one to match (or run under torch.autocast)"
        )


class RHNCell(nn.Module):
    """One RHN time step with ``depth`` stacked highway micro-layers.

    Args:
        input_size: I, features of ``x``.
        hidden_size: H, size of the state.
        depth: L ≥ 1, the recurrence depth (micro-layers per time step).
        gate_bias: initial bias of every transform gate T (negative: carry).
        coupled: C = 1 − T (True) or a free carry gate C.
        bias: learn ``bias_hh``.

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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.depth = check_positive_int("depth", depth)
        self.gate_bias = check_finite("gate_bias", gate_bias)
        self.coupled = bool(coupled)
        rows = gate_blocks(self.coupled) * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(depth, rows, hidden_size, **factory))
        self.bias_hh = nn.Parameter(torch.empty(depth, rows, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_rhn_parameters(self.weight_ih, self.weight_hh, self.bias_hh, gate_bias=self.gate_bias)

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
        if input_mask is not None:
            x = x * input_mask
        bias = None if self.bias_hh is None else self.bias_hh.unbind(0)
        x_proj = F.linear(x, self.weight_ih, None if bias is None else bias[0])
        _, s, gates = rhn_recurrence(
            x_proj.unsqueeze(0),
            s,
            self.weight_hh.transpose(1, 2).unbind(0),
            bias,
            coupled=self.coupled,
            state_mask=state_mask,
            return_gates=return_gates,
        )
        if unbatched:
            s = s.squeeze(0)
        if not return_gates:
            return s
        gates = gates.squeeze(0)
        return s, gates.squeeze(0) if unbatched else gates

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, depth={self.depth}, "
            f"gate_bias={self.gate_bias}, coupled={self.coupled}, bias={self.bias_hh is not None}"
        )
