"""MNIST from the original IDX files (LeCun, Cortes & Burges), local or downloaded.

IDX layout: two zero bytes, a type code (``0x08`` = unsigned byte), the number of
dimensions n, then n big-endian uint32 sizes and the data, row-major. The MNIST files are
``{train,t10k}-images-idx3-ubyte`` (magic 2051: N × 28 × 28 pixels) and
``{train,t10k}-labels-idx1-ubyte`` (magic 2049: N labels 0–9), usually gzipped.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch

from rhn.data import data_dirs
from rhn.data.atomic_file import atomic_write_bytes
from rhn.data.image_set import ImageSet, ImageSplits
from rhn.data.text_file import DataFileError, read_bytes

# The first is where torchvision fetches MNIST since yann.lecun.com began refusing
# scripted downloads; the original site stays as a fallback.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
_IDX_TYPES = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}


def parse_idx(data: bytes, path: str | Path = "<bytes>", magic: int | None = None) -> torch.Tensor:
    """An IDX file's array; ``magic`` (e.g. 2051) is checked when given."""
    if len(data) < 4:
        raise DataFileError(f"{path}: {len(data)} bytes is too short for an IDX header (4 bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    found_magic = (code << 8) | ndim
    if zero != 0 or code not in _IDX_TYPES or (magic is not None and found_magic != magic):
        expected = f"magic number {magic}" if magic is not None else "an IDX magic number"
        raise DataFileError(
            f"{path}: not an IDX file of the expected kind: expected {expected} "
            f"(0x{magic or 0:08x}), found 0x{int.from_bytes(data[:4], 'big'):08x}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFileError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype, itemsize = _IDX_TYPES[code]
    expected_size = header + itemsize * int(torch.Size(shape).numel())
    if len(data) != expected_size:
        raise DataFileError(
            f"{path}: expected {expected_size:,} bytes for an IDX array of shape {shape}, the "
            f"file has {len(data):,} ({'truncated' if len(data) < expected_size else 'extra data'})"
        )
    array = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    if itemsize > 1:  # IDX is big-endian
        array = array.view(-1, itemsize).flip(-1).reshape(-1)
    return array.view(dtype).reshape(shape).clone()


def read_idx(path: str | Path, magic: int | None = None) -> torch.Tensor:
    """Parse an IDX file, plain or compressed (``.gz``, …)."""
    return parse_idx(read_bytes(path), path, magic)


def _read_split(images_path: Path, labels_path: Path) -> ImageSet:
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataFileError(
            f"{images_path}: expected 28 × 28 images, got {tuple(images.shape[1:])}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataFileError(
            f"{labels_path} holds {labels.shape[0]:,} labels but {images_path} holds "
            f"{images.shape[0]:,} images"
        )
    if labels.numel() and int(labels.max()) > 9:
        raise DataFileError(f"{labels_path}: labels must be 0–9, found {int(labels.max())}")
    return ImageSet(images.unsqueeze(1), labels.long(), 10)


def _download(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for names in FILES.values():
        for name in names:
            errors = []
            for mirror in MIRRORS:
                try:
                    payload = data_dirs.fetch(f"{mirror}{name}.gz")
                except OSError as err:
                    errors.append(f"{mirror}: {err}")
                    continue
                gzip.decompress(payload)  # a bad download fails here, not at training time
                atomic_write_bytes(target / f"{name}.gz", payload)  # never a torn file
                break
            else:
                raise OSError("; ".join(errors))


def find_mnist(
    data_dir: str | Path | None = None,
    *,
    allow_download: bool = True,
    train: bool = True,
    key: str = "data.data_dir",
) -> dict[str, Path]:
    """Where MNIST's files are (each name to its path), downloading them if they are in
    none of the folders searched and downloads are allowed. ``key`` is the config key that
    names ``data_dir`` to the user, for the could-not-find message."""
    dirs = data_dirs.search_dirs("mnist", "mnist", data_dir, key=key)
    splits = ("train", "test") if train else ("test",)
    names = [name for split in splits for name in FILES[split]]
    found = data_dirs.find_together(names, dirs, ("", ".gz"))
    note = ""
    if not all(found.values()) and allow_download and data_dirs.downloads_allowed():
        try:
            _download(data_dirs.download_dir("mnist"))
            found = data_dirs.find_together(names, dirs, ("", ".gz"))
        except (OSError, EOFError) as err:
            note = f" Downloading failed: {err}."
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataFileError(
            f"MNIST: could not find {', '.join(missing)} (plain or .gz) in: "
            f"{', '.join(map(str, dirs))}{data_dirs.partial_folder_note(found)}.{note} Get the "
            f"files from {MIRRORS[0]} and put them in a folder named by RHN_DATA_DIR (or its "
            f"mnist/ sub-folder) or {key}."
        )
    return {name: path for name, path in found.items() if path is not None}


def load_mnist(
    data_dir: str | Path | None = None, *, allow_download: bool = True, train: bool = True
) -> ImageSplits:
    """MNIST's 60,000 training and 10,000 test images, uint8 ``(N, 1, 28, 28)``; with
    ``train=False`` the test images alone (the training files need not exist)."""
    found = find_mnist(data_dir, allow_download=allow_download, train=train)
    wanted = {split: FILES[split] for split in (("train", "test") if train else ("test",))}
    sets = {split: _read_split(found[a], found[b]) for split, (a, b) in wanted.items()}
    return ImageSplits("mnist", sets.get("train"), sets["test"])
