"""The depth study of Srivastava, Greff & Schmidhuber (2015, arXiv 1505.00387, Figure 1).

For each depth d and block kind (plain / highway), ``trials`` random-search runs of the
fully connected net (``image_classification`` with ``model.arch: mlp``) over the learning
rate (log-uniform), momentum, per-epoch learning-rate decay, activation (relu / tanh) and,
for highway nets, the transform-gate bias (uniform in [−10, −1]). The metric is the
training set's cross-entropy after each epoch. Layout of a study directory:

    study.yaml               the resolved study (a rerun must match it, ``device`` aside, or
                             extend it: more trials, depths or blocks)
    trials/<trial>/          each trial's run: checkpoints, metrics.jsonl, TensorBoard
    trials/<trial>/result.json   written when the trial ends (finished or diverged)
    trials.jsonl             every ended trial: hyperparameters, final CE, curve
    curves.csv               block, depth, trial, epoch, train_loss, train_error
    summary.csv, figure1.png, tensorboard/   the best trial per cell, plotted

Trials are independent processes when ``workers`` > 1. A stopped study continues where it
stopped: ended trials are skipped, interrupted ones resume from their last checkpoint, and
each trial's hyperparameters are a pure function of the study seed and its name.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pickle
import random
import signal
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from rhn.data.atomic_file import atomic_open, atomic_save_figure, atomic_write_text
from rhn.data.data_dirs import count_as_warned, missing_folders_warned
from rhn.data.mnist import find_mnist
from rhn.models.config_fields import check_field_types
from rhn.train.config import apply_overrides, build_config, read_yaml_mapping
from rhn.train.logging import read_metrics
from rhn.train.loop import RunDirError, TrainingDivergedError, resolve_device, train
from rhn.train.recipes import study_names, study_path
from rhn.train.run_dir import name_list, visible_entries
from rhn.train.schema import (
    DEVICE_NAMES,
    ConfigError,
    check,
    from_dict,
    is_device_name,
    to_dict,
)
from rhn.train.seeding import MAX_SEED, SEEDS, is_seed


@dataclass
class SearchSpace:
    """Ranges of the random search (the paper names the hyperparameters, not the ranges)."""

    lr: tuple[float, float] = (0.003, 0.3)  # log-uniform
    momentum: tuple[float, float] = (0.5, 0.99)  # 1 − momentum log-uniform
    lr_decay: tuple[float, float] = (0.9, 1.0)  # lr × this each epoch, uniform
    activations: list[str] = field(default_factory=lambda: ["relu", "tanh"])
    gate_bias: tuple[float, float] = (-10.0, -1.0)  # uniform; highway only

    def __post_init__(self) -> None:
        check_field_types(self, "search")  # Python callers' values (YAML's: coerced)
        for key in ("lr", "momentum", "lr_decay", "gate_bias"):
            low, high = getattr(self, key)
            check(low <= high, f"search.{key}", [low, high], "[low, high] with low <= high")
        check(self.lr[0] > 0, "search.lr", self.lr, "a range of positive numbers")
        check(
            self.momentum[0] >= 0 and self.momentum[1] < 1,
            "search.momentum",
            self.momentum,
            "within [0, 1)",
        )
        check(
            self.lr_decay[0] > 0 and self.lr_decay[1] <= 1,
            "search.lr_decay",
            self.lr_decay,
            "within (0, 1]",
        )
        check(bool(self.activations), "search.activations", self.activations, "a non-empty list")


@dataclass
class DepthStudyConfig:
    """A study: which cells, how many trials of how many epochs, and the search space."""

    depths: list[int] = field(default_factory=lambda: [10, 20, 50, 100])
    blocks: list[Literal["plain", "highway"]] = field(default_factory=lambda: ["plain", "highway"])
    trials: int = 5
    epochs: int = 5
    seed: int = 0
    dataset: Literal["mnist"] = "mnist"
    data_dir: str | None = None
    train_size: int | None = None  # a prefix of the training set, for small budgets
    batch_size: int = 100
    device: str = "cpu"
    search: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self) -> None:
        check_field_types(self, "")  # Python callers' values (YAML's: coerced)
        check(
            all(d >= 2 for d in self.depths) and bool(self.depths),
            "depths",
            self.depths,
            "integers >= 2",
        )
        # Repeated cells would be the same trials (one name, one run directory) run twice.
        check(len(set(self.depths)) == len(self.depths), "depths", self.depths, "distinct depths")
        check(
            bool(self.blocks) and len(set(self.blocks)) == len(self.blocks),
            "blocks",
            self.blocks,
            "a non-empty list of distinct blocks (plain, highway)",
        )
        check(self.trials >= 1, "trials", self.trials, "an integer >= 1")
        check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check(is_seed(self.seed), "seed", self.seed, SEEDS)
        # Trial i trains with seed + i: every trial's seed must be one too.
        last = MAX_SEED - (self.trials - 1)
        check(
            self.seed <= last,
            "seed",
            self.seed,
            f"at most {last} with {self.trials} trials (trial i's seed is seed + i, at most "
            f"{MAX_SEED})",
        )
        # The trials' own configs reject these too, but only once a trial starts and under
        # their names there (data.train_size, train.device); checked here under the study's.
        check(
            self.train_size is None or self.train_size >= 1,
            "train_size",
            self.train_size,
            "null (the whole training set) or an integer >= 1",
        )
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check(is_device_name(self.device), "device", self.device, DEVICE_NAMES)


@dataclass(frozen=True)
class Trial:
    block: str
    depth: int
    index: int
    params: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.block}-d{self.depth:03d}-t{self.index:02d}"


def sample_params(study: DepthStudyConfig, block: str, depth: int, index: int) -> dict[str, Any]:
    """One trial's hyperparameters, a pure function of the study seed and the trial's name."""
    key = zlib.crc32(f"{study.seed}/{block}/{depth}/{index}".encode())
    rng = random.Random(key)
    space = study.search
    lo_lr, hi_lr = (math.log(v) for v in space.lr)
    lo_m, hi_m = (math.log(1 - v) for v in reversed(space.momentum))
    params: dict[str, Any] = {
        "lr": math.exp(rng.uniform(lo_lr, hi_lr)),
        "momentum": 1 - math.exp(rng.uniform(lo_m, hi_m)),
        "lr_decay": rng.uniform(*space.lr_decay),
        "activation": rng.choice(space.activations),
    }
    # Each cell draws its own (the key names the block): an independent search per cell.
    if block == "highway":
        params["gate_bias"] = rng.uniform(*space.gate_bias)
    return params


def plan(study: DepthStudyConfig) -> list[Trial]:
    return [
        Trial(block, depth, i, sample_params(study, block, depth, i))
        for depth in study.depths
        for block in study.blocks
        for i in range(study.trials)
    ]


def run_config(study: DepthStudyConfig, trial: Trial) -> dict[str, Any]:
    """The ``rhn-train`` config of one trial."""
    p = trial.params
    model: dict[str, Any] = {
        "arch": "mlp",
        "depth": trial.depth,
        "block": trial.block,
        "activation": p["activation"],
    }
    if "gate_bias" in p:
        model["gate_bias"] = p["gate_bias"]
    return {
        "task": "image_classification",
        "model": model,
        "data": {
            "dataset": study.dataset,
            "data_dir": study.data_dir,
            "train_size": study.train_size,
            "batch_size": study.batch_size,
            "eval_train": True,
        },
        "optim": {
            "lr": p["lr"],
            "momentum": p["momentum"],
            "schedule": {"name": "step", "gamma": p["lr_decay"], "step_size": 1},
        },
        "train": {
            "max_epochs": study.epochs,
            "seed": study.seed + trial.index,
            "device": study.device,
            "progress": False,
            "log_every": 100,
        },
    }


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return [
        {"epoch": r["epoch"], "train_loss": r["train_loss"], "train_error": r["train_error"]}
        for r in records
        if "train_loss" in r
    ]


STOPPING = "stopping"  # in a study directory: a signal or an error stopped the study


def stopping(study_dir: Path) -> bool:
    """Whether the study is stopping: a trial queued before it stopped doesn't start."""
    return (Path(study_dir) / STOPPING).exists()


def _mark_stopping(study_dir: Path) -> None:
    (Path(study_dir) / STOPPING).touch()


def run_trial(study: DepthStudyConfig, trial: Trial, study_dir: Path, threads: int) -> dict:
    """Train one trial (resuming it if it was interrupted) and write its result.json; one
    that a stopping study had already queued doesn't start."""
    if stopping(study_dir):
        return {"trial": trial.name, "status": "not started", "final_train_loss": math.inf}
    torch.set_num_threads(threads)
    run_dir = study_dir / "trials" / trial.name
    status, stop_signal = "finished", None
    try:
        result = train(build_config(run_config(study, trial)), run_dir)
        status, stop_signal = result.status, result.stop_signal
    except TrainingDivergedError:
        status = "diverged"
    except BaseException:  # stops the study: at once, here (this worker may take another)
        _mark_stopping(study_dir)
        raise
    curve = read_curve(run_dir)
    final = curve[-1]["train_loss"] if curve and status == "finished" else math.inf
    record = {
        "trial": trial.name,
        "block": trial.block,
        "depth": trial.depth,
        "index": trial.index,
        "status": status,
        "stop_signal": stop_signal,
        "final_train_loss": final,
        **trial.params,
        "curve": curve,
    }
    if status in ("finished", "diverged"):
        atomic_write_text(run_dir / "result.json", json.dumps(record))
    if status == "interrupted":  # at once, here: this worker may take a queued trial next
        _mark_stopping(study_dir)
    return record


def load_study(path: str | Path | None, overrides: Sequence[str] = ()) -> DepthStudyConfig:
    """A study file, or an installed study's name (``mnist_depth``; None: the paper's
    study, :class:`DepthStudyConfig`'s defaults, which ``configs/studies/mnist_depth.yaml``
    writes out) with ``--set`` overrides (``trials=3``, ``search.lr=[0.01, 0.1]``)."""
    if path is not None:
        path = Path(path) if Path(path).is_file() else study_path(path) or Path(path)
        if not path.exists() and path.parent == Path("."):  # a name, not a missing file's path
            names = ", ".join(study_names()) or "none"
            raise ConfigError(
                f"no study file {path}, and no installed study of that name (installed: {names})"
            )
    raw = {} if path is None else read_yaml_mapping(path, "study")
    try:
        apply_overrides(raw, overrides, sectioned=False)
        return from_dict(DepthStudyConfig, raw, prefix="")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None


# Keys of study.yaml that say where the trials run, not what they compute: a study started
# on the CPU may continue on a GPU (each trial resumes from its checkpoint, whose model check
# ignores the device), and a wrong device must not lock a directory. ``workers`` is never
# saved: it is an argument of the run, not part of the study. ``data_dir`` does count: it may
# name other data under the same dataset name.
NOT_PART_OF_THE_STUDY = ("device",)


def check_trial_configs(study: DepthStudyConfig, trials: Sequence[Trial]) -> None:
    """Build every trial's ``rhn-train`` config, so that whatever one would reject is reported
    before the study directory is touched, not when that trial's turn comes."""
    for trial in trials:
        try:
            build_config(run_config(study, trial))
        except ValueError as err:  # ConfigError included
            raise ConfigError(f"trial {trial.name}: {err}") from None
    try:
        resolve_device(study.device)
    except RunDirError as err:
        raise ConfigError(f"device: {err}") from None


def _trials_started(study_dir: Path) -> bool:
    """Whether any trial has left something behind. A trial directory holding only its lock
    is one that failed before its first write (its data not found, say): nothing to lose."""
    if (study_dir / "trials.jsonl").exists():
        return True
    trials = study_dir / "trials"
    files = (p for p in trials.glob("**/*") if not p.is_dir())
    return any(not (p.name == "lock" and p.parent.parent == trials) for p in files)


def _read_saved_study(path: Path) -> dict[str, Any] | None:
    """The mapping in a study.yaml, or None if it can't be read as one."""
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return saved if isinstance(saved, dict) else None


def _extends(new: dict, saved: dict, changed: list[str]) -> bool:
    """Whether ``new`` is ``saved`` with more trials, depths or blocks: every trial of the
    saved study is one of the new study's, with the same hyperparameters (a trial's are a
    function of the seed and its name), so the trials run so far are kept."""
    if not set(changed) <= {"trials", "depths", "blocks"}:
        return False
    return (
        new["trials"] >= saved["trials"]
        and set(new["depths"]) >= set(saved["depths"])
        and set(new["blocks"]) >= set(saved["blocks"])
    )


def prepare_study_dir(study: DepthStudyConfig, study_dir: Path) -> str | None:
    """Create ``study_dir`` with the resolved study in study.yaml, or check that it holds this
    study, or one it extends (more trials, depths or blocks: study.yaml is rewritten, the
    trials kept). A study.yaml whose study no trial has started is replaced (a corrected typo
    must not need a new directory). Returns a line saying which of the two it did, else None."""
    if study_dir.exists() and not study_dir.is_dir():
        raise RunDirError(f"study directory {study_dir} is a file; choose another --out")
    saved_path = study_dir / "study.yaml"
    # study.yaml is the study's first file: a folder of files without one is someone else's
    # (a run's, a user's), whose summary.csv and curves.csv the study would overwrite.
    others = visible_entries(study_dir) if study_dir.is_dir() else []
    if others and not saved_path.exists():
        raise RunDirError(
            f"study directory {study_dir} holds files but no study ({name_list(others)}); "
            f"the study would overwrite them: choose a new or empty --out"
        )
    resolved = to_dict(study)
    note = None
    if saved_path.exists():
        saved = _read_saved_study(saved_path)
        if saved == resolved:
            return None
        started = _trials_started(study_dir)
        if saved is None:
            if started:
                raise ConfigError(
                    f"{saved_path} can't be read as a study, and {study_dir} holds trials; "
                    f"restore the file or use another output directory"
                )
            changed = ["an unreadable study.yaml"]
        else:
            changed = sorted(
                k
                for k in set(saved) | set(resolved)
                if saved.get(k) != resolved.get(k) and k not in NOT_PART_OF_THE_STUDY
            )
        extended = saved is not None and _extends(resolved, saved, changed)
        if changed and started and not extended:
            raise ConfigError(
                f"{study_dir} holds a different study (changed: {', '.join(changed)}); use "
                f"another output directory to run this one (more trials, depths or blocks "
                f"extend it)"
            )
        # Past here study.yaml is rewritten: no trial has started, the study is extended, or
        # only a key outside the study (the device) changed, which study.yaml records anew.
        if changed and started:  # extended
            note = f"{saved_path}: extended (changed: {', '.join(changed)}); its trials are kept"
        elif changed:
            note = f"{saved_path}: replaced, no trial had started (changed: {', '.join(changed)})"
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        # Written whole or not at all: a half-written study.yaml would refuse every rerun.
        atomic_write_text(saved_path, yaml.safe_dump(resolved, sort_keys=False))
    except OSError as err:
        raise RunDirError(
            f"cannot write the study directory {study_dir}: {err.strerror or err}; choose "
            f"another --out"
        ) from None
    return note


def _log_trial(log: Callable[[str], None], record: dict) -> None:
    log(f"  {record['trial']}: {record['status']}, train CE {record['final_train_loss']:.4g}")


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes that print warnings as this one does (the commands'
    one line: a spawned process starts with Python's two-line default), and don't repeat
    the missing data folder it has warned of under the study's key."""
    formatwarning = warnings.formatwarning
    try:
        pickle.dumps(formatwarning)
    except (pickle.PicklingError, AttributeError, TypeError):  # a lambda, say: the default
        formatwarning = None
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_warn_as,
        initargs=(formatwarning, missing_folders_warned()),
    )


def _warn_as(formatwarning: Callable[..., str] | None, warned: frozenset[tuple[str, Path]]) -> None:
    if formatwarning is not None:
        warnings.formatwarning = formatwarning
    count_as_warned(warned)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is."""

    signal_number = signal.SIGTERM


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While a parallel study waits on its trials, SIGTERM stops it as Ctrl-C does (by
    default it would end this process at once and leave its workers running)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers are the main thread's
        return

    def handle(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_study(
    study: DepthStudyConfig,
    study_dir: str | Path,
    *,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run (or continue) every trial of ``study`` and write the study's reports."""
    study_dir = Path(study_dir)
    trials = plan(study)
    # Everything a trial would refuse is refused before anything is written, data it can't
    # find included (under the study's key; a finished study's reports need none).
    check_trial_configs(study, trials)
    pending = [t for t in trials if not (study_dir / "trials" / t.name / "result.json").exists()]
    if pending:
        find_mnist(study.data_dir, key="data_dir")
    note = prepare_study_dir(study, study_dir)
    if note:
        log(note)
    (study_dir / STOPPING).unlink(missing_ok=True)  # left by a stopped run: going on now
    log(f"depth study: {len(trials)} trials, {len(trials) - len(pending)} already done")
    if workers > 1 and len(pending) > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with worker_pool(workers) as pool, _terminate_as_interrupt():
            futures = [pool.submit(run_trial, study, t, study_dir, threads) for t in pending]
            try:
                for future in futures:
                    record = future.result()
                    _log_trial(log, record)
                    _stop_if_interrupted(record)
            except BaseException as err:
                # A signal, or a trial's error (which stops a serial study at once too): no
                # other trial starts (the pool has some queued beyond cancelling), and the
                # running ones are told to save and stop, should a signal have reached this
                # process alone (kill PID, timeout); twice is no harm, once saved.
                _mark_stopping(study_dir)
                for future in futures:
                    future.cancel()
                number = getattr(err, "signal_number", None) or signal.SIGINT
                for pid in getattr(pool, "_processes", None) or {}:  # no public accessor
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, number)
                raise
    else:
        for trial in pending:
            record = run_trial(study, trial, study_dir, torch.get_num_threads())
            _log_trial(log, record)
            _stop_if_interrupted(record)
    records = []
    for t in trials:
        path = study_dir / "trials" / t.name / "result.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
    write_reports(records, study_dir)
    return records


class StudyInterruptedError(Exception):
    """A signal stopped a trial (after its checkpoint): the study stops with it."""

    def __init__(self, trial: str, signal_number: int | None) -> None:
        super().__init__(
            f"{trial} was interrupted (its checkpoint is saved); the study stopped there: run "
            f"the same command again to continue it"
        )
        self.signal_number = signal_number


def _stop_if_interrupted(record: dict) -> None:
    if record["status"] == "interrupted":
        raise StudyInterruptedError(record["trial"], record.get("stop_signal"))


def best_per_cell(records: list[dict]) -> dict[tuple[int, str], dict]:
    def loss(record: dict) -> float:  # a NaN loss ranks last: NaN < x is always False
        value = record["final_train_loss"]
        return value if math.isfinite(value) else math.inf

    best: dict[tuple[int, str], dict] = {}
    for r in records:
        cell = (r["depth"], r["block"])
        if cell not in best or loss(r) < loss(best[cell]):
            best[cell] = r
    return best


def write_reports(records: list[dict], study_dir: Path) -> None:
    """trials.jsonl, curves.csv, summary.csv, figure1.png and TensorBoard scalars."""
    from torch.utils.tensorboard import SummaryWriter

    from rhn.analysis.plots import SAVEFIG, depth_study_figure

    with atomic_open(study_dir / "trials.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    with atomic_open(study_dir / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["block", "depth", "trial", "epoch", "train_loss", "train_error"])
        for r in records:
            for point in r["curve"]:
                writer.writerow(
                    [
                        r["block"],
                        r["depth"],
                        r["index"],
                        point["epoch"],
                        point["train_loss"],
                        point["train_error"],
                    ]
                )
    best = best_per_cell(records)
    keys = [
        "depth",
        "block",
        "trial",
        "final_train_loss",
        "lr",
        "momentum",
        "lr_decay",
        "activation",
        "gate_bias",
    ]
    with atomic_open(study_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        for cell in sorted(best):
            writer.writerow(best[cell])
    curves = {cell: [(p["epoch"], p["train_loss"]) for p in r["curve"]] for cell, r in best.items()}
    figure = depth_study_figure(curves)
    atomic_save_figure(figure, study_dir / "figure1.png", **SAVEFIG)
    # Purged from step 0: what an earlier run of the study logged is replaced, not doubled
    # (a continued or extended study has new bests to draw).
    tb = SummaryWriter(str(study_dir / "tensorboard"), purge_step=0)
    for (depth, block), points in curves.items():
        for epoch, loss in points:
            tb.add_scalar(f"best_train_loss/depth{depth:03d}/{block}", loss, epoch)
    tb.add_figure("depth_study", figure)
    tb.close()


def summary_table(records: list[dict]) -> str:
    """The best training cross-entropy per depth, plain against highway (Markdown)."""
    best = best_per_cell(records)
    depths = sorted({d for d, _ in best})
    lines = ["| depth | plain | highway |", "|---|---|---|"]
    for d in depths:
        cells = [best.get((d, b)) for b in ("plain", "highway")]
        text = [f"{c['final_train_loss']:.4g}" if c else "-" for c in cells]
        lines.append(f"| {d} | {text[0]} | {text[1]} |")
    return "\n".join(lines)
