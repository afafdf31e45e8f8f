"""Gate analyses of a trained highway net (Figure 2): see tasks/gate_analysis.py."""

import sys

from rhn.tasks.vision_cli import analyze_gates_main

if __name__ == "__main__":
    sys.exit(analyze_gates_main())
