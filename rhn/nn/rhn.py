"""Multi-layer Recurrent Highway Network: a drop-in for ``torch.nn.LSTM``.

Zilly et al., ICML 2017 (arXiv 1607.03474). Each layer runs the :class:`RHNCell` rule over
the sequence; layer k's outputs are layer k+1's inputs. As in ``nn.LSTM``: the same
positional arguments, ``bidirectional`` (a forward and a reverse RHN per layer, outputs
concatenated) and ``PackedSequence`` input (every sequence computed as if run alone).

Shape legend: T time, N batch, I input features, H hidden, L recurrence depth,
K layers (``num_layers``), D directions (2 if ``bidirectional`` else 1),
G = 2 (coupled) or 3 (free carry), P rows of packed data (Σ lengths).

Dropout, as in the paper and its official code (variational, Gal & Ghahramani 2016), drawn
separately for each layer and direction:
    ``input_dropout``  one mask (N, I_k) per call on each layer's input, shared by all steps
    ``state_dropout``  one mask (N, H) per call per layer on the state entering every
                       micro-layer's matmul, shared by all steps and all micro-layers
    ``dropout``        as in ``nn.LSTM``: ordinary dropout on every layer's output but the last
All are off in ``eval()`` mode.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rhn.nn._parametrized import initialising
from rhn.nn._validate import (
    ShapeError,
    check_bool,
    check_finite,
    check_init_range,
    check_positive_int,
    check_probability,
    check_tensor_like,
)
from rhn.nn.dropout import variational_mask
from rhn.nn.rhn_cell import gate_blocks, reset_rhn_parameters
from rhn.nn.rhn_fused import fused_supports, rhn_recurrence_fused
from rhn.nn.rhn_graph import CudaGraphRunner
from rhn.nn.rhn_reference import rhn_recurrence
from rhn.nn.rhn_scan import rhn_recurrence_scan, scan
from rhn.nn.rhn_schedule import StepSchedule

# "reference": autograd through the step loop (rhn.nn.rhn_reference); "fused": the
# hand-written backward (rhn.nn.rhn_fused); "cuda-graph": fused, both step loops replayed from
# CUDA graphs (rhn.nn.rhn_graph); "auto": fused wherever it applies, else the reference.
BACKENDS = ("auto", "reference", "fused", "cuda-graph")


_is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.6


def _tracing() -> bool:
    """Whether a graph is being recorded for export (``torch.export``, the ONNX exporters,
    ``torch.jit.trace``). Those record plain ops (the reference's, or a scan of its step,
    :func:`_scanned`): the fused backward's ``out=`` buffers and custom autograd function
    do not trace. Before torch 2.6 export can't be told from ``torch.compile``, so both take
    the reference there."""
    if torch.jit.is_tracing():
        return True
    return _is_exporting() if _is_exporting is not None else torch.compiler.is_compiling()


def _scanned() -> bool:
    """Whether a padded batch runs its recurrence as one ``scan`` over time
    (:mod:`rhn.nn.rhn_scan`): under ``torch.export`` (and so the dynamo ONNX exporter), whose
    graph then takes any length where the time axis is declared dynamic. ``jit.trace``
    records ops, not higher-order ones: it and ``torch.compile`` keep the unrolled
    reference."""
    return scan is not None and _is_exporting is not None and _is_exporting()


def _functorch_active() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ``jacrev``, …) is running. The
    fused recurrence's custom autograd function does not run under them (no
    ``setup_context``); the reference's plain ops do, as ``nn.LSTM``'s."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)  # no public API
    return bool(active is not None and active())


class RHN(nn.Module):
    """A stack of ``num_layers`` RHN layers of recurrence depth ``depth``.

    The positional arguments are ``nn.LSTM``'s and mean the same; RHN settings are keywords.

    Args:
        input_size: I, features of each input step.
        hidden_size: H, the state size of every layer (and direction).
        num_layers: K, layers stacked in time-major fashion, as in ``nn.LSTM``.
        bias: learn ``bias_hh_l{k}``.
        batch_first: input and output are ``(N, T, ·)`` instead of ``(T, N, ·)`` (not
            ``h_n``, and not a ``PackedSequence``, as in ``nn.LSTM``).
        dropout: ordinary dropout on each layer's output but the last (as ``nn.LSTM``).
        bidirectional: each layer also runs a reverse RHN; outputs are ``[forward, reverse]``
            along the features and layer k > 0 reads 2H features.
        proj_size: must be 0 — projections are an LSTM feature (``nn.LSTM``'s ``proj_size``);
            accepted so that code passing ``proj_size=0`` runs unchanged.
        depth: L ≥ 1, highway micro-layers per time step.
        input_dropout, state_dropout: variational dropout, see the module docstring.
        gate_bias: initial transform-gate bias (negative: carry).
        coupled: C = 1 − T (True) or a free carry gate.
        init_range: the weights start uniform in ±init_range (None: ±1/√H, as nn.LSTM; the
            paper's language models use 0.04).
        backend: ``auto`` (default), ``reference``, ``fused`` or ``cuda-graph`` — how the
            recurrence and its gradient are computed; the numbers agree (tests check to
            1e-12 in float64). ``cuda-graph`` (CUDA only) captures the fused step loops once
            per input shape (and, packed, per length profile) and replays them.

    Parameters of layer k: ``weight_ih_l{k}`` ``(G·H, I_k)``, ``weight_hh_l{k}``
    ``(L, G·H, H)``, ``bias_hh_l{k}`` ``(L, G·H)``, laid out as in :class:`RHNCell`; the
    reverse direction's carry the suffix ``_reverse``, as in ``nn.LSTM``.

    ``forward(input, hx=None, *, return_gates=False)``:
        input ``(T, N, I)`` (``(N, T, I)`` with ``batch_first``), unbatched ``(T, I)``, or a
        ``PackedSequence`` (sorted or ``enforce_sorted=False``).
        hx ``(K·D, N, H)`` (unbatched ``(K·D, H)``) or None for zeros; index ``k·D + d`` is
        layer k's direction d (0 forward, 1 reverse), batch in the caller's order.
        Returns ``(output, h_n)``: output ``(T, N, D·H)`` (``(N, T, D·H)`` with
        ``batch_first``, ``(T, D·H)`` unbatched, a ``PackedSequence`` for packed input), the
        last layer's state at every step; ``h_n`` ``(K·D, N, H)`` (``(K·D, H)``
        unbatched), every layer's and direction's final state — for packed input each
        sequence's state at its own last step (forward) and first step (reverse).
        With ``return_gates`` a third value holds every transform gate: ``(K·D, T, N, L, H)``
        (time and batch ordered like ``output``; index as ``h_n``), or for packed input a
        ``PackedSequence`` of ``(P, K·D, L, H)`` rows laid out like the output's data. When
        off, nothing is recorded.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        depth: int = 1,
        gate_bias: float = -2.0,
        coupled: bool = True,
        input_dropout: float = 0.0,
        state_dropout: float = 0.0,
        init_range: float | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        # nn.LSTM's 4th positional argument is bias: catch RHN(I, H, K, depth) calls.
        self.bias = check_bool("bias", bias, hint="set the recurrence depth with depth=")
        self.batch_first = check_bool("batch_first", batch_first)
        self.dropout = check_probability("dropout", dropout)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        if proj_size != 0:
            raise ValueError(
                f"proj_size must be 0, got {proj_size!r}: projections (proj_size) are an "
                "nn.LSTM feature; an RHN has one state per layer of size hidden_size"
            )
        self.proj_size = 0
        self.depth = check_positive_int("depth", depth)
        self.input_dropout = check_probability("input_dropout", input_dropout)
        self.state_dropout = check_probability("state_dropout", state_dropout)
        self.gate_bias = check_finite("gate_bias", gate_bias)
        self.init_range = check_init_range(init_range)
        self.coupled = check_bool("coupled", coupled)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout adds dropout after all but the last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={self.dropout} "
                "and num_layers=1 (input_dropout and state_dropout act inside a layer)",
                stacklevel=2,
            )
        rows = gate_blocks(self.coupled) * hidden_size
        factory = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            layer_input = input_size if k == 0 else self.num_directions * hidden_size
            for direction in range(self.num_directions):
                ih, hh, b = self._parameter_names(k, direction)
                self.register_parameter(ih, nn.Parameter(torch.empty(rows, layer_input, **factory)))
                self.register_parameter(
                    hh, nn.Parameter(torch.empty(depth, rows, hidden_size, **factory))
                )
                self.register_parameter(
                    b, nn.Parameter(torch.empty(depth, rows, **factory)) if bias else None
                )
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def _parameter_names(self, k: int, direction: int) -> tuple[str, str, str]:
        """``(weight_ih, weight_hh, bias_hh)``'s names for layer ``k`` and ``direction``."""
        suffix = self._suffixes()[direction]
        return (f"weight_ih_l{k}{suffix}", f"weight_hh_l{k}{suffix}", f"bias_hh_l{k}{suffix}")

    def layer_parameters(
        self, k: int, direction: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(weight_ih, weight_hh, bias_hh)`` of layer ``k``, direction 0 (forward) or 1."""
        ih, hh, b = self._parameter_names(k, direction)
        return getattr(self, ih), getattr(self, hh), getattr(self, b)

    @property
    def all_weights(self) -> list[list[torch.Tensor]]:
        """Each layer's and direction's parameters, in ``h_n`` order (as ``nn.LSTM``)."""
        return [
            [p for p in self.layer_parameters(k, d) if p is not None]
            for k in range(self.num_layers)
            for d in range(self.num_directions)
        ]

    def no_weight_decay(self) -> set[str]:
        """The biases ``bias_hh_l{k}[_reverse]``, ``(L, G·H)`` and so not told apart from
        weights by their rank: a decayed transform-gate bias would drift from its negative
        start (timm's convention, read by :func:`rhn.train.optim.build_optimizer`)."""
        return {name for name, _ in self.named_parameters() if name.startswith("bias_hh")}

    def flatten_parameters(self) -> None:
        """Nothing to do: kept so code written for ``nn.LSTM`` (which packs its weights for
        cuDNN here) runs unchanged. The RHN's weights are used where they are."""

    def reset_parameters(self) -> None:
        names = [
            name
            for k in range(self.num_layers)
            for direction in range(self.num_directions)
            for name in self._parameter_names(k, direction)
        ]
        with initialising(self, names) as tensors:
            for layer in range(0, len(tensors), 3):  # (weight_ih, weight_hh, bias_hh) each
                reset_rhn_parameters(
                    *tensors[layer : layer + 3],
                    gate_bias=self.gate_bias,
                    init_range=self.init_range,
                )

    def _check_input(self, input: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """A padded input → ``(T, N, I)`` (a view), unbatched."""
        check_tensor_like("input", input, self.weight_ih_l0)
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "(N, T, I)" if self.batch_first else "(T, N, I)"
            raise ShapeError(
                f"RHN expected input of shape {layout}, unbatched (T, I) or a PackedSequence "
                f"with I = input_size = {self.input_size}, got {tuple(input.shape)}"
            )
        unbatched = input.dim() == 2
        if unbatched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.shape[0] == 0:
            raise ShapeError("RHN got an input with 0 time steps; sequences need length >= 1")
        return input, unbatched

    def _check_packed(self, input: PackedSequence) -> tuple[torch.Tensor, tuple[int, ...]]:
        data = input.data
        check_tensor_like("input.data", data, self.weight_ih_l0)
        if data.dim() != 2 or data.shape[-1] != self.input_size:
            raise ShapeError(
                f"RHN expected PackedSequence data of shape (P, I) with I = input_size = "
                f"{self.input_size}, got {tuple(data.shape)}"
            )
        return data, tuple(input.batch_sizes.tolist())

    def _check_hx(
        self, hx: torch.Tensor | None, batch: int, unbatched: bool
    ) -> torch.Tensor | None:
        if hx is None:
            return None
        if isinstance(hx, (tuple, list)):
            raise ValueError(
                "RHN has no cell state: hx is h_0 alone, a tensor (num_layers * "
                "num_directions, batch, hidden_size), not nn.LSTM's (h_0, c_0) tuple; it "
                "returns (output, h_n) likewise, not (output, (h_n, c_n))"
            )
        check_tensor_like("hx", hx, self.weight_ih_l0, state=True)
        states = self.num_layers * self.num_directions
        expected = (states, self.hidden_size) if unbatched else (states, batch, self.hidden_size)
        if tuple(hx.shape) != expected:
            raise ShapeError(
                f"RHN expected hx of shape {expected} (num_layers * num_directions, "
                f"{'' if unbatched else 'batch, '}hidden_size), got {tuple(hx.shape)}"
            )
        return hx.unsqueeze(1) if unbatched else hx

    def _use_fused(self, return_gates: bool, tensors: tuple[torch.Tensor, ...]) -> bool:
        """Which recurrence to run: the hand-written backward where it applies."""
        if self.backend == "reference" or _tracing():
            return False
        if _functorch_active():
            if self.backend != "auto":
                raise ValueError(
                    f"backend={self.backend!r} does not run under torch.func transforms (grad, "
                    "vmap, jacrev); use backend='auto' or 'reference', which do"
                )
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
        input: torch.Tensor | PackedSequence,
        hx: torch.Tensor | None = None,
        *,
        return_gates: bool = False,
    ) -> tuple:
        # A truthy 'no' would add a third return value, and unpacking two would fail.
        return_gates = check_bool("return_gates", return_gates)
        if isinstance(input, PackedSequence):
            x, batch_sizes = self._check_packed(input)
            hx = self._check_hx(hx, batch_sizes[0], unbatched=False)
            if hx is not None and input.sorted_indices is not None:
                hx = hx.index_select(1, input.sorted_indices)  # the caller's order → sorted
            out, h_n, gates = self._run(x, batch_sizes, hx, return_gates)
            if input.unsorted_indices is not None:
                h_n = h_n.index_select(1, input.unsorted_indices)
            output = input._replace(data=out)
            if not return_gates:
                return output, h_n
            return output, h_n, input._replace(data=gates)
        x, unbatched = self._check_input(input)
        steps, batch = x.shape[:2]
        hx = self._check_hx(hx, batch, unbatched)
        if _scanned():  # (T, N, ·) throughout: no step count, which would fix T
            output, h_n, gates = self._run(x, None, hx, return_gates)
        else:
            flat = x.reshape(steps * batch, self.input_size)
            out, h_n, gates = self._run(flat, (batch,) * steps, hx, return_gates)
            # The input's own time size: under jit.trace it is recorded, so a traced graph
            # (its time loop unrolled) run on another length fails here instead of
            # returning the traced length's first steps. -1 would be ambiguous for batch 0.
            output = out.view(steps, batch, out.shape[-1])
            if return_gates:
                gates = gates.view(steps, batch, *gates.shape[1:])
        if unbatched:
            output, h_n = output.squeeze(1), h_n.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)
        if not return_gates:
            return output, h_n
        gate_tensor = gates.permute(2, 0, 1, 3, 4)
        if unbatched:
            gate_tensor = gate_tensor.squeeze(2)
        elif self.batch_first:
            gate_tensor = gate_tensor.transpose(1, 2)
        return output, h_n, gate_tensor

    def _run(
        self,
        x: torch.Tensor,
        batch_sizes: tuple[int, ...] | None,
        hx: torch.Tensor | None,
        return_gates: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every layer over flat step-major data: ``x (P, I)``, ``hx (K·D, N, H)`` in
        sorted batch order → ``(output (P, D·H), h_n (K·D, N, H), gates (P, K·D, L, H))``.
        ``batch_sizes`` None: a padded ``x (T, N, I)`` run as a scan, ``(T, N, ·)`` out."""
        batch = x.shape[1] if batch_sizes is None else batch_sizes[0]
        if hx is None:
            hx = x.new_zeros(
                self.num_layers * self.num_directions,
                batch,
                self.hidden_size,
                dtype=self.weight_hh_l0.dtype,
            )
        finals: list[torch.Tensor] = []
        gates: list[torch.Tensor] = []
        for k in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                schedule = (
                    None if batch_sizes is None else StepSchedule(batch_sizes, direction == 1)
                )
                out, s_n, layer_gates = self._run_direction(
                    x, hx[len(finals)], k, direction, schedule, return_gates
                )
                outputs.append(out)
                finals.append(s_n)
                if layer_gates is not None:
                    gates.append(layer_gates)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.training and self.dropout > 0.0 and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x, torch.stack(finals), torch.stack(gates, -3) if return_gates else None

    def _run_direction(
        self,
        x: torch.Tensor,
        s0: torch.Tensor,
        k: int,
        direction: int,
        schedule: StepSchedule | None,
        return_gates: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One layer and direction: ``x (P, I_k)``, ``s0 (N, H)`` → ``(P, H)``, ``(N, H)``,
        gates ``(P, L, H)`` or None; ``schedule`` None: ``x (T, N, I_k)``, ``P`` is ``T, N``
        (a scan)."""
        weight_ih, weight_hh, bias_hh = self.layer_parameters(k, direction)
        batch = s0.shape[0]
        if self.training and self.input_dropout > 0.0:
            mask = variational_mask(batch, x.shape[-1], self.input_dropout, like=x)
            x = x * (mask if schedule is None else schedule.per_row(mask))
        state_mask = None
        if self.training and self.state_dropout > 0.0:
            state_mask = variational_mask(batch, self.hidden_size, self.state_dropout, like=s0)
        biases = None if bias_hh is None else bias_hh.unbind(0)
        # One matmul projects every time step's input (bias of micro-layer 0 folded in).
        x_proj = F.linear(x, weight_ih, None if biases is None else biases[0])
        if schedule is None:
            return rhn_recurrence_scan(
                x_proj,
                s0,
                weight_hh,
                bias_hh,
                coupled=self.coupled,
                state_mask=state_mask,
                return_gates=return_gates,
                reverse=direction == 1,
            )
        if self._use_fused(return_gates, (x_proj, s0, weight_hh)):
            out, s_n = rhn_recurrence_fused(
                x_proj,
                s0,
                weight_hh,
                bias_hh,
                coupled=self.coupled,
                state_mask=state_mask,
                graph_runner=CudaGraphRunner if self.backend == "cuda-graph" else None,
                schedule=schedule,
            )
            return out, s_n, None
        return rhn_recurrence(
            x_proj,
            s0,
            weight_hh.transpose(1, 2).unbind(0),
            biases,
            coupled=self.coupled,
            state_mask=state_mask,
            return_gates=return_gates,
            schedule=schedule,
        )

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        parts.append(f"depth={self.depth}")
        for name in ("batch_first", "bidirectional", "coupled", "bias"):
            default = name not in ("batch_first", "bidirectional")
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)}")
        for name in ("dropout", "input_dropout", "state_dropout"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        parts.append(f"gate_bias={self.gate_bias}")
        if self.init_range is not None:
            parts.append(f"init_range={self.init_range}")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)
