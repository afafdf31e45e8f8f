"""scripts/bench_rnn.py: a model that fails is an error row, the others are still timed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
# As when run as a script: its folder first on the path (for scripts/_checkout.py).
sys.path.insert(0, str(ROOT / "scripts"))
spec = importlib.util.spec_from_file_location("bench_rnn", ROOT / "scripts" / "bench_rnn.py")
bench_rnn = importlib.util.module_from_spec(spec)
sys.modules["bench_rnn"] = bench_rnn  # its dataclasses look their module up
spec.loader.exec_module(bench_rnn)


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        raise RuntimeError("no kernel image is available for execution on the device")


def test_a_failing_model_is_an_error_and_the_others_are_timed() -> None:
    x = torch.randn(5, 2, 4)
    runs = {
        "lstm": (nn.LSTM(4, 3), x, False),
        "broken": (Broken(), x, False),
        "lstm-float64": (nn.LSTM(4, 3).double(), x.double(), False),
    }
    timings = bench_rnn.time_models(runs, repeats=2, warmup=1, cuda=False)
    assert timings["broken"].error == (
        "RuntimeError: no kernel image is available for execution on the device"
    )
    assert timings["broken"].seconds is None
    assert timings["lstm"].error is None and timings["lstm"].seconds > 0
    # Each row says what dtype its output came out in (autocast may choose another).
    assert timings["lstm"].output_dtype == "float32"
    assert timings["lstm-float64"].output_dtype == "float64"


def test_the_json_is_written_and_rows_say_their_dtype(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench_rnn.py", "--cases", "a", "--repeats", "1",
         "--warmup", "0", "--device", "cpu", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["lstm", "rhn-fused", "rhn-reference"]
    assert {r["output_dtype"] for r in rows} == {"float32"} and rows[0]["ratio_to_lstm"] == 1.0
    assert all(r["error"] is None for r in rows)


def test_bad_arguments_are_refused_before_anything_is_timed(tmp_path: Path) -> None:
    cases = {
        "--repeats=0": "--repeats: must be an integer >= 1, got '0'",  # rows said failed: None
        "--warmup=-1": "--warmup: must be an integer >= 0, got '-1'",
        "--device=gpu": "--device: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'",
        f"--json={tmp_path / 'missing' / 'rows.json'}": "name a file in an existing folder",
        f"--json={tmp_path}": "name a file in an existing folder",
    }
    for argument, message in cases.items():
        done = subprocess.run(
            [sys.executable, "scripts/bench_rnn.py", "--cases", "a", argument],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (argument, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
        assert done.stdout == ""  # nothing was timed


def test_inference_mode_times_the_forward_alone_without_gradients() -> None:
    grad_modes: list[bool] = []

    class Recorder(nn.LSTM):
        def forward(self, x, hx=None):  # type: ignore[override]
            grad_modes.append(torch.is_grad_enabled())
            return super().forward(x, hx)

    model, x = Recorder(4, 3), torch.randn(5, 2, 4)
    backwards: list[torch.Tensor] = []  # the gradients reaching a weight, as they arrive
    model.weight_hh_l0.register_hook(lambda grad: backwards.append(grad))
    timings = bench_rnn.time_models({"lstm": (model, x, False)}, 2, 1, cuda=False, inference=True)
    assert timings["lstm"].seconds > 0 and grad_modes == [False] * 4  # first, warm-up, 2 timed
    assert backwards == [] and all(p.grad is None for p in model.parameters())  # no backward
    bench_rnn.time_models({"lstm": (model, x, False)}, 1, 0, cuda=False)
    assert grad_modes[-1] is True and len(backwards) == len(grad_modes) - 4  # each call's
    assert model.weight_hh_l0.grad is None  # and zeroed after it


def test_float32_is_one_precision_for_every_model(tmp_path: Path) -> None:
    # torch's defaults run cuDNN's LSTM on TF32 and cuBLAS (the RHN's GEMMs) in IEEE float32:
    # the bench sets both IEEE (rhn.train.precision, tested there), --tf32 (a GPU's) both TF32.
    out = tmp_path / "rows.json"
    command = [sys.executable, "scripts/bench_rnn.py", "--cases", "a", "--repeats", "1",
               "--warmup", "0", "--device", "cpu", "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert ", fp32, training" in done.stdout.splitlines()[0]
    assert {row["precision"] for row in json.loads(out.read_text())} == {"fp32"}
    refused = subprocess.run([*command, "--tf32"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.splitlines()[-1].endswith(
        "--tf32 is for GPUs: a CPU has no TF32 arithmetic, its float32 is IEEE"
    )
