import bz2
import gzip
import lzma
import zipfile
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
