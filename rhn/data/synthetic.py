"""Tiny data sets in the official file formats, for tests and dry runs that must not need
the real ones: MNIST (gzipped IDX), CIFAR-10/100 (the binary batches) and PTB (word text).
Random content, real formats: the loaders cannot tell them from the real files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch

from rhn.data.cifar import CIFAR
from rhn.data.mnist import FILES


def idx_bytes(array: torch.Tensor, code: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, code, array.dim()) + struct.pack(
        f">{array.dim()}I", *array.shape
    )
    return header + array.numpy().astype(array.numpy().dtype.newbyteorder(">")).tobytes()


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> None:
    """A tiny MNIST in the original format (gzipped IDX files)."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images_name, labels_name = FILES[split]
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        (folder / f"{images_name}.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{labels_name}.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def cifar_bytes(labels: list[int], label_bytes: int = 1, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    out = bytearray()
    for label in labels:
        prefix = [label // 5, label] if label_bytes == 2 else [label]  # CIFAR-100: coarse, fine
        out += (
            bytes(prefix)
            + torch.randint(0, 256, (3072,), generator=g, dtype=torch.uint8).numpy().tobytes()
        )
    return bytes(out)


def write_cifar(folder: Path, name: str = "cifar10", n_train: int = 20, n_test: int = 10) -> None:
    spec = CIFAR[name]
    target = folder / spec.folder
    target.mkdir(parents=True, exist_ok=True)
    k = spec.num_classes
    (target / spec.train_files[0]).write_bytes(
        cifar_bytes([i % k for i in range(n_train)], spec.label_bytes)
    )
    (target / spec.test_file).write_bytes(
        cifar_bytes([i % k for i in range(n_test)], spec.label_bytes, seed=1)
    )


def ptb_char_text(text: str) -> str:
    """A word-level text in PTB's character format (``ptb.char.*.txt``): each line's
    characters separated by spaces, ``_`` between words."""
    return "".join(
        " " + " _ ".join(" ".join(word) for word in line.split()) + " \n"
        for line in text.splitlines()
    )


def write_ptb(
    folder: Path, words: int = 2000, vocab: int = 50, seed: int = 0, *, chars: bool = False
) -> None:
    """A tiny PTB (``ptb.{train,valid,test}.txt``): lines of random words from a ``vocab``-word
    list, one line break per sentence as in Mikolov's files; with ``chars`` also the same
    text as ``ptb.char.{train,valid,test}.txt``."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", words), ("valid", words // 5), ("test", words // 5)):
        ids = torch.randint(0, vocab, (n,), generator=g).tolist()
        lines = [" ".join(f"w{i}" for i in ids[k : k + 12]) for k in range(0, n, 12)]
        text = "".join(f" {line} \n" for line in lines)
        (folder / f"ptb.{split}.txt").write_text(text)
        if chars:
            (folder / f"ptb.char.{split}.txt").write_text(ptb_char_text(text))
