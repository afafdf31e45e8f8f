"""A saved checkpoint outside a training run: its model (no data needed), evaluation, export."""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from inspect import signature
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rhn.models import build_model
from rhn.train.checkpoint import (
    CheckpointError,
    export_safetensors,
    load_checkpoint,
    load_model_state,
)
from rhn.train.config import RunConfig, build_config
from rhn.train.loop import resolve_device
from rhn.train.precision import autocast, float32_arithmetic
from rhn.train.schema import ConfigError
from rhn.train.task import Task


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file: ``path`` itself, or a run directory's best.pt (else last.pt).

    A best.pt that is not a whole checkpoint (torn by a copy, a full disk) while last.pt
    is gives last.pt, with a warning, as a resume does."""
    if path.is_dir():
        best, last = path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"
        if best.is_file() and last.is_file() and not _whole(best) and _whole(last):
            warnings.warn(
                f"{best} is not a whole checkpoint (truncated or damaged); using {last}, the "
                f"run's last model, instead",
                stacklevel=2,
            )
            return last
        for candidate in (best, last):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path} holds no checkpoints/best.pt or checkpoints/last.pt")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _whole(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint. torch.save's zip archive has its directory
    at the end (a truncated file has none), read without the tensors; another file (torch's
    legacy format) is loaded to tell."""
    try:
        with zipfile.ZipFile(path):
            return True
    except (zipfile.BadZipFile, OSError):
        pass
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def model_meta(ckpt: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """What the checkpoint's model was built from besides its config (format 1: recovered
    from the task's saved state)."""
    if ckpt.get("model_meta") is not None:
        return ckpt["model_meta"]
    return config.task_class.legacy_model_meta(config, ckpt.get("task_state") or {})


@dataclass
class LoadedModel:
    """A checkpoint's model (eval mode) and what was saved with it."""

    config: RunConfig
    model: nn.Module
    step: int
    task_state: dict[str, Any]
    device: torch.device


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """The model of checkpoint ``path`` (or a run directory's, as :func:`resolve_checkpoint`
    picks), rebuilt from its config and metadata: no data set is read, so it works wherever
    the checkpoint alone was copied."""
    dev = resolve_device(device)  # before the (large) checkpoint is read
    path = resolve_checkpoint(Path(path))
    ckpt = load_checkpoint(path)
    config = build_config(ckpt["config"])
    try:
        model = build_model(config.model, model_meta(ckpt, config))
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    load_model_state(model, ckpt["model"], path)
    return LoadedModel(
        config, model.to(dev).eval(), ckpt["step"], ckpt.get("task_state") or {}, dev
    )


@dataclass
class Trained(LoadedModel):
    """A checkpoint's model with its task, which holds the data it was trained on."""

    task: Task = field(kw_only=True)


def with_task(loaded: LoadedModel, path: Path) -> Trained:
    """``loaded`` (read from ``path`` by :func:`load_model`) with its task and all of its
    data, for analyses that read the training set; the caller checks the checkpoint itself
    first, before any data is read."""
    task = loaded.config.task_class(loaded.config)
    task.check_checkpoint_state(loaded.task_state, str(path))
    return Trained(**vars(loaded), task=task)


def evaluate_checkpoint(
    path: str | Path, split: str, device: str = "auto", **options: Any
) -> dict[str, float]:
    """Metrics of checkpoint ``path`` (or a run directory's) on ``split``; only that split's
    data is read. ``options`` go to the task's ``evaluate`` (e.g. ``batch_size``,
    ``mc_samples``)."""
    path = resolve_checkpoint(Path(path))
    loaded = load_model(path, device)
    task_class = loaded.config.task_class
    if options.get("mc_samples") and "mc_samples" not in signature(task_class.evaluate).parameters:
        # A task whose evaluation has no dropout to sample would ignore it in silence.
        raise ConfigError(
            f"MC dropout (mc_samples, rhn-eval --mc) is for language models; {path} is a "
            f"{loaded.config.task!r} run"
        )
    task = task_class.for_evaluation(loaded.config, loaded.task_state, split)
    # At the run's precision, as its training evaluated: a bf16 run's logged metric again.
    precision = loaded.config.train.precision
    with (
        torch.no_grad(),
        float32_arithmetic(precision),
        autocast(precision, loaded.device.type),
    ):
        metrics = task.evaluate(loaded.model, split, loaded.device, **options)
    return {
        "checkpoint": str(path),
        "split": split,
        "step": loaded.step,
        "precision": precision,
        **metrics,
    }


def export_checkpoint(path: str | Path, output: str | Path) -> None:
    """The weights of checkpoint ``path`` (or a run directory's) as safetensors; its data is
    not needed."""
    export_safetensors(load_model(path).model, output)
