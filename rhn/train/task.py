"""What the training loop needs from a task, and the registry that names tasks.

A task owns its data and its evaluation; the model is built by ``rhn.models.build_model``
from the config's ``model`` section and the metadata the task reads off its data
(``model_meta``: a vocabulary size, an image shape), which checkpoints save, so that a trained
model comes back without its data. The loop (``rhn.train.loop``) owns everything else.
Batches are addressed by ``(epoch, index)`` — random access, so that a run resumed from a
checkpoint continues from exactly the batch it stopped at.

Two kinds of task share the interface:
  * a stateful truncated-BPTT stream (language models): ``initial_state`` returns a state
    that the loop carries from batch to batch (detached) and saves in checkpoints;
  * epochs over a shuffled data set (classification): the state is ``None``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch
from torch import nn

from rhn.train.schema import ConfigError

State = Any  # None, a tensor, or a tuple of tensors, batch in dimension 1


@dataclass
class StepResult:
    """One batch's training loss (what backward sees), next state and size."""

    loss: torch.Tensor
    state: State
    count: int  # tokens or samples, for throughput
    # The loss the logs show (train/loss), when backward's is scaled otherwise: per token,
    # comparable with val/loss, for a loss summed over time steps.
    logged_loss: torch.Tensor | None = None


class Task:
    """Base class of a task: subclass, set the class variables, register with ``@register``.

    Class variables:
        name: the ``task:`` value in configs.
        model_config, data_config: dataclasses for the ``model`` and ``data`` sections.
        metric: the validation metric's name (``ppl``, ``bpc``, ``acc``).
        higher_is_better: whether a larger metric is better.
        unit: what ``StepResult.count`` counts (``tokens`` or ``samples``).
    """

    name: ClassVar[str]
    model_config: ClassVar[type]
    data_config: ClassVar[type]
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    unit: ClassVar[str] = "tokens"

    def __init__(self, config: Any, *, rank: int = 0, world_size: int = 1) -> None:
        self.config = config
        self.rank = rank
        self.world_size = world_size

    @classmethod
    def for_evaluation(cls, config: Any, task_state: dict[str, Any], split: str) -> Task:
        """A task that can evaluate ``split`` of a checkpoint whose ``checkpoint_state`` was
        ``task_state``; tasks that can read one split alone override this."""
        task = cls(config)
        task.check_checkpoint_state(task_state, "the checkpoint")
        return task

    def model_meta(self) -> dict[str, Any]:
        """What the data decides about the model (see :mod:`rhn.models.registry`)."""
        raise NotImplementedError

    @classmethod
    def legacy_model_meta(cls, config: Any, task_state: dict[str, Any]) -> dict[str, Any]:
        """``model_meta`` recovered from a format-1 checkpoint, which saved only
        ``task_state``."""
        raise NotImplementedError

    def batches_per_epoch(self) -> int:
        """Batches this rank sees per epoch."""
        raise NotImplementedError

    def batch(self, epoch: int, index: int, device: torch.device) -> Any:
        """Batch ``index`` of ``epoch`` for this rank, on ``device``."""
        raise NotImplementedError

    def initial_state(self, model: nn.Module, device: torch.device) -> State:
        """The carried state at the start of each epoch (None for stateless tasks)."""
        return None

    def train_step(self, model: nn.Module, batch: Any, state: State) -> StepResult:
        raise NotImplementedError

    def evaluate(
        self, model: nn.Module, split: str, device: torch.device, **options: Any
    ) -> dict[str, float]:
        """Metrics on ``split`` (``valid`` or ``test``): at least ``loss`` and ``metric``.

        ``options`` are task-specific evaluation settings (e.g. a batch size) given by
        ``rhn-eval``; training calls this with none.
        """
        raise NotImplementedError

    def save_artifacts(self, run_dir: str) -> None:
        """Write what a run needs besides weights (a tokenizer, say) into ``run_dir``."""

    def checkpoint_state(self) -> dict[str, Any]:
        """What checkpoints must record about the data (e.g. the vocabulary). An export's
        header holds it as JSON: keep to str keys, lists, str, numbers, bools, None and
        tensors, or ``rhn-export`` writes the weights alone (and warns)."""
        return {}

    def check_checkpoint_state(self, state: dict[str, Any], path: str) -> None:
        """Raise a CheckpointError if a checkpoint's ``checkpoint_state`` doesn't fit this data."""

    def summaries(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Extra tensors to log as histograms at evaluation time (e.g. gate activity)."""
        return {}


_TASKS: dict[str, type[Task]] = {}
ENTRY_POINT_GROUP = "rhn.tasks"
_loaded_entry_points = False


def register(cls: type[Task]) -> type[Task]:
    """Class decorator that makes a task available to configs under ``cls.name``."""
    _TASKS[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    """Import every module named in the ``rhn.tasks`` entry-point group, once.

    The modules register their tasks when imported. The project's own tasks are named in
    its ``pyproject.toml``; another installed package adds tasks the same way.
    """
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()


def get_task(name: str) -> type[Task]:
    if name not in _TASKS:
        _load_entry_points()
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(_TASKS)) or (
            f"none: no package registers the entry-point group {ENTRY_POINT_GROUP!r}; is rhn "
            "installed (pip install -e .)?"
        )
        raise ConfigError(f"task: unknown task {name!r}{hint} (known: {known})")
    return _TASKS[name]
