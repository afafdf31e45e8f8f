"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded safely.

Format (``FORMAT_VERSION``), the keys of :data:`CHECKPOINT_KEYS`: ``model``, ``optimizer`` and
``schedule`` state dicts; ``position`` (the trainer's ``Position``: ``step``, ``epoch``,
``batch_index`` — the next batch of the epoch —, ``best_metric`` and ``best_step`` (the
step of best.pt's model; older checkpoints lack it), ``bad_steps``,
``skipped_steps``, ``elapsed_s``); ``log_window`` (the training statistics gathered since
the last ``train/loss`` point, so a resumed run logs the curve an uninterrupted one would;
older checkpoints lack it); ``step`` (the same step, for readers that need only it);
``hidden`` (the carried TBPTT state, or None); ``rng`` (python, numpy, torch, CUDA, one per
rank); ``config`` (the resolved run config as a dict); ``model_meta`` (what the model was
built from besides its config — a vocabulary size, an image shape —, so that
``rhn.models.build_model(config.model, model_meta)`` rebuilds it without its data);
``task_state`` (what the task needs to read data as the run did: the vocabulary and its
digest, the data set's name); ``epoch`` (``batches`` per rank in an epoch and ``ranks``, so
that a run resumed mid-epoch on data that cuts its epochs otherwise is refused; older
checkpoints lack it); ``is_best`` (whether the save that wrote it wrote best.pt too, so that
a damaged best.pt is rewritten from a last.pt holding its model; older checkpoints lack
it). Loading uses ``torch.load(weights_only=True)``: nothing in a
checkpoint can run code. Format 1 had no ``model_meta``; it is still read (the task recovers
the metadata from ``task_state``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rhn.data.atomic_file import atomic_open, fsync_directory, mode_for, write_failure

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED_KEYS = ("format_version", "model", "step", "config")
CHECKPOINT_KEYS = (
    *REQUIRED_KEYS,
    *("optimizer", "schedule", "position", "log_window", "hidden", "rng", "model_meta"),
    "task_state",
    "epoch",
    "is_best",
)


class CheckpointError(RuntimeError):
    """A checkpoint that can't be used: unreadable, wrong format, or another model's."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over it
    (:func:`rhn.data.atomic_file.atomic_open`).

    A crash at any moment leaves either the old file or the new one, never a torn file.
    A failed write (disk full, file size limit, I/O error) is one :class:`CheckpointError`
    naming the file and the cause; the previous file at ``path`` is untouched.
    """
    path = Path(path)
    try:
        with atomic_open(path, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as err:
        # Other RuntimeErrors (an object that can't be saved) pass through.
        cause = write_failure(err)
        if cause is None:
            raise
        free = shutil.disk_usage(path.parent).free / 2**20
        raise CheckpointError(
            f"could not write checkpoint {path}: {cause} ({free:,.0f} MiB free on its disk); "
            f"the previous {path.name} is unchanged"
        ) from None


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check a checkpoint; any problem is one CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's unpickler raises many kinds on a file not its own
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated, or not a checkpoint, and can't be read "
            f"({reason})"
        ) from None
    if not isinstance(data, dict) or any(key not in data for key in REQUIRED_KEYS):
        raise CheckpointError(f"checkpoint {path} is not an rhn training checkpoint")
    if data["format_version"] not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path} has format version {data['format_version']}; this rhn reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    return data


def check_same_model(path: str | Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a checkpoint whose task or model section differs from the current config's."""
    if saved.get("task") != current.get("task"):
        raise CheckpointError(
            f"checkpoint {path} is from task {saved.get('task')!r}, not {current.get('task')!r}"
        )
    old, new = saved.get("model", {}), current.get("model", {})
    diffs = [f"model.{k}: {old.get(k)!r} → {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was trained with another model config ({'; '.join(diffs)}); "
            f"use a fresh run directory or the config it was trained with"
        )


def same_state(a: Any, b: Any) -> bool:
    """Whether two task states (or checkpoint values) are equal: tensors by value, floating
    ones to 1e-5 (as the image task's resume compares its mean image), lists and tuples
    alike (torch.load gives back either)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            return torch.allclose(a, b, rtol=0, atol=1e-5)
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(same_state, a, b))
    return a == b


def model_meta(ckpt: dict[str, Any], config: Any) -> dict[str, Any]:
    """What the checkpoint's model was built from besides its config (``config``, a
    RunConfig; format 1: recovered by the task from its saved state)."""
    if ckpt.get("model_meta") is not None:
        return ckpt["model_meta"]
    return config.task_class.legacy_model_meta(config, ckpt.get("task_state") or {})


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: {' '.join(first)}"
        ) from None


def export_safetensors(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write the model's weights as safetensors, with ``metadata`` in its header; tied
    (shared) weights are stored once."""
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all, with the mode open() would give: safetensors writes 0600 and
    # leaves its temporary behind when killed.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # force_contiguous: channels-last conv weights are not contiguous; safetensors
        # stores plain row-major tensors (older versions refuse the others).
        save_model(unwrap(model), str(tmp), metadata=metadata, force_contiguous=True)
        os.chmod(tmp, mode_for(path))
        with tmp.open("rb") as f:  # on disk before it replaces anything
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)
