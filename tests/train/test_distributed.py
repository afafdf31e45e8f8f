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
LAUNCHER = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = subprocess.run(
        [sys.executable, "-m", "tasks", str(TINY), "--run-dir", str(single), *ARGS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [*LAUNCHER, "-m", "tasks", str(TINY), "--run-dir", str(ddp), *ARGS],
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


def test_weights_that_overflow_stop_every_rank_alike_instead_of_hanging(tmp_path: Path) -> None:
    # lr 3e38 overflows the first update; rank 0 alone used to leave the checkpoint early
    # and rank 1 waited for it in a barrier until killed.
    overflow = [
        *("--set", "optim.name=sgd", "--set", "optim.lr=3e38", "--set", "optim.clip_norm=null"),
        *("--set", "train.checkpoint_every=1", "--set", "train.max_steps=3"),
        *("--set", "model.loss_reduction=sum_over_time", "--set", "train.device=cpu"),
    ]
    two = subprocess.run(
        [*LAUNCHER, "-m", "tasks", str(TINY), "--run-dir", str(tmp_path / "run"), *overflow],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    # It ends (the timeout above is the hang's test), failing, in the CLI's one-line error
    # (torchrun stops the other rank once one exits, so it may not print its own).
    assert two.returncode != 0
    assert "error: the weights are not finite at step 1 (an update overflowed)" in two.stderr
    assert "No checkpoint was written" in two.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
