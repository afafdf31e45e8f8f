"""Every config under configs/ validates; every tiny one trains a few steps on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

import tasks  # noqa: F401  (registers the tasks)
from rhn.train.config import load_config
from rhn.train.loop import train

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
TINY = [path for path in CONFIGS if "tiny" in path.name]
SMOKE = ["train.max_steps=3", "train.eval_every=3", "train.progress=false", "train.device=cpu"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("path", TINY, ids=[p.stem for p in TINY])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tiny_config_smoke_runs_on_cpu(path: Path, precision: str, tmp_path: Path) -> None:
    result = train(load_config(path, [*SMOKE, f"train.precision={precision}"]), tmp_path)
    assert result.status == "finished" and result.position.step == 3
    assert result.position.skipped_steps == 0


@pytest.mark.slow
def test_tiny_config_with_torch_compile(tmp_path: Path) -> None:
    result = train(load_config(TINY[0], [*SMOKE, "train.compile=true"]), tmp_path)
    assert result.status == "finished"
