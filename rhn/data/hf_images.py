"""MNIST, CIFAR-10 and CIFAR-100 through Hugging Face ``datasets``: the online door beside the
official-format loaders (:mod:`rhn.data.mnist`, :mod:`rhn.data.cifar`).

    hub id (``ylecun/mnist``, ``uoft-cs/cifar10``, ``uoft-cs/cifar100``), a save_to_disk
    folder, or local parquet / arrow files → train and test splits → the image column
    decoded to uint8 ``(N, C, H, W)`` and the label column to int64 ``(N,)``

— the tensors the official loaders give, so preprocessing and training cannot tell the
doors apart. ``datasets`` is imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rhn.data.hf_corpus import HFSource, open_dataset
from rhn.data.image_set import ImageSet, ImageSplits
from rhn.data.text_file import DataFileError


@dataclass(frozen=True)
class HubImageSet:
    hub_id: str
    image: str  # the image column
    label: str  # the label column
    channels: int
    classes: int


HUB_IMAGE_SETS = {
    "mnist": HubImageSet("ylecun/mnist", "image", "label", 1, 10),
    "cifar10": HubImageSet("uoft-cs/cifar10", "img", "label", 3, 10),
    "cifar100": HubImageSet("uoft-cs/cifar100", "img", "fine_label", 3, 100),
}
BATCH_IMAGES = 5000


def _decode(dataset: object, spec: HubImageSet, name: str, split: str) -> ImageSet:
    missing = [c for c in (spec.image, spec.label) if c not in dataset.column_names]
    if missing:
        raise DataFileError(
            f"{name} split {split!r} has no column {missing[0]!r}; its columns are "
            f"{dataset.column_names}"
        )
    images, labels = [], []
    numpy_rows = dataset.select_columns([spec.image, spec.label]).with_format("numpy")
    for batch in numpy_rows.iter(batch_size=BATCH_IMAGES):
        pixels = np.stack(list(batch[spec.image]))
        if pixels.dtype != np.uint8:
            raise DataFileError(
                f"{name} split {split!r}: images decode to {pixels.dtype}, expected 8-bit "
                f"pixels (uint8) as in {spec.hub_id}"
            )
        if pixels.ndim == 3:  # greyscale (N, H, W)
            pixels = pixels[..., None]
        if pixels.shape[-1] != spec.channels:
            raise DataFileError(
                f"{name} split {split!r}: images have {pixels.shape[-1]} channels, expected "
                f"{spec.channels}"
            )
        images.append(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous())
        labels.append(torch.from_numpy(np.asarray(batch[spec.label], dtype=np.int64)))
    if not images:
        raise DataFileError(f"{name} split {split!r} holds no images")
    targets = torch.cat(labels)
    # Checked here, not where a loss meets the first bad label (ClassLabel's "no label" is -1).
    outside = targets[(targets < 0) | (targets >= spec.classes)]
    if outside.numel():
        raise DataFileError(
            f"{name} split {split!r}: column {spec.label!r} must hold labels 0–"
            f"{spec.classes - 1}, found {outside.unique()[:5].tolist()} "
            f"({outside.numel()} of {targets.numel()} rows)"
        )
    return ImageSet(torch.cat(images), targets, spec.classes)


def load_hf_images(dataset: str, path: str | None = None, *, train: bool = True) -> ImageSplits:
    """``dataset`` (mnist, cifar10, cifar100) from ``path`` (default: its hub id); with
    ``train=False`` only the test split is decoded."""
    if dataset not in HUB_IMAGE_SETS:
        raise ValueError(f"dataset must be one of {sorted(HUB_IMAGE_SETS)}, got {dataset!r}")
    spec = HUB_IMAGE_SETS[dataset]
    name = path or spec.hub_id
    loaded = open_dataset(HFSource(name, path_key="data.hf_path"))
    wanted = ("train", "test") if train else ("test",)
    missing = [s for s in wanted if s not in loaded]
    if missing:
        raise DataFileError(
            f"{name}: no {missing[0]} split; the dataset has {sorted(loaded)} (expected "
            f"{' and '.join(wanted)})"
        )
    sets = {split: _decode(loaded[split], spec, name, split) for split in wanted}
    return ImageSplits(dataset, sets.get("train"), sets["test"])
