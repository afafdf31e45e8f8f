"""Lesioning (Srivastava et al. 2015, §4.2): close one highway layer's transform gates.

With T = 0 a coupled layer only carries, ``y = x``; a free-carry layer gives ``y = x·C(x)``.
A layer whose removal leaves the error unchanged was not needed for the task; the paper
finds that MNIST nets lean on few layers while CIFAR nets need most of theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from rhn.models.image_classifier import ImageClassifier, classification_metrics
from rhn.nn.highway import GatedHighwayBase


@contextmanager
def closed_transform_gate(layer: GatedHighwayBase) -> Iterator[None]:
    """Within the block, ``layer`` computes T = 0: its output is its carried input."""

    def carry_only(module: GatedHighwayBase, args: tuple[Any, ...], output: Any) -> Any:
        x = args[0]
        if module.coupled:
            y = x
        else:
            c_pre = module._project(x).chunk(3, dim=module._channel_dim)[2]
            y = x * torch.sigmoid(c_pre)
        if isinstance(output, tuple):  # called with return_gates=True
            return y, torch.zeros_like(output[1])
        return y

    handle = layer.register_forward_hook(carry_only)
    try:
        yield
    finally:
        handle.remove()


def lesion_errors(
    model: ImageClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> tuple[float, list[float]]:
    """The unlesioned error and, for each highway layer in turn, the error with it closed."""
    layers = model.highway_layers()
    if not layers:
        raise ValueError(f"{type(model).__name__} has no highway layers to lesion")
    baseline = classification_metrics(model, images, labels, batch_size)["error"]
    errors = []
    for layer in layers:
        with closed_transform_gate(layer):
            errors.append(classification_metrics(model, images, labels, batch_size)["error"])
    return baseline, errors
