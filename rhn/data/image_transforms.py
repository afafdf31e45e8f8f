"""Preprocessing and augmentation of whole image batches: no per-image Python loop.

Shapes: images ``(N, C, H, W)`` float. The random functions take a ``torch.Generator``,
so a batch's augmentation is a pure function of its seed (resumable, reproducible).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def global_contrast_normalize(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per image: subtract its mean over all pixels and channels, divide by its std.

        x' = (x − mean(x)) / max(std(x), eps)

    The preprocessing of the Highway Networks CIFAR experiments (and Goodfellow et al.'s
    maxout), without ZCA whitening.
    """
    flat = images.flatten(1).float()
    centred = flat - flat.mean(dim=1, keepdim=True)
    scale = centred.std(dim=1, keepdim=True).clamp_min(eps)
    return (centred / scale).view_as(images)


def random_crop(
    images: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad every side by ``padding``, then cut each image's own random H × W window.

    One gather over the padded batch: per-image row and column offsets index it directly.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (left[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n)[:, None, None]
    # Advanced indexing around the channel slice puts it last: (N, H, W, C).
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment(
    images: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pad-and-crop (``padding`` > 0) then a random horizontal flip (``flip``)."""
    images = random_crop(images, padding, generator)
    return random_flip(images, generator) if flip else images
