"""The papers' recipes — the repository's ``configs/`` — installed with rhn as ``rhn.recipes``,
so that ``rhn-train ptb_rhn_d10 --run-dir runs/x`` runs wherever rhn is installed, not only
in a checkout. A config argument names a file first; a bare name that is no file is a recipe.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

RECIPE_PACKAGE = "rhn.recipes"  # pyproject.toml: package-dir maps it to configs/
SUFFIX = ".yaml"
STUDIES = "studies"  # the depth studies, a folder among the recipes


def recipes_dir() -> Path | None:
    """The recipes' folder: the installed ``rhn.recipes`` (a wheel's copy, or the checkout's
    ``configs/`` through an editable install), else the ``configs/`` of the checkout this
    ``rhn`` was imported from (a plain copy, as a GPU machine gets), else None."""
    try:
        spec = importlib.util.find_spec(RECIPE_PACKAGE)
    except ModuleNotFoundError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if Path(location).is_dir():
            return Path(location)
    checkout = Path(__file__).resolve().parents[2] / "configs"
    return checkout if checkout.is_dir() else None


def recipe_names() -> list[str]:
    """Every recipe, by the name ``rhn-train`` takes (the file's stem), sorted."""
    folder = recipes_dir()
    return sorted(p.stem for p in folder.glob(f"*{SUFFIX}")) if folder else []


def recipe_path(name: str | Path) -> Path | None:
    """The recipe file ``name`` (``ptb_rhn_d10`` or ``ptb_rhn_d10.yaml``) names, if any."""
    return _named_file(recipes_dir(), name)


def study_names() -> list[str]:
    """Every installed depth study (``configs/studies/``), by the name its file's stem gives."""
    folder = recipes_dir()
    return sorted(p.stem for p in (folder / STUDIES).glob(f"*{SUFFIX}")) if folder else []


def study_path(name: str | Path) -> Path | None:
    """The installed study file ``name`` (``mnist_depth`` or ``mnist_depth.yaml``) names."""
    folder = recipes_dir()
    return _named_file(folder / STUDIES if folder else None, name)


def _named_file(folder: Path | None, name: str | Path) -> Path | None:
    name = Path(name)
    if folder is None or name.parent != Path("."):
        return None
    path = folder / (name.name if name.suffix == SUFFIX else f"{name.name}{SUFFIX}")
    return path if path.is_file() else None


def resolve_config_path(config: str | Path) -> Path:
    """``config`` itself if it is a file, else the recipe a bare name names, else ``config``
    (for the reader to report). A folder of the name (``--run-dir ptb_rhn_d10``, a run
    named after its recipe) is not a config: the recipe is."""
    path = Path(config)
    if path.is_file():
        return path
    return recipe_path(path) or path
