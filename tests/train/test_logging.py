"""RunLogger: logging never stops a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rhn.train.logging import RunLogger


def test_histograms_of_huge_or_non_finite_values_are_skipped_not_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = RunLogger(tmp_path)
    huge = torch.full((100,), 3e38)  # finite; TensorBoard's binning raises on it
    logger.histograms({"w/huge": huge, "w/inf": torch.tensor([1.0, float("inf")]),
                       "w/ok": torch.randn(100)}, step=1)  # fmt: skip
    logger.close()
    err = capsys.readouterr().err
    assert "histogram w/huge skipped" in err and "histogram w/inf skipped" in err
    assert "w/ok" not in err


def _scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.mark.parametrize("resume_step", [0, 5])
def test_a_resume_keeps_the_checkpoints_step_and_drops_what_came_after(
    tmp_path: Path, resume_step: int
) -> None:
    killed = RunLogger(tmp_path)  # a run that logged steps 1..10, then was killed
    for step in range(1, 11):
        killed.scalars({"train/loss": 100.0 + step}, step)
        killed.evaluation({"step": step, "epoch": 0})
    killed.close()
    resumed = RunLogger(tmp_path, resume_step=resume_step)  # from the checkpoint at resume_step
    for step in range(resume_step + 1, resume_step + 4):
        resumed.scalars({"train/loss": 200.0 + step}, step)
        resumed.evaluation({"step": step, "epoch": 0})
    resumed.close()
    kept = [(step, 100.0 + step) for step in range(1, resume_step + 1)]
    new = [(step, 200.0 + step) for step in range(resume_step + 1, resume_step + 4)]
    assert _scalars(tmp_path, "train/loss") == kept + new
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [s for s, _ in kept + new]


def test_flat_hparams_names_each_leaf_by_its_path() -> None:
    from rhn.train.logging import flat_hparams

    config = {
        "task": "char_lm",
        "model": {"depth": 2, "widths": [1, 2], "init_range": None, "cnn": {"act": "tanh"}},
        "optim": {"lr": 0.5},
        "train": {"compile": False},
    }
    assert flat_hparams(config) == {
        "task": "char_lm",
        "model.depth": 2,
        "model.widths": "[1, 2]",
        "model.cnn.act": "tanh",
        "optim.lr": 0.5,
        "train.compile": "false",
    }


def test_a_run_shows_its_config_as_text_and_hyperparameters_in_tensorboard(
    tmp_path: Path,
) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    from rhn.train.config import build_config
    from rhn.train.loop import train

    raw = {
        "task": "char_lm",
        "model": {"embed_size": 8, "hidden_size": 8, "depth": 3},
        "data": {"max_chars": 3000, "batch_size": 4, "seq_len": 10},
        "optim": {"lr": 0.003},
        "train": {"max_steps": 2, "progress": False},
    }
    train(build_config(raw), tmp_path / "run")
    first_yaml = (tmp_path / "run" / "config.yaml").read_text()
    raw["train"] = {**raw["train"], "max_steps": 4, "max_epochs": None}
    train(build_config(raw), tmp_path / "run")  # a resume at step 2
    values, steps = {}, {}
    for path in sorted((tmp_path / "run").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                values.setdefault(value.tag, value)
                steps.setdefault(value.tag, []).append(event.step)
    # Each start's config as text; the hyperparameters once, at the first (the HParams tab
    # reads only a tag's first metadata).
    assert steps["config/text_summary"] == [0, 2] and steps["_hparams_/session_start_info"] == [0]
    text = values["config/text_summary"].tensor.string_val[0].decode()
    assert "    depth: 3\n" in text and "    task: char_lm\n" in text  # config.yaml, indented
    assert text.replace("\n    ", "\n").strip() == first_yaml.strip()
    start = HParamsPluginData.FromString(
        values["_hparams_/session_start_info"].metadata.plugin_data.content
    ).session_start_info.hparams
    assert start["model.depth"].number_value == 3 and start["optim.lr"].number_value == 0.003
    assert start["train.max_steps"].number_value == 2
    assert start["task"].string_value == "char_lm"
    assert start["train.deterministic"].string_value in ("true", "false")
    # No experiment summary: TensorBoard would take one run's for a whole logdir of them.
    assert "_hparams_/experiment" not in values and "_hparams_/session_end_info" in values


def test_a_start_from_scratch_shows_its_own_config_not_an_abandoned_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    abandoned = RunLogger(tmp_path)  # a start killed before its first checkpoint
    abandoned.run_config({"optim": {"lr": 0.5}}, 0)
    abandoned.scalars({"train/loss": 9.0}, 1)
    abandoned.close()
    restart = RunLogger(tmp_path, resume_step=0)  # no checkpoint: from scratch, lr lowered
    restart.run_config({"optim": {"lr": 0.01}}, 0)
    restart.scalars({"train/loss": 4.0}, 1)
    restart.close()
    assert "removed 1 events file(s) of an earlier start" in capsys.readouterr().err
    first: dict[str, object] = {}  # what TensorBoard takes: each tag's first value, name order
    for path in sorted(tmp_path.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                first.setdefault(value.tag, value)
    start = HParamsPluginData.FromString(
        first["_hparams_/session_start_info"].metadata.plugin_data.content
    ).session_start_info.hparams
    assert start["optim.lr"].number_value == 0.01
    assert "lr: 0.01" in first["config/text_summary"].tensor.string_val[0].decode()
    assert _scalars(tmp_path, "train/loss") == [(1, 4.0)]
    # A resume from a checkpoint keeps every earlier file: its steps up to the checkpoint's.
    RunLogger(tmp_path, resume_step=1).close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2


@pytest.mark.parametrize("ahead_s", [0, 3600])
def test_a_new_events_file_sorts_after_the_runs_earlier_ones(
    tmp_path: Path, ahead_s: int, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from rhn.train.logging import EVENTS_PREFIX, open_events_writer

    # Earlier files whose names sort after anything this process would open now: one of
    # this very second (0) or a clock an hour ahead of this machine's (3600), and an older
    # one before them. TensorBoard, reading in name order, would take them as the newer.
    time.sleep(1 - time.time() % 1)  # at a second's start: the writer sees this second too
    now = int(time.time())
    older = tmp_path / f"{EVENTS_PREFIX}{now - 50:010d}.host.1.0"
    later = tmp_path / f"{EVENTS_PREFIX}{now + ahead_s:010d}.zzzz.99999.99"
    older.write_bytes(b"older events")
    later.write_bytes(b"later events")
    writer = open_events_writer(tmp_path, purge_step=3, notice=print)
    writer.add_scalar("x", 1.0, 3)
    writer.close()
    names = sorted(p.name for p in tmp_path.glob(f"{EVENTS_PREFIX}*"))
    assert (
        len(names) == 3 and names[0].endswith(".host.1.0") and names[1].endswith(".zzzz.99999.99")
    )
    assert int(names[1].split(".")[3]) < now <= int(names[2].split(".")[3])  # this start's last
    assert (tmp_path / names[0]).read_bytes() == b"older events"  # renamed, not rewritten
    assert (tmp_path / names[1]).read_bytes() == b"later events"
    said = capsys.readouterr().out
    assert ("3600 s ahead of this machine's clock" in said) == (ahead_s > 0)
    # Files that already sort before now (the next second) are left as they are.
    time.sleep(1 - time.time() % 1)
    open_events_writer(tmp_path, purge_step=4).close()
    assert sorted(p.name for p in tmp_path.glob(f"{EVENTS_PREFIX}*"))[:3] == names
    logger = RunLogger(tmp_path / "fresh")
    logger.close()
    assert len(list((tmp_path / "fresh").glob(f"{EVENTS_PREFIX}*"))) == 1


def test_read_metrics_passes_over_a_torn_line(tmp_path: Path) -> None:
    from rhn.train.logging import read_metrics

    path = tmp_path / "metrics.jsonl"
    assert read_metrics(path) == []  # no file yet
    path.write_text('{"step": 1, "loss": 2.5}\n\n[1, 2]\n{"step": 2, "loss": 2.1}\n{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.1}]


def test_events_that_cannot_be_written_are_said_once_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    logger = RunLogger(tmp_path)
    logger.scalars({"train/loss": 1.0}, 1)

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logger.writer, "flush", full)  # what the writer thread raises again
    logger.flush()  # before a checkpoint: the checkpoint is still attempted
    logger.scalars({"train/loss": 2.0}, 2)
    logger.histograms({"w": torch.ones(3)}, 2)
    logger.evaluation({"step": 2, "epoch": 0, "loss": 2.0})
    logger.close()
    err = capsys.readouterr().err
    assert err.count("TensorBoard events could not be written (No space left on device)") == 1
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["step"] == 2


def test_a_full_disk_in_the_events_thread_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    import threading

    printed: list[BaseException] = []  # what would be printed as a thread's traceback
    hook = threading.excepthook
    threading.excepthook = mine = lambda args: printed.append(args.exc_value)
    try:
        logger = RunLogger(tmp_path)
        record_writer = logger.writer.file_writer.event_writer._async_writer._writer

        def full(data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        record_writer.write = full  # what the writer thread hits on a full disk
        logger.scalars({"train/loss": 1.0}, 1)
        logger.flush()
        logger.scalars({"train/loss": 2.0}, 2)
        logger.close()
        assert threading.excepthook is mine  # the hook before the logger's, put back
    finally:
        threading.excepthook = hook
    err = capsys.readouterr().err
    assert err.count("TensorBoard events could not be written (No space left on device)") == 1
    assert printed == []
