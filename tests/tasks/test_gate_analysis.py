"""The gate analyses' own checks, made before a checkpoint or its data is read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from rhn.tasks.gate_analysis import analyze_gates, lesion
from rhn.train.run_dir import RunDirError


@pytest.mark.parametrize("action", [analyze_gates, lesion])
@pytest.mark.parametrize("examples", [0, -5, True])
def test_a_count_slicing_would_misread_is_refused(
    action: object, examples: int, tmp_path: Path
) -> None:
    # The path holds no checkpoint: the count is refused before one is looked for.
    message = f"examples must be an integer >= 1 (or None, all), got {examples!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        action(tmp_path, None, examples, "cpu")  # type: ignore[operator]


@pytest.mark.parametrize("action", [analyze_gates, lesion])
def test_a_device_this_machine_lacks_is_refused(action: object, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RunDirError, match="device 'cuda:1': CUDA is not available here"):
        action(tmp_path, None, 10, "cuda:1")  # type: ignore[operator]
