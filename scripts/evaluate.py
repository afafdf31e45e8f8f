"""Evaluate a checkpoint: ``python scripts/evaluate.py RUN_DIR [--split test]`` (= rhn-eval)."""

import sys

from rhn.tasks.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
