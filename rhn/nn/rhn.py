"""Multi-layer Recurrent Highway Network: a drop-in for ``torch.nn.LSTM``.

Zilly et al., ICML 2017 (arXiv 1607.03474). Each layer runs the :class:`RHNCell` rule over
the sequence; layer k's outputs are layer k+1's inputs.

Shape legend: T time, N batch, I input features, H hidden, L recurrence depth,
K layers (``num_layers``), G = 2 (coupled) or 3 (free carry).

Dropout, as in the paper and its official code (variational, Gal & Ghahramani 2016):
    ``input_dropout``  one mask (N, I_k) per call on each layer's input, shared by all steps
    ``state_dropout``  one mask (N, H) per call per layer on the state entering every
                       micro-layer's matmul, shared by all steps and all micro-layers
    ``dropout``        as in ``nn.LSTM``: ordinary dropout on every layer's output but the last
All are off in ``eval()`` mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rhn.nn._validate import check_finite, check_positive_int, check_probability
from rhn.nn.dropout import variational_mask
from rhn.nn.functional import rhn_recurrence
from rhn.nn.rhn_cell import check_tensor_like, gate_blocks, reset_rhn_parameters
from rhn.nn.rhn_fused import fused_supports, rhn_recurrence_fused
from rhn.nn.rhn_graph import CudaGraphRunner

# "reference": autograd through the step loop (rhn.nn.functional); "fused": the hand-written
# backward (rhn.nn.rhn_fused); "cuda-graph": fused, both step loops replayed from CUDA graphs
# (rhn.nn.rhn_graph); "auto": fused wherever it applies, else the reference.
BACKENDS = ("auto", "reference", "fused", "cuda-graph")


class RHN(nn.Module):
    """A stack of ``num_layers`` RHN layers of recurrence depth ``depth``.

    Args:
        input_size: I, features of each input step.
        hidden_size: H, the state size of every layer.
        num_layers: K, layers stacked in time-major fashion, as in ``nn.LSTM``.
        depth: L ≥ 1, highway micro-layers per time step.
        batch_first: input and output are ``(N, T, ·)`` instead of ``(T, N, ·)``.
        dropout, input_dropout, state_dropout: see the module docstring.
        gate_bias: initial transform-gate bias (negative: carry).
        coupled: C = 1 − T (True) or a free carry gate.
        bias: learn ``bias_hh_l{k}``.
        backend: ``auto`` (default), ``reference``, ``fused`` or ``cuda-graph`` — how the
            recurrence and its gradient are computed; the numbers agree (tests check to
            1e-12 in float64). ``cuda-graph`` (CUDA only) captures the fused step loops once
            per input shape and replays them, removing the per-micro-step launch cost.

    Parameters of layer k: ``weight_ih_l{k}`` ``(G·H, I_k)``, ``weight_hh_l{k}``
    ``(L, G·H, H)``, ``bias_hh_l{k}`` ``(L, G·H)``, laid out as in :class:`RHNCell`.

    ``forward(input, hx=None, *, return_gates=False)``:
        input ``(T, N, I)`` (``(N, T, I)`` with ``batch_first``) or unbatched ``(T, I)``;
        hx ``(K, N, H)`` (unbatched ``(K, H)``) or None for zeros.
        Returns ``(output, h_n)``: output ``(T, N, H)`` (``(N, T, H)`` with ``batch_first``,
        ``(T, H)`` unbatched), the last layer's state at every step; ``h_n`` ``(K, N, H)``
        (``(K, H)`` unbatched), every layer's final state. With ``return_gates`` a third
        tensor ``(K, T, N, L, H)`` (time and batch ordered like ``output``) holds every
        transform gate; when off, nothing is recorded.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        depth: int = 1,
        *,
        batch_first: bool = False,
        dropout: float = 0.0,
        gate_bias: float = -2.0,
        coupled: bool = True,
        bias: bool = True,
        input_dropout: float = 0.0,
        state_dropout: float = 0.0,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.depth = check_positive_int("depth", depth)
        self.batch_first = bool(batch_first)
        self.dropout = check_probability("dropout", dropout)
        self.input_dropout = check_probability("input_dropout", input_dropout)
        self.state_dropout = check_probability("state_dropout", state_dropout)
        self.gate_bias = check_finite("gate_bias", gate_bias)
        self.coupled = bool(coupled)
        self.bias = bool(bias)
        rows = gate_blocks(self.coupled) * hidden_size
        factory = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            self.register_parameter(
                f"weight_ih_l{k}", nn.Parameter(torch.empty(rows, layer_input, **factory))
            )
            self.register_parameter(
                f"weight_hh_l{k}", nn.Parameter(torch.empty(depth, rows, hidden_size, **factory))
            )
            self.register_parameter(
                f"bias_hh_l{k}",
                nn.Parameter(torch.empty(depth, rows, **factory)) if bias else None,
            )
        self.reset_parameters()

    def layer_parameters(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(weight_ih, weight_hh, bias_hh)`` of layer ``k``."""
        return (
            getattr(self, f"weight_ih_l{k}"),
            getattr(self, f"weight_hh_l{k}"),
            getattr(self, f"bias_hh_l{k}"),
        )

    def reset_parameters(self) -> None:
        for k in range(self.num_layers):
            reset_rhn_parameters(*self.layer_parameters(k), gate_bias=self.gate_bias)

    def _check_args(
        self, input: torch.Tensor, hx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """Validate and bring ``input`` to ``(T, N, I)`` and ``hx`` to ``(K, N, H)``."""
        weight = self.weight_ih_l0
        check_tensor_like("input", input, weight)
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "(N, T, I)" if self.batch_first else "(T, N, I)"
            raise ValueError(
                f"RHN expected input of shape {layout} or unbatched (T, I) with "
                f"I = input_size = {self.input_size}, got {tuple(input.shape)}"
            )
        unbatched = input.dim() == 2
        if unbatched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        steps, batch = input.shape[0], input.shape[1]
        if steps == 0:
            raise ValueError("RHN got an input with 0 time steps; sequences need length >= 1")
        if hx is not None:
            check_tensor_like("hx", hx, weight)
            expected = (self.num_layers, self.hidden_size)
            if not unbatched:
                expected = (self.num_layers, batch, self.hidden_size)
            if tuple(hx.shape) != expected:
                raise ValueError(
                    f"RHN expected hx of shape {expected} (num_layers, "
                    f"{'' if unbatched else 'batch, '}hidden_size), got {tuple(hx.shape)}"
                )
            if unbatched:
                hx = hx.unsqueeze(1)
        return input, hx, unbatched

    def _use_fused(self, return_gates: bool, tensors: tuple[torch.Tensor, ...]) -> bool:
        """Which recurrence to run: the hand-written backward where it applies."""
        if self.backend == "reference":
            return False
        supported = not return_gates and fused_supports(tensors)
        if self.backend == "cuda-graph" and tensors[0].device.type != "cuda":
            raise ValueError(
                f"backend='cuda-graph' needs CUDA tensors, got {tensors[0].device.type}; "
                "use 'fused' or 'auto' elsewhere"
            )
        if self.backend in ("fused", "cuda-graph") and not supported:
            raise ValueError(
                f"backend={self.backend!r} runs float64/float32/bfloat16/float16 (one dtype, or "
                "any under autocast) with return_gates=False; use backend='auto' to fall "
                "back to the reference"
            )
        return supported

    def forward(
        self,
        input: torch.Tensor,
        hx: torch.Tensor | None = None,
        *,
        return_gates: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, hx, unbatched = self._check_args(input, hx)
        batch = x.shape[1]
        if hx is None:
            hx = x.new_zeros(
                self.num_layers, batch, self.hidden_size, dtype=self.weight_hh_l0.dtype
            )
        finals: list[torch.Tensor] = []
        gates: list[torch.Tensor] = []
        for k in range(self.num_layers):
            weight_ih, weight_hh, bias_hh = self.layer_parameters(k)
            if self.training and self.input_dropout > 0.0:
                x = x * variational_mask(batch, x.shape[-1], self.input_dropout, like=x)
            state_mask = None
            if self.training and self.state_dropout > 0.0:
                state_mask = variational_mask(batch, self.hidden_size, self.state_dropout, like=hx)
            biases = None if bias_hh is None else bias_hh.unbind(0)
            # One matmul projects every time step's input (bias of micro-layer 0 folded in).
            x_proj = F.linear(x, weight_ih, None if biases is None else biases[0])
            if self._use_fused(return_gates, (x_proj, hx, weight_hh)):
                x, s_n = rhn_recurrence_fused(
                    x_proj,
                    hx[k],
                    weight_hh,
                    bias_hh,
                    coupled=self.coupled,
                    state_mask=state_mask,
                    graph_runner=CudaGraphRunner if self.backend == "cuda-graph" else None,
                )
                layer_gates = None
            else:
                x, s_n, layer_gates = rhn_recurrence(
                    x_proj,
                    hx[k],
                    weight_hh.transpose(1, 2).unbind(0),
                    biases,
                    coupled=self.coupled,
                    state_mask=state_mask,
                    return_gates=return_gates,
                )
            finals.append(s_n)
            if layer_gates is not None:
                gates.append(layer_gates)
            if self.training and self.dropout > 0.0 and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        h_n = torch.stack(finals)
        output = x
        if unbatched:
            output, h_n = output.squeeze(1), h_n.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)
        if not return_gates:
            return output, h_n
        gate_tensor = torch.stack(gates)
        if unbatched:
            gate_tensor = gate_tensor.squeeze(2)
        elif self.batch_first:
            gate_tensor = gate_tensor.transpose(1, 2)
        return output, h_n, gate_tensor

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        parts.append(f"depth={self.depth}")
        for name in ("batch_first", "coupled", "bias"):
            default = name != "batch_first"
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)}")
        for name in ("dropout", "input_dropout", "state_dropout"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        parts.append(f"gate_bias={self.gate_bias}")
        return ", ".join(parts)
