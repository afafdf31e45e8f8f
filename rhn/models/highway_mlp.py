"""The depth study's fully connected nets (Srivastava et al. 2015, arXiv 1505.00387 §3.1).

    x (N, 784) → plain layer → d − 1 blocks → linear → logits (N, classes)
    plain block:    y = act(W x + b)                       71 units (5,112 parameters)
    highway block:  y = H(x)·T(x) + x·(1 − T(x))           50 units (5,100 parameters)

Widths are chosen so that a plain and a highway block hold the same number of
parameters. Plain layers are He-initialised for their activation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rhn.models.image_classifier import ImageClassifier, Trace, he_init_
from rhn.nn._validate import check_positive_int
from rhn.nn.activation import get_activation
from rhn.nn.highway import HighwayLayer

DEFAULT_WIDTH = {"highway": 50, "plain": 71}


def default_gate_bias(blocks: int, *, keep_rms: float = 0.5) -> float:
    """A transform-gate bias that keeps the signal alive through ``blocks`` highway layers.

    With H(x) and x uncorrelated at initialisation, a coupled highway layer scales the
    signal's mean square by about T² + (1 − T)². Solving (T² + (1 − T)²)^blocks = keep_rms²
    for T gives T = (1 − √(2f − 1)) / 2 with f = keep_rms^(2/blocks); the bias is
    logit(T), kept inside the paper's search range [−10, −1]. It gives −2.5 for 9 blocks,
    −4.2 for 49 and −5.0 for 99 (measured on MNIST: −1 and −2 leave a 50-layer net at chance
    after an epoch, −4 trains).
    """
    f = keep_rms ** (2.0 / blocks)
    if f <= 0.5:  # even T = 1/2 (the least carry) keeps enough signal
        return -1.0
    t = (1.0 - math.sqrt(2.0 * f - 1.0)) / 2.0
    return min(-1.0, max(-10.0, math.log(t / (1.0 - t))))


class HighwayMLP(ImageClassifier):
    """A first plain layer, ``depth − 1`` highway or plain blocks, and a linear classifier.

    Args:
        in_features: flattened input size (784 for MNIST).
        num_classes: size of the logits.
        depth: layers before the classifier (10, 20, 50, 100 in the paper).
        block: ``highway`` or ``plain``.
        width: units per layer (default 50 highway, 71 plain).
        activation: relu or tanh in the paper (any name :mod:`rhn.nn.activation` knows).
        gate_bias: the highway blocks' initial transform-gate bias; None picks
            :func:`default_gate_bias` for ``depth − 1`` blocks.
        coupled: carry gate 1 − T (True) or a free carry gate.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        depth: int = 10,
        block: str = "highway",
        width: int | None = None,
        activation: str = "relu",
        gate_bias: float | None = None,
        coupled: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if block not in DEFAULT_WIDTH:
            raise ValueError(f"block must be one of {sorted(DEFAULT_WIDTH)}, got {block!r}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (a first layer and a block), got {depth}")
        self.block = block
        self.activation = activation
        self._act = get_activation(activation)
        # None, not 0, means the default: width=0 is a mistake to name, not 50 units.
        width = DEFAULT_WIDTH[block] if width is None else check_positive_int("width", width)
        self.gate_bias = default_gate_bias(depth - 1) if gate_bias is None else gate_bias
        factory = {"device": device, "dtype": dtype}
        self.first = nn.Linear(in_features, width, **factory)
        self.blocks = nn.ModuleList(
            HighwayLayer(width, activation, self.gate_bias, coupled=coupled, **factory)
            if block == "highway"
            else nn.Linear(width, width, **factory)
            for _ in range(depth - 1)
        )
        self.classifier = nn.Linear(width, num_classes, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        he_init_(self.first, self.activation)
        for layer in self.blocks:
            if isinstance(layer, HighwayLayer):
                layer.reset_parameters()
            else:
                he_init_(layer, self.activation)
        self.classifier.reset_parameters()

    def forward(
        self, x: torch.Tensor, *, trace: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Trace]:
        """``x`` ``(N, ...)`` is flattened to ``(N, in_features)``; logits ``(N, classes)``."""
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.first.in_features:
            raise ValueError(
                f"HighwayMLP expects (N, ...) inputs of {self.first.in_features} values each, "
                f"got shape {tuple(x.shape)}"
            )
        record = Trace() if trace else None
        x = self._act(self.first(x.flatten(1)))
        for layer in self.blocks:
            if isinstance(layer, HighwayLayer):
                x, t = layer(x, return_gates=True)
                if record is not None:
                    record.gates.append(t)
            else:
                x = self._act(layer(x))
            if record is not None:
                record.outputs.append(x)
        logits = self.classifier(x)
        return (logits, record) if record is not None else logits
