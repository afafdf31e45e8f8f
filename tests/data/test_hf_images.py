"""The vision sets' Hugging Face door against the official-format loaders: a local parquet
(and save_to_disk) copy, made here with ``datasets``, yields the same tensors and labels."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from rhn.data.cifar import load_cifar
from rhn.data.hf_images import HUB_IMAGE_SETS, load_hf_images
from rhn.data.image_set import ImageSplits
from rhn.data.mnist import load_mnist
from rhn.data.synthetic import write_cifar, write_mnist
from rhn.data.text_file import DataFileError
from rhn.train.config import build_config
from rhn.train.loop import train
from tests.data.cifar_by_hand import cifar_records

# The CIFAR files these tests compare are partial copies, as the loader warns.
pytestmark = pytest.mark.filterwarnings("ignore:cifar.* is a partial copy:UserWarning")


def as_hub_dataset(
    splits: ImageSplits, dataset: str, coarse: dict[str, list[int]] | None = None
) -> datasets.DatasetDict:
    """The splits as the hub's copy holds them: PIL images in an Image column, ClassLabel;
    ``coarse`` (per split) adds CIFAR-100's coarse_label column beside fine_label."""
    spec = HUB_IMAGE_SETS[dataset]
    columns = {
        spec.image: datasets.Image(),
        spec.label: datasets.ClassLabel(num_classes=spec.classes),
    }
    if coarse is not None:
        columns["coarse_label"] = datasets.ClassLabel(num_classes=20)
    features = datasets.Features(columns)
    out = {}
    for name in ("train", "test"):
        split = getattr(splits, name)
        pixels = split.images.permute(0, 2, 3, 1).numpy()
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        images = [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]
        rows = {spec.image: images, spec.label: split.labels.tolist()}
        if coarse is not None:
            rows["coarse_label"] = coarse[name]
        out[name] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(out)


def write_parquet(data: datasets.DatasetDict, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, split in data.items():
        split.to_parquet(folder / f"{name}.parquet")
    return folder


def assert_same(ours: ImageSplits, official: ImageSplits) -> None:
    for name in ("train", "test"):
        a, b = getattr(ours, name), getattr(official, name)
        assert a.images.dtype == b.images.dtype == torch.uint8
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert a.num_classes == b.num_classes


@pytest.mark.skipif(
    not os.environ.get("RHN_DATA_DIR"), reason="RHN_DATA_DIR is unset (real CIFAR subset)"
)
def test_cifar10_subset_through_both_doors_is_identical(tmp_path: Path) -> None:
    official = load_cifar("cifar10", allow_download=False)
    assert len(official.train) == 4000 and len(official.test) == 1000
    hub_copy = as_hub_dataset(official, "cifar10")
    parquet = load_hf_images("cifar10", str(write_parquet(hub_copy, tmp_path / "parquet")))
    assert_same(parquet, official)
    hub_copy.save_to_disk(tmp_path / "saved")
    assert_same(load_hf_images("cifar10", str(tmp_path / "saved")), official)


def test_greyscale_mnist_through_both_doors_is_identical(tmp_path: Path) -> None:
    write_mnist(tmp_path / "idx", n_train=40, n_test=12)
    official = load_mnist(tmp_path / "idx", allow_download=False)
    folder = write_parquet(as_hub_dataset(official, "mnist"), tmp_path / "parquet")
    ours = load_hf_images("mnist", str(folder))
    assert_same(ours, official)
    assert ours.train.images.shape == (40, 1, 28, 28)
    config = build_config(
        {
            "task": "image_classification",
            "model": {"arch": "mnist_conv", "width": 4},
            "data": {"source": "hf", "hf_path": str(folder), "batch_size": 10},
            "train": {"max_steps": 3, "eval_every": 3, "progress": False},
        }
    )
    assert train(config, tmp_path / "run").status == "finished"
    # The test split alone (for scoring) needs no training file.
    (folder / "train.parquet").unlink()
    test_only = load_hf_images("mnist", str(folder), train=False)
    assert test_only.train is None and torch.equal(test_only.test.images, official.test.images)
    with pytest.raises(DataFileError, match=r"no train split"):
        load_hf_images("mnist", str(folder))


@pytest.mark.parametrize(
    ("dataset", "folder", "files", "label_bytes"),
    [
        ("cifar10", "cifar-10-batches-bin", ("data_batch_1.bin", "test_batch.bin"), 1),
        ("cifar100", "cifar-100-binary", ("train.bin", "test.bin"), 2),
    ],
)
def test_rgb_cifar_through_both_doors_is_identical(
    tmp_path: Path, dataset: str, folder: str, files: tuple[str, str], label_bytes: int
) -> None:
    # 120 training images: CIFAR-100's fine labels 0..99 and coarse labels 0..19 differ.
    write_cifar(tmp_path / "bin", dataset, n_train=120, n_test=30)
    official = load_cifar(dataset, tmp_path / "bin", allow_download=False)
    raw = {
        split: cifar_records(tmp_path / "bin" / folder / name, label_bytes)
        for split, name in zip(("train", "test"), files, strict=True)
    }
    # The hub's CIFAR-100 also has a coarse_label column; the class is fine_label.
    coarse = {s: raw[s][0][:, 0].tolist() for s in raw} if dataset == "cifar100" else None
    hub_copy = as_hub_dataset(official, dataset, coarse)
    ours = load_hf_images(dataset, str(write_parquet(hub_copy, tmp_path / "parquet")))
    assert_same(ours, official)
    for split in ("train", "test"):
        labels, pixels = raw[split]
        got = getattr(ours, split)
        assert got.images.shape == (len(pixels), 3, 32, 32)
        # Channel-major as in the file: red plane, then green, then blue (not HWC reshaped).
        assert torch.equal(got.images, torch.from_numpy(pixels.copy()))
        assert got.labels.tolist() == labels[:, -1].tolist()  # the fine label (last byte)
    if coarse is not None:
        assert ours.train.labels.max() == 99 and ours.train.labels.tolist() != coarse["train"]
    hub_copy.save_to_disk(tmp_path / "saved")
    assert_same(load_hf_images(dataset, str(tmp_path / "saved")), official)


def test_wrong_columns_and_splits_are_named(tmp_path: Path) -> None:
    write_mnist(tmp_path / "idx", n_train=20, n_test=10)
    data = as_hub_dataset(load_mnist(tmp_path / "idx", allow_download=False), "mnist")
    data.save_to_disk(tmp_path / "mnist")
    with pytest.raises(DataFileError, match=r"has no column 'img'; its columns are \['image'"):
        load_hf_images("cifar10", str(tmp_path / "mnist"))
    datasets.DatasetDict({"train": data["train"]}).save_to_disk(tmp_path / "no_test")
    with pytest.raises(DataFileError, match=r"no test split; the dataset has \['train'\]"):
        load_hf_images("mnist", str(tmp_path / "no_test"))


def test_labels_outside_the_classes_are_named_with_the_split(tmp_path: Path) -> None:
    write_mnist(tmp_path / "idx", n_train=20, n_test=10)
    data = as_hub_dataset(load_mnist(tmp_path / "idx", allow_download=False), "mnist")
    for bad, found in ((12, r"\[12\] \(1 of 20 rows\)"), (-1, r"\[-1\] \(1 of 20 rows\)")):
        labels = list(data["train"]["label"])
        labels[3] = bad  # as a plain integer column, which ClassLabel would refuse
        train = data["train"].remove_columns("label").add_column("label", labels)
        folder = tmp_path / f"bad{bad}"
        datasets.DatasetDict({"train": train, "test": data["test"]}).save_to_disk(folder)
        message = r"split 'train': column 'label' must hold labels 0–9, found " + found
        with pytest.raises(DataFileError, match=message):
            load_hf_images("mnist", str(folder))


def test_the_hub_offline_says_how_to_use_local_files() -> None:
    with pytest.raises(
        DataFileError,
        match=r"could not load the hub dataset 'ylecun/mnist'.*"
        r"point data\.hf_path at a save_to_disk folder",
    ):
        load_hf_images("mnist")


def test_source_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"data\.hf_path needs data\.source: hf"):
        build_config({"task": "image_classification", "data": {"hf_path": "x"}})
    with pytest.raises(ValueError, match=r"data\.data_dir is for data\.source: official"):
        build_config({"task": "image_classification", "data": {"source": "hf", "data_dir": "x"}})


def _mnist_hub(tmp_path: Path) -> datasets.DatasetDict:
    write_mnist(tmp_path / "idx", n_train=12, n_test=6)
    return as_hub_dataset(load_mnist(tmp_path / "idx", allow_download=False), "mnist")


def _with_images(split: datasets.Dataset, change) -> datasets.Dataset:
    images = [change(i, image) for i, image in enumerate(split["image"])]
    rows = {"image": images, "label": split["label"]}
    return datasets.Dataset.from_dict(rows, features=split.features)


def _with_labels(split: datasets.Dataset, labels: list) -> datasets.Dataset:
    return split.remove_columns("label").add_column("label", labels)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        # a palette image decodes to its palette indices, not grey levels
        (lambda d: {"train": _with_images(d["train"], lambda i, im: im.convert("P"))},
         r"split 'train': column 'image' holds P images; these are L \(convert them: "
         r"dataset.cast_column\('image', datasets.Image\(mode='L'\)\)\)"),
        # 32 × 32 test images beside 28 × 28 training ones: the model failed naming no data
        (lambda d: {"test": _with_images(d["test"], lambda i, im: im.resize((32, 32)))},
         r"split 'test': column 'image' row 0 is an image of shape \(32, 32\); .* images are "
         r"\(28, 28\) \(H, W\)"),
        # sizes mixed within a split: numpy's "all input arrays must have the same shape"
        (lambda d: {"train": _with_images(
            d["train"], lambda i, im: im.resize((30, 30)) if i == 5 else im)},
         r"split 'train': column 'image' row 5 is an image of shape \(30, 30\)"),
        (lambda d: {"train": _with_labels(d["train"], [1.7] * 12)},
         r"split 'train': column 'label' holds float64 values; labels are integers 0–9"),
        (lambda d: {"train": _with_labels(d["train"], ["cat"] * 12)},
         r"column 'label' holds string values; labels are integers 0–9 \(or a ClassLabel\)"),
        (lambda d: {"train": _with_labels(d["train"], [None, *range(1, 12)])},
         r"column 'label' holds float\d+ values, not integer labels \(a row without a label\?\)"),
        # test label 6 would mean another class than training's 6
        (lambda d: {"test": d["test"].cast_column(
            "label", datasets.ClassLabel(names=[f"c{9 - i}" for i in range(10)]))},
         r"column 'label' names its classes otherwise in each split \(train: \['0', '1', "),
    ],
)  # fmt: skip
def test_images_and_labels_the_official_files_could_not_hold_are_refused(
    spoil, message: str, tmp_path: Path
) -> None:
    data = _mnist_hub(tmp_path)
    folder = tmp_path / "spoilt"
    datasets.DatasetDict({**data, **spoil(data)}).save_to_disk(folder)
    with pytest.raises(DataFileError, match=message):
        load_hf_images("mnist", str(folder))
