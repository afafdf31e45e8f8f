"""CIFAR-10 and CIFAR-100 from the official binary files (Krizhevsky 2009), local or downloaded.

Binary layout: fixed-size records, no header. CIFAR-10: 1 label byte + 3072 pixel bytes
(1024 red, 1024 green, 1024 blue, each 32 × 32 row-major), in ``data_batch_{1..5}.bin``
(10,000 records each) and ``test_batch.bin``. CIFAR-100: 2 label bytes (coarse, fine) +
3072 pixel bytes, in ``train.bin`` (50,000) and ``test.bin`` (10,000).

The python-pickle versions are not read: unpickling runs arbitrary code.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from rhn.data import data_dirs
from rhn.data.atomic_file import atomic_open
from rhn.data.image_set import ImageSet, ImageSplits
from rhn.data.text_file import DataFileError, read_bytes

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarSpec:
    name: str
    num_classes: int
    label_bytes: int  # CIFAR-100 stores (coarse, fine); the fine label is the class
    train_files: tuple[str, ...]
    test_file: str
    folder: str  # the folder the official archive unpacks to
    url: str
    sizes: tuple[int, int] = (50_000, 10_000)  # the official training and test images

    @property
    def record_size(self) -> int:
        return self.label_bytes + PIXELS


CIFAR = {
    "cifar10": CifarSpec(
        "cifar10",
        10,
        1,
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        "test_batch.bin",
        "cifar-10-batches-bin",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    ),
    "cifar100": CifarSpec(
        "cifar100",
        100,
        2,
        ("train.bin",),
        "test.bin",
        "cifar-100-binary",
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    ),
}


def parse_cifar_binary(data: bytes, spec: CifarSpec, path: str | Path = "<bytes>") -> ImageSet:
    """One binary batch file's records as uint8 images ``(N, 3, 32, 32)`` and labels."""
    size = spec.record_size
    if not data or len(data) % size:
        raise DataFileError(
            f"{path}: a {spec.name} binary file is a whole number of {size}-byte records "
            f"({spec.label_bytes} label byte(s) + {PIXELS} pixels); this one has {len(data):,} "
            f"bytes ({len(data) // size} records and {len(data) % size} bytes over: truncated "
            f"or not a {spec.name} file)"
        )
    records = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, size)
    labels = records[:, spec.label_bytes - 1].long()
    if int(labels.max()) >= spec.num_classes:
        raise DataFileError(
            f"{path}: {spec.name} labels must be below {spec.num_classes}, found "
            f"{int(labels.max())} (is this a {spec.name} file?)"
        )
    images = records[:, spec.label_bytes :].reshape(-1, 3, 32, 32).clone()
    return ImageSet(images, labels, spec.num_classes)


def read_cifar_binary(path: str | Path, spec: CifarSpec) -> ImageSet:
    return parse_cifar_binary(read_bytes(path), spec, path)


def _concat(sets: list[ImageSet]) -> ImageSet:
    return ImageSet(
        torch.cat([s.images for s in sets]),
        torch.cat([s.labels for s in sets]),
        sets[0].num_classes,
    )


def _download(spec: CifarSpec) -> None:
    target = data_dirs.download_dir(spec.name)
    payload = data_dirs.fetch(spec.url, timeout=300)
    with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
        for name in (*spec.train_files, spec.test_file):
            member = archive.extractfile(f"{spec.folder}/{name}")
            if member is None:
                raise DataFileError(f"{spec.url} has no file {spec.folder}/{name}")
            # whole or not at all: a torn file at a record's end would read as a short copy
            with member, atomic_open(target / spec.folder / name, "wb") as out:
                shutil.copyfileobj(member, out)


def load_cifar(
    name: str,
    data_dir: str | Path | None = None,
    *,
    allow_download: bool = True,
    train: bool = True,
) -> ImageSplits:
    """CIFAR-10 (``cifar10``) or CIFAR-100 (``cifar100``), uint8 ``(N, 3, 32, 32)``.

    The training set is every training batch file found in the folder (the official
    set has all five for CIFAR-10; a partial copy with fewer loads with what it has, and
    warns that its numbers are not the published set's). ``train=False`` reads the test
    file alone.
    """
    if name not in CIFAR:
        raise ValueError(f"CIFAR data set must be one of {sorted(CIFAR)}, got {name!r}")
    spec = CIFAR[name]
    roots = data_dirs.search_dirs((name, f"{name}_subset"), name, data_dir, key="data.data_dir")
    dirs = [d for root in roots for d in (root, root / spec.folder)]

    def locate() -> dict[str, Path | None]:
        # One folder, the first holding any of the files, as for every data set (and the
        # same for a test-only read): a user's folder lacking the test file is not passed
        # over for RHN_DATA_DIR's copy.
        return data_dirs.find_together((*spec.train_files, spec.test_file), dirs)

    def lacking(found: dict[str, Path | None]) -> list[str]:
        needed = [spec.test_file] if found[spec.test_file] is None else []
        if train and not any(found[file] for file in spec.train_files):
            needed.append(" or ".join(spec.train_files))
        return needed

    found, note = locate(), ""
    needed = lacking(found)
    # Also when some files are there: a download stopped part-way left the training batches
    # (written first) without the test file.
    if needed and allow_download and data_dirs.downloads_allowed():
        try:
            _download(spec)
            found = locate()
            needed = lacking(found)
        except (OSError, tarfile.TarError) as err:
            note = f" Downloading {spec.url} failed: {err}."
    train_paths = [path for file in spec.train_files if (path := found[file])]
    if needed:
        held = [path for path in found.values() if path is not None]
        where = (
            f"{held[0].parent}, which holds {', '.join(p.name for p in held)} (a data set's "
            f"files are read from one folder)"
            if held
            else ", ".join(map(str, dirs))
        )
        raise DataFileError(
            f"{name}: could not find {' and '.join(needed)} in: {where}.{note} Get "
            f"{spec.url}, unpack it and point RHN_DATA_DIR or data.data_dir at the folder."
        )
    folder = found[spec.test_file].parent
    test = read_cifar_binary(folder / spec.test_file, spec)
    train_set = _concat([read_cifar_binary(p, spec) for p in train_paths]) if train else None
    _warn_if_partial(spec, folder, train_set, test)
    return ImageSplits(name, train_set, test)


def _warn_if_partial(spec: CifarSpec, folder: Path, train: ImageSet | None, test: ImageSet) -> None:
    found = [("test", len(test.labels), spec.sizes[1])]
    if train is not None:
        found.insert(0, ("training", len(train.labels), spec.sizes[0]))
    short = [f"{n:,} {what} images of the official {full:,}" for what, n, full in found if n < full]
    if short:
        warnings.warn(
            f"{spec.name} in {folder} is a partial copy ({' and '.join(short)}): its results "
            f"are not comparable with numbers published on the full set",
            stacklevel=3,
        )
