"""rhn.train.evaluate: a checkpoint scored again gives the number its run logged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rhn.train.config import build_config, load_config
from rhn.train.evaluate import evaluate_checkpoint
from rhn.train.loop import train
from rhn.train.task import register
from tests.train.test_loop import ToyRegression

TINY = Path(__file__).resolve().parents[2] / "configs" / "char_lm_tiny.yaml"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_checkpoint_scores_what_its_run_logged_at_the_runs_precision(
    precision: str, tmp_path: Path
) -> None:
    overrides = ["train.max_steps=8", "train.eval_every=8", f"train.precision={precision}"]
    train(load_config(TINY, [*overrides, "train.progress=false"]), tmp_path / "run")
    (logged,) = map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    scored = evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", "valid", "cpu")
    # bf16 evaluated in fp32 differed in the 4th digit (4.85818 against 4.85770 logged).
    assert scored["bpc"] == logged["bpc"] and scored["precision"] == precision


def test_the_python_api_takes_a_run_directory_as_the_commands_do(tmp_path: Path) -> None:
    """load_model(RUN_DIR) said "checkpoint RUN_DIR does not exist" of a directory that did."""
    from rhn.train.evaluate import export_checkpoint, load_model

    run = tmp_path / "run"
    train(load_config(TINY, ["train.max_steps=4", "train.progress=false"]), run)
    best = run / "checkpoints" / "best.pt"
    assert load_model(str(run)).step == load_model(best).step == 4
    assert evaluate_checkpoint(run, "valid", "cpu")["checkpoint"] == str(best)
    export_checkpoint(run, tmp_path / "model.safetensors")
    assert (tmp_path / "model.safetensors").stat().st_size > 0


def test_an_export_of_a_tied_model_loads_tied_and_a_bare_safetensors_file_is_refused(
    tmp_path: Path,
) -> None:
    from safetensors.torch import load_file, save_file

    from rhn.train.checkpoint import CheckpointError
    from rhn.train.evaluate import export_checkpoint, load_model

    run = tmp_path / "run"
    tied = ["model.embed_size=48", "model.tie_weights=true"]
    train(load_config(TINY, ["train.max_steps=4", "train.progress=false", *tied]), run)
    export_checkpoint(run, tmp_path / "w.safetensors")
    loaded, exported = load_model(run), load_model(tmp_path / "w.safetensors")
    model, state = exported.model, loaded.model.state_dict()
    stored = set(load_file(str(tmp_path / "w.safetensors")))
    assert len(stored) == len(state) - 1  # the tied pair once, both names loaded from it
    for name, tensor in state.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert exported.config.to_dict() == loaded.config.to_dict()

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CheckpointError, match=r"holds weights without the config .* export it"):
        load_model(tmp_path / "bare.safetensors")
    (tmp_path / "torn.safetensors").write_bytes(b"\x08\x00\x00")
    with pytest.raises(CheckpointError, match=r"is not a readable safetensors file"):
        load_model(tmp_path / "torn.safetensors")


def test_an_export_is_read_by_its_content_whatever_its_name_and_replaces_itself(
    tmp_path: Path,
) -> None:
    """Exports were told by the .safetensors suffix: rhn-export RUN m.bin wrote one that
    rhn-eval then called a corrupt checkpoint; re-exporting onto it was 'a checkpoint'."""
    from rhn.tasks.cli import export_main
    from rhn.train.evaluate import load_model

    run, renamed = tmp_path / "run", tmp_path / "model.bin"
    train(load_config(TINY, ["train.max_steps=4", "train.progress=false"]), run)
    assert export_main([str(run), str(renamed)]) == 0
    assert load_model(renamed).step == 4
    assert export_main([str(renamed), str(renamed)]) == 0
    assert load_model(renamed).step == 4


@register
class ToyTupleState(ToyRegression):
    """A task of its own whose state JSON would give back otherwise (a tuple)."""

    name = "toy_tuple_state"

    def checkpoint_state(self) -> dict[str, Any]:
        return {"pair": (1, 2)}


def test_a_task_state_json_cannot_hold_exports_the_weights_alone_and_says_so(
    tmp_path: Path,
) -> None:
    """It was a TypeError traceback (bytes), or a header the task refused on reading (the
    tuple came back a list)."""
    from safetensors.torch import load_file

    from rhn.train.checkpoint import CheckpointError
    from rhn.train.evaluate import export_checkpoint, load_model

    run, out = tmp_path / "run", tmp_path / "w.safetensors"
    config = {"task": "toy_tuple_state", "optim": {"lr": 0.05}}
    train(build_config(config, ["train.max_steps=2", "train.max_epochs=null"]), run)
    with pytest.warns(UserWarning, match=r"task state\['pair'\] is of type tuple.*weights alone"):
        export_checkpoint(run, out)
    assert set(load_file(str(out))) == {"weight", "bias"}
    with pytest.raises(CheckpointError, match="holds weights without the config"):
        load_model(out)
