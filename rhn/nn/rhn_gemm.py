"""The recurrent matmul of the fused RHN backend, ``addend + x·Wᵀ``, for one weight.

Every micro-step of the recurrence multiplies a skinny ``(N, H)`` state by the same weight,
once forward (``a = x_t or b_l + s·W_lᵀ``) and once backward (``g = ∂a·W_l``), T times per
call. Two implementations share one call signature:

* :class:`TorchMatmul` — ``torch.addmm`` on a transposed view (cuBLAS on GPU, MKL on CPU).
* :class:`OneDNNMatmul` — the weight reordered once per call into oneDNN's blocked layout
  for batch N, then ``mkldnn._linear_pointwise`` each step. On a 2-core AVX2 CPU this runs
  the PTB-size GEMM (N 20, 1660×830) in 0.63× the time of ``addmm``, but loses below a few
  million multiply-adds per call (per-call overhead), hence :data:`ONEDNN_MIN_MACS`.
  The ops are the ones Inductor's CPU freezing path uses; they are feature-checked once
  and :func:`recurrent_matmul` falls back to ``addmm`` where they are missing.
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch

# Below this many multiply-adds per matmul (N·rows·H), addmm is as fast or faster: measured
# 0.97× at 32×512×256, 0.90× at 20×800×400, 0.63× at 20×1660×830 (oneDNN / addmm time).
ONEDNN_MIN_MACS = 6_000_000


class RecurrentMatmul(Protocol):
    """``addend + x·Wᵀ`` for one weight ``W (rows, H)`` and ``x (N, H)``.

    ``addend`` is a ``(rows,)`` bias, an ``(N, rows)`` matrix or None. ``out`` is an
    ``(N, rows)`` buffer the result *may* be written into; callers use the return value.
    """

    def __call__(
        self,
        x: torch.Tensor,
        addend: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class TorchMatmul:
    """:class:`RecurrentMatmul` with ``torch.addmm`` on a transposed view; writes ``out``."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight_t = weight.t()

    def __call__(
        self,
        x: torch.Tensor,
        addend: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if addend is None:
            return torch.mm(x, self.weight_t, out=out)
        return torch.addmm(addend, x, self.weight_t, out=out)


class OneDNNMatmul:
    """:class:`RecurrentMatmul` on a oneDNN weight packed for batch ``batch`` (float32,
    CPU). ``out`` is ignored: the oneDNN op allocates its result.
    """

    def __init__(self, weight: torch.Tensor, batch: int) -> None:
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch)

    def __call__(
        self,
        x: torch.Tensor,
        addend: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if addend is not None and addend.dim() == 2:
            return torch.ops.mkldnn._linear_pointwise.binary(x, addend, self.packed, None, "add")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, addend, "none", [], "")


@functools.cache
def onednn_available() -> bool:
    """Whether this torch build has the oneDNN linear ops and they give the right answer."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        weight = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
        x = torch.tensor([[1.0, -1.0]])
        matmul = OneDNNMatmul(weight, batch=1)
        got = matmul(x, torch.tensor([[10.0, 20.0, 30.0]]))
        bias = matmul(x, torch.tensor([1.0, 1.0, 1.0]))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    # x·Wᵀ = [-1, -1, -1]
    return got.tolist() == [[9.0, 19.0, 29.0]] and bias.tolist() == [[0.0, 0.0, 0.0]]


def recurrent_matmul(weight: torch.Tensor, batch: int) -> RecurrentMatmul:
    """The faster matmul for ``(batch, H) · weight (rows, H)ᵀ`` on this device and dtype."""
    rows, hidden = weight.shape
    if (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and batch * rows * hidden >= ONEDNN_MIN_MACS
        and onednn_available()
    ):
        return OneDNNMatmul(weight, batch)
    return TorchMatmul(weight)
