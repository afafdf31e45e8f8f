"""A saved checkpoint outside a training run: its model (no data needed), evaluation, export."""

from __future__ import annotations

import json
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
    model_meta,
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


@dataclass
class LoadedModel:
    """A checkpoint's model (eval mode) and what was saved with it."""

    config: RunConfig
    model: nn.Module
    step: int
    task_state: dict[str, Any]
    device: torch.device
    model_meta: dict[str, Any] = field(default_factory=dict)


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """The model of checkpoint ``path`` (or a run directory's, as :func:`resolve_checkpoint`
    picks, or an ``rhn-export`` file), rebuilt from its config and metadata: no data set is
    read, so it works wherever the checkpoint alone was copied."""
    dev = resolve_device(device)  # before the (large) checkpoint is read
    path = resolve_checkpoint(Path(path))
    exported = is_export(path)
    ckpt = read_export(path) if exported else load_checkpoint(path)
    config = build_config(ckpt["config"])
    meta = model_meta(ckpt, config)
    try:
        model = build_model(config.model, meta)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    if exported:
        _load_exported_weights(model, path)
    else:
        load_model_state(model, ckpt["model"], path)
    task_state = ckpt.get("task_state") or {}
    return LoadedModel(config, model.to(dev).eval(), ckpt["step"], task_state, dev, meta)


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
    return {
        "checkpoint": str(path),
        "split": split,
        "step": loaded.step,
        "precision": loaded.config.train.precision,
        **evaluate_loaded(loaded, task, split, **options),
    }


def evaluate_loaded(
    loaded: LoadedModel, task: Task, split: str, **options: Any
) -> dict[str, float]:
    """``task.evaluate`` of a loaded model on ``split`` without gradients, at the run's
    precision, as its training evaluated (a bf16 run's logged metric again)."""
    precision = loaded.config.train.precision
    with (
        torch.no_grad(),
        float32_arithmetic(precision),
        autocast(precision, loaded.device.type),
    ):
        return task.evaluate(loaded.model, split, loaded.device, **options)


# An export's header: what load_model needs besides the weights, as JSON strings (a
# safetensors header holds strings only). Tensors of the task state (an image classifier's
# mean image) are written as {TENSOR: dtype, "shape": [...], "values": [...]}.
EXPORT_KEYS = ("rhn.config", "rhn.model_meta", "rhn.task_state", "rhn.step")
TENSOR = "rhn.tensor"


def export_checkpoint(path: str | Path, output: str | Path) -> None:
    """The weights of checkpoint ``path`` (or a run directory's) as safetensors, whose header
    holds the config, model metadata, task state (the vocabulary, say) and step, so that
    :func:`load_model` (and so ``rhn-eval``, ``rhn-sample``) rebuild the model from the file
    alone; its data is not needed. The tensors are the model's state dict, by name."""
    loaded = load_model(path)
    values = {
        "rhn.config": loaded.config.to_dict(),
        "rhn.model_meta": loaded.model_meta,
        "rhn.task_state": loaded.task_state,
        "rhn.step": loaded.step,
    }
    # The config and metadata are read back through build_config and meta_value, which take
    # lists for tuples; the task state goes back to the task as it is read.
    unsafe = _not_json(loaded.task_state, "task state")
    if unsafe is not None:
        # A task of its own may keep what JSON can't hold (bytes, tuples, int keys): the
        # weights alone, as before exports had a header, not a state read back otherwise.
        warnings.warn(
            f"{path}: its {unsafe}, which an export's JSON header can't hold as it is: "
            f"{output} holds the weights alone (load them with safetensors.torch.load_model)",
            stacklevel=2,
        )
        export_safetensors(loaded.model, output)
        return
    header = {key: json.dumps(value, default=_tensor_to_json) for key, value in values.items()}
    export_safetensors(loaded.model, output, header)


def is_export(path: Path) -> bool:
    """Whether ``path`` is a safetensors file (by name, or by its first bytes: an 8-byte
    header length, then the JSON header's ``{``), not a torch checkpoint (a zip archive)."""
    if path.suffix == ".safetensors":
        return True
    try:
        with path.open("rb") as f:
            start = f.read(9)
    except OSError:
        return False
    return len(start) == 9 and start[8:9] == b"{"


def _not_json(value: Any, where: str = "") -> str | None:
    """Where ``value`` holds what JSON (with tensors as :func:`_tensor_to_json` writes them)
    would not give back as it is, or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where}[{key!r}] has a key of type {type(key).__name__}"
            if (found := _not_json(item, f"{where}[{key!r}]")) is not None:
                return found
        return None
    if isinstance(value, list):
        found = (_not_json(item, f"{where}[{i}]") for i, item in enumerate(value))
        return next((f for f in found if f is not None), None)
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return None
    return f"{where or 'the value'} is of type {type(value).__name__}"


def read_export_header(path: Path) -> dict[str, str]:
    """A safetensors file's header metadata (an ``rhn-export`` file's holds EXPORT_KEYS);
    a file that is not a readable safetensors file is refused, saying why."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def read_export(path: Path) -> dict[str, Any]:
    """An ``rhn-export`` file's header as a checkpoint's keys (config, model_meta,
    task_state, step); a safetensors file without one is refused, saying why."""
    header = read_export_header(path)
    missing = [key for key in EXPORT_KEYS if key not in header]
    if missing:
        raise CheckpointError(
            f"{path} holds weights without the config to rebuild their model (no "
            f"{', '.join(missing)} in its header): export it again from its checkpoint"
        )
    try:
        values = {k: json.loads(header[k], object_hook=_tensor_from_json) for k in EXPORT_KEYS}
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its rhn header does not read ({err})") from None
    return {key.removeprefix("rhn."): value for key, value in values.items()}


def _load_exported_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_model as load_safetensors

    try:  # safetensors' own loader restores tied weights from the one copy stored
        load_safetensors(model, str(path), strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).splitlines()[:3])
        raise CheckpointError(
            f"{path} does not fit the model its header describes: {first}"
        ) from None


def _tensor_to_json(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        cpu = value.detach().cpu()
        dtype = str(cpu.dtype).removeprefix("torch.")
        return {TENSOR: dtype, "shape": list(cpu.shape), "values": cpu.flatten().tolist()}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _tensor_from_json(obj: dict[str, Any]) -> Any:
    if TENSOR not in obj:
        return obj
    dtype = getattr(torch, obj[TENSOR], None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown tensor dtype {obj[TENSOR]!r}")
    return torch.tensor(obj["values"], dtype=dtype).reshape(obj["shape"])
