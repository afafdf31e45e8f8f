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


def module_of(path: Path) -> str:
    """The dotted module name of a file of the repository (``tasks/`` is ``rhn.tasks``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] in MODULE:
        parts[:1] = MODULE[parts[0]].split(".")
    return ".".join(parts)


def project_imports(path: Path, source: str | None = None) -> set[str]:
    """The project modules file ``path`` imports (``source``: its text, if not the file's)."""
    names = set()
    package = module_of(path) if path.name == "__init__.py" else module_of(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom):  # relative: from the file's own package up
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            if node.module:
                names.add(f"{base}.{node.module}")
            else:
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("rhn", "tasks", "scripts")}


def test_relative_imports_are_resolved_against_the_files_package() -> None:
    for source, expected in (
        ("from ..train.loop import train", "rhn.train.loop"),
        ("from . import rhn_cell", "rhn.nn.rhn_cell"),
        ("from .rhn_cell import RHNCell", "rhn.nn.rhn_cell"),
    ):
        assert project_imports(ROOT / "rhn" / "nn" / "x.py", source) == {expected}


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
