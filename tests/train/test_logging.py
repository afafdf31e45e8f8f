"""RunLogger: logging never stops a run."""

from __future__ import annotations

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
