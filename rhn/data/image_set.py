"""A labelled image data set held whole in memory, as the vision loaders return it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    """``images`` ``(N, C, H, W)`` (uint8 as read, float once preprocessed), ``labels`` ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"an ImageSet needs images (N, C, H, W) and labels (N,), got "
                f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, index: torch.Tensor | slice) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.num_classes)


@dataclass
class ImageSplits:
    """A data set's train and test sets (validation is carved from train by the task).

    ``train`` is None when a loader was asked for the test set alone (``train=False``:
    scoring a trained model reads no training files).
    """

    name: str
    train: ImageSet | None
    test: ImageSet
