import bz2
import gzip
import lzma
import zipfile
import zlib
from pathlib import Path

import pytest

from rhn.data.text_file import DataFileError, read_text

TEXT = "line one\nline two\r\n\nlast"


@pytest.mark.parametrize("suffix", ["", ".gz", ".xz", ".bz2", ".zip"])
def test_line_breaks_survive_every_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"corpus.txt{suffix}"
    data = TEXT.encode()
    if suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("corpus.txt", data)
    else:
        compress = {"": bytes, ".gz": gzip.compress, ".xz": lzma.compress, ".bz2": bz2.compress}
        path.write_bytes(compress[suffix](data))
    assert read_text(path) == TEXT


def test_missing_and_broken_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"data file .*nope\.txt does not exist"):
        read_text(tmp_path / "nope.txt")
    broken = tmp_path / "broken.txt.xz"
    broken.write_bytes(b"not xz at all")
    with pytest.raises(DataFileError, match=r"broken\.txt\.xz can't be read"):
        read_text(broken)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(DataFileError, match=r"latin\.txt can't be read as utf-8 text"):
        read_text(latin)
    assert read_text(latin, "latin-1") == "café"


def test_a_damaged_deflate_stream_names_the_file(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(b"x" * 1000))
    data[10] = 0xFF  # the deflate stream's first block type becomes the reserved 3
    damaged = tmp_path / "damaged.txt.gz"
    damaged.write_bytes(bytes(data))
    with pytest.raises(zlib.error):  # what gzip raises, which is not an OSError
        gzip.decompress(bytes(data))
    with pytest.raises(DataFileError, match=r"damaged\.txt\.gz can't be read: .*invalid block"):
        read_text(damaged)


def test_a_utf8_byte_order_mark_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffthe cat\nthe".encode())
    assert read_text(path) == "the cat\nthe"
    # Only at the start, and only for UTF-8: latin-1 reads every byte as it is.
    assert read_text(path, "latin-1") == "\ufeffthe cat\nthe".encode().decode("latin-1")
    path.write_bytes("a\ufeffb".encode())
    assert read_text(path) == "a\ufeffb"
