"""The vision entry points end to end on synthetic MNIST files: depth study (with resume),
gate analyses and lesioning of a trained checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rhn.data.synthetic import write_mnist
from rhn.tasks.depth_study import DepthStudyConfig, plan, sample_params
from rhn.tasks.vision_cli import analyze_gates_main, depth_study_main, lesion_main
from rhn.train.config import build_config
from rhn.train.loop import train


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    return tmp_path / "mnist"


def test_trial_hyperparameters_are_reproducible_and_in_range() -> None:
    study = DepthStudyConfig(trials=20)
    trials = plan(study)
    assert len(trials) == 4 * 2 * 20
    assert trials == plan(DepthStudyConfig(trials=20))
    for t in trials:
        p = t.params
        assert 0.003 <= p["lr"] <= 0.3 and 0.5 <= p["momentum"] <= 0.99
        assert 0.9 <= p["lr_decay"] <= 1.0 and p["activation"] in ("relu", "tanh")
        assert ("gate_bias" in p) == (t.block == "highway")
        if t.block == "highway":
            assert -10 <= p["gate_bias"] <= -1
    assert sample_params(DepthStudyConfig(seed=1), "plain", 10, 0) != trials[0].params


def test_depth_study_runs_resumes_and_reports(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "study"
    args = [
        "--out", str(out),
        "--set", "depths=[3, 5]", "--set", "trials=2", "--set", "epochs=2",
        "--set", "batch_size=20", "--set", f"data_dir={mnist_dir}",
    ]  # fmt: skip
    assert depth_study_main(args) == 0
    table = capsys.readouterr().out
    assert "| 3 |" in table and "| 5 |" in table
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(len(r["curve"]) == 2 for r in records)
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert len(rows) == 16 and {r["block"] for r in rows} == {"plain", "highway"}
    assert (out / "figure1.png").stat().st_size > 0 and any((out / "tensorboard").iterdir())
    # Stopped and started again: nothing is retrained (the checkpoints stay untouched).
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/checkpoints/last.pt")}
    assert depth_study_main(args) == 0
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.glob("trials/*/checkpoints/last.pt")}
    assert "8 trials, 8 already done" in capsys.readouterr().out
    # Another study in the same directory is refused, naming what changed.
    assert depth_study_main([*args, "--set", "trials=3"]) == 2
    assert "trials" in capsys.readouterr().err


def test_gate_analysis_and_lesion_of_a_trained_checkpoint(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw = {
        "task": "image_classification",
        "model": {"arch": "mlp", "depth": 6},
        "data": {"data_dir": str(mnist_dir), "batch_size": 20},
        "train": {"max_steps": 3, "progress": False, "device": "cpu"},
    }
    train(build_config(raw), tmp_path / "run")
    assert analyze_gates_main([str(tmp_path / "run"), "--examples", "30"]) == 0
    assert (tmp_path / "run" / "analysis" / "gates.png").stat().st_size > 0
    assert lesion_main([str(tmp_path / "run"), "--examples", "30"]) == 0
    report = capsys.readouterr().out
    assert "| 5 |" in report  # five highway layers, each lesioned
    rows = list(csv.reader((tmp_path / "run" / "analysis" / "lesion.csv").open()))
    assert len(rows) == 1 + 1 + 5

    raw["model"]["block"] = "plain"
    train(build_config(raw), tmp_path / "plain")
    assert lesion_main([str(tmp_path / "plain")]) == 2
    assert "without highway layers" in capsys.readouterr().err


def test_parallel_trials_give_the_sequential_results(mnist_dir: Path, tmp_path: Path) -> None:
    args = [
        "--set", "depths=[3]", "--set", "trials=1", "--set", "epochs=1",
        "--set", "batch_size=20", "--set", f"data_dir={mnist_dir}",
    ]  # fmt: skip
    assert depth_study_main(["--out", str(tmp_path / "seq"), *args]) == 0
    assert depth_study_main(["--out", str(tmp_path / "par"), "--workers", "2", *args]) == 0

    def finals(name: str) -> dict[str, float]:
        lines = (tmp_path / name / "trials.jsonl").read_text().splitlines()
        return {r["trial"]: r["final_train_loss"] for r in map(json.loads, lines)}

    seq, par = finals("seq"), finals("par")
    assert seq.keys() == par.keys() == {"plain-d003-t00", "highway-d003-t00"}
    for trial, loss in seq.items():
        assert par[trial] == pytest.approx(loss, rel=1e-4)


def test_the_default_study_config_is_found_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhn.tasks.depth_study import load_study
    from rhn.tasks.vision_cli import DEFAULT_STUDY

    monkeypatch.chdir(tmp_path)  # started outside the repository
    assert DEFAULT_STUDY.is_absolute() and DEFAULT_STUDY.is_file()
    assert load_study(str(DEFAULT_STUDY), []) is not None
