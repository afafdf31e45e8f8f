"""Generate text: ``python scripts/sample.py RUN_DIR --prompt TEXT --length N`` (= rhn-sample)."""

import sys

from rhn.tasks.cli import sample_main

if __name__ == "__main__":
    sys.exit(sample_main())
