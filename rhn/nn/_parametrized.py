"""Initialising parameters that may carry a parametrization (``weight_norm``, ``orthogonal``).

``module.weight`` of a parametrized module is computed from the parametrization's originals
on each access, so writing into it in place changes nothing. :func:`initialising` hands
``reset_parameters`` something it can fill in place either way, and assigns a
parametrized one back at the end, which sets the originals through the parametrization's
``right_inverse``: the weight the module then computes is the one initialised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize


@contextlib.contextmanager
def initialising(module: nn.Module, names: Sequence[str]) -> Iterator[list[torch.Tensor | None]]:
    """``module``'s tensors called ``names`` (None where one is None), to fill in place."""
    parametrized = [parametrize.is_parametrized(module, name) for name in names]
    for name, p in zip(names, parametrized, strict=True):
        lacking = [
            type(f).__name__ for f in (module.parametrizations[name] if p else ())
            if not hasattr(f, "right_inverse")
        ]  # fmt: skip
        if lacking:  # refused before anything is written: no half-initialised module
            raise ValueError(
                f"{type(module).__name__}.{name} is parametrized by {lacking[0]}, which has no "
                f"right_inverse, so reset_parameters can't set it; give the parametrization "
                f"a right_inverse or remove it first"
            )
    tensors = [
        getattr(module, name).detach().clone() if p else getattr(module, name)
        for name, p in zip(names, parametrized, strict=True)
    ]
    with torch.no_grad():
        yield tensors
        for name, p, tensor in zip(names, parametrized, tensors, strict=True):
            if p:
                setattr(module, name, tensor)
