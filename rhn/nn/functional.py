"""The highway rule, shared by the dense, convolutional and recurrent layers of :mod:`rhn.nn`.

The modules own the parameters and their initialisation; this function holds the equation,
so every layer applies one rule (the RHN micro-step builds on it in :mod:`rhn.nn.rhn_cell`).
"""

from __future__ import annotations

import torch


def highway_combine(
    h: torch.Tensor, t: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None = None
) -> torch.Tensor:
    """The highway rule, Srivastava et al. 2015 (arXiv 1505.00387) eqs. 2 and 3.

        y = H·T + x·C,   C = 1 − T (coupled, eq. 3)  or  a free carry gate (eq. 2)

    ``h``, ``t``, ``x`` (and ``c``) broadcast to one shape; ``t`` and ``c`` are gate
    values in (0, 1), already through their sigmoid.
    """
    if c is not None:
        return h * t + x * c
    if h.dtype == x.dtype == t.dtype:
        # x + T·(H − x) in one fused op.
        return torch.lerp(x, h, t)
    # Under autocast H and T come out in low precision while x may not; arithmetic
    # promotes where lerp would refuse mixed dtypes.
    return x + t * (h - x)
