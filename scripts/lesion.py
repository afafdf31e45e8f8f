"""Lesioning a trained highway net's layers: see tasks/gate_analysis.py."""

import sys

from rhn.tasks.vision_cli import lesion_main

if __name__ == "__main__":
    sys.exit(lesion_main())
