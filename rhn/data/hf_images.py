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
from typing import Any

import numpy as np
import torch

from rhn.data.hf_corpus import HFSource, import_datasets, open_dataset
from rhn.data.image_set import ImageSet, ImageSplits
from rhn.data.text_file import DataFileError


@dataclass(frozen=True)
class HubImageSet:
    hub_id: str
    image: str  # the image column
    label: str  # the label column
    channels: int
    classes: int
    size: int  # images are size × size

    @property
    def mode(self) -> str:
        """The PIL mode of its images (a palette image's values are indices, not pixels)."""
        return "L" if self.channels == 1 else "RGB"


HUB_IMAGE_SETS = {
    "mnist": HubImageSet("ylecun/mnist", "image", "label", 1, 10, 28),
    "cifar10": HubImageSet("uoft-cs/cifar10", "img", "label", 3, 10, 32),
    "cifar100": HubImageSet("uoft-cs/cifar100", "img", "fine_label", 3, 100, 32),
}
BATCH_IMAGES = 5000


def _decode(dataset: object, spec: HubImageSet, name: str, split: str) -> ImageSet:
    missing = [c for c in (spec.image, spec.label) if c not in dataset.column_names]
    if missing:
        raise DataFileError(
            f"{name} split {split!r} has no column {missing[0]!r}; its columns are "
            f"{dataset.column_names}"
        )
    where = f"{name} split {split!r}"
    _check_columns(dataset, spec, where)
    images, labels = [], []
    numpy_rows = dataset.select_columns([spec.image, spec.label]).with_format("numpy")
    wanted = (spec.size, spec.size) + ((spec.channels,) if spec.channels > 1 else ())
    for start, batch in enumerate(numpy_rows.iter(batch_size=BATCH_IMAGES)):
        rows = list(batch[spec.image])
        wrong = next((i for i, a in enumerate(rows) if a.shape != wanted), None)
        if wrong is not None:  # before np.stack, which names neither the row nor the data
            raise DataFileError(
                f"{where}: column {spec.image!r} row {start * BATCH_IMAGES + wrong} is an "
                f"image of shape {rows[wrong].shape}; {name} images are {wanted} "
                f"(H, W{', C' if spec.channels > 1 else ''})"
            )
        pixels = np.stack(rows)
        if pixels.dtype != np.uint8:
            raise DataFileError(
                f"{where}: images decode to {pixels.dtype}, expected 8-bit "
                f"pixels (uint8) as in {spec.hub_id}"
            )
        if pixels.ndim == 3:  # greyscale (N, H, W)
            pixels = pixels[..., None]
        images.append(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous())
        ids = np.asarray(batch[spec.label])
        if ids.dtype.kind not in "iu":  # a null row makes the column float (NaN) or object
            raise DataFileError(
                f"{where}: column {spec.label!r} holds {ids.dtype} values, not integer "
                f"labels (a row without a label?)"
            )
        labels.append(torch.from_numpy(ids.astype(np.int64)))
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


def _check_columns(dataset: Any, spec: HubImageSet, where: str) -> None:
    """The label column holds integers (or is a ClassLabel), the images are the data set's
    PIL mode: a float label would be truncated, a string one fail inside numpy, a palette
    image give its palette indices for grey levels."""
    datasets = import_datasets()
    label = dataset.features[spec.label]
    if not isinstance(label, datasets.ClassLabel) and not (
        isinstance(label, datasets.Value) and label.dtype.startswith(("int", "uint"))
    ):
        kind = getattr(label, "dtype", None) or type(label).__name__
        raise DataFileError(
            f"{where}: column {spec.label!r} holds {kind} values; labels are integers 0–"
            f"{spec.classes - 1} (or a ClassLabel)"
        )
    if len(dataset) and isinstance(dataset.features[spec.image], datasets.Image):
        mode = dataset[0][spec.image].mode  # decodes one image
        if mode != spec.mode:
            raise DataFileError(
                f"{where}: column {spec.image!r} holds {mode} images; these are {spec.mode} "
                f"(convert them: dataset.cast_column({spec.image!r}, "
                f"datasets.Image(mode={spec.mode!r})))"
            )


def _same_label_names(loaded: Any, spec: HubImageSet, name: str, splits: tuple[str, ...]) -> None:
    """ClassLabel names alike in every split: a test label must mean the training class."""
    datasets = import_datasets()
    names = {
        split: feature.names
        for split in splits
        if isinstance(feature := loaded[split].features.get(spec.label), datasets.ClassLabel)
    }
    if len({tuple(n) for n in names.values()}) > 1:
        shown = "; ".join(
            f"{split}: {n[:4]}{' …' if len(n) > 4 else ''}" for split, n in names.items()
        )
        raise DataFileError(
            f"{name}: column {spec.label!r} names its classes otherwise in each split "
            f"({shown}), so a label means another class in each"
        )


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
    if train:
        _same_label_names(loaded, spec, name, wanted)
    sets = {split: _decode(loaded[split], spec, name, split) for split in wanted}
    return ImageSplits(dataset, sets.get("train"), sets["test"])
