"""Evaluation and export of a saved checkpoint, outside a training run."""

from __future__ import annotations

from pathlib import Path

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


def load_trained(path: Path, device: str = "cpu") -> tuple[RunConfig, Task, nn.Module]:
    """The config, task and model (weights loaded, eval mode) of a checkpoint."""
    ckpt = load_checkpoint(path)
    config = build_config(ckpt["config"])
    task = config.task_class(config)
    model = task.build_model()
    load_model_state(model, ckpt["model"], path)
    return config, task, model.to(resolve_device(device)).eval()


def evaluate_checkpoint(path: Path, split: str, device: str = "auto") -> dict[str, float]:
    config, task, model = load_trained(path, device)
    dev = next(model.parameters()).device
    with torch.no_grad():
        metrics = task.evaluate(model, split, dev)
    ckpt_step = load_checkpoint(path)["step"]
    return {"checkpoint": str(path), "split": split, "step": ckpt_step, **metrics}


def export_checkpoint(path: Path, output: Path) -> None:
    _, _, model = load_trained(path)
    export_safetensors(model, output)
