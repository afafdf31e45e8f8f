"""RunLogger: logging never stops a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rhn.train.logging import RunLogger


def test_histograms_of_huge_or_non_finite_values_are_skipped_not_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = RunLogger(tmp_path)
    huge = torch.full((100,), 3e38)  # finite; TensorBoard's binning raises on it
    logger.histograms({"w/huge": huge, "w/inf": torch.tensor([1.0, float("inf")]),
                       "w/ok": torch.randn(100)}, step=1)  # fmt: skip
    logger.close()
    err = capsys.readouterr().err
    assert "histogram w/huge skipped" in err and "histogram w/inf skipped" in err
    assert "w/ok" not in err


def _scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.mark.parametrize("resume_step", [0, 5])
def test_a_resume_keeps_the_checkpoints_step_and_drops_what_came_after(
    tmp_path: Path, resume_step: int
) -> None:
    killed = RunLogger(tmp_path)  # a run that logged steps 1..10, then was killed
    for step in range(1, 11):
        killed.scalars({"train/loss": 100.0 + step}, step)
        killed.evaluation({"step": step, "epoch": 0})
    killed.close()
    resumed = RunLogger(tmp_path, resume_step=resume_step)  # from the checkpoint at resume_step
    for step in range(resume_step + 1, resume_step + 4):
        resumed.scalars({"train/loss": 200.0 + step}, step)
        resumed.evaluation({"step": step, "epoch": 0})
    resumed.close()
    kept = [(step, 100.0 + step) for step in range(1, resume_step + 1)]
    new = [(step, 200.0 + step) for step in range(resume_step + 1, resume_step + 4)]
    assert _scalars(tmp_path, "train/loss") == kept + new
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [s for s, _ in kept + new]
