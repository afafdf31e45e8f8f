"""Dependencies point one way: scripts → tasks → rhn.train / rhn.data → rhn.models → rhn.nn.

The repository's ``tasks/`` folder is the installed package ``rhn.tasks``; nothing in ``rhn/``
may import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The module name of each folder, where it is not the folder's path.
MODULE = {"tasks": "rhn.tasks"}

# What each package may import from this project (besides itself).
ALLOWED = {
    "rhn/nn": set(),
    "rhn/models": {"rhn.nn"},
    "rhn/data": set(),
    "rhn/train": {"rhn.nn", "rhn.models", "rhn.data"},
    "rhn/analysis": {"rhn.nn", "rhn.models"},
    "tasks": {"rhn", "rhn.nn", "rhn.models", "rhn.data", "rhn.train", "rhn.analysis"},
}


def project_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in ("rhn", "tasks", "scripts")}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    own = MODULE.get(package, package.replace("/", "."))
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in project_imports(path):
            if name == own or name.startswith(own + "."):
                continue
            allowed = ALLOWED[package]
            ok = name in allowed or any(name.startswith(a + ".") for a in allowed if a != "rhn")
            assert ok, f"{path.relative_to(ROOT)} imports {name}; {package} may import {allowed}"
