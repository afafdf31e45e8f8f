"""GPU readiness in one command: everything a short GPU loan should measure, in one report.

    python3 scripts/gpu_check.py --out DIR [--data-dir D] [--train-minutes 1.5] [--only S ...]
                                 [--budget-minutes 7.5] [--work W]
    python3 scripts/gpu_check.py --out DIR --dry-run      # the same code on CPU, toy sizes

Runs with the machine's own python from a plain copy of the repository (``rhn`` need not be
installed, and nothing on this path imports ``datasets``). Sections, each timed and recorded
even when another fails:

    device       GPU name; torch, Triton, CUDA and cuDNN versions
    kernels      every Triton step-kernel variant (GEMM dtype fp32 / bf16 / fp16 × coupled
                 or free carry × dropout × fused GEMM input / gradient × forward / backward,
                 full and length-masked rows) against the torch ops, with the self-check's
                 verdict for each; then the fused RHN against the reference recurrence,
                 padded, packed and bidirectional, outputs and gradients
    cuda_graphs  the cuda-graph backend against eager fused calls: two same-shape layers
                 interleaved, captured then replayed, outputs and gradients
    bench        scripts/bench_rnn.py cases a, b, ptb, enwik8 in fp32 and bf16 against cuDNN
                 nn.LSTM of equal parameters (ms, tokens/s, peak memory, ratio), every backend;
                 then ptb and enwik8 in inference (the no-grad forward of evaluation)
    train        configs/ptb_rhn_d10.yaml (fused kernels and CUDA graphs; ``auto`` if that
                 fails) and ptb_lstm_baseline.yaml for --train-minutes each (less if the
                 budget is short) on real PTB (tokens/s, loss curve), one epoch of
                 mnist_conv_highway_w16

It writes ``DIR/report.json`` (one key per section: ``ok``, ``seconds``, ``error`` and its
data) and ``DIR/report.md`` (the tables), both again after every section, and nothing else
there: a device tool brings back only a few files, so the run folders (with their
checkpoints) and the sections' partial results go to ``--work`` (a new temporary folder
unless given), and the tables are printed at the end too. Each section but
``device`` runs in a process of its own (a kernel that corrupts its CUDA context, or hangs,
takes only its section down) under a time limit cut to what is left of ``--budget-minutes``
(counted from the script's start, less what the later sections are kept);
it saves its results as it goes, so a section that fails or runs out of time still reports
what it measured, and one failing part (a kernel variant, a bench model, a training job) is
a row, not the end of its section. On an H100/H200 the whole check should take about 7
minutes. Data: a GPU machine gets the working tree only, so bring PTB and MNIST in a
git-ignored folder of the repository (``gpu-data/``, see ``make gpu-data``) and pass it as
``--data-dir``; without it the train section uses tiny synthetic files of the same formats.
``--dry-run`` (CPU, toy sizes, Triton in its interpreter, under 3 minutes) is part of the
test suite, so this script cannot rot between GPU loans.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STARTED = time.time()  # the budget counts from here, before torch and rhn are imported
ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("device", "kernels", "cuda_graphs", "bench", "train")
# Seconds each section may take on a GPU (each is also cut to what the budget has left), and
# in a dry run. The whole check must fit a 10-minute command with time to spare.
SECTION_LIMIT_S = {"kernels": 100, "cuda_graphs": 60, "bench": 160, "train": 400}
DRY_SECTION_LIMIT_S = 240
# Seconds a section leaves for each later one it would otherwise crowd out: the train
# section's RHN run is the headline number, so the bench cannot eat its time. 300 s: both
# PTB jobs a minute or more and the MNIST epoch (3 start-ups of 40 s, 45 s, 2 × 67 s).
KEEP_FOR_LATER_S = {"train": 300}
RESERVE_S = 10  # kept back from the budget for writing the report
MIN_SECTION_S = 20  # a section with less time than this left is skipped, and says so
SAVE_MARGIN_S = 8  # a section's own deadline comes this long before it is killed: time to
# read a stopped job's logs (tensorboard's reader) and save
# Tests: "hang-after-save:SECTION" stalls that section; "nan" puts a NaN into every answer
# the checks judge (each kernel's, the fused recurrence's, the graphed layers'), which all
# must then fail.
FAULT_ENV = "RHN_GPU_CHECK_FAULT"


def _nan_fault() -> bool:
    return os.environ.get(FAULT_ENV) == "nan"


def _poisoned(tensor: Any) -> Any:
    """``tensor`` with a NaN in its first element, under the "nan" fault; else itself."""
    if not _nan_fault() or tensor is None or not tensor.numel():
        return tensor
    tensor = tensor.detach().clone()
    tensor.view(-1)[0] = float("nan")
    return tensor


class _PoisonedPointwise:
    """A Triton pointwise whose every output gets a NaN (the "nan" fault)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def forward(self, a: Any, s: Any, h: Any, t: Any, c: Any, *rest: Any) -> None:
        self.inner.forward(a, s, h, t, c, *rest)
        h.view(-1)[0] = float("nan")

    def backward(self, ds: Any, s: Any, h: Any, t: Any, c: Any, da: Any, *rest: Any) -> None:
        self.inner.backward(ds, s, h, t, c, da, *rest)
        da.view(-1)[0] = float("nan")


def bootstrap() -> None:
    """Import ``rhn`` and its tasks from this checkout, installed or not (a GPU machine's
    copy is not), and register the tasks."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from _checkout import use_this_checkout

    use_this_checkout()
    # Without an installed package there are no entry points: register the tasks directly.
    import rhn.tasks.image_classification
    import rhn.tasks.language_model  # noqa: F401


@dataclass
class Context:
    out: Path  # report.json and report.md only (a device tool brings back a few files)
    work: Path  # everything else: the sections' results so far, run folders, synthetic data
    dry_run: bool
    data_dir: Path | None
    train_minutes: float
    deadline: float  # time.time() by which this process must be done
    section: str | None = None  # in a section's own process: its name

    def remaining(self) -> float:
        return self.deadline - time.time()

    def section_file(self, name: str) -> Path:
        return self.work / "sections" / f"{name}.json"

    def save(self, data: Any, *, complete: bool = False, error: str | None = None) -> None:
        """A section's results so far (its process writes them as it goes)."""
        assert self.section is not None
        record = {"data": data, "complete": complete, "error": error}
        _write_atomic(self.section_file(self.section), json.dumps(record, default=str))
        if os.environ.get(FAULT_ENV) == f"hang-after-save:{self.section}":
            time.sleep(3600)  # tests: a section that stalls once it has saved something

    @property
    def cuda(self) -> bool:
        import torch

        return torch.cuda.is_available() and not self.dry_run

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cuda" if self.cuda else "cpu")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_limited(
    cmd: list[str], env: dict[str, str], timeout: float, *, own_group: bool = True
) -> tuple[int | None, str]:
    """(exit status, or None if it ran out of time; the tail of its stderr). A section runs
    in a process group of its own (``own_group``) that holds its jobs too, so a section
    that runs out of time is killed with every job it started; a job that runs out of time
    is killed alone."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=own_group,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=max(1.0, timeout))
        return proc.returncode, stderr[-2000:]
    except subprocess.TimeoutExpired:
        if own_group:
            os.killpg(proc.pid, 9)
        else:
            proc.kill()
        _, stderr = proc.communicate()
        return None, stderr[-2000:]


def max_error(ours: Any, expected: Any) -> float:
    from rhn.nn.checked_pointwise import kernel_error

    return kernel_error(ours, expected)[0]


def worst(errors: Any) -> float:
    """The largest of ``errors``, NaN if any is (Python's max passes a NaN over)."""
    errors = list(errors)
    return math.nan if any(math.isnan(e) for e in errors) else max(errors)


def pair_errors(pairs: Any) -> dict[str, float]:
    """The worst ``max_error`` of the (ours, expected) ``pairs``, and the worst
    ``scaled_error``: a difference over the expected tensor's largest magnitude (at least 1),
    as a PTB-sized weight gradient is in the hundreds, where float32's last digits are 1e-5.
    Each pair's difference is computed once."""
    absolute, scaled = [], []
    for ours, expected in pairs:
        absolute.append(max_error(ours, expected))
        scaled.append(absolute[-1] / max(1.0, expected.detach().abs().max().item()))
    return {"max_error": worst(absolute), "scaled_error": worst(scaled)}


# -- device ------------------------------------------------------------------------------


def section_device(ctx: Context) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "datasets_imported": "datasets" in sys.modules,
        # torch's own TF32 defaults (cuDNN on, cuBLAS off); the bench and the fp32 training
        # jobs run both in IEEE float32 (rhn.train.precision), the RHN as the LSTM
        "tf32_defaults": f"cuBLAS {torch.backends.cuda.matmul.allow_tf32}, "
        f"cuDNN {torch.backends.cudnn.allow_tf32}",
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    return info


# -- kernels -----------------------------------------------------------------------------


def _forward(impl: Any, a: Any, s: Any, variant: dict[str, Any], mask: Any) -> dict:
    """One forward micro-step of ``impl``; every output by name."""
    import torch

    h, t, s_next = (torch.empty_like(s) for _ in range(3))
    c = None if variant["coupled"] else torch.empty_like(s)
    s_in = torch.empty_like(s, dtype=a.dtype) if variant["fused_io"] else None
    impl.forward(a, s, h, t, c, s_next, mask, s_in)
    return {"h": h, "t": t, "s_next": s_next, "c": c, "s_next_in": s_in}


def _backward(impl: Any, ds: Any, s: Any, fwd: dict, a: Any, mask: Any, g: Any) -> dict:
    """One backward micro-step of ``impl`` from the forward outputs ``fwd``."""
    import torch

    da, carry = torch.empty_like(a), torch.empty_like(s)
    impl.backward(ds, s, fwd["h"], fwd["t"], fwd["c"], da, carry, g, mask)
    return {"da": da, "carry": carry}


def kernel_variants(ctx: Context) -> list[dict[str, Any]]:
    """Each Triton variant against the torch ops at a training-size step (PTB: 20 × 830),
    and the verdict of a fresh self-check on the same call."""
    import itertools

    import torch

    from rhn.nn.checked_pointwise import SelfCheckingPointwise, kernel_error
    from rhn.nn.rhn_cell import TORCH_POINTWISE
    from rhn.nn.rhn_triton import TRITON_POINTWISE

    rows, hidden = (4, 37) if ctx.dry_run else (20, 830)
    gen = torch.Generator().manual_seed(0)
    kernels = _PoisonedPointwise(TRITON_POINTWISE) if _nan_fault() else TRITON_POINTWISE

    def rand(*shape: int, dtype: Any = torch.float32, scale: float = 1.0) -> Any:
        return (torch.randn(*shape, generator=gen) * scale).to(ctx.device, dtype)

    results = []
    grid = itertools.product(
        (torch.float32, torch.bfloat16, torch.float16), (True, False), (False, True),
        (False, True), (rows, rows // 2),
    )  # fmt: skip
    for compute, coupled, dropout, fused_io, active in grid:  # active < rows: length-masked
        ctx.save({"variants": results})
        name = str(compute).removeprefix("torch.")
        variant = {"compute": name, "coupled": coupled, "dropout": dropout,
                   "fused_io": fused_io, "rows": f"{active}/{rows}"}  # fmt: skip
        blocks = 2 if coupled else 3
        a = rand(rows, blocks * hidden, dtype=compute, scale=3.0)[:active]
        s, ds = rand(rows, hidden)[:active], rand(rows, hidden)[:active]
        mask = (rand(rows, hidden) > 0).float()[:active] * 2 if dropout else None
        g = rand(rows, hidden, dtype=compute)[:active] if fused_io else None
        # Both backwards start from the torch ops' forward outputs, so that each direction
        # is judged on its own (a forward's last-ulp differences are not fed to the backward).
        expected = _forward(TORCH_POINTWISE, a, s, variant, mask)
        expected |= _backward(TORCH_POINTWISE, ds, s, expected, a, mask, g)
        try:
            ours = _forward(kernels, a, s, variant, mask)
            ours |= _backward(kernels, ds, s, expected, a, mask, g)
        except Exception as err:  # this variant failed to build or launch; the rest go on
            results.append(variant | {"passed": False, "error": repr(err)[:300]})
            continue
        errors, passed = {}, True
        for name, out in ours.items():
            if out is not None:
                errors[name], within = kernel_error(out, expected[name])
                passed &= within
        checker = SelfCheckingPointwise(kernels)  # what training would decide
        _backward(checker, ds, s, _forward(checker, a, s, variant, mask), a, mask, g)
        results.append(
            variant
            | {
                "max_error": max(errors.values()),
                "worst_output": max(errors, key=errors.get),
                "passed": passed,
                "self_check_passed": all(checker.verdicts.values()),
            }
        )
    return results


def recurrence_checks(ctx: Context) -> list[dict[str, Any]]:
    """The fused RHN against the reference recurrence on the device: padded, packed and
    bidirectional, float32 outputs and gradients; a layout that fails to run is a row."""
    out = []
    for layout in ("padded", "packed", "bidirectional"):
        try:
            out.append({"layout": layout, **_recurrence_check(ctx, layout)})
        except Exception as err:  # this layout failed to run; the others go on
            out.append({"layout": layout, "passed": False, "error": repr(err)[:300]})
    return out


def _recurrence_check(ctx: Context, layout: str) -> dict[str, Any]:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    import rhn

    dev = ctx.device
    seq, batch, size, depth = (6, 3, 8, 2) if ctx.dry_run else (35, 20, 256, 4)
    torch.manual_seed(0)
    kw = {"depth": depth, "bidirectional": layout == "bidirectional", "device": dev}
    fused = rhn.RHN(size, size, backend="fused", **kw)
    ref = rhn.RHN(size, size, backend="reference", **kw)
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(seq, batch, size, device=dev)
    results = []
    for model in (fused, ref):
        inputs = x.clone().requires_grad_()
        feed = inputs
        if layout == "packed":
            lengths = torch.tensor([seq] + [max(1, seq - 1 - i) for i in range(batch - 1)])
            feed = pack_padded_sequence(inputs, lengths, enforce_sorted=False)
        y, state = model(feed)
        y = y.data if layout == "packed" else y
        loss = y.pow(2).sum() + state.sum()
        grads = torch.autograd.grad(loss, [inputs, *model.parameters()])
        results.append([y, state, *grads])
    results[0] = [_poisoned(results[0][0]), *results[0][1:]]  # the fused output, if faulted
    errors = pair_errors(zip(*results, strict=True))
    return {**errors, "passed": errors["scaled_error"] < SCALED_TOLERANCE}  # a NaN never is


# A whole recurrence (35 steps of up to 10 micro-layers, forward and backward) in float32
# against another order of the same operations: its scaled error (on this CPU at the check's
# sizes: 3e-7 to 7e-7) well within this.
SCALED_TOLERANCE = 1e-4


def _failures(rows: list[dict[str, Any]], name: str) -> list[str]:
    return [f"{name} {r}" for r in rows if not r.get("passed", True) or r.get("error")]


def section_kernels(ctx: Context) -> dict[str, Any]:
    variants = kernel_variants(ctx)
    ctx.save({"variants": variants})
    recurrence = recurrence_checks(ctx)
    failures = _failures(variants, "variant") + _failures(recurrence, "recurrence")
    return {"variants": variants, "recurrence": recurrence, "failures": failures}


# -- CUDA graphs -------------------------------------------------------------------------


def section_cuda_graphs(ctx: Context) -> dict[str, Any]:
    """Two same-shape layers interleaved (A, B, A), captured on the first call and replayed on
    the second, against the same calls of the eager fused backend; without dropout, then
    with input and state dropout 0.25 (the PTB recipe's state dropout; the RNG reseeded
    before each model's calls, so that both draw the same masks)."""
    import torch

    import rhn

    # No graphs on CPU: the graphed models run the fused backend with the graph runner that
    # keeps graph semantics (capture once, replay into the same static outputs), so the
    # graph code (GraphedStepLoops, the cache) runs in a dry run too.
    backend = "cuda-graph" if ctx.cuda else "fused"
    from rhn.nn.rhn_graph import cached_graphs, clear_graphs

    runner = contextlib.nullcontext if ctx.cuda else _eager_graph_runner
    clear_graphs()
    dev = ctx.device
    seq, batch, size, depth = (5, 3, 8, 2) if ctx.dry_run else (35, 20, 830, 10)
    rounds: list[dict[str, Any]] = []
    for dropout in (0.0, 0.25):
        torch.manual_seed(0)
        kw = {"depth": depth, "device": dev, "input_dropout": dropout, "state_dropout": dropout}
        graphed = [rhn.RHN(size, size, backend=backend, **kw) for _ in range(2)]
        eager = [rhn.RHN(size, size, backend="fused", **kw) for _ in range(2)]
        for g, e in zip(graphed, eager, strict=True):
            e.load_state_dict(g.state_dict())
        for round_ in range(2):  # capture, then replay
            x1, x2 = (torch.randn(seq, batch, size, device=dev) for _ in range(2))
            results = []
            for (a, b), graphs in ((graphed, runner), (eager, contextlib.nullcontext)):
                torch.manual_seed(100 + round_)  # the same masks for both
                inputs = [x1.clone().requires_grad_(), x2.clone().requires_grad_()]
                with graphs():
                    ya, _ = a(inputs[0])
                    yb, _ = b(ya)
                    ya2, sa2 = a(inputs[1])  # A again, same shape: mustn't overwrite the first
                loss = yb.pow(2).sum() + ya2.sum() + sa2.pow(2).sum()
                params = [*a.parameters(), *b.parameters()]
                grads = torch.autograd.grad(loss, [*inputs, *params])
                results.append([ya, yb, ya2, *grads])
            results[0] = [_poisoned(results[0][0]), *results[0][1:]]  # the graphed, if faulted
            rounds.append(
                {
                    "round": "capture" if round_ == 0 else "replay",
                    "dropout": dropout,
                    **pair_errors(zip(*results, strict=True)),
                }
            )
            ctx.save({"backend": backend, "rounds": rounds})
    failures = [
        f"{backend} differs from eager: {r}"
        for r in rounds
        if not r["scaled_error"] < SCALED_TOLERANCE
    ]
    graphs_run = cached_graphs()
    if not graphs_run:
        failures.append("no step loop was captured: the graph code did not run")
    return {"backend": backend, "graphs_captured": graphs_run, "rounds": rounds,
            "failures": failures}  # fmt: skip


@contextlib.contextmanager
def _eager_graph_runner() -> Any:
    """On CPU: the fused recurrence of ``rhn.RHN`` with the EagerRunner for graphs."""
    import rhn.nn.rhn as rhn_module
    from rhn.nn.rhn_graph import EagerRunner

    fused = rhn_module.rhn_recurrence_fused

    def graphed(*args: Any, **kwargs: Any) -> Any:
        return fused(*args, **{**kwargs, "graph_runner": EagerRunner})

    rhn_module.rhn_recurrence_fused = graphed
    try:
        yield
    finally:
        rhn_module.rhn_recurrence_fused = fused


# -- bench -------------------------------------------------------------------------------


def _env(ctx: Context) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["RHN_OFFLINE"] = "1"
    if ctx.data_dir is not None:
        env["RHN_DATA_DIR"] = str(ctx.data_dir)
    return env


def _run(cmd: list[str], ctx: Context, timeout: float) -> None:
    """Run a job of this section; raise if it fails or runs past ``timeout`` (cut to what the
    section has left)."""
    limit = min(timeout, ctx.remaining())
    status, stderr = run_limited(cmd, _env(ctx), limit, own_group=False)
    if status is None:
        raise TimeoutError(f"{' '.join(cmd[1:3])} ran out of its {limit:.0f} s")
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd[1:3])} exited {status}: {stderr[-800:]}")


def section_bench(ctx: Context) -> dict[str, Any]:
    """bench_rnn.py in fp32, bf16, then inference, each given its share of what is left
    (2 : 2 : 1, the forward alone being the cheapest); its rows as it writes them (a run cut
    short keeps the cases it finished)."""
    script = str(ROOT / "scripts" / "bench_rnn.py")
    runs = []
    if ctx.dry_run:
        toy = ["--cases", "a", "--repeats", "1", "--warmup", "0", "--device", "cpu"]
        runs += [toy, [*toy, "--inference"]]
    else:
        # ptb first: its training step is the target, and a short share keeps it
        cases = ["--cases", "ptb", "a", "b", "enwik8", "--repeats", "5", "--device", "cuda"]
        inference = ["--cases", "ptb", "enwik8", "--repeats", "5", "--device", "cuda"]
        runs += [cases, [*cases, "--bf16"], [*inference, "--inference"]]
    weights = [1 if "--inference" in args else 2 for args in runs]
    rows: list[dict[str, Any]] = []
    failures = []
    # bench_rnn.py writes its rows only into an existing folder; no section may have saved
    # there yet (--only bench).
    (ctx.work / "sections").mkdir(parents=True, exist_ok=True)
    for i, args in enumerate(runs):
        json_path = ctx.work / "sections" / f"bench-{i}.json"
        json_path.unlink(missing_ok=True)
        try:
            share = ctx.remaining() * weights[i] / sum(weights[i:])
            _run([sys.executable, script, *args, "--json", str(json_path)], ctx, share)
        except Exception as err:  # fp32 failing must not stop bf16; what it wrote is kept
            failures.append(f"bench {' '.join(args)}: {err}")
        if json_path.is_file():
            rows += json.loads(json_path.read_text())
        ctx.save({"rows": rows, "failures": failures})
    # lstm-bf16 (cuDNN's LSTM on bfloat16 tensors) is an error row wherever cuDNN lacks it:
    # a fact about the machine, kept in the table, not a failure of ours.
    failures += [
        f"bench row {r['name']} {r['model']}: {r['error']}"
        for r in rows
        if r.get("error") and r.get("model") != "lstm-bf16"
    ]
    return {"rows": rows, "failures": failures}


# -- train -------------------------------------------------------------------------------


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def _synthetic_data(root: Path) -> Path:
    from rhn.data.synthetic import write_mnist, write_ptb

    write_ptb(root / "ptb", words=3000)
    write_mnist(root / "mnist", n_train=200, n_test=50)
    return root


def _train_result(name: str, run_dir: Path, started: float) -> dict[str, Any]:
    from rhn.train.logging import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    unit = "samples" if name.startswith("mnist") else "tokens"
    rates = [v for _, v in _scalars(run_dir, f"throughput/{unit}_per_s")]
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "train_s": records[-1]["elapsed_s"] if records else None,
        "steps": records[-1]["step"] if records else None,
        f"{unit}_per_s": sorted(rates)[len(rates) // 2] if rates else None,
        "loss_curve": _scalars(run_dir, "train/loss"),
        "final": {k: v for k, v in records[-1].items() if isinstance(v, float)} if records else {},
    }


MIN_LM_MINUTES = 0.25


def lm_minutes(
    remaining_s: float,
    cap: float,
    later_jobs: int,
    later_lm: int,
    overhead_s: float,
    vision_s: float,
) -> tuple[float | None, bool]:
    """Minutes of training for the next LM job (at most ``cap``), or None to skip it, and
    whether the later vision job still has its time: an equal share with the ``later_lm``
    LM jobs of what is left once each job has its ``overhead_s`` and the vision job its
    epoch. Where that share is under MIN_LM_MINUTES, the vision job gives its time up
    first (the RHN against the LSTM is the comparison the section is for), then the later
    LM jobs (this one, the RHN, comes first)."""
    later_vision = later_jobs - later_lm
    for sharing, vision in ((later_lm, later_vision), (later_lm, 0), (0, 0)):
        fixed = overhead_s * (1 + sharing + vision) + vision_s * vision
        minutes = min(cap, (remaining_s - fixed) / (1 + sharing) / 60)
        if minutes >= MIN_LM_MINUTES:
            return minutes, vision == later_vision
    return None, False


def section_train(ctx: Context) -> dict[str, Any]:
    """The PTB recipes for --train-minutes each (cut to fit what is left), the RHN's with the
    fused kernels and CUDA graphs on a GPU (then, if that fails, with ``auto``), and one
    epoch of the w16 MNIST net; each job a row, saved as it finishes. Earlier jobs come
    first: when the budget is short the later ones are skipped, not all cut below use."""
    # Loaded now, not after a stopped job, when the section's last seconds are for saving.
    from tensorboard.backend.event_processing import event_accumulator  # noqa: F401

    data = f"real ({ctx.data_dir})" if ctx.data_dir else "synthetic (no --data-dir)"
    results: dict[str, Any] = {}
    failures: list[str] = []
    if ctx.data_dir is None:
        ctx = dataclasses.replace(ctx, data_dir=_synthetic_data(ctx.work / "synthetic-data"))
        if not ctx.dry_run:  # the rates stand, but a synthetic 3,000-word softmax isn't PTB's
            failures.append(
                "train: no --data-dir, so synthetic data, not real PTB and MNIST (make "
                "gpu-data here; the run must carry gpu-data)"
            )
    common = ["train.progress=false", f"train.device={ctx.device.type}"]
    overhead_s = 20 if ctx.dry_run else 40  # start-up, data, compiling, the final evaluation
    vision_s = 20 if ctx.dry_run else 45  # one w16 epoch on a GPU, with its test evaluation
    if ctx.dry_run:
        lm = ["model.hidden_size=16", "model.embed_size=16", "train.max_steps=4",
              "train.eval_every=4", "train.log_every=1", "data.max_chars=20000"]  # fmt: skip
        vision = ["model.width=4", "train.max_epochs=1", "train.log_every=1"]
    else:
        lm = ["train.eval_every=1000000", "train.log_every=50"]
        vision = ["train.max_epochs=1"]
    graphs = ["model.rnn_backend=cuda-graph"] if ctx.cuda else []
    # (label and run directory, config, overrides, a fallback job if this one fails)
    jobs: list[tuple[str, str, list[str], Any]] = [
        ("ptb_rhn_d10", "ptb_rhn_d10", lm + graphs,
         ("ptb_rhn_d10_auto", "ptb_rhn_d10", lm, None) if graphs else None),
        ("ptb_lstm_baseline", "ptb_lstm_baseline", lm, None),
        ("mnist_conv_highway_w16", "mnist_conv_highway_w16", vision, None),
    ]  # fmt: skip
    vision_skipped: str | None = None  # why, once an LM job has taken the vision job's time
    while jobs:
        label, config, overrides, fallback = jobs.pop(0)
        later_lm = sum(c.startswith("ptb") for _, c, _, _ in jobs)
        is_lm = config.startswith("ptb")
        if not is_lm and vision_skipped is not None:
            results[label] = {"error": vision_skipped}
            failures.append(f"train {label}: skipped")
            continue
        if is_lm and not ctx.dry_run:
            later = (len(jobs), later_lm)
            minutes, vision_fits = lm_minutes(
                ctx.remaining(), ctx.train_minutes, *later, overhead_s, vision_s
            )
            if not vision_fits and vision_skipped is None:
                vision_skipped = (
                    "skipped: no time left in the budget"
                    if minutes is None
                    else "skipped: its time went to the PTB jobs"
                )
            if minutes is None:
                results[label] = {"error": "skipped: no time left in the budget"}
                failures.append(f"train {label}: skipped")
                continue
            overrides = [*overrides, f"train.max_minutes={minutes:.2f}"]
            timeout = 60 * minutes + overhead_s
        else:
            timeout = vision_s + overhead_s if not is_lm else overhead_s * 4
        run_dir = ctx.work / "runs" / label
        sets = [arg for o in [*common, *overrides] for arg in ("--set", o)]
        cmd = [sys.executable, __file__, "--train-one", f"configs/{config}.yaml", str(run_dir)]
        started = time.perf_counter()
        try:
            _run([*cmd, *sets], ctx, timeout=timeout)
            results[label] = _train_result(config, run_dir, started)
        except Exception as err:  # this job failed; the next ones still run
            results[label] = {"error": f"{type(err).__name__}: {err}"[:600]}
            if (run_dir / "metrics.jsonl").is_file():  # what it logged before it stopped
                results[label] |= _train_result(config, run_dir, started)
            failures.append(f"train {label}: {type(err).__name__}")
            if fallback is not None:
                jobs.insert(0, fallback)
        ctx.save({"data": data, "jobs": results, "failures": failures})
    return {"data": data, "jobs": results, "failures": failures}


# -- the report --------------------------------------------------------------------------


FUNCTIONS: dict[str, Callable[[Context], Any]] = {
    "device": section_device,
    "kernels": section_kernels,
    "cuda_graphs": section_cuda_graphs,
    "bench": section_bench,
    "train": section_train,
}


def run_section_here(ctx: Context) -> int:
    """A section's own process: run it, saving its results; an exception is saved with
    whatever the section had saved before it."""
    assert ctx.section is not None
    try:
        ctx.save(FUNCTIONS[ctx.section](ctx), complete=True)
        return 0
    except Exception as err:
        path = ctx.section_file(ctx.section)
        saved = json.loads(path.read_text())["data"] if path.is_file() else None
        ctx.save(saved, error=f"{type(err).__name__}: {err}\n{traceback.format_exc()[-2500:]}")
        return 1


def section_timeout(
    ctx: Context, name: str, later: list[str], remaining: float | None = None
) -> float:
    """Seconds section ``name`` may run: its limit, cut to what the budget has left
    (``remaining``, by default the context's) less the report's reserve and what the
    ``later`` sections are kept."""
    limit = DRY_SECTION_LIMIT_S if ctx.dry_run else SECTION_LIMIT_S[name]
    keep = sum(KEEP_FOR_LATER_S.get(n, 0) for n in later)
    left = ctx.remaining() if remaining is None else remaining
    return min(limit, left - RESERVE_S - keep)


def _section_in_child(ctx: Context, name: str, later: list[str]) -> dict[str, Any]:
    """Run section ``name`` in a process of its own, leaving time for the ``later`` ones."""
    timeout = section_timeout(ctx, name, later)
    if timeout < MIN_SECTION_S:
        return {"ok": False, "error": "skipped: the budget has no time left", "data": None}
    ctx.section_file(name).unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--section", name, "--out", str(ctx.out),
           "--work", str(ctx.work), "--deadline", f"{time.time() + timeout - SAVE_MARGIN_S:.1f}",
           "--train-minutes", str(ctx.train_minutes)]  # fmt: skip
    cmd += ["--data-dir", str(ctx.data_dir)] if ctx.data_dir else []
    cmd += ["--dry-run"] if ctx.dry_run else []
    status, stderr = run_limited(cmd, dict(os.environ), timeout)
    path = ctx.section_file(name)
    record = json.loads(path.read_text()) if path.is_file() else {}
    data = record.get("data")
    failures = data.get("failures", []) if isinstance(data, dict) else []
    entry: dict[str, Any] = {"data": data}
    if status is None:
        error = f"timed out after {timeout:.0f} s (what it had saved is kept)"
    elif record.get("error"):
        error, _, entry["traceback"] = record["error"].partition("\n")
    elif status != 0 or not record.get("complete"):
        error = f"its process exited {status}: {stderr[-1500:]}"
    elif failures:
        error = f"{len(failures)} failed: {'; '.join(failures[:3])}"
    else:
        error = None
    return {"ok": error is None, "error": error, **entry}


def write_report(ctx: Context, report: dict[str, Any]) -> None:
    _write_atomic(ctx.out / "report.json", json.dumps(report, indent=2, default=str))
    _write_atomic(ctx.out / "report.md", markdown(report))


def run_sections(ctx: Context, only: list[str]) -> dict[str, Any]:
    """Each section in turn (the device's here, the others each in a process of its own),
    the report rewritten after each."""
    report: dict[str, Any] = {"dry_run": ctx.dry_run, "work": str(ctx.work)}
    for i, name in enumerate(only):
        started = time.perf_counter()
        if name == "device":
            try:
                entry = {"ok": True, "error": None, "data": section_device(ctx)}
            except Exception as err:  # recorded; the other sections still run
                entry = {"ok": False, "error": f"{type(err).__name__}: {err}", "data": None}
        else:
            entry = _section_in_child(ctx, name, only[i + 1 :])
        entry["seconds"] = round(time.perf_counter() - started, 1)
        report[name] = entry
        print(f"{name}: {'ok' if entry['ok'] else 'FAILED ' + entry['error']} "
              f"({entry['seconds']} s)", flush=True)  # fmt: skip
        write_report(ctx, report)
    return report


def _table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.4g}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# gpu-check{' (dry run on CPU)' if report['dry_run'] else ''}", ""]
    for name in SECTIONS:
        entry = report.get(name)
        if entry is None:
            continue
        status = "ok" if entry["ok"] else f"FAILED: {entry['error']}"
        lines += [f"## {name} — {status} ({entry['seconds']} s)", ""]
        data = entry.get("data")
        if not data:
            continue
        if name == "device":
            lines += _table([data], list(data))
        elif name == "kernels":
            keys = ["compute", "coupled", "dropout", "fused_io", "rows", "max_error",
                    "worst_output", "passed", "self_check_passed", "error"]  # fmt: skip
            lines += [*_table(data.get("variants", []), keys), ""]
            keys = ["layout", "max_error", "scaled_error", "passed", "error"]
            lines += _table(data.get("recurrence", []), keys)
        elif name == "cuda_graphs":
            graphs = data.get("graphs_captured", "-")
            lines += [f"backend: {data['backend']}, graphs captured: {graphs}", ""]
            lines += _table(data["rounds"], ["round", "dropout", "max_error", "scaled_error"])
        elif name == "bench":
            keys = ["name", "mode", "precision", "output_dtype", "model", "hidden_size",
                    "depth", "params", "ms_per_batch", "tokens_per_s", "peak_mem_mib",
                    "ratio_to_lstm", "error"]  # fmt: skip
            lines += _table(data["rows"], keys)
        elif name == "train":
            lines += [f"data: {data.get('data', '-')}", ""]
            jobs = data["jobs"]
            rows = [{"job": k, **{x: y for x, y in v.items() if x != "loss_curve"}}
                    for k, v in jobs.items()]  # fmt: skip
            keys = sorted({k for r in rows for k in r} - {"final"}, key=lambda k: k != "job")
            lines += [*_table(rows, keys), ""]
            for job, result in jobs.items():
                curve = result.get("loss_curve", [])
                points = ", ".join(f"{s}: {v:.3f}" for s, v in curve[:: max(1, len(curve) // 8)])
                lines.append(f"- {job} loss curve (step: loss): {points or '-'}")
        failures = data.get("failures", []) if isinstance(data, dict) else []
        lines += ["", *(f"- failed: {f}" for f in failures)] if failures else []
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the report's folder (report.json, report.md)")
    parser.add_argument(
        "--work", type=Path,
        help="an empty or new folder for the run folders and partial results "
        "(default: a new temporary folder)",
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, help="a folder holding ptb/ and mnist/")
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes (< 3 minutes)")
    parser.add_argument("--train-minutes", type=float, default=1.5, help="per LM config")
    parser.add_argument("--budget-minutes", type=float, default=7.5, help="the whole check")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    hidden = {"help": argparse.SUPPRESS}  # the check's own child processes
    parser.add_argument("--train-one", nargs=2, metavar=("CONFIG", "RUN_DIR"), **hidden)
    parser.add_argument("--section", choices=SECTIONS, **hidden)
    parser.add_argument("--deadline", type=float, **hidden)
    args, rest = parser.parse_known_args()
    if args.train_one:  # a train section's child process: rhn-train, from this checkout
        bootstrap()
        from rhn.tasks.cli import train_main

        config, run_dir = args.train_one
        return train_main([config, "--run-dir", run_dir, "--fresh", *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.out is None:
        parser.error("--out is required")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; name a folder for the reports")
    if not (math.isfinite(args.budget_minutes) and args.budget_minutes > 0):  # nan: no budget
        parser.error(f"--budget-minutes must be a number > 0, got {args.budget_minutes}")
    if not (math.isfinite(args.train_minutes) and args.train_minutes > 0):
        parser.error(f"--train-minutes must be a number > 0, got {args.train_minutes}")
    work_used = args.work is not None and args.work.exists()
    if not args.section and work_used and (not args.work.is_dir() or any(args.work.iterdir())):
        parser.error(f"--work {args.work} must be a new or empty folder")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device (torch.cuda.is_available() is False); on CPU use --dry-run")
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        bootstrap()
    except Exception as err:  # nothing can run; say why in the report a person will read
        failure = {"ok": False, "error": f"importing rhn failed: {err!r}", "seconds": 0.0}
        (args.out / "report.json").write_text(json.dumps({"bootstrap": failure}, indent=2))
        (args.out / "report.md").write_text(f"# gpu-check\n\nFAILED: {failure['error']}\n")
        print(failure["error"], file=sys.stderr)
        return 1
    data_dir = args.data_dir.resolve() if args.data_dir else None
    deadline = args.deadline or STARTED + 60 * args.budget_minutes
    work = args.work or Path(tempfile.mkdtemp(prefix="rhn-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        args.out.resolve(), work.resolve(), args.dry_run, data_dir, args.train_minutes, deadline
    )
    if args.section:
        return run_section_here(dataclasses.replace(ctx, section=args.section))
    report = run_sections(ctx, args.only)
    # The tables on stdout too: where only a command's output comes back, they do.
    print(markdown(report))
    print(f"wrote {ctx.out / 'report.json'} and {ctx.out / 'report.md'}; runs in {ctx.work}")
    return 0 if all(report[s]["ok"] for s in args.only) else 1


if __name__ == "__main__":
    sys.exit(main())
