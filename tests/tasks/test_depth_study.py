"""The depth study's own checks: its config, every trial's config before anything is
written, and when a study directory may take a corrected study."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from rhn.data.synthetic import write_mnist
from rhn.tasks.depth_study import (
    DepthStudyConfig,
    SearchSpace,
    best_per_cell,
    check_trial_configs,
    plan,
    prepare_study_dir,
    run_config,
    run_study,
)
from rhn.train.loop import RunDirError
from rhn.train.schema import ConfigError


def mnist_dir(tmp_path: Path) -> str:
    """A folder of MNIST files (a few synthetic images): what a study checks it can find."""
    write_mnist(tmp_path / "mnist")
    return str(tmp_path / "mnist")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"device": "gpu"}, "device: 'gpu' is not allowed; expected 'auto', 'cpu', 'cuda', "),
        ({"device": "cpu:0x"}, "device: 'cpu:0x' is not allowed"),
        ({"train_size": 0}, "train_size: 0 is not allowed; expected null (the whole training"),
        ({"batch_size": 0}, "batch_size: 0 is not allowed; expected an integer >= 1"),
        ({"depths": [3, 3]}, "depths: [3, 3] is not allowed; expected distinct depths"),
        ({"blocks": []}, "blocks: [] is not allowed; expected a non-empty list of distinct"),
        # Trial i trains with seed + i, which torch must take too: caught before any trial.
        (
            {"seed": 2**63 - 2, "trials": 3},
            f"seed: {2**63 - 2} is not allowed; expected at most {2**63 - 3} with 3 trials",
        ),
        ({"seed": 2**63}, f"seed: {2**63} is not allowed; expected an integer in -2**63 .."),
    ],
)
def test_the_study_config_names_what_it_refuses(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        DepthStudyConfig(**changes)
    assert message in str(info.value)


def test_every_trial_seed_of_a_study_at_the_seed_bounds_is_one_torch_takes() -> None:
    for seed, trials in ((2**63 - 3, 3), (-(2**63), 2)):
        study = DepthStudyConfig(depths=[3], blocks=["plain"], trials=trials, seed=seed)
        seeds = [run_config(study, trial)["train"]["seed"] for trial in plan(study)]
        assert seeds == [seed + i for i in range(trials)]
        check_trial_configs(study, plan(study))  # each a valid train.seed
        for trial_seed in seeds:
            torch.manual_seed(trial_seed)


def test_a_study_built_in_python_is_type_checked_and_takes_numpy_numbers() -> None:
    import numpy as np

    with pytest.raises(ValueError, match=r"^trials must be an integer, got 2\.5$"):
        DepthStudyConfig(trials=2.5)
    with pytest.raises(ValueError, match=r"^search\.activations must be a list of strings"):
        SearchSpace(activations="relu")  # would have searched 'r', 'e', 'l', 'u'
    study = DepthStudyConfig(depths=list(np.array([3, 5])), seed=np.int64(7))
    assert study.depths == [3, 5] and type(study.seed) is int and type(study.depths[0]) is int


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_the_study_config_takes_every_device_rhn_train_takes(device: str) -> None:
    assert DepthStudyConfig(device=device).device == device


def test_a_value_only_a_trial_config_rejects_stops_the_study_before_it_writes(
    tmp_path: Path,
) -> None:
    study = DepthStudyConfig(depths=[3], trials=1, search=SearchSpace(activations=["swish"]))
    with pytest.raises(ConfigError, match="trial plain-d003-t00: activation must be one of"):
        check_trial_configs(study, plan(study))
    logged: list[str] = []
    with pytest.raises(ConfigError):
        run_study(study, tmp_path / "study", log=logged.append)
    assert logged == [] and not (tmp_path / "study").exists()


def test_a_cuda_study_without_cuda_is_refused_under_the_study_key() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    study = DepthStudyConfig(depths=[3], trials=1, device="cuda")
    with pytest.raises(ConfigError, match="device: device 'cuda': CUDA is not available here"):
        check_trial_configs(study, plan(study))


def test_a_started_study_is_kept_and_an_unstarted_one_replaced(tmp_path: Path) -> None:
    out = tmp_path / "study"
    first = DepthStudyConfig(depths=[3], trials=1)
    assert prepare_study_dir(first, out) is None
    assert prepare_study_dir(first, out) is None  # the same study: nothing to say
    other = DepthStudyConfig(depths=[3], trials=2)
    # No trial has started (a trial directory holding only its lock counts as none).
    (out / "trials" / "plain-d003-t00").mkdir(parents=True)
    (out / "trials" / "plain-d003-t00" / "lock").write_text("pid 1\n")
    note = prepare_study_dir(other, out)
    assert note == f"{out / 'study.yaml'}: replaced, no trial had started (changed: trials)"
    assert yaml.safe_load((out / "study.yaml").read_text())["trials"] == 2
    # Once a trial has written anything, the study stays and study.yaml is untouched.
    (out / "trials" / "plain-d003-t00" / "metrics.jsonl").write_text("{}\n")
    saved = (out / "study.yaml").read_text()
    with pytest.raises(ConfigError, match=r"holds a different study \(changed: trials\)"):
        prepare_study_dir(first, out)
    assert (out / "study.yaml").read_text() == saved
    # The device is not part of the study: it may change, and study.yaml records it.
    assert prepare_study_dir(DepthStudyConfig(depths=[3], trials=2, device="auto"), out) is None
    assert yaml.safe_load((out / "study.yaml").read_text())["device"] == "auto"


def test_an_unreadable_study_yaml_is_replaced_only_while_no_trial_has_started(
    tmp_path: Path,
) -> None:
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.yaml").write_text("depths: [3\n")  # cut short
    study = DepthStudyConfig(depths=[3], trials=1)
    assert "changed: an unreadable study.yaml" in (prepare_study_dir(study, out) or "")
    (out / "study.yaml").write_text("- not a mapping\n")
    (out / "trials.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"can.t be read as a study, and .* holds trials"):
        prepare_study_dir(study, out)
    assert (out / "study.yaml").read_text() == "- not a mapping\n"


def test_a_study_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("mine")
    with pytest.raises(RunDirError, match="is a file; choose another --out"):
        prepare_study_dir(DepthStudyConfig(), path)
    assert path.read_text() == "mine"


def test_a_trial_with_a_nan_loss_is_never_its_cells_best() -> None:
    def record(trial: str, loss: float, depth: int = 50) -> dict:
        return {"trial": trial, "depth": depth, "block": "plain", "final_train_loss": loss}

    # NaN first in its cell: a plain '<' never replaced it (NaN < x is False).
    records = [record("nan", math.nan), record("good", 0.3), record("worse", 0.5)]
    records += [record("diverged", math.inf, 10), record("only-nan", math.nan, 20)]
    best = {cell: r["trial"] for cell, r in best_per_cell(records).items()}
    assert best == {(50, "plain"): "good", (10, "plain"): "diverged", (20, "plain"): "only-nan"}


def _warn_in_worker(message: str) -> None:
    import warnings

    warnings.warn(message, UserWarning, stacklevel=1)


def test_a_spawned_trial_prints_its_warnings_as_the_command_does(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from rhn.tasks.cli import _warning_line
    from rhn.tasks.depth_study import worker_pool

    monkeypatch.setattr(warnings, "formatwarning", _warning_line)  # as under a command
    with worker_pool(2) as pool:
        pool.submit(_warn_in_worker, "from a worker").result()
    assert "warning: from a worker\n" in capfd.readouterr().err
    # a format that cannot travel to the workers leaves them Python's default
    monkeypatch.setattr(warnings, "formatwarning", lambda *args, **kwargs: "never used\n")
    with worker_pool(1) as pool:
        pool.submit(_warn_in_worker, "from another").result()
    err = capfd.readouterr().err
    assert "UserWarning: from another" in err and "never used" not in err


def test_an_interrupted_trial_stops_a_parallel_study_and_cancels_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from rhn.tasks import depth_study
    from rhn.tasks.depth_study import StudyInterruptedError

    started: list[str] = []
    release = threading.Event()

    def fake_trial(study, trial, study_dir, threads) -> dict:
        if depth_study.stopping(study_dir):  # as run_trial: a queued trial doesn't start
            return {"trial": trial.name, "status": "not started", "final_train_loss": math.inf}
        started.append(trial.name)
        if len(started) > 1:
            release.wait(5)  # the second trial: still running when the first is read
        status = "interrupted" if len(started) == 1 else "finished"
        return {"trial": trial.name, "status": status, "stop_signal": 15,
                "final_train_loss": math.inf}  # fmt: skip

    monkeypatch.setattr(depth_study, "run_trial", fake_trial)
    monkeypatch.setattr(depth_study, "worker_pool", lambda workers: ThreadPoolExecutor(2))
    study = DepthStudyConfig(depths=[3], trials=4, blocks=["highway"], data_dir=mnist_dir(tmp_path))
    threading.Timer(1.0, release.set).start()
    with pytest.raises(StudyInterruptedError, match="highway-d003-t00 was interrupted") as info:
        run_study(study, tmp_path / "study", workers=2, log=lambda line: None)
    assert info.value.signal_number == 15
    assert len(started) < 4  # queued trials were cancelled or didn't start
    assert not (tmp_path / "study" / "summary.csv").exists()
    assert depth_study.stopping(tmp_path / "study")
    # a trial the stopping study had queued returns without touching its directory
    trial = plan(study)[3]
    monkeypatch.undo()  # the real run_trial
    got = depth_study.run_trial(study, trial, tmp_path / "study", 1)
    assert got["status"] == "not started"
    assert not (tmp_path / "study" / "trials" / trial.name).exists()


def test_a_started_study_takes_more_trials_depths_or_blocks_and_nothing_else(
    tmp_path: Path,
) -> None:
    out = tmp_path / "study"
    prepare_study_dir(DepthStudyConfig(depths=[3], trials=1, blocks=["highway"]), out)
    (out / "trials" / "highway-d003-t00").mkdir(parents=True)
    (out / "trials" / "highway-d003-t00" / "metrics.jsonl").write_text("{}\n")
    wider = DepthStudyConfig(depths=[3, 5], trials=2, blocks=["highway", "plain"])
    note = prepare_study_dir(wider, out)
    assert (
        note
        == f"{out / 'study.yaml'}: extended (changed: blocks, depths, trials); its trials are kept"
    )
    # the trial run so far is one of the wider study's, with its hyperparameters
    assert plan(DepthStudyConfig(depths=[3], trials=1, blocks=["highway"]))[0] in plan(wider)
    for narrower in (
        DepthStudyConfig(depths=[5], trials=2, blocks=["highway", "plain"]),  # a depth dropped
        DepthStudyConfig(depths=[3, 5], trials=2, blocks=["highway", "plain"], epochs=3),
    ):
        with pytest.raises(ConfigError, match="holds a different study"):
            prepare_study_dir(narrower, out)


def test_an_interrupted_trial_marks_the_study_stopping_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # in the worker, at once: the parent reads results in order, later
    from rhn.tasks import depth_study
    from rhn.train.loop import Position, TrainResult

    monkeypatch.setattr(
        depth_study,
        "train",
        lambda config, run_dir: TrainResult("interrupted", Position(), stop_signal=15),
    )
    study = DepthStudyConfig(depths=[3], trials=1, blocks=["highway"])
    record = depth_study.run_trial(study, plan(study)[0], tmp_path, 1)
    assert record["status"] == "interrupted" and record["stop_signal"] == 15
    assert depth_study.stopping(tmp_path)
    assert not (tmp_path / "trials" / "highway-d003-t00" / "result.json").exists()


def test_sigterm_stops_a_parallel_study_as_ctrl_c_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    from rhn.tasks import depth_study

    with pytest.raises(KeyboardInterrupt) as info, depth_study._terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)  # by default: this process ended at once
    assert info.value.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_a_trials_error_stops_a_parallel_study_as_it_stops_a_serial_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from rhn.tasks import depth_study
    from rhn.train.loop import Position, TrainResult

    trained: list[Path] = []

    def fake_train(config, run_dir) -> TrainResult:
        trained.append(run_dir)
        if len(trained) == 1:
            raise RuntimeError("checkpoint last.pt is corrupt")
        return TrainResult("finished", Position())

    monkeypatch.setattr(depth_study, "train", fake_train)
    monkeypatch.setattr(depth_study, "worker_pool", lambda workers: ThreadPoolExecutor(1))
    study = DepthStudyConfig(depths=[3], trials=5, blocks=["highway"], data_dir=mnist_dir(tmp_path))
    with pytest.raises(RuntimeError, match="corrupt"):
        run_study(study, tmp_path / "study", workers=2, log=lambda line: None)
    # the failing trial marked the study stopping itself: no queued trial trained after it
    assert len(trained) == 1 and depth_study.stopping(tmp_path / "study")
