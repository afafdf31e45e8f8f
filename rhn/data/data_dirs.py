"""Where data sets are looked for, and where downloads go.

Every loader searches, in order: the directory a config or command line names, the one in
``RHN_DATA_DIR``, each of those with the data set's usual sub-folder (``ptb/``,
``mnist/``, …), and the download cache (``RHN_CACHE_DIR``, else ``~/.cache/rhn``). A data
set's files are read from the first of these folders that holds any of them, which must
hold them all: never from two. A named folder that does not exist is warned of, then passed
over (a run whose data moved since is still evaluated from RHN_DATA_DIR). The official
download is tried only when the files are in none of them and ``RHN_OFFLINE`` is unset or
``0``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path


def cache_dir() -> Path:
    """Where downloads and tokenised corpora are kept (``RHN_CACHE_DIR``, else ~/.cache/rhn)."""
    return Path(os.environ.get("RHN_CACHE_DIR", Path.home() / ".cache" / "rhn"))


def download_dir(name: str) -> Path:
    """The download cache's folder for data set ``name``."""
    return cache_dir() / "downloads" / name


_warned_missing: set[tuple[str, Path]] = set()  # (data set, named folder) already warned of


def missing_folders_warned() -> frozenset[tuple[str, Path]]:
    """The (data set, named folder) pairs this process has warned of, for
    :func:`count_as_warned` in the processes it starts (which would say each again)."""
    return frozenset(_warned_missing)


def count_as_warned(pairs: frozenset[tuple[str, Path]]) -> None:
    """Take ``pairs`` (from :func:`missing_folders_warned`) as already warned of here."""
    _warned_missing.update(pairs)


def search_dirs(
    subdirs: str | Sequence[str], name: str, data_dir: str | Path | None, *, key: str
) -> list[Path]:
    """Directories searched for data set ``name`` (usually in a folder ``subdirs``), in order.

    A ``data_dir`` (config key ``key``) that is not a folder is warned of: a typo would be
    passed over for RHN_DATA_DIR's copy or a download unseen. Not an error: a run whose
    data has moved since is still evaluated (rhn-eval reads the saved key) from those."""
    roots = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get("RHN_DATA_DIR"):
        roots.append(Path(os.environ["RHN_DATA_DIR"]).expanduser())
    subdirs = (subdirs,) if isinstance(subdirs, str) else tuple(subdirs)
    dirs = []
    for root in roots:
        dirs += [root, *(root / sub for sub in subdirs)]
    dirs.append(download_dir(name))
    if data_dir and not roots[0].is_dir() and (name, roots[0]) not in _warned_missing:
        # Once per process: a loader searches more than once, and a depth study's trials
        # (run in its process) would each say it again under their config's key.
        _warned_missing.add((name, roots[0]))
        others = ", ".join(str(d) for d in dirs if not d.is_relative_to(roots[0]))
        warnings.warn(
            f"{name}: {key} {data_dir} is not a folder; {name} is looked for in {others} instead",
            stacklevel=2,
        )
    return dirs


def find_file(name: str, dirs: list[Path], suffixes: tuple[str, ...] = ("",)) -> Path | None:
    """The first ``dir/name + suffix`` that is a file, trying dirs then suffixes in order."""
    for directory in dirs:
        for suffix in suffixes:
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def find_together(
    names: Sequence[str], dirs: list[Path], suffixes: tuple[str, ...] = ("",)
) -> dict[str, Path | None]:
    """``names`` as the first of ``dirs`` that holds any of them holds them (``None`` for
    those it lacks), so that one data set's files never come from two folders: a
    ``data.path`` lacking one would otherwise have it taken from ``RHN_DATA_DIR`` without a
    word, and one holding some would be passed over for another copy."""
    for directory in dirs:
        found = {name: find_file(name, [directory], suffixes) for name in names}
        if any(found.values()):
            return found
    return dict.fromkeys(names)


def partial_folder_note(found: dict[str, Path | None]) -> str:
    """For a could-not-find message: the folder that holds some of the files, if one does."""
    held = [path for path in found.values() if path is not None]
    if not held:
        return ""
    names = ", ".join(path.name for path in held)
    return f" ({held[0].parent} holds {names} but not the rest; they are read from one folder)"


def content_digest(paths: Sequence[Path]) -> str:
    """A SHA-256 of the files' names and bytes: what a cache of data read from them is keyed
    on (a copy that keeps an edited file's size and modification time is still told apart)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0".encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def downloads_allowed() -> bool:
    return os.environ.get("RHN_OFFLINE", "") in ("", "0")


def fetch(url: str, timeout: float = 60.0) -> bytes:
    """The body at ``url`` (raises OSError when offline or the server refuses)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()
