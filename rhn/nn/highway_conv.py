"""Convolutional highway layers (Srivastava et al. 2015, arXiv 1505.00387 / 1507.06228).

The dense rule ``y = H(x)·T(x) + x·(1 − T(x))`` with H and T computed by convolutions
with an odd kernel, centred zero ("same") padding and stride 1, so that ``y`` has ``x``'s
shape and the carry is exact.

Parameter layout (C channels, kernel k): ``weight`` ``(2C, C, k, k)`` for 2-D
(``(2C, C, k)`` for 1-D) and ``bias`` ``(2C,)``; rows ``[:C]`` are H's filters, rows
``[C:2C]`` T's, and with a free carry (``coupled=False``) rows ``[2C:3C]`` C's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rhn.nn._validate import check_positive_int, check_tensor_like
from rhn.nn.highway import GatedHighwayBase


class _HighwayConvNd(GatedHighwayBase):
    """Args: ``channels``, an odd ``kernel_size``, H's ``activation``, the T-gate's
    ``gate_bias``; ``coupled`` (C = 1 − T) or a free carry; ``gate_init`` ``uniform`` or
    ``he_normal`` (the authors' Caffe nets); ``device``, ``dtype`` as for ``torch.nn``.

    ``forward(x (N, C, *spatial), *, return_gates=False) → y`` (same shape), and the
    transform gate T (same shape) if ``return_gates``."""

    _spatial_dims: int

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        activation: str = "relu",
        gate_bias: float = -2.0,
        *,
        coupled: bool = True,
        gate_init: str = "uniform",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if check_positive_int("kernel_size", kernel_size) % 2 == 0:
            # An even kernel can't be centred: "same" padding would be lopsided.
            raise ValueError(f"kernel_size must be odd (centred 'same' padding), got {kernel_size}")
        self.kernel_size = kernel_size
        super().__init__(
            channels,
            (kernel_size,) * self._spatial_dims,
            activation=activation,
            gate_bias=gate_bias,
            coupled=coupled,
            gate_init=gate_init,
            device=device,
            dtype=dtype,
        )

    def _check_input(self, x: torch.Tensor) -> None:
        n = self._spatial_dims
        check_tensor_like("input", x, self.weight)
        if x.dim() not in (n + 1, n + 2):
            raise ValueError(
                f"{type(self).__name__} expected a {n + 2}-D (N, C, ...) or {n + 1}-D "
                f"unbatched input, got shape {tuple(x.shape)}"
            )
        super()._check_input(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}"


class HighwayConv1d(_HighwayConvNd):
    """Highway layer over sequences: ``(N, C, L) → (N, C, L)`` (or unbatched ``(C, L)``).

    For a 1-D conv stack that needs to be deep (over characters, audio frames, …). Kim et
    al.'s character-aware encoder uses dense highway layers instead (:class:`Highway`).
    """

    _spatial_dims = 1
    _channel_dim = -2

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, padding="same")


class HighwayConv2d(_HighwayConvNd):
    """Highway layer over images: ``(N, C, H, W) → (N, C, H, W)`` (or unbatched ``(C, H, W)``)."""

    _spatial_dims = 2
    _channel_dim = -3

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding="same")
