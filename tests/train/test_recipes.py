"""The recipes (configs/) by name: rhn-train ptb_rhn_d10 wherever rhn is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhn.train.config import load_config
from rhn.train.recipes import recipe_names, recipe_path, recipes_dir
from rhn.train.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_every_config_of_the_checkout_is_a_recipe_by_its_stem() -> None:
    assert recipes_dir() == ROOT / "configs"  # the editable install maps rhn.recipes there
    assert recipe_names() == sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert recipe_path("ptb_rhn_d10") == recipe_path("ptb_rhn_d10.yaml")
    assert recipe_path("ptb_rhn_d10") == ROOT / "configs" / "ptb_rhn_d10.yaml"
    assert recipe_path("configs/ptb_rhn_d10.yaml") is None  # a path is a path, not a name
    assert recipe_path("no_such_recipe") is None


def test_a_recipe_loads_by_name_from_anywhere_and_a_file_of_that_name_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    by_path = load_config(ROOT / "configs" / "ptb_rhn_depth03.yaml")  # base: ptb_rhn_d10.yaml
    assert load_config("ptb_rhn_depth03").to_dict() == by_path.to_dict()
    assert by_path.model.depth == 3 and by_path.model.hidden_size == 1110
    (tmp_path / "ptb_rhn_depth03").mkdir()  # a run dir named after its recipe: not a config
    assert load_config("ptb_rhn_depth03").model.depth == 3
    (tmp_path / "ptb_rhn_depth03").rmdir()
    (tmp_path / "ptb_rhn_depth03").write_text("task: char_lm\nmodel: {depth: 2}\n")
    assert load_config("ptb_rhn_depth03").model.depth == 2  # the user's own file


def test_a_missing_config_names_the_recipe_or_says_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: the README's commands outside a checkout
    with pytest.raises(
        ConfigError,
        match=r"config file configs/ptb_rhn_d10.yaml does not exist; rhn installs a recipe of "
        r"that name: 'ptb_rhn_d10' \(rhn-train ptb_rhn_d10 \.\.\.\)",
    ):
        load_config("configs/ptb_rhn_d10.yaml")
    with pytest.raises(
        ConfigError, match=r"no config file or recipe named 'ptb_rhn_d11' \(rhn-train --help"
    ):
        load_config("ptb_rhn_d11")
    with pytest.raises(ConfigError, match=r"cannot read config file mine.yaml"):
        load_config("mine.yaml")
