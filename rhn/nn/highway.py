"""Dense highway layers (Srivastava, Greff & Schmidhuber 2015, arXiv 1505.00387).

    y = H(x)·T(x) + x·C(x)
    H(x) = act(W_H x + b_H)       the transform
    T(x) = σ(W_T x + b_T)         the *transform* gate; b_T starts negative (``gate_bias``),
                                  so every layer starts close to the identity (carry)
    C(x) = 1 − T(x)               coupled carry (eq. 3, default), or
    C(x) = σ(W_C x + b_C)         a free carry gate (eq. 2, ``coupled=False``)

Parameter layout of one layer (F features): ``weight`` ``(2F, F)``, ``bias`` ``(2F,)``;
rows ``[:F]`` are H's, rows ``[F:2F]`` T's, and with a free carry rows ``[2F:3F]`` C's.

Note the sign convention: AllenNLP's and old Keras' highway gate is the carry gate with a
positive bias; here the gate is T, as in the paper, and its bias is negative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rhn.nn._parametrized import initialising
from rhn.nn._validate import (
    check_bool,
    check_finite,
    check_init_range,
    check_positive_int,
    check_tensor_like,
)
from rhn.nn.activation import INIT_GAIN, check_activation, get_activation
from rhn.nn.functional import highway_combine

# How the gate weights start: torch's default range, or He normal as H (the Highway Networks
# authors' Caffe "xavier" filler, which is He-normal √(2/fan_in) for every weight).
GATE_INITS = ("uniform", "he_normal")


class GatedHighwayBase(nn.Module):
    """Parameters, initialisation and the gating rule shared by dense and conv highways.

    ``weight`` is ``(G·F, F, *kernel)`` (no kernel dims for a dense layer) and ``bias``
    ``(G·F,)``, with G = 2 (coupled) or 3 (free carry). Subclasses define ``_project``,
    the map from ``x`` to the stacked pre-activations, and ``_channel_dim``.
    """

    _channel_dim: int = -1

    def __init__(
        self,
        features: int,
        kernel: tuple[int, ...],
        *,
        activation: str,
        gate_bias: float,
        coupled: bool,
        gate_init: str = "uniform",
        init_range: float | None = None,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        if gate_init not in GATE_INITS:
            raise ValueError(f"gate_init must be one of {GATE_INITS}, got {gate_init!r}")
        self.gate_init = gate_init
        self.init_range = check_init_range(init_range)
        if self.init_range is not None and gate_init != "uniform":
            raise ValueError("init_range sets every weight; it can't be combined with gate_init")
        self.features = check_positive_int("features", features)
        self.activation = check_activation(activation)
        self.gate_bias = check_finite("gate_bias", gate_bias)
        self.coupled = check_bool("coupled", coupled)
        self._act = get_activation(activation)
        blocks = 2 if self.coupled else 3
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(blocks * features, features, *kernel, **factory))
        self.bias = nn.Parameter(torch.empty(blocks * features, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal for H, uniform ±1/√fan_in for the gates, b_T = gate_bias.

        He initialisation keeps H's output at the scale of its input for the chosen
        activation (gain from ``INIT_GAIN``); the gate weights get torch's default
        ``nn.Linear`` range, small next to the bias, so every T starts near
        σ(gate_bias) — or, with ``gate_init="he_normal"``, N(0, 2/fan_in) as the authors'
        Caffe nets. H's bias starts at 0; a free carry gate's bias starts at −gate_bias so
        that C ≈ 1 − T at initialisation.

        With ``init_range`` r, every weight and bias starts in U(−r, r) and each gate's bias
        is offset by its start (b_T = gate_bias + U(−r, r)): Kim et al.'s code, which draws
        every parameter from U(−0.05, 0.05) and adds the gate bias as a constant.
        """
        f = self.features
        with initialising(self, ("weight", "bias")) as (weight, bias):
            fan_in = weight[0].numel()
            if self.init_range is not None:
                r = self.init_range
                weight.uniform_(-r, r)
                bias.uniform_(-r, r)
                bias[f : 2 * f].add_(self.gate_bias)
                if not self.coupled:
                    bias[2 * f :].sub_(self.gate_bias)
                return
            weight[:f].normal_(0.0, INIT_GAIN[self.activation] / math.sqrt(fan_in))
            if self.gate_init == "he_normal":
                weight[f:].normal_(0.0, math.sqrt(2.0 / fan_in))
            else:
                bound = 1.0 / math.sqrt(fan_in)
                weight[f:].uniform_(-bound, bound)
            bias[:f].zero_()
            bias[f : 2 * f].fill_(self.gate_bias)
            if not self.coupled:
                bias[2 * f :].fill_(-self.gate_bias)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        check_tensor_like("input", x, self.weight)
        if x.dim() == 0 or x.shape[self._channel_dim] != self.features:
            raise ValueError(
                f"{type(self).__name__} expected input with {self.features} features in "
                f"dimension {self._channel_dim}, got shape {tuple(x.shape)}"
            )

    def forward(
        self, x: torch.Tensor, *, return_gates: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``y`` (same shape as ``x``), and the transform gate T if ``return_gates``."""
        self._check_input(x)
        pre = self._project(x)
        parts = pre.chunk(2 if self.coupled else 3, dim=self._channel_dim)
        h, t = self._act(parts[0]), torch.sigmoid(parts[1])
        c = None if self.coupled else torch.sigmoid(parts[2])
        y = highway_combine(h, t, x, c)
        return (y, t) if return_gates else y

    def extra_repr(self) -> str:
        init = f", gate_init={self.gate_init!r}" if self.gate_init != "uniform" else ""
        init += f", init_range={self.init_range}" if self.init_range is not None else ""
        return (
            f"{self.features}, activation={self.activation!r}, gate_bias={self.gate_bias}, "
            f"coupled={self.coupled}{init}"
        )


class HighwayLayer(GatedHighwayBase):
    """One dense highway layer: ``(..., F) → (..., F)``, weight ``(2F, F)``, bias ``(2F,)``
    (``(3F, F)`` and ``(3F,)`` with ``coupled=False``: the carry gate's rows follow)."""

    def __init__(
        self,
        features: int,
        activation: str = "relu",
        gate_bias: float = -2.0,
        *,
        coupled: bool = True,
        init_range: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            features,
            (),
            activation=activation,
            gate_bias=gate_bias,
            coupled=coupled,
            init_range=init_range,
            device=device,
            dtype=dtype,
        )

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Highway(nn.Module):
    """A stack of ``num_layers`` dense highway layers: ``(..., F) → (..., F)``.

    Args:
        features: F, the size of the last dimension (kept by every layer).
        num_layers: how many highway layers are stacked.
        activation: H's nonlinearity: relu, tanh, sigmoid, gelu or identity.
        gate_bias: initial transform-gate bias (negative: start by carrying).
        coupled: C = 1 − T (True, default) or a free carry gate.
        init_range: None (He normal H, the gates at torch's range) or r: every parameter
            U(−r, r), the gate biases offset by their start (Kim et al.'s code).
        device, dtype: as for ``torch.nn`` layers.

    Layer ``i``'s parameters are ``layers[i].weight`` ``(2F, F)`` and ``layers[i].bias``
    ``(2F,)`` (``3F`` rows with a free carry), laid out as the module docstring says.
    ``forward(x, return_gates=True)`` also returns each layer's T, for gate analyses.
    """

    def __init__(
        self,
        features: int,
        num_layers: int = 1,
        activation: str = "relu",
        gate_bias: float = -2.0,
        *,
        coupled: bool = True,
        init_range: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("num_layers", num_layers)
        factory = {"device": device, "dtype": dtype}
        self.layers = nn.ModuleList(
            HighwayLayer(
                features, activation, gate_bias, coupled=coupled, init_range=init_range, **factory
            )
            for _ in range(num_layers)
        )

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> HighwayLayer:
        return self.layers[index]

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(
        self, x: torch.Tensor, *, return_gates: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``y`` shaped like ``x``; with ``return_gates`` also a list of each layer's T."""
        gates: list[torch.Tensor] = []
        for layer in self.layers:
            if return_gates:
                x, t = layer(x, return_gates=True)
                gates.append(t)
            else:
                x = layer(x)
        return (x, gates) if return_gates else x
