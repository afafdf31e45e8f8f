"""Activation functions chosen by name, as the layer constructors accept them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Activation = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


ACTIVATIONS: dict[str, Activation] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "identity": _identity,
}

# Gain for He (Kaiming) initialisation of a weight that feeds each activation
# (torch.nn.init.calculate_gain; gelu is treated like relu, as is usual).
INIT_GAIN: dict[str, float] = {
    "relu": 2.0**0.5,
    "tanh": 5.0 / 3.0,
    "sigmoid": 1.0,
    "gelu": 2.0**0.5,
    "identity": 1.0,
}


def check_activation(name: str) -> str:
    """Return ``name`` if it names a known activation, else raise a ``ValueError``."""
    if not isinstance(name, str) or name not in ACTIVATIONS:  # a list isn't even hashable
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return name


def get_activation(name: str) -> Activation:
    """The activation function called ``name`` (relu, tanh, sigmoid, gelu or identity)."""
    return ACTIVATIONS[check_activation(name)]
