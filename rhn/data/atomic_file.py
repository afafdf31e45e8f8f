"""Files replaced whole or not at all: a temporary file beside the target, fsync, rename.

A run killed at any moment leaves either the old file or the new one, never a torn or
truncated one. The temporary is named ``.NAME.*.tmp``, so
:func:`rhn.train.run_dir.remove_stale_temporaries` can recognise one left by a kill.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """A file opened for writing (``mode`` ``"w"`` or ``"wb"``) that replaces ``path`` when
    the block ends without an exception; on an exception ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; the result gets the mode open() would have given
        # it: the replaced file's, or the default under the umask.
        os.fchmod(fd, mode_for(path))
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    """Make a rename into ``folder`` durable: it is only once the directory entry is."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_failure(err: BaseException) -> str | None:
    """Why a write failed (a full disk, a file size limit, an I/O error), when ``err`` is
    such a failure: an OSError, or the RuntimeError torch.save's zip writer raises for one
    ("inline_container.cc ...", raised while handling the OSError); None for other errors."""
    os_error = err if isinstance(err, OSError) else err.__context__
    if isinstance(os_error, OSError):
        return os_error.strerror or str(os_error)
    if isinstance(err, RuntimeError) and "inline_container" in str(err):
        return "the write failed"
    return None


def mode_for(path: Path) -> int:
    """The mode a file written to ``path`` should get: the file's it replaces, else the
    default open() gives under the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # the only portable way to read it is to set it
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_save_figure(figure: Any, path: str | Path, **savefig: Any) -> None:
    """A matplotlib figure saved to ``path`` (format from its suffix), atomically: a rerun
    killed mid-write keeps the previous image."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format=path.suffix.lstrip(".") or "png", **savefig)
