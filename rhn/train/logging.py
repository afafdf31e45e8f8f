"""Run monitoring: TensorBoard scalars and histograms, ``metrics.jsonl``, console lines.

The resolved config goes to TensorBoard too: as YAML in the Text tab, and flattened
(``model.depth``, ``optim.lr``, ...) as the run's hyperparameters in the HParams tab, beside
the validation metrics, so the runs of a sweep compare in one table. Only rank 0 writes.
Steps are optimiser steps, from 1; on resume, events and metrics recorded after the
checkpoint's step are dropped (TensorBoard's ``purge_step``; a run restarted from scratch
removes the earlier start's events files, as its step-0 config would stand in the HParams
tab), so every curve stays monotonic.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from rhn.data.atomic_file import atomic_write_text


class RunLogger:
    def __init__(self, run_dir: str | Path, *, resume_step: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.writer: SummaryWriter | None = None
        self._restore_thread_hook: Callable[[], None] = lambda: None
        if not enabled:
            return
        if resume_step == 0:
            # A start from scratch: earlier events are of a start with no last.pt to resume.
            # purge_step would hide their steps >= 1 but not their step 0, and the HParams
            # tab reads a tag's first metadata, so it would show that start's config.
            earlier = sorted(self.run_dir.glob(f"{EVENTS_PREFIX}*"))
            for path in earlier:
                path.unlink()
            if earlier:
                self.message(
                    f"{self.run_dir}: removed {len(earlier)} events file(s) of an earlier start "
                    f"(no last.pt to resume it from); this run starts from step 0"
                )
        # TensorBoard hides every event at a step >= purge_step: the checkpoint's own step
        # (its evaluation, its loss) is kept, what a killed run logged after it is not.
        self.writer = open_events_writer(self.run_dir, resume_step + 1, self.message)
        if self.metrics_path.exists():
            kept = []
            for number, line in enumerate(self.metrics_path.read_text().splitlines(), 1):
                try:
                    record = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    # A run killed mid-append leaves a torn last line: drop it, say so.
                    self.message(f"{self.metrics_path}: dropped torn line {number}: {line[:60]!r}")
                    continue
                if isinstance(record, dict) and record.get("step", 0) <= resume_step:
                    kept.append(line)
            # Atomic: a kill during this rewrite must not cost the run its history.
            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        self._restore_thread_hook = _quiet_events_thread()  # last: close() puts it back

    def run_config(self, config: dict[str, Any], step: int) -> None:
        """The resolved ``config`` (a nested dict, as config.yaml holds it) of the process
        that starts at ``step``: its YAML as text at that step, and, at a run's first start,
        its values as hyperparameters (TensorBoard finds the metrics beside them among the
        run's scalars). The HParams tab reads a run's first hyperparameters only (a tag's
        metadata is its first event's), so a resume writes none."""
        text = yaml.safe_dump(config, sort_keys=False)

        def write(writer: SummaryWriter) -> None:
            # Indented four spaces: a Markdown code block, so TensorBoard keeps the layout.
            writer.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), step)
            if step == 0:
                _, start, end = hparams(flat_hparams(config), {})
                # The session's values alone, not an experiment summary: TensorBoard takes
                # one run's experiment for the whole logdir (other tasks' keys and metrics
                # missing) but, without any, the union of every run's values and scalar tags.
                for summary in (start, end):
                    writer.file_writer.add_summary(summary, step)

        self._write_events(write)

    def scalars(self, values: dict[str, float], step: int) -> None:
        def write(writer: SummaryWriter) -> None:
            for key, value in values.items():
                if value is not None and math.isfinite(value):
                    writer.add_scalar(key, value, step)

        self._write_events(write)

    def histograms(self, values: dict[str, torch.Tensor], step: int) -> None:
        if self.writer is None:
            return
        for key, tensor in values.items():
            values64 = tensor.detach().double().cpu()
            # TensorBoard's binning fails on huge-but-finite values (a tensor of 3e38s gives
            # "The histogram is empty"): a histogram is never worth stopping a run for.
            if not torch.isfinite(values64.square().sum()):
                self.message(f"step {step}: histogram {key} skipped (non-finite or huge values)")
                continue
            try:
                self._write_events(lambda w, k=key, v=values64: w.add_histogram(k, v, step))
            except ValueError as err:
                self.message(f"step {step}: histogram {key} skipped ({err})")

    def evaluation(self, record: dict[str, Any]) -> None:
        """Append one evaluation to metrics.jsonl and print its one-line summary."""
        if not self.enabled:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        parts = [f"step {record['step']}", f"epoch {record['epoch']}"]
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, float):
                parts.append(f"{key} {value:.4g}")
        print(" | ".join(parts), file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def flush(self) -> None:
        """Hand every event logged so far to the file: before a checkpoint, so that a kill
        after it can't take events at or before its step, which a resume won't log again."""
        self._write_events(lambda writer: writer.flush())

    def close(self) -> None:
        self.flush()
        self._write_events(lambda writer: writer.close())
        self._restore_thread_hook()

    def _write_events(self, write: Callable[[SummaryWriter], None]) -> None:
        """``write(writer)``; where the events file can't be written (a full disk, a file
        size limit), said once, and this start goes on without TensorBoard events: its
        checkpoints and metrics.jsonl are what a resume needs."""
        if self.writer is None:
            return
        try:
            write(self.writer)
        except OSError as err:
            writer, self.writer = self.writer, None
            self.message(
                f"{self.run_dir}: TensorBoard events could not be written "
                f"({err.strerror or err}); this start logs no more of them"
            )
            with contextlib.suppress(OSError):
                writer.close()


def _quiet_events_thread() -> Callable[[], None]:
    """Until the returned function is called: an OSError in TensorBoard's events writer
    thread (a full disk) prints no traceback of its own, since the writer raises it again in
    the thread that next logs, where :meth:`RunLogger._write_events` says it in one line.
    Every other thread's exception goes to the hook there was."""
    try:
        from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    except ImportError:  # another TensorBoard: its thread's traceback is printed as before
        return lambda: None
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (
            isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)
        ):
            previous(args)

    threading.excepthook = hook

    def restore() -> None:
        if threading.excepthook is hook:  # not if another hook was put over it since
            threading.excepthook = previous

    return restore


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The evaluations of a run's ``metrics.jsonl`` (none if it is missing), a line that is
    not a JSON object skipped: the torn last line of a run killed mid-append, which the
    run's next start drops too."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, float | int | str]:
    """``config``'s leaves by dotted name (``model.depth``): numbers as numbers, booleans as
    ``true``/``false`` (the HParams tab would show 1/0) and lists as their JSON; ``None``
    (an unset option) left out, as the HParams tab has no such value."""
    flat: dict[str, float | int | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, bool):
            flat[name] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            flat[name] = value
        elif value is not None:
            flat[name] = json.dumps(value)
    return flat


EVENTS_PREFIX = "events.out.tfevents."


def open_events_writer(
    run_dir: Path, purge_step: int, notice: Callable[[str], None] | None = None
) -> SummaryWriter:
    """A writer whose events file sorts after every earlier one of the run.

    TensorBoard reads a run's events files in name order, and a name is the second the file
    was opened in, then host, process and a counter. A file opened in the same second as an
    earlier one (``train()`` twice in one process) can sort before it (``….10`` before
    ``….9``), and so can every file of a resume on a machine whose clock is behind the one
    that began the run; TensorBoard would then read the resumed events as the older ones and
    drop them as orphans. So where an earlier name is of this second or later, the earlier
    files take, in their order, the seconds just before the earliest of them and of now (a
    name's second is only an ordering key: the events keep their own times). Renamed first
    to last, they keep their order at every moment, should the process be killed midway."""
    now = int(time.time())
    earlier = sorted(
        (int(match[1]), path)
        for path in run_dir.glob(f"{EVENTS_PREFIX}*")
        if (match := _EVENTS_SECOND.fullmatch(path.name))
    )
    if earlier and earlier[-1][0] >= now:
        base = min(earlier[0][0], now) - len(earlier)
        for offset, (second, path) in enumerate(earlier):
            rest = path.name[len(f"{EVENTS_PREFIX}{second:010d}") :]
            path.rename(path.with_name(f"{EVENTS_PREFIX}{base + offset:010d}{rest}"))
        if notice is not None and earlier[-1][0] > now:
            notice(
                f"{run_dir}: an events file is dated {earlier[-1][0] - now} s ahead of this "
                f"machine's clock; renamed the run's {len(earlier)} earlier events file(s) "
                f"so that TensorBoard reads this start's after them"
            )
    return SummaryWriter(str(run_dir), purge_step=purge_step)


_EVENTS_SECOND = re.compile(re.escape(EVENTS_PREFIX) + r"(\d{10})\..*")
