"""Two CPU processes (gloo, through torchrun) train like one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from rhn.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "char_lm_tiny.yaml"
ARGS = ["--set", "train.max_steps=30", "--set", "train.eval_every=15", "--set", "train.device=cpu"]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = subprocess.run(
        [sys.executable, "-m", "tasks", str(TINY), "--run-dir", str(single), *ARGS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    two = subprocess.run(
        [*launcher, "-m", "tasks", str(TINY), "--run-dir", str(ddp), *ARGS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr
    # Rank 0 alone reports and logs.
    assert len([line for line in two.stdout.splitlines() if line.startswith("{")]) == 1

    def losses(run: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").open()]

    # Each rank owns 8 of the 16 columns and DDP averages the gradients: the same
    # optimisation as one process, up to float32 summation order.
    assert len(losses(ddp)) == 2
    for a, b in zip(losses(single), losses(ddp), strict=True):
        assert abs(a - b) < 1e-5 * abs(a)
    a, b = (
        load_checkpoint(single / "checkpoints/last.pt"),
        load_checkpoint(ddp / "checkpoints/last.pt"),
    )
    for name, weight in a["model"].items():
        torch.testing.assert_close(b["model"][name], weight, rtol=1e-4, atol=1e-5)
    # The checkpoint carries every rank's TBPTT state, columns in global order.
    assert b["hidden"].shape == a["hidden"].shape == (1, 16, 48)
    torch.testing.assert_close(b["hidden"], a["hidden"], rtol=1e-4, atol=1e-5)
    assert len(b["rng"]) == 2
