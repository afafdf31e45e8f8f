"""Variational (locked) dropout: one mask per sequence, shared across time.

Gal & Ghahramani 2016 (arXiv 1512.05287), as used by the RHN paper (Zilly et al. 2017):
a unit dropped for a sequence stays dropped at every time step (and, inside an RHN
cell, at every micro-layer), instead of a fresh mask per step.
"""

from __future__ import annotations

import torch
from torch import nn

from rhn.nn._validate import check_bool, check_probability


def variational_mask(
    batch: int,
    features: int,
    p: float,
    *,
    like: torch.Tensor,
) -> torch.Tensor:
    """A ``(batch, features)`` dropout mask with entries ``0`` or ``1 / (1 − p)``.

    ``like`` gives the device and dtype. Scaling at training time (inverted dropout)
    keeps the expected value, so evaluation needs no rescaling.
    """
    keep = 1.0 - check_probability("p", p)  # p = 1 would scale by 1 / 0: NaN everywhere
    mask = torch.empty(batch, features, device=like.device, dtype=like.dtype)
    return mask.bernoulli_(keep).div_(keep)


class VariationalDropout(nn.Module):
    """Dropout with one mask per sequence for ``(T, N, F)`` (or ``(N, T, F)``) input.

    Args:
        p: probability of dropping a unit, in [0, 1).
        batch_first: input is ``(N, T, F)`` instead of ``(T, N, F)``.
    """

    def __init__(self, p: float = 0.5, *, batch_first: bool = False) -> None:
        super().__init__()
        self.p = check_probability("p", p)
        self.batch_first = check_bool("batch_first", batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Checked in evaluation too: a wrong shape fails at once, not first in training.
        if x.dim() != 3:
            raise ValueError(
                f"VariationalDropout expects a 3-D (T, N, F) or (N, T, F) input, got shape "
                f"{tuple(x.shape)}"
            )
        if not self.training or self.p == 0.0:
            return x
        batch_dim = 0 if self.batch_first else 1
        mask = variational_mask(x.shape[batch_dim], x.shape[-1], self.p, like=x)
        return x * mask.unsqueeze(1 - batch_dim)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"
