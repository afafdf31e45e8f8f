"""A disk that fills part-way through a download, whatever code writes the files: a Python
subprocess under a file-size limit (RLIMIT_FSIZE), where a write past ``limit`` bytes of any
one file fails with EFBIG as a write to a full disk fails with ENOSPC."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PRELUDE = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of the process
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from rhn.data import data_dirs
server = Path({server!r})
data_dirs.fetch = lambda url, timeout=60.0: (server / url.rsplit("/", 1)[1]).read_bytes()
"""


def download_with_full_disk(code: str, *, server: Path, cache: Path, limit: int) -> str:
    """Run ``code`` with downloads served from ``server``'s files (by the URL's last part)
    into the cache ``cache``, any file's writes failing past ``limit`` bytes; its stderr."""
    env = {**os.environ, "RHN_CACHE_DIR": str(cache), "RHN_OFFLINE": "0"}
    env.pop("RHN_DATA_DIR", None)
    script = PRELUDE.format(limit=limit, server=str(server)) + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0, "the download was expected to fail on the full disk"
    return result.stderr
