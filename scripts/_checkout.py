"""Import ``rhn`` and ``rhn.tasks`` from this checkout, installed or not.

A GPU machine gets a plain copy of the repository and its own python, with no ``pip install``:
there ``rhn`` is found through the repository root on ``sys.path``, but ``rhn.tasks`` is not
(``tasks/`` becomes ``rhn.tasks`` only in the wheel, through pyproject's ``package-dir``). The
scripts that such a machine runs (``gpu_check.py`` and the ``bench_rnn.py`` it starts) call
:func:`use_this_checkout` before importing either.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def use_this_checkout() -> None:
    """Put the repository root first on ``sys.path`` and map ``tasks/`` to ``rhn.tasks`` as the
    wheel does, unless an installed ``rhn`` already provides it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import rhn

    if importlib.util.find_spec("rhn.tasks") is None:
        spec = importlib.util.spec_from_file_location(
            "rhn.tasks", ROOT / "tasks" / "__init__.py",
            submodule_search_locations=[str(ROOT / "tasks")],
        )  # fmt: skip
        module = importlib.util.module_from_spec(spec)
        sys.modules["rhn.tasks"] = module
        spec.loader.exec_module(module)
        rhn.tasks = module
