"""rhn.train.evaluate: a checkpoint scored again gives the number its run logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rhn.train.config import load_config
from rhn.train.evaluate import evaluate_checkpoint
from rhn.train.loop import train

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
    from safetensors.torch import save_file

    from rhn.train.checkpoint import CheckpointError
    from rhn.train.evaluate import export_checkpoint, load_model

    run = tmp_path / "run"
    tied = ["model.embed_size=48", "model.tie_weights=true"]
    train(load_config(TINY, ["train.max_steps=4", "train.progress=false", *tied]), run)
    export_checkpoint(run, tmp_path / "w.safetensors")
    loaded, exported = load_model(run), load_model(tmp_path / "w.safetensors")
    model = exported.model
    assert model.decoder.weight is model.embedding.weight
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert exported.config.to_dict() == loaded.config.to_dict()

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CheckpointError, match=r"holds weights without the config .* export it"):
        load_model(tmp_path / "bare.safetensors")
    (tmp_path / "torn.safetensors").write_bytes(b"\x08\x00\x00")
    with pytest.raises(CheckpointError, match=r"is not a readable safetensors file"):
        load_model(tmp_path / "torn.safetensors")
