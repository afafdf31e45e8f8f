"""The training loop shared by every task.

    for each optimiser step:
        lr ← schedule(step, epoch)
        for each of grad_accum batches: loss, state ← task.train_step(model, batch, state)
                                         backward(loss / grad_accum); state ← detach(state)
        clip; skip the step if the loss or gradient is not finite; optimiser step
        log; evaluate; checkpoint; stop on SIGTERM/SIGINT

Everything a run needs to continue exactly — weights, optimiser, schedule, data position,
carried state, RNG states — is in its checkpoint, so a run killed at any moment and
restarted on the same directory ends where an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from rhn.data.atomic_file import atomic_write_bytes, atomic_write_text
from rhn.models import build_model
from rhn.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    all_finite,
    atomic_torch_save,
    check_same_model,
    load_checkpoint,
    load_model_state,
    model_meta,
    same_state,
)
from rhn.train.config import RunConfig, rechecked, save_config
from rhn.train.distributed import (
    DistInfo,
    all_ranks_agree,
    any_rank,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
    shutdown,
)
from rhn.train.logging import RunLogger
from rhn.train.optim import (
    LRSchedule,
    add_l2_gradient,
    build_optimizer,
    load_optimizer_state,
    set_lr,
)
from rhn.train.precision import autocast, float32_arithmetic
from rhn.train.run_dir import (
    RunDirError,
    RunDirLock,
    prepare_run_dir,
    remove_stale_temporaries,
)
from rhn.train.seeding import rng_state, seed_everything, set_rng_state
from rhn.train.task import State, Task


class TrainingDivergedError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass
class Position:
    """Where the run stands; saved in every checkpoint."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch_index: int = 0  # next batch of the epoch
    best_metric: float | None = None
    best_step: int | None = None  # the step of the model best.pt holds
    bad_steps: int = 0  # consecutive non-finite steps
    skipped_steps: int = 0  # all non-finite steps
    elapsed_s: float = 0.0  # the loop's wall time (steps, evaluations, saves), over resumes


@dataclass
class TrainResult:
    status: str  # "finished" or "interrupted"
    position: Position
    metrics: dict[str, float] = field(default_factory=dict)
    is_main: bool = True  # rank 0 (the process that reports)
    stop_signal: int | None = None  # the signal that interrupted the run

    @property
    def exit_status(self) -> int:
        """The command line's exit status: 0 when finished, 128 + the signal number when a
        signal stopped it after saving (the shell's convention: SIGTERM 143, SIGINT 130)."""
        return 0 if self.stop_signal is None else 128 + self.stop_signal


@dataclass
class _LogWindow:
    """Training statistics accumulated between two logging steps (step time only)."""

    loss: float = 0.0
    steps: int = 0  # steps with a finite loss
    count: int = 0  # tokens or samples
    seconds: float = 0.0
    grad_norm: float = 0.0  # the last step's

    def add(self, loss: float | None, count: int, seconds: float, grad_norm: float) -> None:
        if loss is not None:
            self.loss += loss
            self.steps += 1
        self.count += count
        self.seconds += seconds
        self.grad_norm = grad_norm


@dataclass(frozen=True)
class _Due:
    """What a step calls for, decided once after it."""

    epoch_done: bool
    out_of_time: bool  # train.max_minutes spent
    stop: bool  # a signal reached some rank
    evaluation: bool
    # The evaluation is one of the schedule's (eval_every, or an epoch's end), not one forced
    # by the end of training: only those reach the plateau rule, so a run stopped by
    # max_minutes or max_steps and continued keeps an uninterrupted run's learning rates.
    scheduled: bool
    checkpoint: bool  # besides the one every improvement gets


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device ``name`` asks for (``auto``: CUDA if there is one; ``cuda``: this rank's
    GPU), or one line naming what was asked when this machine lacks it."""
    requested = name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    lacking = {"cuda": not torch.cuda.is_available(), "mps": not torch.backends.mps.is_available()}
    if lacking.get(device.type, False):
        raise RunDirError(
            f"device {requested!r}: {device.type.upper()} is not available here; use cpu or auto"
        )
    return device


def _invocations_kept(origin_path: Path, step: int) -> list[dict[str, Any]]:
    """The commands recorded in ``origin_path`` whose training a run resumed at ``step``
    kept: those that started before it (none for a fresh run; an origin.json written before
    ``invocations`` existed is one command)."""
    if not step or not origin_path.is_file():
        return []
    try:
        saved = json.loads(origin_path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(saved, dict):
        return []
    recorded = saved.get("invocations")
    if not isinstance(recorded, list):
        recorded = [{k: v for k, v in saved.items() if k != "invocations"}]
    return [e for e in recorded if isinstance(e, dict) and e.get("step", 0) < step]


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """Apply ``fn`` to a carried state: None, a tensor, or a tuple of tensors."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(fn(s) for s in state)
    return fn(state)


def _join_states(states: list[State]) -> State:
    """Concatenate per-rank carried states along the batch dimension (1)."""
    if states[0] is None:
        return None
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))
    return torch.cat(states, dim=1)


class Trainer:
    """One run of ``config`` in ``run_dir``: fresh, or resumed from its last checkpoint."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        *,
        fresh: bool = False,
        origin: dict[str, Any] | None = None,
    ) -> None:
        config = rechecked(config)
        self.config = config
        self.origin = origin or {}
        self.run_dir = Path(run_dir)
        # A device this machine lacks is refused before the run directory is made.
        device_type = resolve_device(config.train.device).type
        prepare_run_dir(self.run_dir)
        self.last_path = self.run_dir / "checkpoints" / "last.pt"
        self.best_path = self.run_dir / "checkpoints" / "best.pt"
        held = [p for p in (self.last_path, self.best_path) if p.exists()]
        if fresh and held:
            raise RunDirError(
                f"{self.run_dir} already holds a run ({held[0]}); --fresh refuses to "
                f"touch it. Choose another --run-dir, or drop --fresh to resume it."
            )
        train = config.train
        self.dist: DistInfo = init_distributed(device_type)
        self.device = resolve_device(train.device, self.dist.local_rank)
        self._stop_signal: int | None = None
        self.log: RunLogger | None = None
        # Before anything reads or writes the directory: one process owns it.
        self._lock = RunDirLock(self.run_dir) if self.dist.is_main else None
        try:
            self._build(config)
            # Every rank, so all decide improvements alike; before the log is cut back to
            # the resumed step, as it may refuse.
            notice = self._reconcile_best_metric()
            self.log = RunLogger(
                self.run_dir, resume_step=self.position.step, enabled=self.dist.is_main
            )
            if notice:
                self.log.message(notice)
            if self.dist.is_main:
                for folder in (self.run_dir, self.last_path.parent):
                    for path in remove_stale_temporaries(folder):
                        self.log.message(f"removed {path}, left by a save that was killed")
        except BaseException:
            self.close()
            raise

    def _build(self, config: RunConfig) -> None:
        """Task, model, optimiser and schedule; restored from last.pt if there is one."""
        train = config.train
        seed_everything(train.seed + self.dist.rank, deterministic=train.deterministic)
        resumed = self._read_last() if self.last_path.exists() else None
        # Whether last.pt was written in the save that wrote best.pt, so holds its model
        # (checkpoints from before the flag: unknown, None).
        self._last_is_best = None if resumed is None else resumed.get("is_best")

        self.task: Task = config.task_class(
            config, rank=self.dist.rank, world_size=self.dist.world_size
        )
        if resumed is not None:
            # Before the model is sized: the task may take the checkpoint's encoding of its
            # data (a language model, the vocabulary a run began with).
            self.task.check_checkpoint_state(resumed.get("task_state", {}), str(self.last_path))
        self.model_meta = self.task.model_meta()
        self.model: nn.Module = build_model(config.model, self.model_meta).to(self.device)
        self.optimizer = build_optimizer(self.model, config.optim)
        accum = config.optim.grad_accum
        self.steps_per_epoch = self.task.batches_per_epoch() // accum
        if self.steps_per_epoch < 1:
            raise RunDirError(
                f"the training data gives {self.task.batches_per_epoch()} batches per epoch "
                f"per rank, fewer than optim.grad_accum = {accum}; use more data or "
                f"smaller batches"
            )
        limits = [train.max_steps] if train.max_steps else []
        if train.max_epochs:
            limits.append(train.max_epochs * self.steps_per_epoch)
        self.total_steps = min(limits)
        self.schedule = LRSchedule(config.optim.schedule, config.optim.lr, self.total_steps)
        self.position = Position()
        # Saved with checkpoints: the first train/loss point after a resume averages the
        # same steps as an uninterrupted run's, those before the stop included.
        self.window = _LogWindow()
        self.state: State = None
        if resumed is not None:
            self._restore(self.last_path, resumed)

        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if train.compile:
            self.train_model = torch.compile(self.train_model)

    # -- checkpoints -------------------------------------------------------------------

    def _read_last(self) -> dict[str, Any]:
        """last.pt, refused unless it is this config's task and model."""
        try:
            ckpt = load_checkpoint(self.last_path)
        except CheckpointError as err:
            raise CheckpointError(
                f"{err}; to resume from the best model instead, copy best.pt over it, or "
                f"delete it to start the run over from step 0 (best.pt is kept until a "
                f"better model replaces it; metrics.jsonl starts again)"
            ) from None
        check_same_model(self.last_path, ckpt["config"], self.config.to_dict())
        return ckpt

    def _restore(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Resume from ``ckpt``, read from ``path``, whose task state the task has checked."""
        saved_batch = ckpt["config"].get("data", {}).get("batch_size")
        batch = getattr(self.config.data, "batch_size", saved_batch)
        if ckpt.get("hidden") is not None and saved_batch != batch:
            raise CheckpointError(
                f"checkpoint {path} carries a recurrent state for data.batch_size = "
                f"{saved_batch}, but this run asks for {batch}; resume with --set "
                f"data.batch_size={saved_batch}, or start a fresh --run-dir"
            )
        saved_optim = ckpt["config"].get("optim", {}).get("name")
        if saved_optim is not None and saved_optim != self.config.optim.name:
            raise CheckpointError(
                f"checkpoint {path} was trained with optim.name = {saved_optim!r}, but this run "
                f"asks for {self.config.optim.name!r}, whose state its moments are not; resume "
                f"with --set optim.name={saved_optim}, or start a fresh --run-dir"
            )
        epoch_over = self._epoch_over(path, ckpt)
        load_model_state(self.model, ckpt["model"], path)
        try:
            load_optimizer_state(self.optimizer, ckpt["optimizer"])
        except ValueError as err:
            raise CheckpointError(f"checkpoint {path}: {err}") from None
        self.schedule.load_state_dict(ckpt["schedule"])
        self.position = Position(**ckpt["position"])
        if epoch_over:
            self.position.epoch, self.position.batch_index = self.position.epoch + 1, 0
        self.window = _LogWindow(**ckpt.get("log_window", {}))
        rngs = ckpt["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        hidden = ckpt.get("hidden")
        if hidden is not None:
            # The saved state holds every rank's columns; take this rank's contiguous share.
            def shard(s: torch.Tensor) -> torch.Tensor:
                return s.chunk(self.dist.world_size, dim=1)[self.dist.rank].to(self.device)

            self.state = map_state(shard, hidden)

    def _epoch_over(self, path: Path, ckpt: dict[str, Any]) -> bool:
        """Whether a run stopped mid-epoch has too few of its epoch's batches left for a
        step of this run's ``grad_accum`` (raised since): it goes on with the next epoch,
        as a run would that took that step. Refused when this run's data cuts its epochs
        otherwise (a data.train_size, batch_size or seq_len changed since), whose batch of
        the saved index is other data or none at all."""
        batch_index = ckpt["position"]["batch_index"]
        if batch_index == 0:
            return False
        saved = ckpt.get("epoch") or {}
        # The saved epoch's length, where it compares (per rank, the same ranks): else None.
        saved_batches = saved.get("batches") if saved.get("ranks") == self.dist.world_size else None
        now = self.task.batches_per_epoch()
        accum = self.config.optim.grad_accum
        if saved_batches not in (None, now):
            before = ckpt["config"].get("data", {})
            changed = [
                f"data.{key} was {before[key]!r}, now {value!r}"
                for key, value in self.config.to_dict().get("data", {}).items()
                if key in before and before[key] != value
            ]
            detail = f" ({'; '.join(changed)})" if changed else ""
            raise CheckpointError(
                f"checkpoint {path} stopped at batch {batch_index} of an epoch of "
                f"{saved_batches} batches, but this run's data gives {now} per "
                f"epoch{detail}; resume with the data settings it was trained with, or start "
                f"a fresh --run-dir"
            )
        if batch_index + accum <= now:
            return False
        if saved_batches == now:
            return True  # the same epoch, too short now for a step of a raised grad_accum
        raise CheckpointError(
            f"checkpoint {path} stopped at batch {batch_index} of an epoch; this run's "
            f"data gives {now} batches per epoch, too few for a step of optim.grad_accum "
            f"= {accum} more; resume with the data settings and optim.grad_accum it was "
            f"trained with, or start a fresh --run-dir"
        )

    def _reconcile_best_metric(self) -> str | None:
        """Take best.pt's metric when it beats the one this run starts with — last.pt's, or
        none without one (a run killed after writing its first best.pt, before last.pt; or
        last.pt deleted to start over) —, so later evaluations must beat the model kept.
        A best.pt of another model is refused, as last.pt would be; a damaged one is
        rewritten from last.pt where that holds the best model. Returns what to tell."""
        if not self.best_path.exists():
            return None
        pos = self.position
        try:
            ckpt = load_checkpoint(self.best_path)
        except CheckpointError as err:  # a damaged best.pt must not stop a good last.pt
            if self._last_is_best:
                if self.dist.is_main:
                    atomic_write_bytes(self.best_path, self.last_path.read_bytes())
                return f"{err}; rewritten from {self.last_path}, which holds the best model"
            if pos.best_metric is None:
                return f"{err}; the next evaluation replaces it"
            # An older last.pt doesn't say whether it holds best.pt's model.
            lost = (
                "is lost, unless last.pt holds it"
                if self._last_is_best is None
                else "is lost"
                if pos.best_step is None
                else f"(step {pos.best_step}) is lost"
            )
            pos.best_metric = pos.best_step = None
            return f"{err}: the best model it held {lost}; the next evaluation writes a new one"
        if not self.last_path.exists():
            # What a resume from it would check: the model, and that it saw this data.
            check_same_model(self.best_path, ckpt["config"], self.config.to_dict())
            saved = (model_meta(ckpt, self.config), ckpt.get("task_state") or {})
            if not same_state(saved, (self.model_meta, self.task.checkpoint_state())):
                raise CheckpointError(
                    f"{self.best_path} is a model of other data (its vocabulary or "
                    f"preprocessing differs), and there is no last.pt to resume: move it "
                    f"away to start over here, or choose another --run-dir"
                )
        kept = ckpt["position"]
        if kept.get("best_metric") is not None and self._improved(kept["best_metric"]):
            pos.best_metric, pos.best_step = kept["best_metric"], kept.get("best_step")
        return None

    def _checkpoint(self, *, best: bool) -> None:
        """Write last.pt (and best.pt); every rank joins the gathers, rank 0 writes.

        Weights that are not finite (an update overflowed) never overwrite a checkpoint, and
        no later step can repair them: every rank stops here, alike, with the last good
        checkpoint named."""
        if any_rank(not all_finite(self.model), self.dist, self.device):
            raise TrainingDivergedError(
                f"the weights are not finite at step {self.position.step} (an update "
                f"overflowed); stopping without overwriting the checkpoint. "
                f"{self._last_good()}; lower optim.lr or set optim.clip_norm."
            )
        rngs = gather_objects(rng_state(), self.dist)
        local = map_state(lambda s: s.detach().cpu(), self.state)
        hidden = _join_states(gather_objects(local, self.dist))
        if self.dist.is_main:
            ckpt = {
                "format_version": FORMAT_VERSION,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "position": vars(self.position).copy(),
                "log_window": vars(self.window).copy(),
                "step": self.position.step,
                "hidden": hidden,
                "rng": rngs,
                "config": self.config.to_dict(),
                "model_meta": self.model_meta,
                "task_state": self.task.checkpoint_state(),
                "epoch": {
                    "batches": self.task.batches_per_epoch(),
                    "ranks": self.dist.world_size,
                },
                "is_best": best,
            }
            self.log.flush()
            # best.pt first: a kill between the two writes leaves a best.pt newer than the
            # best metric last.pt records, which _reconcile_best_metric reconciles; the other
            # order would leave last.pt claiming a best model that best.pt does not hold.
            if best:
                atomic_torch_save(ckpt, self.best_path)
            atomic_torch_save(ckpt, self.last_path)
        barrier(self.dist)

    # -- the loop ----------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.config.train.precision, self.device.type)

    def _batches(self) -> Iterator[tuple[int, Any]]:
        pos = self.position
        for micro in range(self.config.optim.grad_accum):
            yield micro, self.task.batch(pos.epoch, pos.batch_index + micro, self.device)

    def _train_step(self) -> tuple[float, float, int, bool]:
        """One optimiser step. Returns (loss, grad norm, count, whether it was applied)."""
        accum = self.config.optim.grad_accum
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, count = torch.zeros((), device=self.device), 0
        for _, batch in self._batches():
            with self._autocast():
                result = self.task.train_step(self.train_model, batch, self.state)
            (result.loss / accum).backward()
            self.state = map_state(torch.Tensor.detach, result.state)
            logged = result.loss if result.logged_loss is None else result.logged_loss
            total += logged.detach().float()
            count += result.count
        add_l2_gradient(self.optimizer)  # decay_before_clip's (no-op without)
        clip = self.config.optim.clip_norm or math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        loss = float(total) / accum
        finite = all_ranks_agree(
            math.isfinite(loss) and bool(torch.isfinite(grad_norm)), self.dist, self.device
        )
        if finite:
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            # A non-finite state would poison every later batch of the stream.
            self.state = self.task.initial_state(self.model, self.device)
        return loss, float(grad_norm), count, finite

    def _evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            self.model.eval()
            with torch.no_grad(), self._autocast():
                metrics = self.task.evaluate(self.model, "valid", self.device)
            self.log.histograms(self.task.summaries(self.model), self.position.step)
            for name, p in self.model.named_parameters():
                self.log.histograms({f"params/{name}": p}, self.position.step)
        return broadcast_object(metrics, self.dist)

    def _improved(self, metric: float) -> bool:
        best = self.position.best_metric
        if best is None:
            return True
        return metric > best if self.task.higher_is_better else metric < best

    def _count_bad_step(self, loss: float, grad_norm: float) -> None:
        pos, limit = self.position, self.config.train.max_bad_steps
        pos.bad_steps += 1
        pos.skipped_steps += 1
        self.log.message(
            f"step {pos.step}: non-finite loss or gradient (loss {loss}, grad norm "
            f"{grad_norm}); step skipped ({pos.bad_steps} in a row)"
        )
        self.log.scalars({"train/skipped_steps": pos.skipped_steps}, pos.step)
        if pos.bad_steps >= limit:
            raise TrainingDivergedError(
                f"{pos.bad_steps} consecutive steps had a non-finite loss or gradient "
                f"(train.max_bad_steps = {limit}); stopping at step {pos.step}. "
                f"{self._last_good()}; lower optim.lr or set optim.clip_norm."
            )

    def _last_good(self) -> str:
        if self.last_path.exists():
            return f"The last good checkpoint is {self.last_path}"
        return "No checkpoint was written"

    # -- the run ---------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to the step limit, the time budget or a signal; save; report."""
        pos = self.position
        metrics: dict[str, float] = {}
        stopped = False
        budget = self.config.train.max_minutes
        # A run that has spent its time budget is finished: running it again takes no step
        # (as one that has reached its step limit). Every rank restored the same position.
        spent = bool(budget) and pos.elapsed_s >= 60 * budget
        if pos.step < self.total_steps and not spent:
            self._write_run_files()
        elif self.dist.is_main:
            # Nothing trains under this config, so the run's files keep describing the one
            # its checkpoints were trained with.
            why = (
                f"has spent its train.max_minutes = {budget:g} at step {pos.step}"
                if spent
                else f"is at step {pos.step}, where this config stops ({self.total_steps})"
            )
            self.log.message(
                f"{self.run_dir} {why}; nothing to do (raise "
                f"{'it' if spent else 'train.max_steps or train.max_epochs'} to train on)"
            )
        with (
            self._signals_caught(),
            float32_arithmetic(self.config.train.precision),
            self._progress_bar() as bar,
        ):
            # train.max_minutes counts what a scheduler's clock sees once the run is set
            # up, evaluations and saves too, not the steps' time alone.
            start = time.perf_counter() - pos.elapsed_s  # when it began, had it never stopped
            while pos.step < self.total_steps and not spent:
                lr = self._step(self.window)
                pos.elapsed_s = time.perf_counter() - start
                bar.update(1)
                if pos.step % self.config.train.log_every == 0 and self.window.steps:
                    self._log_training(self.window, lr, bar)
                    self.window = _LogWindow()
                due = self._due()
                if due.epoch_done:
                    pos.epoch, pos.batch_index = pos.epoch + 1, 0
                improved = False
                if due.evaluation:
                    metrics = self._evaluate()
                    improved = self._record_evaluation(metrics, lr, observe=due.scheduled)
                if due.checkpoint or improved or due.stop:
                    pos.elapsed_s = time.perf_counter() - start
                    self._checkpoint(best=improved)
                if due.out_of_time or due.stop:
                    self._say_why_stopped(due)
                    stopped = due.stop
                    break
        # A rank stopped by another rank's signal reports SIGTERM's status.
        stop_signal = (self._stop_signal or signal.SIGTERM) if stopped else None
        status = "interrupted" if stopped else "finished"
        return TrainResult(status, pos, metrics, self.dist.is_main, stop_signal)

    def _write_run_files(self) -> None:
        """config.yaml (the resolved config), origin.json and the task's artifacts, each
        written atomically. origin.json is this command's ``origin`` (the config file and
        overrides), with ``invocations``: every command that trained this run, from the
        step it started at, so a report sees an override given to an earlier part of it."""
        if not self.dist.is_main:
            return
        save_config(self.config, self.run_dir / "config.yaml")
        self.log.run_config(self.config.to_dict(), self.position.step)
        if self.origin:
            path = self.run_dir / "origin.json"
            step = self.position.step
            invocations = [*_invocations_kept(path, step), {**self.origin, "step": step}]
            origin = {**self.origin, "invocations": invocations}
            atomic_write_text(path, json.dumps(origin, indent=2))
        self.task.save_artifacts(str(self.run_dir))
        if self.position.step:
            pos = self.position
            self.log.message(f"resuming {self.run_dir} at step {pos.step}, epoch {pos.epoch}")

    def _step(self, window: _LogWindow) -> float:
        """One optimiser step at the scheduled learning rate, counted in ``window``."""
        pos = self.position
        if pos.batch_index == 0:
            self.state = self.task.initial_state(self.model, self.device)
        lr = self.schedule.lr(pos.step, pos.epoch)
        set_lr(self.optimizer, lr)
        start = time.perf_counter()
        loss, grad_norm, count, applied = self._train_step()
        seconds = time.perf_counter() - start
        pos.step += 1
        pos.batch_index += self.config.optim.grad_accum
        window.add(loss if applied else None, count, seconds, grad_norm)
        if applied:
            pos.bad_steps = 0
        else:
            self._count_bad_step(loss, grad_norm)
        return lr

    def _log_training(self, window: _LogWindow, lr: float, bar: tqdm) -> None:
        rate = window.count * self.dist.world_size / max(window.seconds, 1e-9)
        mean_loss = window.loss / window.steps
        scalars = {
            "train/loss": mean_loss,
            "lr": lr,
            "grad_norm": window.grad_norm,
            f"throughput/{self.task.unit}_per_s": rate,
        }
        self.log.scalars(scalars, self.position.step)
        bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.3g}")

    def _due(self) -> _Due:
        """What the step just taken calls for (every rank decides alike)."""
        pos, train = self.position, self.config.train
        # Done when another step's grad_accum batches would run past the epoch (the same
        # step as steps_per_epoch, also for a run resumed mid-epoch with another grad_accum).
        batches = self.task.batches_per_epoch()
        epoch_done = pos.batch_index + self.config.optim.grad_accum > batches
        out_of_time = bool(train.max_minutes) and pos.elapsed_s >= 60 * train.max_minutes
        if train.max_minutes:
            out_of_time = any_rank(out_of_time, self.dist, self.device)
        finished = pos.step >= self.total_steps or out_of_time
        scheduled = bool(
            (train.eval_every and pos.step % train.eval_every == 0)
            or (not train.eval_every and epoch_done)
        )
        evaluation = scheduled or finished
        checkpoint = bool(
            (train.checkpoint_every and pos.step % train.checkpoint_every == 0)
            or (not train.checkpoint_every and evaluation)
            or finished
        )
        # Ranks may get the signal at different steps; all stop at the first.
        stop = any_rank(self._stop_signal is not None, self.dist, self.device)
        return _Due(epoch_done, out_of_time, stop, evaluation, scheduled, checkpoint)

    def _record_evaluation(self, metrics: dict[str, float], lr: float, *, observe: bool) -> bool:
        """Log an evaluation, tell the schedule if ``observe``; whether it is the best so far."""
        pos = self.position
        metric = metrics[self.task.metric]
        if observe:
            self.schedule.observe(metric, self.task.higher_is_better)
        improved = math.isfinite(metric) and self._improved(metric)
        if improved:
            pos.best_metric, pos.best_step = metric, pos.step
        record = {"step": pos.step, "epoch": pos.epoch, "elapsed_s": round(pos.elapsed_s, 3)}
        self.log.evaluation({**record, "lr": lr, **metrics})
        self.log.scalars({f"val/{k}": v for k, v in metrics.items()}, pos.step)
        return improved

    def _say_why_stopped(self, due: _Due) -> None:
        step = self.position.step
        if due.out_of_time:
            self.log.message(f"train.max_minutes reached at step {step}")
        else:
            name = signal.Signals(self._stop_signal).name if self._stop_signal else "a signal"
            self.log.message(
                f"stopped by {name} at step {step}; checkpoint saved to {self.last_path}"
            )

    @contextlib.contextmanager
    def _signals_caught(self) -> Iterator[None]:
        """SIGTERM and SIGINT ask the loop to stop after the step (and save), not kill it."""

        def handle(signum: int, _frame: object) -> None:
            self._stop_signal = signum

        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _progress_bar(self) -> tqdm:
        return tqdm(
            total=self.total_steps,
            initial=self.position.step,
            desc="train",
            unit="step",
            disable=not (self.dist.is_main and self.config.train.progress and sys.stderr.isatty()),
            dynamic_ncols=True,
        )

    def close(self) -> None:
        """Close the logs, give the run directory back, leave the process group."""
        if self.log is not None:
            self.log.close()
            self.log = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        shutdown(self.dist)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    fresh: bool = False,
    origin: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``config`` in ``run_dir`` (resuming it if it holds a checkpoint).

    ``origin`` (e.g. the config file and overrides the command line was given) is written
    to ``origin.json`` for reports such as ``scripts/reproduce.py``.
    """
    trainer = Trainer(config, run_dir, fresh=fresh, origin=origin)
    try:
        return trainer.run()
    finally:
        trainer.close()
