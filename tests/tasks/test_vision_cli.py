"""The vision entry points end to end on synthetic MNIST files: depth study (with resume),
gate analyses and lesioning of a trained checkpoint."""

from __future__ import annotations

import csv
import json
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from rhn.data.synthetic import write_mnist
from rhn.tasks import depth_study
from rhn.tasks.depth_study import DepthStudyConfig, plan, prepare_study_dir, sample_params
from rhn.tasks.vision_cli import analyze_gates_main, depth_study_main, lesion_main
from rhn.train.config import build_config
from rhn.train.loop import train
from rhn.train.schema import ConfigError


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
    # A finished study writes its reports again without its data (moved since).
    mnist_dir.rename(tmp_path / "moved")
    assert depth_study_main(args) == 0
    assert "8 trials, 8 already done" in capsys.readouterr().out
    (tmp_path / "moved").rename(mnist_dir)
    # The device says where trials run, not what they compute: continuing elsewhere is fine.
    assert depth_study_main([*args, "--set", "device=auto"]) == 0
    assert "8 trials, 8 already done" in capsys.readouterr().out
    assert yaml.safe_load((out / "study.yaml").read_text())["device"] == "auto"
    # Another study in the same directory is refused, naming what changed.
    assert depth_study_main([*args, "--set", "epochs=3"]) == 2
    assert "(changed: epochs)" in capsys.readouterr().err
    # More trials extend it: those run are kept (a trial's hyperparameters are a function of
    # the seed and its name), the new ones run, and the reports take them all.
    assert depth_study_main([*args, "--set", "trials=3"]) == 0
    out_text = capsys.readouterr().out
    assert "extended (changed: trials)" in out_text and "12 trials, 8 already done" in out_text
    assert mtimes == {
        p: p.stat().st_mtime_ns for p in out.glob("trials/*-t0[01]/checkpoints/last.pt")
    }
    assert len((out / "trials.jsonl").read_text().splitlines()) == 12
    # Each run rewrote the TensorBoard curves: one point per epoch, not one per run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("best_train_loss/depth003/highway")] == [1, 2]


def _highway_mlp(mnist_dir: Path, depth: int, steps: int) -> dict:
    """A raw config: a highway MLP trained ``steps`` steps on the synthetic MNIST files."""
    return {
        "task": "image_classification",
        "model": {"arch": "mlp", "depth": depth},
        "data": {"data_dir": str(mnist_dir), "batch_size": 20},
        "train": {"max_steps": steps, "progress": False, "device": "cpu"},
    }


def test_gate_analysis_and_lesion_of_a_trained_checkpoint(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw = _highway_mlp(mnist_dir, depth=6, steps=3)
    train(build_config(raw), tmp_path / "run")
    assert analyze_gates_main([str(tmp_path / "run"), "--examples", "30"]) == 0
    assert (tmp_path / "run" / "analysis" / "gates.png").stat().st_size > 0
    assert lesion_main([str(tmp_path / "run"), "--examples", "30"]) == 0
    report = capsys.readouterr().out
    assert "| 5 |" in report  # five highway layers, each lesioned
    rows = list(csv.reader((tmp_path / "run" / "analysis" / "lesion.csv").open()))
    assert len(rows) == 1 + 1 + 5
    # A rerun replaces its figure in TensorBoard (it was a second image at the same step),
    # and leaves the other analysis' alone.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert analyze_gates_main([str(tmp_path / "run"), "--examples", "30"]) == 0
    for name in ("gates", "lesion"):
        acc = EventAccumulator(str(tmp_path / "run" / "analysis" / "tensorboard" / name))
        acc.Reload()
        assert len(acc.Images(name)) == 1, name
    # An output that can't be written (a folder where the figure goes): one line, exit 2.
    blocked = tmp_path / "blocked"
    (blocked / "gates.png").mkdir(parents=True)
    assert analyze_gates_main([str(tmp_path / "run"), "--out", str(blocked)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not write ") and "gates.png" in err
    assert len(err.splitlines()) == 1 and (blocked / "gates.png").is_dir()
    # --out naming a file: one line, before the analysis runs (a traceback after it before).
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    assert lesion_main([str(tmp_path / "run"), "--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file" in capsys.readouterr().err
    assert a_file.read_text() == "mine"
    # A rerun killed while writing its table keeps the previous table whole.
    kept = (tmp_path / "run" / "analysis" / "lesion.csv").read_bytes()

    real_writer = csv.writer

    class KilledAfterTheHeader:
        def __init__(self, f: object) -> None:
            self.writer = real_writer(f)  # type: ignore[arg-type]

        def writerow(self, row: object) -> None:
            self.writer.writerow(row)

        def writerows(self, rows: object) -> None:
            raise KeyboardInterrupt

    from rhn.tasks import gate_analysis

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gate_analysis.csv, "writer", KilledAfterTheHeader)
        assert lesion_main([str(tmp_path / "run"), "--examples", "30"]) == 130  # Ctrl-C
    assert capsys.readouterr().err == "stopped: interrupted\n"
    assert (tmp_path / "run" / "analysis" / "lesion.csv").read_bytes() == kept

    # --out under a file can't be made: one line before the analysis (was a traceback after)
    assert analyze_gates_main([str(tmp_path / "run"), "--out", str(a_file / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {a_file / 'sub'}: can't make the analysis folder (Not a directory)"

    raw["model"]["block"] = "plain"
    train(build_config(raw), tmp_path / "plain")
    # What the checkpoint holds is checked before its data is read: the MNIST files gone
    for f in mnist_dir.iterdir():
        f.unlink()
    assert lesion_main([str(tmp_path / "plain")]) == 2
    assert "without highway layers" in capsys.readouterr().err


def test_analyses_read_the_whole_training_set_and_a_random_example_by_default(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The paper: mean gates "over all training examples", one "single random training sample",
    # lesioning "evaluated on the full training set" (10,000 images and image 0 before).
    raw = _highway_mlp(mnist_dir, depth=4, steps=2)
    run = tmp_path / "run"
    train(build_config(raw), run)
    assert analyze_gates_main([str(run)]) == 0
    saved = torch.load(run / "analysis" / "gates.pt", weights_only=True)
    assert saved["examples"] == 60  # every training image of the synthetic set
    index = saved["example_index"]
    assert 0 < index < 60  # seed 0's draw; a second run draws the same
    assert analyze_gates_main([str(run)]) == 0
    assert torch.load(run / "analysis" / "gates.pt", weights_only=True)["example_index"] == index

    # The panel is that image's gates, computed here from the model directly
    from rhn.train.evaluate import load_model, resolve_checkpoint, with_task

    loaded = with_task(load_model(resolve_checkpoint(run), "cpu"), resolve_checkpoint(run))
    image = loaded.task.train_set.images[index : index + 1]
    with torch.no_grad():
        _, trace = loaded.model.eval()(image, trace=True)
    expected = torch.stack([g[0] for g in trace.gates], dim=1)  # (units, layers)
    torch.testing.assert_close(saved["transform_gate_(one_example)"], expected)

    assert analyze_gates_main([str(run), "--example", "7"]) == 0
    assert torch.load(run / "analysis" / "gates.pt", weights_only=True)["example_index"] == 7
    capsys.readouterr()
    assert analyze_gates_main([str(run), "--examples", "30", "--example", "30"]) == 2
    assert capsys.readouterr().err == (
        "error: example must index one of the 30 analysed images (0..29), got 30\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        analyze_gates_main([str(run), "--example", "-1"])
    assert exit_info.value.code == 2
    assert "--example: must be an integer >= 0, got '-1'" in capsys.readouterr().err
    assert lesion_main([str(run)]) == 0
    assert "(60 images)" in capsys.readouterr().out


def test_a_language_model_is_refused_without_reading_its_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 50)
    raw = {
        "task": "char_lm",
        "model": {"embed_size": 8, "hidden_size": 8},
        "data": {"corpus": "file", "path": str(corpus), "batch_size": 4, "seq_len": 10},
        "train": {"max_steps": 2, "max_epochs": None, "eval_every": 2, "progress": False},
    }
    train(build_config(raw), tmp_path / "lm")
    corpus.unlink()  # a checkpoint brought from another machine
    capsys.readouterr()
    assert analyze_gates_main([str(tmp_path / "lm")]) == 2
    err = capsys.readouterr().err
    assert "is a 'char_lm' run; gate analyses need an image_classification run" in err


def test_parallel_trials_give_the_sequential_results(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [
        "--set", "depths=[3]", "--set", "trials=1", "--set", "epochs=1",
        "--set", "batch_size=20", "--set", f"data_dir={mnist_dir}",
    ]  # fmt: skip
    pools = []
    spawned = depth_study.worker_pool

    def counted_pool(workers: int) -> ProcessPoolExecutor:
        pools.append(workers)
        return spawned(workers)

    monkeypatch.setattr(depth_study, "worker_pool", counted_pool)
    assert depth_study_main(["--out", str(tmp_path / "seq"), *args]) == 0
    assert pools == []
    assert depth_study_main(["--out", str(tmp_path / "par"), "--workers", "2", *args]) == 0
    assert pools == [2]  # the trials did run in the spawned workers

    def finals(name: str) -> dict[str, float]:
        lines = (tmp_path / name / "trials.jsonl").read_text().splitlines()
        return {r["trial"]: r["final_train_loss"] for r in map(json.loads, lines)}

    seq, par = finals("seq"), finals("par")
    assert seq.keys() == par.keys() == {"plain-d003-t00", "highway-d003-t00"}
    for trial, loss in seq.items():
        assert par[trial] == pytest.approx(loss, rel=1e-4)


def test_the_default_study_needs_no_file_and_is_the_one_the_repository_writes_out() -> None:
    from rhn.tasks.depth_study import load_study

    # The default needs no file (a study YAML is a path): the config class's defaults.
    shipped = Path(__file__).resolve().parents[2] / "configs" / "studies" / "mnist_depth.yaml"
    assert load_study(None) == load_study(shipped)
    assert load_study(None).depths == [10, 20, 50, 100] and load_study(None).trials == 5
    with pytest.raises(ConfigError, match=r"^trials: 0 is not allowed; expected an integer >= 1"):
        load_study(None, ["trials=0"])


def test_an_installed_study_is_named_by_its_stem_and_an_unknown_name_lists_them() -> None:
    from rhn.tasks.depth_study import load_study

    assert load_study("mnist_depth") == load_study("mnist_depth.yaml") == load_study(None)
    assert load_study("mnist_depth", ["trials=2"]).trials == 2
    with pytest.raises(
        ConfigError,
        match=r"^no study file mnist_dpeth, and no installed study of that name "
        r"\(installed: mnist_depth\)$",
    ):
        load_study("mnist_dpeth")


ANALYSES = {"rhn-analyze-gates": analyze_gates_main, "rhn-lesion": lesion_main}


@pytest.mark.parametrize("prog", sorted(ANALYSES))
@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--device", "gpu"],
            "--device: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'",
        ),
        (["--device", "cuda:x"], "--device: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got"),
        (["--examples", "-5"], "--examples: must be an integer >= 1, got '-5'"),
        (["--examples", "0"], "--examples: must be an integer >= 1, got '0'"),
        (["--examples", "many"], "--examples: must be an integer >= 1, got 'many'"),
    ],
)
def test_analyses_refuse_bad_options_with_exit_2(
    prog: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ANALYSES[prog]([str(tmp_path), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("prog", sorted(ANALYSES))
def test_analyses_refuse_a_device_this_machine_lacks_in_one_line(
    prog: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    # Refused before the checkpoint is read: the path need not hold one.
    assert ANALYSES[prog]([str(tmp_path), "--device", "mps"]) == 2
    assert capsys.readouterr().err == (
        "error: device 'mps': MPS is not available here; use cpu or auto\n"
    )


@pytest.mark.parametrize("prog", sorted(ANALYSES))
def test_analyses_help_shows_the_defaults(prog: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ANALYSES[prog](["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "default: all of them" in text and "default: cpu" in text
    assert "default: <run>/analysis" in text


def test_depth_study_refuses_bad_workers_and_shows_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        depth_study_main(["--out", str(tmp_path / "s"), "--workers", "0"])
    assert exit_info.value.code == 2
    assert "--workers: must be an integer >= 1, got '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        depth_study_main(["--help"])
    assert "(default: 1)" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "typo, message",
    [
        (
            "device=gpu",
            "device: 'gpu' is not allowed; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'",
        ),
        (
            "train_size=0",
            "train_size: 0 is not allowed; expected null (the whole training set) or an "
            "integer >= 1",
        ),
        ("batch_size=0", "batch_size: 0 is not allowed; expected an integer >= 1"),
        (
            "search.activations=[swish]",
            "trial plain-d003-t00: activation must be one of",
        ),
    ],
)
def test_a_study_with_a_typo_writes_nothing_and_can_be_fixed_in_place(
    typo: str, message: str, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "depth-bad"
    args = [
        "--out", str(out),
        "--set", "depths=[3]", "--set", "trials=1", "--set", "epochs=1",
        "--set", "batch_size=20", "--set", f"data_dir={mnist_dir}",
    ]  # fmt: skip
    assert depth_study_main([*args, "--set", typo]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before "depth study: N trials, ..." is printed
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert not out.exists()
    # The same command without the typo runs in the same directory.
    assert depth_study_main(args) == 0
    assert "2 trials, 0 already done" in capsys.readouterr().out


def test_a_study_without_its_data_is_refused_under_the_study_key_before_it_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.setenv("RHN_OFFLINE", "1")
    out = tmp_path / "depth-bad"
    (tmp_path / "empty").mkdir()
    argv = ["--out", str(out), "--set", "depths=[3]", "--set", f"data_dir={tmp_path / 'empty'}"]
    assert depth_study_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: MNIST: could not find")
    # The study's key, not the trial config's data.data_dir it would have reached.
    assert captured.err.endswith(
        "in a folder named by RHN_DATA_DIR (or its mnist/ sub-folder) or data_dir.\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_typo_in_a_studys_data_dir_is_warned_of_once_under_the_study_key(
    workers: str,
    mnist_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RHN_DATA_DIR", str(mnist_dir))  # a copy, which the study then reads
    typo = tmp_path / "mnsit"
    argv = [
        "--out", str(tmp_path / "study"), "--workers", workers, "--set", "depths=[3]",
        "--set", "trials=1", "--set", "epochs=1", "--set", "batch_size=20",
        "--set", f"data_dir={typo}",
    ]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as a fresh registry would: every warning shows
        assert depth_study_main(argv) == 0
    said = [str(w.message) for w in caught if "is not a folder" in str(w.message)]
    assert len(said) == 1 and said[0].startswith(f"mnist: data_dir {typo} is not a folder")
    # Two trials, in this process or in spawned ones (which print theirs to stderr): neither
    # says it again under its config's data.data_dir.
    assert "is not a folder" not in capfd.readouterr().err


def test_a_study_yaml_no_trial_has_used_is_replaced_by_a_corrected_study(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    monkeypatch.setenv("RHN_OFFLINE", "1")
    # What earlier versions left behind for a missing data folder: study.yaml, and a trial
    # directory with nothing but its lock (the trial stopped at its missing data).
    out = tmp_path / "depth-bad"
    args = [
        "--out", str(out),
        "--set", "depths=[3]", "--set", "trials=1", "--set", "epochs=1",
        "--set", "batch_size=20",
    ]  # fmt: skip
    nowhere = str(tmp_path / "nowhere")
    study = DepthStudyConfig(depths=[3], trials=1, epochs=1, batch_size=20, data_dir=nowhere)
    prepare_study_dir(study, out)
    (out / "trials" / "plain-d003-t00").mkdir(parents=True)
    (out / "trials" / "plain-d003-t00" / "lock").touch()
    assert depth_study_main([*args, "--set", f"data_dir={mnist_dir}"]) == 0
    printed = capsys.readouterr().out
    assert "replaced, no trial had started (changed: data_dir)" in printed
    assert yaml.safe_load((out / "study.yaml").read_text())["data_dir"] == str(mnist_dir)


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_a_study_out_that_is_a_file_is_one_line_with_exit_2(
    where: str, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    notes = tmp_path / "README.md"
    notes.write_text("mine")
    out = notes if where == "file" else notes / "study"
    argv = ["--out", str(out), "--set", "depths=[3]", "--set", f"data_dir={mnist_dir}"]
    assert depth_study_main(argv) == 2
    err = capsys.readouterr().err
    expected = (
        f"error: study directory {notes} is a file; choose another --out\n"
        if where == "file"
        else f"error: cannot write the study directory {out}: Not a directory; choose another "
        f"--out\n"
    )
    assert err == expected
    assert notes.read_text() == "mine"


def test_a_study_out_of_someone_elses_files_is_refused_and_kept(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A user's folder, and a training run's (its lock, config and metrics): the study would
    # have overwritten summary.csv / curves.csv there and added study.yaml and trials/.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.csv").write_text("my numbers\n")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("lock", "config.yaml", "metrics.jsonl", "events.out"):
        (run / name).write_text(name)
    for out, shown in ((mine, "summary.csv"), (run, "config.yaml, events.out, lock, …")):
        before = {p.name: p.read_text() for p in out.iterdir()}
        argv = ["--out", str(out), "--set", "depths=[3]", "--set", f"data_dir={mnist_dir}"]
        assert depth_study_main(argv) == 2
        assert capsys.readouterr().err == (
            f"error: study directory {out} holds files but no study ({shown}); the study "
            "would overwrite them: choose a new or empty --out\n"
        )
        assert {p.name: p.read_text() for p in out.iterdir()} == before
    from rhn.tasks.depth_study import DepthStudyConfig, prepare_study_dir

    (tmp_path / "empty").mkdir()  # an empty folder (or one of hidden files) is taken
    (tmp_path / "empty" / ".DS_Store").write_text("")
    assert prepare_study_dir(DepthStudyConfig(depths=[3]), tmp_path / "empty") is None
    assert (tmp_path / "empty" / "study.yaml").is_file()


def test_a_missing_study_config_is_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "study.yaml"
    assert depth_study_main(["--config", str(missing), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot read study file {missing}: No such file or directory\n"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"depths: [3]\n\xff\xfe\n", "study file {path} is not text (not UTF-8); expected YAML"),
        (b"- depths: [3]\n", "{path}: a study file must hold a mapping (key: value), got a list"),
        (b"trials: 1\ntrials: 2\n", "{path} is not valid YAML: key 'trials' appears twice at "
         "line 2, column 1"),
    ],
)  # fmt: skip
def test_an_unusable_study_file_is_named_in_one_line(
    content: bytes, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    # --set as well: a list study file with an override was a traceback.
    argv = ["--config", str(path), "--out", str(tmp_path / "s"), "--set", "trials=1"]
    assert depth_study_main(argv) == 2
    assert capsys.readouterr().err == f"error: {problem.format(path=path)}\n"
    assert not (tmp_path / "s").exists()


def test_ctrl_c_stops_the_whole_study_with_the_shells_status(
    mnist_dir: Path, tmp_path: Path
) -> None:
    # SIGINT during the first trial: it saves (or never starts) and no later trial runs;
    # the study used to go on to the next trial, write its summary and exit 0
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "study"
    code = "import sys; from rhn.tasks.vision_cli import depth_study_main as m; sys.exit(m())"
    args = ["--out", str(out), "--set", "depths=[3]", "--set", "trials=3",
            "--set", "epochs=100000", "--set", "batch_size=20", "--set", f"data_dir={mnist_dir}",
            "--set", "blocks=[highway]"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    first = out / "trials" / "highway-d003-t00" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # a study that didn't stop must not outlive the test
    assert proc.returncode == 130, err
    assert "stopped: highway-d003-t00 was interrupted (its checkpoint is saved)" in err
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["highway-d003-t00"]
    assert not (out / "summary.csv").exists()


@pytest.mark.parametrize(("stop", "status"), [(KeyboardInterrupt, 130), ("terminated", 143)])
def test_a_stopped_study_says_so_in_one_line_with_the_shells_status(
    stop: object, status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    from rhn.tasks import depth_study, vision_cli

    def stopped(*args: object, **kwargs: object) -> None:
        raise depth_study._Terminated if stop == "terminated" else KeyboardInterrupt

    monkeypatch.setattr(vision_cli, "run_study", stopped)
    assert depth_study_main(["--out", str(tmp_path / "s")]) == status
    assert capsys.readouterr().err == "stopped: interrupted\n"  # was "stopped: " and nothing
