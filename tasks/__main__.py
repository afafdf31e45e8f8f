"""``python -m rhn.tasks CONFIG --run-dir DIR`` is ``rhn-train``."""

import sys

from rhn.tasks.cli import train_main

sys.exit(train_main())
