"""scripts/gpu_check.py --dry-run: the GPU acceptance check's own code, on CPU at toy sizes,
so it cannot rot between GPU loans; and nothing on its path imports ``datasets``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.triton_kernels import requires_triton_kernels

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up
spec.loader.exec_module(gpu_check)


DATASETS_TRIED = "datasets_tried"  # in a dry run's folder, once something imports datasets


def dry_run(
    out: Path, tmp: Path, *extra: str, fault: str = "", dry: bool = True
) -> subprocess.CompletedProcess:
    # A `datasets` that cannot be imported, first on the path: the GPU machine has none.
    blocker = tmp / "no_datasets" / "datasets"
    blocker.mkdir(parents=True, exist_ok=True)
    # It leaves a mark when tried, so that an import a caller catches is seen too.
    (blocker / "__init__.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['RHN_TEST_DATASETS_TRIED']).touch()\n"
        "raise ImportError('datasets is not on a GPU machine')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "RHN_DATA_DIR": ""}
    env["RHN_TEST_DATASETS_TRIED"] = str(tmp / DATASETS_TRIED)
    env["RHN_GPU_CHECK_FAULT"] = fault
    # The run folders in the test's own folder, not a new temporary one left behind.
    work = () if "--work" in extra else ("--work", str(tmp / "work"))
    flags = ["--dry-run"] if dry else []
    return subprocess.run(
        [sys.executable, str(SCRIPT), *flags, "--out", str(out), *work, *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@requires_triton_kernels  # its kernels section runs them in the interpreter
def test_the_dry_run_measures_every_section(tmp_path: Path) -> None:
    done = dry_run(tmp_path / "report", tmp_path, "--work", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    # A device tool brings back a few files: the report folder holds the two reports alone,
    # the run folders and partial results are in --work.
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.json", "report.md"]
    assert (tmp_path / "work" / "runs" / "ptb_rhn_d10" / "metrics.jsonl").is_file()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["work"] == str((tmp_path / "work").resolve())
    assert {"device", "kernels", "cuda_graphs", "bench", "train"} <= set(report)
    assert all(report[s]["ok"] for s in ("device", "kernels", "cuda_graphs", "bench", "train"))
    assert report["device"]["data"]["datasets_imported"] is False
    assert not (tmp_path / DATASETS_TRIED).exists()  # by no section, caught or not
    variants = report["kernels"]["data"]["variants"]
    # 3 GEMM dtypes × carry × dropout × fused GEMM input/gradient × full / length-masked rows.
    assert len(variants) == 3 * 2 * 2 * 2 * 2 and all(v["passed"] for v in variants)
    assert all(v["self_check_passed"] for v in variants)
    layouts = {r["layout"] for r in report["kernels"]["data"]["recurrence"]}
    assert layouts == {"padded", "packed", "bidirectional"}
    rounds = report["cuda_graphs"]["data"]["rounds"]
    assert [(r["round"], r["dropout"]) for r in rounds] == [
        ("capture", 0.0), ("replay", 0.0), ("capture", 0.25), ("replay", 0.25)
    ]  # fmt: skip
    models = {row["model"] for row in report["bench"]["data"]["rows"]}
    assert {"lstm", "rhn-fused", "rhn-reference"} <= models
    modes = [row["mode"] for row in report["bench"]["data"]["rows"]]
    assert modes == ["training"] * 3 + ["inference"] * 3  # the no-grad forward too
    assert report["train"]["data"]["data"] == "synthetic (no --data-dir)"
    train = report["train"]["data"]["jobs"]
    assert set(train) == {"ptb_rhn_d10", "ptb_lstm_baseline", "mnist_conv_highway_w16"}
    assert train["ptb_rhn_d10"]["tokens_per_s"] > 0 and train["ptb_rhn_d10"]["loss_curve"]
    assert train["mnist_conv_highway_w16"]["samples_per_s"] > 0
    md = (tmp_path / "report" / "report.md").read_text()
    for heading in ("## device", "## kernels", "## cuda_graphs", "## bench", "## train"):
        assert heading in md
    assert md in done.stdout  # the tables also come back where only the output does


@requires_triton_kernels
def test_wrong_answers_fail_every_check_that_judges_them(tmp_path: Path) -> None:
    """Under the "nan" fault every kernel output, the fused recurrence's and the graphed
    layers' carry a NaN: each verdict must be a failure, the self-check's too (the dry run
    shows only passes)."""
    done = dry_run(tmp_path / "report", tmp_path, "--only", "kernels", "cuda_graphs",
                   fault="nan")  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    kernels, graphs = report["kernels"], report["cuda_graphs"]
    assert kernels["ok"] is False and graphs["ok"] is False
    variants = kernels["data"]["variants"]
    assert variants and not any(v["passed"] or v["self_check_passed"] for v in variants)
    assert not any(r["passed"] for r in kernels["data"]["recurrence"])
    assert all("differs from eager" in f for f in graphs["data"]["failures"])
    assert len(graphs["data"]["failures"]) == len(graphs["data"]["rounds"]) == 4


def test_a_failing_job_is_a_row_and_the_rest_still_run(tmp_path: Path) -> None:
    from rhn.data.synthetic import write_mnist

    data = tmp_path / "data"
    write_mnist(data / "mnist", n_train=200, n_test=50)  # MNIST but no ptb/: the LM jobs fail
    done = dry_run(tmp_path / "report", tmp_path, "--only", "device", "train", "cuda_graphs",
                   "--data-dir", str(data))  # fmt: skip
    assert done.returncode == 1
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    train = report["train"]
    assert train["ok"] is False and train["error"].startswith("2 failed: train ptb_rhn_d10")
    jobs = train["data"]["jobs"]
    assert all(
        "could not find ptb.train" in jobs[j]["error"] for j in ("ptb_rhn_d10", "ptb_lstm_baseline")
    )
    assert jobs["mnist_conv_highway_w16"]["samples_per_s"] > 0  # measured all the same
    assert report["device"]["ok"] and report["cuda_graphs"]["ok"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## train — FAILED" in md and "- failed: train ptb_lstm_baseline" in md


def test_a_section_that_hangs_is_stopped_and_keeps_what_it_saved(tmp_path: Path) -> None:
    # The budget leaves cuda_graphs about 25 s; it stalls after saving its first round.
    done = dry_run(tmp_path / "report", tmp_path, "--only", "cuda_graphs", "device",
                   "--budget-minutes", "0.6", fault="hang-after-save:cuda_graphs")  # fmt: skip
    assert done.returncode == 1
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    graphs = report["cuda_graphs"]
    assert graphs["ok"] is False
    assert re.fullmatch(r"timed out after 2\d s \(what it had saved is kept\)", graphs["error"])
    assert graphs["seconds"] < 40
    assert graphs["data"]["rounds"][0]["round"] == "capture"  # saved before the stall: kept
    assert report["device"]["ok"]  # the next section still ran
    assert "## cuda_graphs — FAILED: timed out" in (tmp_path / "report" / "report.md").read_text()


def test_a_work_folder_in_use_is_refused(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "runs").mkdir()  # an earlier check's: --fresh runs would collide
    done = dry_run(tmp_path / "report", tmp_path, "--work", str(tmp_path / "work"))
    assert done.returncode == 2
    assert f"--work {tmp_path / 'work'} must be a new or empty folder" in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget-minutes", "nan"], "--budget-minutes must be a number > 0, got nan"),
        (["--budget-minutes", "inf"], "--budget-minutes must be a number > 0, got inf"),
        (["--train-minutes", "0"], "--train-minutes must be a number > 0, got 0.0"),
    ],
)
def test_budgets_that_would_be_ignored_are_refused(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    done = dry_run(tmp_path / "report", tmp_path, *argv)
    assert done.returncode == 2 and message in done.stderr
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    done = dry_run(a_file, tmp_path)
    assert done.returncode == 2 and f"--out {a_file} is a file" in done.stderr
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize(
    ("remaining", "later_jobs", "later_lm", "expected", "vision"),
    [
        (600, 2, 1, 1.5, True),  # plenty: the cap
        # 300 s: 3 × 40 s start-ups and 45 s for the vision epoch leave 135 s, 67.5 s each
        (300, 2, 1, 1.125, True),
        # 170 s: a share would be 2.5 s, so the vision job gives its time up first: 170 − 2
        # × 40 s leave 45 s each for the RHN and the LSTM, the comparison the section is for
        (170, 2, 1, 0.75, False),
        (130, 2, 1, 25 / 60, False),
        # 90 s: even without it a share is 5 s, so the LSTM gives its up: 50 s for the RHN
        (90, 2, 1, 50 / 60, False),
        (50, 2, 1, None, False),  # not even 15 s for this one alone: skipped
        (170, 1, 0, 0.75, True),  # the last LM job, only the vision job after it
    ],
)
def test_lm_minutes_shares_the_budget_and_the_first_job_comes_first(
    remaining: float, later_jobs: int, later_lm: int, expected: float | None, vision: bool
) -> None:
    minutes, vision_fits = gpu_check.lm_minutes(remaining, 1.5, later_jobs, later_lm, 40, 45)
    assert minutes == (None if expected is None else pytest.approx(expected))
    assert vision_fits is vision


class _Clock:
    """time.time and time.perf_counter that move only when a job 'runs'."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    perf_counter = time


@pytest.mark.parametrize(
    ("remaining", "ran", "skipped"),
    [
        # 292 s (the 300 kept, less the report's reserve and a save margin): all three run
        (292, ["ptb_rhn_d10", "ptb_lstm_baseline", "mnist_conv_highway_w16"], {}),
        # 170 s: the MNIST epoch gives its time to the RHN and LSTM pair
        (170, ["ptb_rhn_d10", "ptb_lstm_baseline"],
         {"mnist_conv_highway_w16": "skipped: its time went to the PTB jobs"}),
        # 50 s: nothing fits, each job says so
        (50, [], {"ptb_rhn_d10": "skipped: no time left in the budget",
                  "ptb_lstm_baseline": "skipped: no time left in the budget",
                  "mnist_conv_highway_w16": "skipped: no time left in the budget"}),
    ],
)  # fmt: skip
def test_a_short_train_section_runs_the_pair_before_the_mnist_epoch(
    remaining: float,
    ran: list[str],
    skipped: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    calls: list[str] = []

    def fake_run(cmd: list[str], ctx: object, timeout: float) -> None:
        calls.append(Path(cmd[4]).name)
        clock.now += min(timeout, ctx.remaining())  # each job takes all it is given

    monkeypatch.setattr(gpu_check, "time", clock)
    monkeypatch.setattr(gpu_check, "_run", fake_run)
    monkeypatch.setattr(gpu_check, "_train_result", lambda *args: {"steps": 1})
    monkeypatch.setattr(gpu_check.Context, "cuda", property(lambda self: False))
    ctx = gpu_check.Context(
        tmp_path, tmp_path, False, tmp_path, 1.5, clock.now + remaining, section="train"
    )
    result = gpu_check.section_train(ctx)
    assert calls == ran
    jobs = ["ptb_rhn_d10", "ptb_lstm_baseline", "mnist_conv_highway_w16"]
    assert list(result["jobs"]) == jobs  # in job order, skipped ones too
    assert {job: r["error"] for job, r in result["jobs"].items() if "error" in r} == skipped
    assert result["failures"] == [f"train {job}: skipped" for job in skipped]


def test_a_section_leaves_the_train_section_its_time() -> None:
    # The bench may run 160 s, but not into the 300 s kept for training after it.
    ctx = gpu_check.Context(Path("/nonexistent"), Path("/nonexistent"), False, None, 1.5, 0)
    assert gpu_check.section_timeout(ctx, "bench", ["train"], remaining=500) == 160
    assert gpu_check.section_timeout(ctx, "bench", ["train"], remaining=400) == 400 - 10 - 300
    assert gpu_check.section_timeout(ctx, "bench", [], remaining=300) == 160
    assert gpu_check.section_timeout(ctx, "train", [], remaining=300) == 290


def test_the_real_check_without_cuda_says_so(tmp_path: Path) -> None:
    done = dry_run(tmp_path / "report", tmp_path, dry=False)
    assert done.returncode == 2
    assert "no CUDA device (torch.cuda.is_available() is False); on CPU use --dry-run" in (
        done.stderr
    )


def test_it_runs_from_a_plain_copy_of_the_repository(tmp_path: Path) -> None:
    """As on a GPU machine: torch and friends installed, rhn not (no entry points, no
    rhn.tasks mapping), the repository a copied tree."""
    import sysconfig

    subprocess.run(
        [sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True
    )
    python = tmp_path / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The test environment's packages, but not its .pth files (so not the editable rhn).
    (Path(purelib) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    copy = tmp_path / "repo"
    archive = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    for name in archive.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes((ROOT / name).read_bytes())
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('rhn'))"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "None"  # rhn really is not installed there
    done = subprocess.run(
        [python, str(copy / "scripts" / "gpu_check.py"), "--dry-run", "--only", "device",
         "bench", "--out", str(tmp_path / "report")],
        cwd=copy, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its default --work folder goes
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["device"]["ok"] and report["device"]["data"]["torch"]
    # The bench is a script of its own, started in a new process: it finds rhn.tasks too.
    assert report["bench"]["ok"], report["bench"]["error"]
    assert {row["model"] for row in report["bench"]["data"]["rows"]} >= {"lstm", "rhn-fused"}
    # Without --work, the runs go to a new temporary folder.
    work = Path(report["work"])
    assert work.is_dir() and work.parent == tmp_path.resolve()
    assert work.name.startswith("rhn-gpu-check-")


def test_a_nan_anywhere_fails_a_check() -> None:
    import math

    import torch

    # Python's max passes a NaN over when it isn't first: [0.0, nan] gave 0.0, a pass.
    assert math.isnan(gpu_check.worst([0.0, math.nan, 1e-9]))
    assert gpu_check.worst([0.0, 2e-6, 1e-9]) == 2e-6
    nan_grad = torch.tensor([1.0, float("nan")])
    errors = gpu_check.pair_errors(((torch.ones(2), torch.ones(2)), (nan_grad, torch.ones(2))))
    assert not errors["scaled_error"] < gpu_check.SCALED_TOLERANCE
    assert math.isnan(errors["max_error"])


def test_a_section_out_of_time_is_killed_with_the_jobs_it_started(tmp_path: Path) -> None:
    import time

    pid_file = tmp_path / "job.pid"
    # A section that starts a job, then hangs: both must go when its time is up.
    script = f"sleep 120 >/dev/null 2>&1 & echo $! > {pid_file}; exec sleep 120 2>/dev/null"
    status, _ = gpu_check.run_limited(["sh", "-c", script], dict(os.environ), 1.0)
    assert status is None  # out of time
    job = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{job}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break  # gone
        if state == "Z":  # killed, waiting for init to reap it
            break
        time.sleep(0.1)
    else:
        os.kill(job, 9)
        raise AssertionError(f"the section's job {job} outlived it")
