"""Run directories: the lock that makes one process their owner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The lock taken on a disk with no byte left: every file's writes fail (RLIMIT_FSIZE 0 gives
# EFBIG where a full disk gives ENOSPC), set once the imports (which probe for a temporary
# folder by writing one) are done.
TAKE_LOCK_ON_A_FULL_DISK = """
import resource, signal, sys
from rhn.train.run_dir import RunDirError, RunDirLock
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    RunDirLock(sys.argv[1])
except RunDirError as err:
    sys.exit(f"RunDirError: {err}")
"""


def test_a_lock_that_cant_be_written_is_a_run_dir_error_naming_the_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", TAKE_LOCK_ON_A_FULL_DISK, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stderr == (
        f"RunDirError: cannot write {tmp_path / 'lock'}: File too large; free some space or "
        f"choose another --run-dir\n"
    )
