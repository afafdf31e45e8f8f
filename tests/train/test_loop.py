"""The shared training loop: exact resume after SIGKILL, SIGTERM, NaN steps, run layout."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from rhn.data.sampling import epoch_batch_indices
from rhn.models import register_model
from rhn.train.checkpoint import CheckpointError, load_checkpoint
from rhn.train.config import build_config
from rhn.train.loop import RunDirError, TrainingDivergedError, train
from rhn.train.task import StepResult, Task, register

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "char_lm_tiny.yaml"
# Dropout everywhere, so that a resumed run also needs the RNG states to match.
RESUME_ARGS = [
    "--set", "train.deterministic=true",
    "--set", "train.max_steps=120",
    "--set", "train.checkpoint_every=7",
    "--set", "train.eval_every=40",
    "--set", "model.state_dropout=0.2",
    "--set", "model.input_dropout=0.2",
    "--set", "model.embed_dropout=0.1",
]  # fmt: skip


def rhn_train(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tasks", str(TINY), "--run-dir", str(run_dir), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    # Generous: on a loaded 2-core CI machine a fresh process's imports alone can take a minute;
    # a process that dies fails the wait at once, so only a hang waits this long.
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def kill_mid_run(run_dir: Path, rng: random.Random) -> int:
    """Start a RESUME_ARGS run and SIGKILL it at a random moment between its first
    checkpoint and its last; the step of the checkpoint it left. A kill that lands after the
    last (the run was fast) is tried again with a shorter wait."""
    longest_wait = 1.0
    for _ in range(6):
        shutil.rmtree(run_dir, ignore_errors=True)
        proc = rhn_train(run_dir, *RESUME_ARGS)
        wait_for(run_dir / "checkpoints" / "last.pt", proc)
        time.sleep(rng.uniform(0.0, longest_wait))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
        if proc.returncode == -signal.SIGKILL and step < 120:
            return step
        longest_wait /= 2
    pytest.fail("every kill landed after the run's last checkpoint")


def test_sigkill_at_an_arbitrary_moment_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    reference = tmp_path / "reference"
    proc = rhn_train(reference, *RESUME_ARGS)
    assert proc.wait() == 0, proc.communicate()

    killed = tmp_path / "killed"
    step_at_kill = kill_mid_run(killed, random.Random())

    resumed = rhn_train(killed, *RESUME_ARGS)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert f"resuming {killed} at step {step_at_kill}" in err

    expected, got = final_weights(reference), final_weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        # The moment is the scheduler's: a failure names the step to resume from by hand
        # (train.max_steps=STEP, then the full run) to see it again.
        assert torch.equal(expected[name], got[name]), f"{name}, killed at step {step_at_kill}"
    # Evaluations after the resumed checkpoint were replaced, not duplicated.
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").open()]
    assert steps == [40, 80, 120]


# Run in a child process: torch.save is wrapped so that the write of the second best.pt
# dies by a real SIGKILL halfway through its bytes.
KILL_DURING_BEST_WRITE = """
import os, signal, sys, torch
from rhn.train.config import load_config
from rhn.train.loop import train

real_save, best_writes = torch.save, []

def save(obj, f, *args, **kwargs):
    path = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else str(f)
    if ".best.pt." in path:
        best_writes.append(1)
        if len(best_writes) == 2:
            real_save(obj, f, *args, **kwargs)
            f.flush()
            os.truncate(path, os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
train(load_config(sys.argv[1], sys.argv[3:]), sys.argv[2])
"""
BEST_ARGS = [
    "train.max_steps=40", "train.eval_every=10", "train.checkpoint_every=5",
    "train.progress=false", "train.deterministic=true",
]  # fmt: skip


def test_a_real_sigkill_while_best_pt_is_written_then_resume_keeps_the_best_model(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    child = subprocess.run(
        [sys.executable, "-c", KILL_DURING_BEST_WRITE, str(TINY), str(run), *BEST_ARGS],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    ckpts = run / "checkpoints"
    assert list(ckpts.glob(".best.pt.*.tmp")), "the kill should leave the torn temporary"
    assert load_checkpoint(ckpts / "best.pt")["step"] == 10  # the first best, intact
    # last.pt claims no better model than best.pt holds (the order of the two writes).
    claimed = load_checkpoint(ckpts / "last.pt")["position"]["best_metric"]
    assert claimed == load_checkpoint(ckpts / "best.pt")["position"]["best_metric"]

    resumed = subprocess.run(
        [sys.executable, "-m", "rhn.tasks", str(TINY), "--run-dir", str(run),
         *(a for arg in BEST_ARGS for a in ("--set", arg))],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "left by a save that was killed" in resumed.stderr
    assert not list(ckpts.glob("*.tmp"))
    # best.pt holds the best model the run logged, and last.pt agrees on its metric.
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    best = min(records, key=lambda r: r["bpc"])
    kept = load_checkpoint(ckpts / "best.pt")
    assert kept["step"] == best["step"] and kept["position"]["best_metric"] == best["bpc"]
    assert load_checkpoint(ckpts / "last.pt")["position"]["best_metric"] == best["bpc"]


def test_sigterm_saves_a_checkpoint_and_exits_with_128_plus_the_signal(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = rhn_train(run, "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=10")
    wait_for(run / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    # A scheduler tells an interrupted run (saved, resumable) from a finished one.
    assert proc.returncode == 128 + signal.SIGTERM == 143, err
    status = json.loads(out.strip().splitlines()[-1])
    assert status["status"] == "interrupted"
    assert "stopped by SIGTERM" in err
    # The checkpoint is from the very step the run stopped at, not the previous periodic one.
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == status["step"]


def test_a_config_of_numpy_numbers_saves_a_run_that_loads_and_resumes(tmp_path: Path) -> None:
    import dataclasses

    import numpy as np
    import yaml

    # A sweep's grid gives NumPy numbers, which the configs take; YAML could not write them
    # (config.yaml: a traceback) nor a weights_only checkpoint hold the optimiser's np lr.
    config = build_config({"task": "char_lm", **_yaml(TINY)}, ["train.max_steps=4"])
    config.model = dataclasses.replace(config.model, hidden_size=np.int64(16))
    config.data = dataclasses.replace(config.data, seq_len=np.int32(10))
    config.optim = dataclasses.replace(
        config.optim, lr=np.float64(0.01), betas=(np.float64(0.8), np.float64(0.9))
    )
    config.train = dataclasses.replace(config.train, seed=np.uint8(3))
    config.optim.weight_decay = np.float32(0.0)  # set after it was built: no check ran
    config.train.device = np.str_("cpu")
    run = tmp_path / "run"
    assert train(config, run).position.step == 4
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["hidden_size"] == 16 and saved["optim"]["betas"] == [0.8, 0.9]
    assert saved["train"]["seed"] == 3 and type(saved["optim"]["lr"]) is float
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")  # weights_only
    assert ckpt["config"]["data"]["seq_len"] == 10
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01)
    longer = build_config(saved, ["train.max_steps=6"])
    assert train(longer, run).position.step == 6


def test_a_field_set_to_a_bad_value_after_the_config_was_built_is_refused(
    tmp_path: Path,
) -> None:
    from rhn.train.schema import ConfigError

    config = build_config({"task": "char_lm", **_yaml(TINY)}, ["train.max_steps=4"])
    config.optim.lr = -1.0  # no __post_init__ ran: it would have trained, lr -1
    with pytest.raises(ConfigError, match=r"optim\.lr: -1\.0 is not allowed"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_fresh_refuses_an_existing_run_and_the_run_dir_layout(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = build_config(
        {"task": "char_lm", **_yaml(TINY)},
        ["train.max_steps=20", "train.eval_every=10", "train.log_every=5"],
    )
    result = train(config, run)
    assert result.status == "finished" and result.position.step == 20
    assert (run / "config.yaml").exists() and (run / "vocab.json").exists()
    assert (run / "checkpoints" / "best.pt").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [10, 20]
    assert {"loss", "bpc", "lr", "gate_mean/depth0", "gate_mean/depth1"} <= set(records[0])
    tags = _tensorboard_tags(run)
    assert {
        "train/loss",
        "val/loss",
        "val/bpc",
        "lr",
        "grad_norm",
        "throughput/tokens_per_s",
        "val/gate_mean/depth0",
    } <= tags["scalars"]
    assert "params/rnn.weight_hh_l0" in tags["histograms"]
    with pytest.raises(RunDirError, match="--fresh refuses to touch it"):
        train(config, run, fresh=True)
    # Resuming a finished run does nothing more; a longer max_steps continues it.
    longer = build_config(config.to_dict(), ["train.max_steps=25"])
    assert train(longer, run).position.step == 25


def _yaml(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(path.read_text())
    data.pop("task")
    return data


def _tensorboard_tags(run: Path) -> dict[str, set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"histograms": 0})
    acc.Reload()
    return {kind: set(values) for kind, values in acc.Tags().items() if isinstance(values, list)}


# -- a stateless toy task (shuffled epochs) with injectable non-finite losses ----------------


@dataclass
class ToyModel:
    features: int = 4


@dataclass
class ToyData:
    samples: int = 64
    batch_size: int = 8
    nan_steps: list[int] | None = None  # batches (global index) whose loss is NaN
    eval_seconds: float = 0.0  # how long each evaluation takes


@register_model(ToyModel)
def _build_toy(cfg: ToyModel, meta: dict[str, Any]) -> nn.Module:
    return nn.Linear(cfg.features, 1)


@register
class ToyRegression(Task):
    name = "toy_regression"
    model_config = ToyModel
    data_config = ToyData
    metric = "mse"
    unit = "samples"

    def __init__(self, config: Any, *, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank=rank, world_size=world_size)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(config.data.samples, config.model.features, generator=g)
        self.y = self.x @ torch.arange(1.0, config.model.features + 1)
        self.calls = 0

    def model_meta(self) -> dict[str, Any]:
        return {}

    def batches_per_epoch(self) -> int:
        return self.config.data.samples // self.config.data.batch_size

    def batch(self, epoch: int, index: int, device: torch.device) -> Any:
        take = epoch_batch_indices(
            len(self.x),
            self.config.data.batch_size,
            epoch,
            rank=self.rank,
            world_size=self.world_size,
        )[index]
        return self.x[take], self.y[take]

    def train_step(self, model: nn.Module, batch: Any, state: Any) -> StepResult:
        x, y = batch
        loss = ((model(x).squeeze(-1) - y) ** 2).mean()
        self.calls += 1
        if self.calls in (self.config.data.nan_steps or []):
            loss = loss * float("nan")
        return StepResult(loss, None, len(x))

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        time.sleep(self.config.data.eval_seconds)
        mse = ((model(self.x).squeeze(-1) - self.y) ** 2).mean().item()
        return {"loss": mse, "mse": mse}


@dataclass
class ToyDataBuiltInPython(ToyData):
    """Fields the YAML schema doesn't take, which a task used from Python may have."""

    weights: dict[str, float] = field(default_factory=dict)
    batches: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.batches = self.samples // self.batch_size


@register
class ToyRegressionBuiltInPython(ToyRegression):
    name = "toy_regression_python"
    data_config = ToyDataBuiltInPython


def test_a_task_whose_config_yaml_could_not_express_trains_from_python(tmp_path: Path) -> None:
    from rhn.train.config import OptimConfig, RunConfig, TrainConfig

    config = RunConfig(
        "toy_regression_python",
        ToyModel(),
        ToyDataBuiltInPython(weights={"a": 1.0}),
        OptimConfig(lr=0.05),
        TrainConfig(max_steps=3, max_epochs=None, progress=False),
    )
    config.optim.lr = -1.0  # set after it was built: checked again all the same
    with pytest.raises(ValueError, match=r"optim\.lr: -1\.0 is not allowed"):
        train(config, tmp_path / "refused")
    config.optim.lr = 0.05
    assert train(config, tmp_path / "run").position.step == 3


def toy_config(*overrides: str) -> Any:
    return build_config(
        {"task": "toy_regression", "optim": {"lr": 0.05}},
        ["train.max_epochs=null", "train.progress=false", *overrides],
    )


def test_a_run_stopped_by_its_step_limit_and_extended_keeps_the_plateau_rates(
    tmp_path: Path,
) -> None:
    # Every epoch-end comparison halves (threshold 10 in a metric below 10); 8 steps an epoch.
    plateau = [
        *("optim.schedule.name=plateau", "optim.schedule.gamma=0.5"),
        *("optim.schedule.threshold=10.0", "train.eval_every=0"),
    ]
    reference = train(toy_config("train.max_steps=40", *plateau), tmp_path / "reference")
    # Stopped mid-epoch at step 12: an evaluation is forced there (for best.pt), which an
    # uninterrupted run does not make, so the plateau rule must not see it.
    train(toy_config("train.max_steps=12", *plateau), tmp_path / "extended")
    extended = train(toy_config("train.max_steps=40", *plateau), tmp_path / "extended")

    def rates(run: Path) -> dict[int, float]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["lr"] for r in map(json.loads, lines)}

    # The rule compares from the third evaluation (step 24), so steps 25.. run at half.
    assert rates(tmp_path / "reference") == {8: 0.05, 16: 0.05, 24: 0.05, 32: 0.025, 40: 0.0125}
    assert rates(tmp_path / "extended") == {12: 0.05, **rates(tmp_path / "reference")}
    assert extended.metrics == reference.metrics
    got, want = final_weights(tmp_path / "extended"), final_weights(tmp_path / "reference")
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_resumed_run_logs_the_same_training_curve_as_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def curve(run: Path) -> list[tuple[int, float]]:
        acc = EventAccumulator(str(run))
        acc.Reload()
        return [(e.step, e.value) for e in acc.Scalars("train/loss")]

    logged = ["train.log_every=5", "train.eval_every=0", "train.checkpoint_every=0"]
    train(toy_config("train.max_steps=10", *logged), tmp_path / "reference")
    # Stopped at step 7: the point at step 10 averages steps 6..10, two of them before the stop.
    train(toy_config("train.max_steps=7", *logged), tmp_path / "resumed")
    train(toy_config("train.max_steps=10", *logged), tmp_path / "resumed")
    reference = curve(tmp_path / "reference")
    assert [step for step, _ in reference] == [5, 10]
    assert curve(tmp_path / "resumed") == reference


def test_isolated_nan_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    config = toy_config("train.max_steps=40", "data.nan_steps=[5, 6, 20]", "train.eval_every=40")
    result = train(config, tmp_path / "run")
    assert result.status == "finished"
    assert result.position.skipped_steps == 3 and result.position.bad_steps == 0
    weights = final_weights(tmp_path / "run")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert result.metrics["mse"] < 1.0  # it still learned y = x·[1, 2, 3, 4]


def test_consecutive_nan_steps_stop_the_run_and_keep_the_good_checkpoint(tmp_path: Path) -> None:
    config = toy_config(
        "train.max_steps=40",
        "train.checkpoint_every=5",
        "train.max_bad_steps=3",
        "data.nan_steps=[12, 13, 14]",
    )
    with pytest.raises(TrainingDivergedError, match=r"3 consecutive steps .* stopping at step 14"):
        train(config, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 10
    assert all(torch.isfinite(w).all() for w in ckpt["model"].values())


def test_weights_that_overflow_stop_the_run_and_keep_the_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(toy_config("train.max_steps=5", "train.checkpoint_every=5"), run)
    # Continued at a learning rate whose first update overflows the weights to inf.
    overflow = toy_config(
        "train.max_steps=10", "train.checkpoint_every=1", "optim.lr=1e38", "optim.clip_norm=null"
    )
    with pytest.raises(
        TrainingDivergedError,
        match=r"the weights are not finite at step 6 .* The last good checkpoint is .*last\.pt",
    ):
        train(overflow, run)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 5
    assert all(torch.isfinite(w).all() for w in ckpt["model"].values())


def test_gradient_accumulation_equals_one_big_batch(tmp_path: Path) -> None:
    big = train(toy_config("train.max_steps=4", "data.batch_size=16"), tmp_path / "big")
    small = train(
        toy_config("train.max_steps=4", "data.batch_size=8", "optim.grad_accum=2"),
        tmp_path / "accum",
    )
    assert big.position.step == small.position.step == 4
    a, b = final_weights(tmp_path / "big"), final_weights(tmp_path / "accum")
    for name in a:
        torch.testing.assert_close(a[name], b[name])


@pytest.mark.parametrize("before_clip", [True, False])
def test_weight_decay_is_clipped_with_the_gradient_only_before_the_clip(
    tmp_path: Path, before_clip: bool
) -> None:
    """Step 2 by hand from step 1's weights: before the clip the update is
    lr·clip(g + wd·w), the RHN code's clipped gradient of loss + wd·Σw²/2; after it (torch's
    decay) lr·(clip(g) + wd·w). A clip at 0.5 binds on the toy's gradients of norm ~30."""
    lr, wd, clip = 0.05, 0.5, 0.5
    args = [f"optim.weight_decay={wd}", f"optim.clip_norm={clip}"]
    args.append(f"optim.decay_before_clip={str(before_clip).lower()}")
    train(toy_config("train.max_steps=1", *args), tmp_path / "one")
    train(toy_config("train.max_steps=2", *args), tmp_path / "two")
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")

    config = toy_config("train.max_steps=2", *args)
    x, y = ToyRegression(config).batch(0, 1, torch.device("cpu"))
    w, b = one["weight"].double(), one["bias"].double()
    residual = x.double() @ w.T + b - y.double().unsqueeze(1)  # (N, 1)
    grad_w, grad_b = 2 * residual.T @ x.double() / len(x), 2 * residual.sum(0) / len(x)
    if before_clip:
        grad_w, grad_b = grad_w + wd * w, grad_b + wd * b
    norm = torch.cat([grad_w.flatten(), grad_b]).norm()
    assert norm > 10 * clip  # the clip binds
    scale = clip / (norm + 1e-6)  # clip_grad_norm_'s
    grad_w, grad_b = scale * grad_w, scale * grad_b
    if not before_clip:
        grad_w, grad_b = grad_w + wd * w, grad_b + wd * b
    torch.testing.assert_close(two["weight"].double(), w - lr * grad_w)
    torch.testing.assert_close(two["bias"].double(), b - lr * grad_b)


def test_decay_before_clip_is_refused_with_adamw() -> None:
    with pytest.raises(ValueError, match=r"optim\.decay_before_clip: True is not allowed"):
        toy_config("optim.name=adamw", "optim.decay_before_clip=true")


def test_a_resume_mid_epoch_with_another_grad_accum_ends_the_epoch_in_range(
    tmp_path: Path,
) -> None:
    # 8 batches an epoch. Stopped after 3 single-batch steps, resumed with grad_accum 2:
    # steps 4-5 take batches 3-4 and 5-6; batch 7 alone cannot make a step, so the epoch
    # ends there (it asked for batch 8 and raised IndexError); epoch 1 is steps 6-9 and
    # step 10 takes epoch 2's batches 0-1.
    run = tmp_path / "run"
    train(toy_config("train.max_steps=3"), run)
    result = train(toy_config("train.max_steps=10", "optim.grad_accum=2"), run)
    assert result.status == "finished"
    pos = result.position
    assert (pos.step, pos.epoch, pos.batch_index) == (10, 2, 2)
    # Stopped at batch 7, whose one batch left can't make a step of 2: the next epoch's.
    other = tmp_path / "other"
    train(toy_config("train.max_steps=7"), other)
    pos = train(toy_config("train.max_steps=9", "optim.grad_accum=2"), other).position
    assert (pos.step, pos.epoch, pos.batch_index) == (9, 1, 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (  # 8 batches an epoch, stopped at batch 5, resumed on 3: its batch 5 doesn't exist
            "data.samples=24",
            r"stopped at batch 5 of an epoch of 8 batches, but this run's data gives 3 per "
            r"epoch \(data.samples was 64, now 24\); resume with the data settings",
        ),
        (  # 5 of 16: a batch 5 exists, but it is other samples than the epoch's sixth
            "data.batch_size=4",
            r"an epoch of 8 batches, but this run's data gives 16 per epoch \(data.batch_size "
            r"was 8, now 4\)",
        ),
    ],
)
def test_a_resume_mid_epoch_on_data_cut_into_other_epochs_is_refused_before_it_writes(
    change: str, message: str, tmp_path: Path
) -> None:
    from rhn.train.checkpoint import CheckpointError

    run = tmp_path / "run"
    train(toy_config("train.max_steps=5"), run)
    written = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match=message):
        train(toy_config("train.max_steps=9", change), run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == written
    # At an epoch's end the next epoch may be cut otherwise: it starts at its batch 0.
    train(toy_config("train.max_steps=8"), run)
    result = train(toy_config("train.max_steps=9", change), run)
    assert (result.position.step, result.position.epoch, result.position.batch_index) == (9, 1, 1)


def test_a_checkpoint_without_its_epoch_length_is_refused_where_the_batch_is_gone(
    tmp_path: Path,
) -> None:
    from rhn.train.checkpoint import CheckpointError, atomic_torch_save

    run = tmp_path / "run"
    train(toy_config("train.max_steps=5"), run)
    last = run / "checkpoints" / "last.pt"
    older = load_checkpoint(last)
    del older["epoch"]  # as a checkpoint written before it was kept
    atomic_torch_save(older, last)
    with pytest.raises(CheckpointError, match=r"stopped at batch 5 of an epoch; this run's data "):
        train(toy_config("train.max_steps=9", "data.samples=24"), run)
    assert train(toy_config("train.max_steps=6"), run).position.batch_index == 6


def test_a_finished_run_run_again_keeps_its_config_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    train(toy_config("train.max_steps=4", "optim.lr=0.003"), run)
    written = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    again = train(toy_config("train.max_steps=4", "optim.lr=0.1"), run)
    assert again.status == "finished" and again.position.step == 4
    # No step ran at lr 0.1: config.yaml still says the 0.003 its checkpoints trained with.
    now = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    kept = {name: data for name, data in written.items() if not name.startswith("events.")}
    assert {name: now[name] for name in kept} == kept
    # An events file of this very second is renamed to sort before the new one, not changed.
    events = [data for name, data in written.items() if name.startswith("events.")]
    assert events and all(data in now.values() for data in events)
    assert f"{run} is at step 4, where this config stops (4); nothing to do (raise " in (
        capsys.readouterr().err
    )


def test_shuffled_epochs_visit_every_sample_once_per_epoch() -> None:
    task = ToyRegression(toy_config("train.max_steps=1"))
    seen = torch.cat([task.batch(3, i, torch.device("cpu"))[1] for i in range(8)])
    assert torch.equal(seen.sort().values, task.y.sort().values)
    first = task.batch(0, 0, torch.device("cpu"))[1]
    assert not torch.equal(first, task.batch(1, 0, torch.device("cpu"))[1])


@pytest.fixture(autouse=True)
def _no_tty_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    os.environ.pop("WORLD_SIZE", None)


def test_non_finite_weights_never_overwrite_a_good_checkpoint(tmp_path: Path) -> None:
    from rhn.train.loop import Trainer

    run = tmp_path / "run"
    train(toy_config("train.max_steps=5"), run)
    good = (run / "checkpoints" / "last.pt").read_bytes()
    with Trainer(toy_config("train.max_steps=10"), run) as trainer, torch.no_grad():
        trainer.model.weight[0, 0] = float("inf")
        with pytest.raises(TrainingDivergedError, match="not finite at step 5"):
            trainer._checkpoint(best=True)
    assert (run / "checkpoints" / "last.pt").read_bytes() == good
    assert (run / "checkpoints" / "best.pt").read_bytes() == good


def test_a_damaged_best_pt_is_rewritten_from_a_last_pt_that_holds_the_best_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Going on from last.pt overwrote it, the only whole copy of the best model."""
    from rhn.train.loop import Trainer

    run = tmp_path / "run"
    first = train(toy_config("train.max_steps=10", "train.eval_every=5"), run)
    assert first.position.best_step == 10  # the toy regression improves at every evaluation
    best, last = run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt"
    best.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    with Trainer(toy_config("train.max_steps=20", "train.eval_every=5"), run):
        pass
    assert best.read_bytes() == last.read_bytes()
    assert f"rewritten from {last}, which holds the best model" in capsys.readouterr().err
    resumed = train(toy_config("train.max_steps=20", "train.eval_every=5"), run)
    assert resumed.status == "finished" and resumed.position.step == 20


def test_a_damaged_best_pt_whose_model_is_gone_is_named_lost_and_written_anew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    train(toy_config("train.max_steps=10", "train.eval_every=5"), run)
    best, last = run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt"
    # As if step 5 had been the best: last.pt (step 10) doesn't hold best.pt's model.
    ckpt = load_checkpoint(last)
    ckpt["position"].update(best_step=5, best_metric=0.0)
    torch.save({**ckpt, "is_best": False}, last)
    best.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    train(toy_config("train.max_steps=15", "train.eval_every=5"), run)
    assert "the best model it held (step 5) is lost" in capsys.readouterr().err
    # The next evaluation wrote a whole best.pt, though it didn't beat the lost 0.0.
    assert load_checkpoint(best)["position"]["best_step"] == 15


def test_every_event_up_to_a_checkpoint_is_on_disk_before_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorBoard's writer queues events for a thread of its own: a kill after a checkpoint
    lost those still queued at or before its step, which the resume doesn't log again. The
    thread is slowed down here, as a loaded machine may."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.summary.writer import event_file_writer

    import rhn.train.loop as loop

    write = event_file_writer.RecordWriter.write

    def slow_write(self: Any, data: bytes) -> None:
        time.sleep(0.02)
        write(self, data)

    monkeypatch.setattr(event_file_writer.RecordWriter, "write", slow_write)
    run, real, seen = tmp_path / "run", loop.atomic_torch_save, {}

    def save(obj: Any, path: Any) -> None:
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags = acc.Tags()["scalars"]
        seen[obj["step"]] = {t: max(e.step for e in acc.Scalars(t)) for t in tags}
        real(obj, path)

    monkeypatch.setattr(loop, "atomic_torch_save", save)
    config = ["train.max_steps=12", "train.eval_every=6", "train.log_every=3"]
    train(toy_config(*config, "train.checkpoint_every=6"), run)
    assert sorted(seen) == [6, 12]
    for step, latest in seen.items():
        assert latest["val/mse"] == latest["train/loss"] == step, latest


def test_a_run_dir_with_best_pt_and_no_last_pt_keeps_its_best_model(tmp_path: Path) -> None:
    """last.pt deleted (as its damage message offers) or never written (killed between a first
    checkpoint's two writes): the run starts over, and best.pt was replaced by the first
    evaluation, however worse; --fresh overwrote it too."""
    from rhn.train.loop import Trainer

    run = tmp_path / "run"
    train(toy_config("train.max_steps=10", "train.eval_every=5"), run)
    best, last = run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt"
    last.unlink()
    kept = best.read_bytes()
    with pytest.raises(RunDirError, match=r"already holds a run .*best\.pt.*--fresh refuses"):
        train(toy_config("train.max_steps=5", "train.eval_every=5"), run, fresh=True)
    metrics = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(CheckpointError, match=r"best\.pt was trained with another model config"):
        train(toy_config("train.max_steps=5", "model.features=3"), run)
    assert (run / "metrics.jsonl").read_bytes() == metrics and not last.exists()
    again = train(toy_config("train.max_steps=5", "train.eval_every=5"), run)
    assert again.position.step == 5 and best.read_bytes() == kept  # step 5's was worse
    assert load_checkpoint(last)["position"]["best_step"] == 10
    # At step 10 again, last.pt ties the kept best without beating it: it isn't best.pt's
    # model (a step-10 best_step at step 10 made it look so), and a damaged best.pt is lost.
    train(toy_config("train.max_steps=10", "train.eval_every=5"), run)
    assert not load_checkpoint(last)["is_best"] and best.read_bytes() == kept
    best.write_bytes(b"half a checkpoint")
    with Trainer(toy_config("train.max_steps=10", "train.eval_every=5"), run):
        pass
    assert best.read_bytes() == b"half a checkpoint"


def test_a_best_pt_of_other_data_with_no_last_pt_is_refused(tmp_path: Path) -> None:
    """It was kept, its metric (on other data) the bar every evaluation of this run had to
    beat, and rhn-eval scored that model."""
    run = tmp_path / "run"
    base = {"task": "char_lm", **_yaml(TINY)}
    short = ["train.max_steps=4", "train.eval_every=4", "train.progress=false"]
    train(build_config(base, short), run)
    (run / "checkpoints" / "last.pt").unlink()
    other = build_config(base, [*short, "data.max_chars=1000"])  # a vocabulary of fewer symbols
    with pytest.raises(CheckpointError, match=r"best\.pt is a model of other data"):
        train(other, run)
    assert train(build_config(base, short), run).position.step == 4  # the same data: kept
    # A format-1 best.pt (no model_meta: the task recovers it) of the same data is kept too.
    best = run / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(best)
    del ckpt["model_meta"]
    torch.save({**ckpt, "format_version": 1}, best)
    (run / "checkpoints" / "last.pt").unlink()
    assert train(build_config(base, short), run).position.step == 4


def _kill_at_write(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The checkpoint write to ``name`` dies (as a SIGKILL would, before its rename)."""
    import rhn.train.loop as loop

    real = loop.atomic_torch_save

    def save(obj: Any, path: Any) -> None:
        if Path(path).name == name:
            raise KeyboardInterrupt(f"killed while writing {name}")
        real(obj, path)

    monkeypatch.setattr(loop, "atomic_torch_save", save)


@pytest.mark.parametrize("killed_at", ["best.pt", "last.pt"])
def test_a_kill_during_a_best_checkpoint_save_never_loses_the_best_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_at: str
) -> None:
    from rhn.train.loop import Trainer

    run = tmp_path / "run"
    train(toy_config("train.max_steps=5"), run)
    ckpts = run / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpts.glob("*.pt")}
    old_best = load_checkpoint(ckpts / "best.pt")["position"]["best_metric"]

    with Trainer(toy_config("train.max_steps=10"), run) as trainer:
        trainer.position.best_metric = old_best / 10  # an evaluation that improved on it
        _kill_at_write(monkeypatch, killed_at)
        with pytest.raises(KeyboardInterrupt):
            trainer._checkpoint(best=True)
    monkeypatch.undo()

    with Trainer(toy_config("train.max_steps=10"), run) as resumed:
        pass
    kept = load_checkpoint(ckpts / "best.pt")["position"]["best_metric"]
    # Whatever was written, the best metric to beat is that of the model best.pt holds.
    assert resumed.position.best_metric == kept
    if killed_at == "best.pt":  # nothing new was written: both files as before
        assert {p.name: p.read_bytes() for p in ckpts.glob("*.pt")} == before
        assert kept == old_best
    else:  # best.pt holds the new best; last.pt is the old one, which recorded old_best
        assert kept == old_best / 10
        assert load_checkpoint(ckpts / "last.pt")["position"]["best_metric"] == old_best


def test_a_second_training_process_on_a_live_run_exits_at_once_naming_the_holder(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    first = rhn_train(
        run,
        *("--set", "train.max_steps=100000"),
        *("--set", "train.checkpoint_every=10", "--set", "train.eval_every=10"),
    )
    try:
        # Both files exist before the second process starts, however slow the machine.
        wait_for(run / "checkpoints" / "last.pt", first)
        wait_for(run / "metrics.jsonl", first)
        second = rhn_train(run, "--set", "train.max_steps=100000")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"is in use by another training process (pid {first.pid} on " in err
        assert len(err.strip().splitlines()) == 1 and not out
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    # The first run's directory holds only its own steps: metrics steps strictly increase.
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_a_torn_metrics_line_and_stale_temporaries_are_cleaned_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    train(toy_config("train.max_steps=4", "train.eval_every=2"), run)
    metrics = run / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"step": 6, "epoch": 0, "ms')  # a run killed mid-append
    stale = run / "checkpoints" / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    result = train(toy_config("train.max_steps=8", "train.eval_every=2"), run)
    assert result.status == "finished"
    err = capsys.readouterr().err
    assert "dropped torn line 3" in err and f"removed {stale}" in err
    assert not stale.exists()
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [2, 4, 6, 8]


def test_a_trainer_owns_its_run_dir_from_construction_until_closed(tmp_path: Path) -> None:
    from rhn.train.loop import Trainer

    run = tmp_path / "run"
    with Trainer(toy_config("train.max_steps=4"), run) as first:
        assert first.log is not None  # the logger exists before run()
        with pytest.raises(RunDirError, match=r"in use by another training process \(pid "):
            Trainer(toy_config("train.max_steps=4"), run)
        first.run()
    with Trainer(toy_config("train.max_steps=8"), run) as again:
        assert again.position.step == 4
        assert again.run().position.step == 8


def test_resuming_with_another_optimizer_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    from rhn.train.checkpoint import CheckpointError

    run = tmp_path / "run"
    train(toy_config("train.max_steps=4", "optim.name=adam"), run)
    written = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match=r"trained with optim.name = 'adam', but this run"):
        train(toy_config("train.max_steps=8", "optim.name=sgd"), run)
    # config.yaml still says what the checkpoint was trained with
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == written


def test_a_resumed_optimizer_takes_its_settings_from_the_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(toy_config("train.max_steps=4", "optim.momentum=0.0"), run)
    train(toy_config("train.max_steps=8", "optim.momentum=0.9", "optim.weight_decay=0.1"), run)
    (group,) = load_checkpoint(run / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 0.1


def test_a_run_that_spent_its_time_budget_takes_no_step_when_run_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = toy_config("train.max_steps=1000000", "train.max_minutes=0.0005")
    first = train(config, run)
    lines = (run / "metrics.jsonl").read_text()
    again = train(config, run)
    assert again.status == "finished" and again.position.step == first.position.step
    assert (run / "metrics.jsonl").read_text() == lines  # no step, no evaluation appended


def test_the_time_budget_counts_evaluations_as_a_wall_clock_does(tmp_path: Path) -> None:
    """It counted the steps' time alone: a budget of 0.6 s ran all 300 steps, a minute with
    their evaluations of 0.2 s each."""
    config = toy_config(
        "train.max_steps=300", "train.eval_every=1", "train.max_minutes=0.01",
        "data.eval_seconds=0.2",
    )  # fmt: skip
    start = time.perf_counter()
    result = train(config, tmp_path / "run")
    assert result.status == "finished" and 3 <= result.position.step <= 5
    assert 0.6 <= result.position.elapsed_s <= time.perf_counter() - start
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert records[1]["elapsed_s"] >= 0.2  # step 2's clock holds step 1's evaluation


def test_origin_json_keeps_every_command_that_trained_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = {"config_file": "a.yaml", "overrides": ["optim.lr=0.1"]}
    train(toy_config("train.max_steps=4"), run, origin=first)
    # Resumed without the override: the report must still see the first part's.
    second = {"config_file": "a.yaml", "overrides": []}
    train(toy_config("train.max_steps=8"), run, origin=second)
    origin = json.loads((run / "origin.json").read_text())
    assert origin["overrides"] == []  # what config.yaml now reflects
    assert origin["invocations"] == [first | {"step": 0}, second | {"step": 4}]
    # Killed before its first checkpoint, then run again from step 8: one entry for step 8.
    third = {"config_file": "a.yaml", "overrides": ["train.seed=3"]}
    (run / "origin.json").write_text(
        json.dumps({**third, "invocations": [*origin["invocations"], third | {"step": 8}]})
    )
    train(toy_config("train.max_steps=8"), run, origin=third)
    steps = [e["step"] for e in json.loads((run / "origin.json").read_text())["invocations"]]
    assert steps == [0, 4, 8]


def test_a_folder_of_other_files_is_refused_as_a_run_dir(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my notes\n")
    (mine / "metrics.jsonl").write_text('{"mine": 1}\n')
    with pytest.raises(RunDirError, match=r"holds files but no run \(config.yaml, metrics.jsonl\)"):
        train(toy_config("train.max_steps=2"), mine)
    assert (mine / "config.yaml").read_text() == "my notes\n"
    assert (mine / "metrics.jsonl").read_text() == '{"mine": 1}\n'
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "metrics.jsonl"]
    # Another library's run folder (PyTorch Lightning's version_0/ has a checkpoints/ and
    # an events file) is not ours either: its events file must not be taken as a start's.
    lightning = tmp_path / "version_0"
    (lightning / "checkpoints").mkdir(parents=True)
    (lightning / "checkpoints" / "epoch=0.ckpt").write_bytes(b"theirs")
    (lightning / "events.out.tfevents.1.host.1.0").write_bytes(b"their events")
    with pytest.raises(RunDirError, match=r"holds files but no run \(checkpoints, events"):
        train(toy_config("train.max_steps=2"), lightning)
    assert (lightning / "events.out.tfevents.1.host.1.0").read_bytes() == b"their events"
    # A run copied without its lock is still a run: it resumes.
    copied = tmp_path / "copied"
    train(toy_config("train.max_steps=2"), copied)
    (copied / "lock").unlink()
    assert train(toy_config("train.max_steps=4"), copied).position.step == 4
    # An empty folder, or one holding only hidden files, is a new run.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_bytes(b"")
    assert train(toy_config("train.max_steps=2"), hidden).status == "finished"


def test_a_device_this_machine_lacks_is_refused_before_the_run_dir_is_made(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RunDirError, match=r"^device 'cuda': CUDA is not available here; use cpu"):
        train(toy_config("train.device=cuda", "train.max_steps=2"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
