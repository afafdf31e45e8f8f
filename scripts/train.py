"""Train from a YAML config: ``python scripts/train.py CONFIG --run-dir DIR`` (= rhn-train)."""

import sys

from rhn.tasks.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
