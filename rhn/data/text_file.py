"""Reading data files: plain, ``.gz``, ``.xz``, ``.bz2`` or a one-member ``.zip``.

Text is decoded from the raw bytes, so line breaks survive exactly (``\\r\\n`` included);
character-level models depend on that.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile
import zlib
from pathlib import Path

_OPENERS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


class DataFileError(FileNotFoundError):
    """A data file that is missing, unreadable or malformed; the message names it and says why."""


def read_bytes(path: str | Path) -> bytes:
    """The file's content, decompressed according to its suffix."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataFileError(f"data file {path} is a directory, not a file")
    if not path.is_file():
        raise DataFileError(
            f"data file {path} does not exist (looked for it as given"
            f"{'' if path.is_absolute() else f', relative to {Path.cwd()}'})"
        )
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if len(names) != 1:
                    raise DataFileError(
                        f"data file {path} should hold one file, holds {len(names)}: {names[:5]}"
                    )
                return archive.read(names[0])
        with _OPENERS.get(path.suffix, open)(path, "rb") as f:
            return f.read()
    # zlib.error (a damaged deflate stream in a .gz or .zip) is not an OSError
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile, zlib.error) as err:
        raise DataFileError(f"data file {path} can't be read: {err}") from None


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The file decoded as ``encoding`` (``latin-1`` maps every byte to one character); a
    UTF-8 byte-order mark, which editors on Windows write, is not part of the text."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as err:
        raise DataFileError(f"data file {path} can't be read as {encoding} text: {err}") from None
