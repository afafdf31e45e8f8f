"""train.precision: the TF32 flags a run's matmuls and cuDNN calls see, and autocast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rhn.train.loop import train
from rhn.train.precision import autocast, float32_arithmetic
from tests.train.test_loop import ToyRegression, toy_config


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("tf32", True), ("bf16", False)])
def test_one_setting_for_cublas_and_cudnn_while_the_block_runs(precision: str, tf32: bool) -> None:
    # torch's own defaults disagree: cuDNN (convolutions, nn.LSTM) on TF32, cuBLAS not.
    before = _flags()
    with float32_arithmetic(precision):
        assert _flags() == (tf32, tf32)
    assert _flags() == before
    with pytest.raises(ValueError, match=r"precision must be one of fp32, tf32, bf16, got 'fp16'"):
        float32_arithmetic("fp16").__enter__()
    # A caller's own matmul precision, which no allow_tf32 flag can say, is put back too.
    torch.set_float32_matmul_precision("medium")
    try:
        with float32_arithmetic(precision):
            assert torch.get_float32_matmul_precision() == ("high" if tf32 else "highest")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")
    with autocast(precision, "cpu"):
        low = torch.ones(2, 2) @ torch.ones(2, 2)
    assert low.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("tf32", True)])
def test_a_run_trains_and_evaluates_under_its_precision(
    precision: str, tf32: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, tuple[bool, bool]]] = []
    train_step, evaluate = ToyRegression.train_step, ToyRegression.evaluate

    def recording_step(self: Any, *args: Any) -> Any:
        seen.append(("step", _flags()))
        return train_step(self, *args)

    def recording_evaluate(self: Any, *args: Any) -> Any:
        seen.append(("evaluate", _flags()))
        return evaluate(self, *args)

    monkeypatch.setattr(ToyRegression, "train_step", recording_step)
    monkeypatch.setattr(ToyRegression, "evaluate", recording_evaluate)
    before = _flags()
    train(toy_config("train.max_steps=2", f"train.precision={precision}"), tmp_path / "run")
    assert {what for what, _ in seen} == {"step", "evaluate"}
    assert all(flags == (tf32, tf32) for _, flags in seen)
    assert _flags() == before
