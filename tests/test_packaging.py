"""What installing the project adds to a user's environment: the package ``rhn`` (with the
repository's ``tasks/`` as ``rhn.tasks``) and its console commands, nothing else."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")


ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_list_names_every_package_folder() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rhn").rglob("__init__.py")
    } | {  # tasks/ and any folder below it install as rhn.tasks.*
        ".".join(("rhn", *p.parent.relative_to(ROOT).parts))
        for p in (ROOT / "tasks").rglob("__init__.py")
    }
    # configs/ (YAML only, folders without __init__.py) installs as rhn.recipes.
    recipes = {
        ".".join(("rhn.recipes", *p.relative_to(ROOT / "configs").parts))
        for p in [ROOT / "configs", *(ROOT / "configs").rglob("*")]
        if p.is_dir() and any(p.glob("*.yaml"))
    }
    assert set(setuptools["packages"]) == folders | {"rhn.tasks"} | {
        r.removesuffix(".") for r in recipes
    }
    assert setuptools["package-dir"] == {"rhn.tasks": "tasks", "rhn.recipes": "configs"}
    assert set(setuptools["package-data"]) == recipes


@pytest.mark.skipif(
    importlib.util.find_spec("setuptools") is None, reason="building a wheel needs setuptools"
)
def test_the_wheel_holds_one_top_level_name(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info into the source tree.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("rhn", "tasks", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("rhn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"rhn"}
    assert "rhn/tasks/language_model.py" in names
    # Every recipe, the depth study's included, and nothing else of configs/.
    recipes = {
        f"rhn/recipes/{p.relative_to(ROOT / 'configs')}" for p in (ROOT / "configs").rglob("*.yaml")
    }
    assert {n for n in names if n.startswith("rhn/recipes/")} == recipes
    # Installed (the wheel unpacked, first on the path): a recipe loads by name, its base too.
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    code = (
        "from rhn.train.config import load_config; from rhn.train.recipes import recipes_dir; "
        "print(recipes_dir()); print(load_config('ptb_rhn_depth03').model.hidden_size)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
    ).stdout.split()  # fmt: skip
    assert out == [str(installed / "rhn" / "recipes"), "1110"]
    assert not any(n.startswith("tasks/") for n in names)


def test_console_commands_resolve() -> None:
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.dist}
    ours = {name: ep for name, ep in scripts.items() if ep.dist.name == "rhn"}
    assert set(ours) == set(PYPROJECT["project"]["scripts"])
    for ep in ours.values():
        assert callable(ep.load()), ep
    # The targets pyproject.toml names themselves (installed metadata can be older than it).
    for name, target in PYPROJECT["project"]["scripts"].items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function, None)), (name, target)


def test_the_task_registry_fills_itself_in_a_fresh_process(tmp_path: Path) -> None:
    # From outside the repository, with nothing imported for its side effects: the entry
    # points name the task modules.
    code = (
        "import sys; from rhn.train.config import build_config; "
        "print(build_config({'task': 'char_lm'}).task_class.__module__); "
        "print('tasks' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout.split()
    assert out == ["rhn.tasks.language_model", "False"]
