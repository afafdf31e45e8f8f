"""The IDX parser and MNIST loader: real files when RHN_DATA_DIR is set, synthetic always."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import pytest
import torch

from rhn.data import data_dirs
from rhn.data.mnist import IMAGE_MAGIC, MIRRORS, load_mnist, parse_idx, read_idx
from rhn.data.synthetic import idx_bytes, write_mnist
from rhn.data.text_file import DataFileError
from tests.data.disk_full import download_with_full_disk


def test_parse_idx_hand_made_file() -> None:
    # magic 0x00000803: unsigned bytes, 3 dims; 2 images of 2 × 3
    data = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, *range(12)])
    array = parse_idx(data, magic=IMAGE_MAGIC)
    assert array.dtype == torch.uint8 and array.shape == (2, 2, 3)
    assert array[1, 0].tolist() == [6, 7, 8]


def test_parse_idx_big_endian_ints() -> None:
    values = torch.tensor([[1, -2], [300000, 7]], dtype=torch.int32)
    assert torch.equal(parse_idx(idx_bytes(values, 0x0C)), values)


def test_wrong_magic_names_file_and_expected_magic() -> None:
    labels = idx_bytes(torch.zeros(5, dtype=torch.uint8))
    with pytest.raises(DataFileError, match=r"labels\.idx.*magic number 2051"):
        parse_idx(labels, "labels.idx", IMAGE_MAGIC)


def test_truncated_file_names_expected_size(tmp_path: Path) -> None:
    data = idx_bytes(torch.zeros(4, 28, 28, dtype=torch.uint8))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DataFileError, match=r"train-images.*expected 3,152 bytes.*truncated"):
        read_idx(path, IMAGE_MAGIC)


def test_load_mnist_from_synthetic_folder(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist")
    splits = load_mnist(tmp_path, allow_download=False)
    assert splits.train.images.shape == (30, 1, 28, 28) and splits.test.labels.shape == (10,)
    assert splits.train.labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_label_count_mismatch_is_reported(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    labels = idx_bytes(torch.zeros(7, dtype=torch.uint8))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    with pytest.raises(DataFileError, match=r"7 labels but .* 10 images"):
        load_mnist(tmp_path, allow_download=False)


def test_missing_files_name_them_and_the_places_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    with pytest.raises(DataFileError, match=rf"train-images-idx3-ubyte.*{tmp_path}"):
        load_mnist(tmp_path, allow_download=False)


@pytest.mark.parametrize("where", ["missing", "a file"])
def test_a_named_folder_that_is_not_one_is_warned_of_then_passed_over(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RHN_DATA_DIR holds a copy: a typo in the folder named read that copy without a word.
    # Passed over still (a run whose data moved is evaluated from the copy), but said.
    write_mnist(tmp_path / "shared" / "mnist", n_train=7)
    monkeypatch.setenv("RHN_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path / "cache"))
    named = tmp_path / "mnsit"
    if where == "a file":
        named.write_text("not a folder")
    shared = tmp_path / "shared"
    with pytest.warns(UserWarning) as caught:
        splits = load_mnist(named, allow_download=False)
    assert [str(w.message) for w in caught] == [
        f"mnist: data.data_dir {named} is not a folder; mnist is looked for in {shared}, "
        f"{shared / 'mnist'}, {tmp_path / 'cache' / 'downloads' / 'mnist'} instead"
    ]
    assert len(splits.train) == 7  # the copy's
    (tmp_path / "empty").mkdir()  # a folder that exists (without the files): no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_mnist(tmp_path / "empty", allow_download=False).train) == 7


def test_the_four_files_come_from_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "shared" / "mnist", seed=1)
    monkeypatch.setenv("RHN_DATA_DIR", str(tmp_path / "shared"))
    mine = tmp_path / "mine"
    write_mnist(mine, seed=2)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (mine / name).unlink()
    # The test images were taken from RHN_DATA_DIR, beside this folder's training images.
    with pytest.raises(DataFileError, match=rf"could not find t10k-images.*\({mine} holds train"):
        load_mnist(mine, allow_download=False)
    # Only the test images are asked for: this folder has none, RHN_DATA_DIR's are read.
    shared = load_mnist(tmp_path / "shared", allow_download=False)
    assert torch.equal(load_mnist(mine, allow_download=False, train=False).test.images,
                       shared.test.images)  # fmt: skip


@pytest.mark.skipif(not os.environ.get("RHN_DATA_DIR"), reason="RHN_DATA_DIR is unset (real MNIST)")
def test_real_mnist() -> None:
    splits = load_mnist(allow_download=False)
    assert splits.train.images.shape == (60000, 1, 28, 28)
    assert splits.test.images.shape == (10000, 1, 28, 28)
    # The known first labels of the training set, and its mean pixel (0.1307 after /255).
    assert splits.train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert splits.train.images.float().mean().item() / 255 == pytest.approx(0.1307, abs=1e-4)
    # The test set's known class counts (digits 0-9), so no label outside them.
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert splits.test.labels.bincount().tolist() == counts


def test_download_door_fetches_the_four_files_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The official files served by a stand-in for the network (no machine here is online).
    source = tmp_path / "server"
    write_mnist(source, n_train=12, n_test=4)
    asked = []

    def fetch(url: str, timeout: float = 60.0) -> bytes:
        asked.append(url)
        if url.startswith(MIRRORS[0]):
            raise OSError("mirror down")
        return (source / url.rsplit("/", 1)[1]).read_bytes()

    monkeypatch.setattr(data_dirs, "fetch", fetch)
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.delenv("RHN_OFFLINE", raising=False)
    splits = load_mnist()  # in no folder: downloaded
    assert len(splits.train) == 12 and len(splits.test) == 4
    assert asked[:2] == [
        f"{MIRRORS[0]}train-images-idx3-ubyte.gz",
        f"{MIRRORS[1]}train-images-idx3-ubyte.gz",
    ]
    assert (tmp_path / "cache" / "downloads" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    monkeypatch.setenv("RHN_OFFLINE", "1")  # offline: the cache is still found
    assert len(load_mnist().train) == 12


def test_a_download_that_fails_part_way_leaves_no_torn_file(tmp_path: Path) -> None:
    write_mnist(tmp_path / "server", n_train=2, n_test=4)  # test images: 3,175 bytes gzipped
    err = download_with_full_disk(
        "from rhn.data.mnist import load_mnist\nload_mnist()",
        server=tmp_path / "server",
        cache=tmp_path / "cache",
        limit=2500,
    )
    assert "File too large" in err.splitlines()[-1]
    # The files written whole before the disk filled, and no part of the one it filled on.
    folder = tmp_path / "cache" / "downloads" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
