"""Reading a user's text corpus from disk: plain, ``.gz``, ``.xz`` or ``.bz2``, line breaks kept."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

_OPENERS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


class DataFileError(FileNotFoundError):
    """A data file that is missing or unreadable; the message names it and says why."""


def read_text(path: str | Path) -> str:
    """The whole file as text (UTF-8), decompressed by its suffix; ``\\n`` line breaks kept."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileError(
            f"data file {path} does not exist (looked for it as given"
            f"{'' if path.is_absolute() else f', relative to {Path.cwd()}'})"
        )
    opener = _OPENERS.get(path.suffix, open)
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            return f.read()
    except (OSError, EOFError, UnicodeDecodeError, lzma.LZMAError) as err:
        raise DataFileError(f"data file {path} can't be read as UTF-8 text: {err}") from None
