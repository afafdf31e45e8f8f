"""``python -m tasks CONFIG --run-dir DIR`` is ``rhn-train``."""

import sys

from tasks.cli import train_main

sys.exit(train_main())
