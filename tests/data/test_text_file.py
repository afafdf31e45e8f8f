import gzip
import lzma
from pathlib import Path

import pytest

from rhn.data.text_file import DataFileError, read_text

TEXT = "line one\nline two\r\n\nlast"


@pytest.mark.parametrize("suffix", ["", ".gz", ".xz"])
def test_line_breaks_survive_every_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"corpus.txt{suffix}"
    data = TEXT.encode()
    path.write_bytes({"": data, ".gz": gzip.compress(data), ".xz": lzma.compress(data)}[suffix])
    assert read_text(path) == TEXT


def test_missing_and_broken_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"data file .*nope\.txt does not exist"):
        read_text(tmp_path / "nope.txt")
    broken = tmp_path / "broken.txt.xz"
    broken.write_bytes(b"not xz at all")
    with pytest.raises(DataFileError, match=r"broken\.txt\.xz can't be read as UTF-8 text"):
        read_text(broken)
