"""One owner per run directory, and no debris from killed saves.

A run directory is written by exactly one training process: :class:`RunDirLock` holds an
exclusive ``flock`` on ``RUN_DIR/lock`` (released by the kernel when the process dies, so a
killed run never leaves a stale lock) and records the holder's pid and host in it, which a
second process names when it is refused.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class RunDirError(RuntimeError):
    """A run directory that can't be used as asked (e.g. ``--fresh`` on an existing run, or
    one another process is training in)."""


LOCK_NAME = "lock"  # every run directory has one from its first moment: it marks a run


def visible_entries(folder: Path) -> list[str]:
    """The names in ``folder``, sorted, less hidden ones (a desktop's .DS_Store, our own
    temporaries): what says a folder is someone's."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def name_list(names: list[str]) -> str:
    """At most three of ``names``, for a one-line message."""
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents) or say in one line why it can't be used: a file,
    unwritable (or its ``checkpoints/``), or a folder of other files (no run's ``lock``, no
    ``checkpoints/last.pt`` or ``best.pt``), which training would overwrite (``config.yaml``)
    and append to (``metrics.jsonl``)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} is a file; choose another --run-dir")
    # A run is a folder with our lock, or one with our checkpoints (a run copied without
    # its lock): a checkpoints/ folder alone is not ours (PyTorch Lightning writes one).
    ours = [run_dir / LOCK_NAME, run_dir / "checkpoints/last.pt", run_dir / "checkpoints/best.pt"]
    if run_dir.is_dir() and not any(path.exists() for path in ours):
        others = visible_entries(run_dir)
        if others:
            raise RunDirError(
                f"run directory {run_dir} holds files but no run ({name_list(others)}); training "
                f"would overwrite them: choose a new or empty --run-dir"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"cannot create run directory {run_dir}: {err.strerror or err}") from None
    # checkpoints/ too: one mounted read-only would fail at the first save, after training
    # to it and rewriting config.yaml for a run that saved nothing under it.
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise RunDirError(f"run directory {folder} is not writable; choose another --run-dir")


class RunDirLock:
    """An exclusive, non-blocking lock on ``run_dir``; :meth:`release` gives it back."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot open {self.path}: {err.strerror or err}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise RunDirError(
                f"{run_dir} is in use by another training process ({holder}); wait for it, "
                f"stop it, or choose another --run-dir"
            ) from None
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError as err:  # a full disk: nothing else of the run could be written either
            os.close(self._fd)
            raise RunDirError(
                f"cannot write {self.path}: {err.strerror or err}; free some space or choose "
                f"another --run-dir"
            ) from None

    def release(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def remove_stale_temporaries(checkpoint_dir: Path) -> list[Path]:
    """Delete the temporary files of saves that were killed before their rename
    (:func:`rhn.train.checkpoint.atomic_torch_save` names them ``.NAME.*.tmp``). Only the
    lock holder calls this, so no save of a live run is touched."""
    if not checkpoint_dir.is_dir():
        return []
    stale = sorted(checkpoint_dir.glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
