"""Evaluation and export of a saved checkpoint, outside a training run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rhn.train.checkpoint import (
    CheckpointError,
    export_safetensors,
    load_checkpoint,
    load_model_state,
)
from rhn.train.config import RunConfig, build_config
from rhn.train.loop import resolve_device
from rhn.train.task import Task


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file: ``path`` itself, or a run directory's best.pt (else last.pt)."""
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path} holds no checkpoints/best.pt or checkpoints/last.pt")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


@dataclass
class Trained:
    """A checkpoint brought back to life: its config, task and model (eval mode)."""

    config: RunConfig
    task: Task
    model: nn.Module
    step: int
    device: torch.device


def load_trained(path: Path, device: str = "cpu") -> Trained:
    ckpt = load_checkpoint(path)
    config = build_config(ckpt["config"])
    task = config.task_class(config)
    task.check_checkpoint_state(ckpt.get("task_state", {}), str(path))
    model = task.build_model()
    load_model_state(model, ckpt["model"], path)
    dev = resolve_device(device)
    return Trained(config, task, model.to(dev).eval(), ckpt["step"], dev)


def evaluate_checkpoint(
    path: Path, split: str, device: str = "auto", **options: Any
) -> dict[str, float]:
    """``options`` go to the task's ``evaluate`` (e.g. ``batch_size``, ``mc_samples``)."""
    trained = load_trained(path, device)
    with torch.no_grad():
        metrics = trained.task.evaluate(trained.model, split, trained.device, **options)
    return {"checkpoint": str(path), "split": split, "step": trained.step, **metrics}


def export_checkpoint(path: Path, output: Path) -> None:
    export_safetensors(load_trained(path).model, output)
