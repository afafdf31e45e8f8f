"""The MNIST depth study (Figure 1): see tasks/depth_study.py."""

import sys

from rhn.tasks.vision_cli import depth_study_main

if __name__ == "__main__":
    sys.exit(depth_study_main())
