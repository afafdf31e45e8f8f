"""The CIFAR binary parser and loader: the real subset with RHN_DATA_DIR, synthetic always."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pytest

from rhn.data import data_dirs
from rhn.data.cifar import CIFAR, load_cifar, parse_cifar_binary
from rhn.data.synthetic import cifar_bytes, write_cifar
from rhn.data.text_file import DataFileError
from tests.data.disk_full import download_with_full_disk


def test_record_layout_hand_made() -> None:
    # one record: label 3, red plane all 1, green all 2, blue all 3
    data = bytes([3]) + bytes([1]) * 1024 + bytes([2]) * 1024 + bytes([3]) * 1024
    images = parse_cifar_binary(data, CIFAR["cifar10"])
    assert images.labels.tolist() == [3] and images.images.shape == (1, 3, 32, 32)
    assert images.images[0, :, 5, 7].tolist() == [1, 2, 3]


def test_cifar100_takes_the_fine_label() -> None:
    data = cifar_bytes([42, 99], label_bytes=2)
    assert parse_cifar_binary(data, CIFAR["cifar100"]).labels.tolist() == [42, 99]


def test_truncated_file_names_record_size(tmp_path: Path) -> None:
    data = cifar_bytes([1, 2])[:-10]
    with pytest.raises(
        DataFileError, match=r"batch\.bin.*3073-byte records.*1 records and 3063 bytes over"
    ):
        parse_cifar_binary(data, CIFAR["cifar10"], tmp_path / "batch.bin")


def test_cifar100_file_read_as_cifar10_is_rejected() -> None:
    # 2 records of 3074 bytes (6,148) are 2 records of 3073 bytes and 2 bytes over
    with pytest.raises(
        DataFileError,
        match=r"^<bytes>: a cifar10 binary file is a whole number of 3073-byte records \(1 label "
        r"byte\(s\) \+ 3072 pixels\); this one has 6,148 bytes \(2 records and 2 bytes over: "
        r"truncated or not a cifar10 file\)$",
    ):
        parse_cifar_binary(cifar_bytes([5, 60], label_bytes=2), CIFAR["cifar10"])


@pytest.mark.parametrize(
    ("name", "labels", "message"),
    [
        ("cifar10", [3, 10, 7], r"cifar10 labels must be below 10, found 10"),
        ("cifar10", [255], r"cifar10 labels must be below 10, found 255"),
        ("cifar100", [99, 100], r"cifar100 labels must be below 100, found 100"),
    ],
)
def test_labels_out_of_range_are_rejected(
    tmp_path: Path, name: str, labels: list[int], message: str
) -> None:
    spec = CIFAR[name]
    # Whole records, so the size check passes; the (fine) label byte is out of range.
    data = b"".join(bytes([0] * (spec.label_bytes - 1) + [label]) + bytes(3072) for label in labels)
    path = tmp_path / spec.test_file
    path.write_bytes(data)
    where = re.escape(str(path))
    with pytest.raises(DataFileError, match=rf"^{where}: {message} \(is this a {name} file\?\)$"):
        parse_cifar_binary(data, spec, path)
    # The loader reads the file and says the same, naming it.
    with pytest.raises(DataFileError, match=rf"^{where}: {message} "):
        load_cifar(name, tmp_path, allow_download=False, train=False)
    # In range, the same records load.
    ok = b"".join(bytes([0] * (spec.label_bytes - 1) + [1]) + bytes(3072) for _ in labels)
    assert parse_cifar_binary(ok, spec).labels.tolist() == [1] * len(labels)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_synthetic_folder(tmp_path: Path, name: str) -> None:
    write_cifar(tmp_path, name)
    with pytest.warns(UserWarning) as caught:
        splits = load_cifar(name, tmp_path, allow_download=False)
    assert splits.train.images.shape == (20, 3, 32, 32) and len(splits.test) == 10
    folder = tmp_path / CIFAR[name].folder
    assert [str(w.message) for w in caught] == [
        f"{name} in {folder} is a partial copy (20 training images of the official 50,000 and "
        f"10 test images of the official 10,000): its results are not comparable with numbers "
        f"published on the full set"
    ]
    with pytest.warns(UserWarning, match=r"partial copy \(10 test images of the official 10,000\)"):
        load_cifar(name, tmp_path, allow_download=False, train=False)
    assert splits.train.num_classes == CIFAR[name].num_classes


def test_missing_folder_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    with pytest.raises(
        DataFileError, match=rf"test_batch\.bin and data_batch_1\.bin or .*5\.bin in: {tmp_path}"
    ):
        load_cifar("cifar10", tmp_path, allow_download=False)
    with pytest.raises(DataFileError, match=rf"could not find test\.bin in: {tmp_path}"):
        load_cifar("cifar100", tmp_path, allow_download=False, train=False)
    with pytest.raises(ValueError, match="cifar10"):
        load_cifar("cifar1000", tmp_path)


@pytest.mark.skipif(
    not os.environ.get("RHN_DATA_DIR"), reason="RHN_DATA_DIR is unset (real CIFAR subset)"
)
def test_real_cifar10_subset() -> None:
    with pytest.warns(UserWarning, match=r"4,000 training images of the official 50,000 and 1,000"):
        splits = load_cifar("cifar10", allow_download=False)
    # The shared copy: data_batch_1's first 4,000 records and the first 1,000 test images.
    assert splits.train.images.shape == (4000, 3, 32, 32) and len(splits.test) == 1000
    assert splits.train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert splits.test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_a_folder_holding_some_of_the_files_is_not_passed_over_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = CIFAR["cifar10"]
    write_cifar(tmp_path / "shared", n_train=20, n_test=10)  # a whole copy elsewhere
    monkeypatch.setenv("RHN_DATA_DIR", str(tmp_path / "shared"))
    mine = tmp_path / "mine"
    write_cifar(mine, n_train=6, n_test=3)
    (mine / spec.folder / spec.test_file).unlink()
    message = (
        rf"cifar10: could not find test_batch\.bin in: {mine / spec.folder}, which holds "
        r"data_batch_1\.bin \(a data set's files are read from one folder\)"
    )
    for train in (True, False):  # a test-only read (rhn-eval) looks in the same folder
        with pytest.raises(DataFileError, match=message):
            load_cifar("cifar10", mine, allow_download=False, train=train)
    # Only the test file: nothing to train on, named as such.
    (mine / spec.folder / spec.train_files[0]).rename(mine / spec.folder / spec.test_file)
    with pytest.raises(DataFileError, match=r"could not find data_batch_1\.bin or .* in: "):
        load_cifar("cifar10", mine, allow_download=False)
    with pytest.warns(UserWarning, match=r"partial copy \(6 test images"):
        assert len(load_cifar("cifar10", mine, allow_download=False, train=False).test) == 6


def test_download_door_unpacks_the_official_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = CIFAR["cifar100"]
    write_cifar(tmp_path / "server", "cifar100", n_train=6, n_test=3)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(tmp_path / "server" / spec.folder, arcname=spec.folder)

    def fetch(url: str, timeout: float = 60.0) -> bytes:
        assert url == spec.url
        return buffer.getvalue()

    monkeypatch.setattr(data_dirs, "fetch", fetch)
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.delenv("RHN_OFFLINE", raising=False)
    with pytest.warns(UserWarning, match="partial copy"):
        splits = load_cifar("cifar100")  # in no folder: downloaded
    assert len(splits.train) == 6 and len(splits.test) == 3 and splits.train.num_classes == 100


def test_a_download_that_fails_part_way_leaves_no_torn_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = CIFAR["cifar100"]
    write_cifar(tmp_path / "unpacked", "cifar100", n_train=2, n_test=3)  # 6,148 and 9,222 B
    (tmp_path / "server").mkdir()
    with tarfile.open(tmp_path / "server" / spec.url.rsplit("/", 1)[1], "w:gz") as archive:
        archive.add(tmp_path / "unpacked" / spec.folder, arcname=spec.folder)
    err = download_with_full_disk(
        "from rhn.data.cifar import load_cifar\nload_cifar('cifar100')",
        server=tmp_path / "server",
        cache=tmp_path / "cache",
        limit=8000,
    )
    assert "File too large" in err.splitlines()[-1]
    # A torn test.bin at a record's end would have loaded later as a smaller test set.
    folder = tmp_path / "cache" / "downloads" / "cifar100" / spec.folder
    assert [p.name for p in folder.iterdir()] == ["train.bin"]
    # The next run downloads again (the training file alone is no copy to read), whole.
    archive = (tmp_path / "server" / spec.url.rsplit("/", 1)[1]).read_bytes()
    monkeypatch.setattr(data_dirs, "fetch", lambda url, timeout=60.0: archive)
    monkeypatch.setenv("RHN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.delenv("RHN_OFFLINE", raising=False)
    with pytest.warns(UserWarning, match="partial copy"):
        splits = load_cifar("cifar100")
    assert len(splits.train) == 2 and len(splits.test) == 3
