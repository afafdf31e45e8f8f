"""scripts/reproduce.py turns finished runs into the published-vs-ours table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reproduce_table_from_a_finished_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = str(ROOT / "configs" / "char_lm_tiny.yaml")
    short = ["--set", "train.max_steps=10", "--set", "train.eval_every=5"]
    train = subprocess.run(
        [sys.executable, "-m", "tasks", config, "--run-dir", str(runs / "tiny"), *short],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert train.returncode == 0, train.stderr
    for extra, protocol in (
        ([], "batch 1"),
        (["--batched"], "batched"),
        (["--mc", "2"], "batch 1, MC dropout 2 passes (evaluate_mc)"),
        (["--no-eval"], "training log"),
    ):
        table = subprocess.run(
            [sys.executable, "scripts/reproduce.py", str(runs), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert table.returncode == 0, table.stderr
        lines = table.stdout.strip().splitlines()
        assert lines[0].startswith("| run | recipe | metric | published | ours |")
        row = lines[2].split(" | ")
        assert row[0] == "| tiny" and row[1] == "char_lm_tiny" and row[2] == "bpc"
        assert float(row[4]) > 0 and row[6] == protocol and row[7].endswith("M")
