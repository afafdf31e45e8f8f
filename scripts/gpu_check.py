"""GPU readiness in one command: everything a short GPU loan should measure, in one report.

    python3 scripts/gpu_check.py --out DIR [--data-dir D] [--train-minutes 1.5] [--only S ...]
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
                 nn.LSTM of equal parameters (ms, tokens/s, peak memory, ratio), every backend
    train        configs/ptb_rhn_d10.yaml and ptb_lstm_baseline.yaml for --train-minutes each
                 on real PTB (tokens/s, loss curve), one epoch of mnist_conv_highway_w16

It writes ``DIR/report.json`` (one key per section: ``ok``, ``seconds``, ``error`` and its
data) and ``DIR/report.md`` (the tables). On an H100/H200 the whole check takes about 7
minutes. Data: a GPU machine gets the working tree only, so bring PTB and MNIST in a
git-ignored folder of the repository (``gpu-data/``, see ``make gpu-data``) and pass it as
``--data-dir``; without it the train section uses tiny synthetic files of the same formats.
``--dry-run`` (CPU, toy sizes, Triton in its interpreter, under 3 minutes) is part of the
test suite, so this script cannot rot between GPU loans.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
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

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("device", "kernels", "cuda_graphs", "bench", "train")


def bootstrap() -> None:
    """Import ``rhn`` and its tasks from this checkout, installed or not (a GPU machine's
    copy is not): ``tasks/`` is mapped to ``rhn.tasks`` as the wheel maps it."""
    sys.path.insert(0, str(ROOT))
    import rhn

    if importlib.util.find_spec("rhn.tasks") is None:
        spec = importlib.util.spec_from_file_location(
            "rhn.tasks", ROOT / "tasks" / "__init__.py",
            submodule_search_locations=[str(ROOT / "tasks")],
        )  # fmt: skip
        module = importlib.util.module_from_spec(spec)
        sys.modules["rhn.tasks"] = module
        spec.loader.exec_module(module)
        rhn.tasks = module
    # Without an installed package there are no entry points: register the tasks directly.
    import rhn.tasks.image_classification
    import rhn.tasks.language_model


@dataclass
class Context:
    out: Path
    dry_run: bool
    data_dir: Path | None
    train_minutes: float

    @property
    def cuda(self) -> bool:
        import torch

        return torch.cuda.is_available() and not self.dry_run

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cuda" if self.cuda else "cpu")


def max_error(ours: Any, expected: Any) -> float:
    from rhn.nn.checked_pointwise import kernel_error

    return kernel_error(ours, expected)[0]


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


def _step(impl: Any, a: Any, s: Any, ds: Any, variant: dict[str, Any], mask: Any, g: Any) -> dict:
    """One forward and one backward micro-step of ``impl``; every output by name."""
    import torch

    h, t, s_next = (torch.empty_like(s) for _ in range(3))
    c = None if variant["coupled"] else torch.empty_like(s)
    s_in = torch.empty_like(s, dtype=a.dtype) if variant["fused_io"] else None
    impl.forward(a, s, h, t, c, s_next, mask, s_in)
    da, carry = torch.empty_like(a), torch.empty_like(s)
    impl.backward(ds, s, h, t, c, da, carry, g, mask)
    return {"h": h, "t": t, "s_next": s_next, "c": c, "s_next_in": s_in, "da": da, "carry": carry}


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

    def rand(*shape: int, dtype: Any = torch.float32, scale: float = 1.0) -> Any:
        return (torch.randn(*shape, generator=gen) * scale).to(ctx.device, dtype)

    results = []
    grid = itertools.product(
        (torch.float32, torch.bfloat16, torch.float16), (True, False), (False, True),
        (False, True), (rows, rows // 2),
    )  # fmt: skip
    for compute, coupled, dropout, fused_io, active in grid:  # active < rows: length-masked
        name = str(compute).removeprefix("torch.")
        variant = {"compute": name, "coupled": coupled, "dropout": dropout,
                   "fused_io": fused_io, "rows": f"{active}/{rows}"}  # fmt: skip
        blocks = 2 if coupled else 3
        a = rand(rows, blocks * hidden, dtype=compute, scale=3.0)[:active]
        s, ds = rand(rows, hidden)[:active], rand(rows, hidden)[:active]
        mask = (rand(rows, hidden) > 0).float()[:active] * 2 if dropout else None
        g = rand(rows, hidden, dtype=compute)[:active] if fused_io else None
        try:
            ours = _step(TRITON_POINTWISE, a, s, ds, variant, mask, g)
        except Exception as err:  # this variant failed to build or launch; the rest go on
            results.append(variant | {"passed": False, "error": repr(err)[:300]})
            continue
        expected = _step(TORCH_POINTWISE, a, s, ds, variant, mask, g)
        errors, passed = {}, True
        for name, out in ours.items():
            if out is not None:
                errors[name], within = kernel_error(out, expected[name])
                passed &= within
        checker = SelfCheckingPointwise(TRITON_POINTWISE)  # what training would decide
        _step(checker, a, s, ds, variant, mask, g)
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
    bidirectional, float32 outputs and gradients."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    import rhn

    dev = ctx.device
    seq, batch, size, depth = (6, 3, 8, 2) if ctx.dry_run else (35, 20, 256, 4)
    out = []
    for layout in ("padded", "packed", "bidirectional"):
        torch.manual_seed(0)
        kw = {"depth": depth, "bidirectional": layout == "bidirectional", "device": dev}
        fused = rhn.RHN(size, size, backend="fused", **kw)
        ref = rhn.RHN(size, size, backend="reference", **kw)
        ref.load_state_dict(fused.state_dict())
        x = torch.randn(seq, batch, size, device=dev)
        errors = {}
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
        for i, (a, b) in enumerate(zip(*results, strict=True)):
            errors[f"t{i}"] = max_error(a, b)
        worst = max(errors.values())
        out.append({"layout": layout, "max_error": worst, "passed": worst < 1e-3})
    return out


def section_kernels(ctx: Context) -> dict[str, Any]:
    variants = kernel_variants(ctx)
    recurrence = recurrence_checks(ctx)
    failed = [v for v in variants if not v["passed"]] + [r for r in recurrence if not r["passed"]]
    if failed:
        raise AssertionError(f"{len(failed)} kernel checks failed: {failed[:3]}")
    return {"variants": variants, "recurrence": recurrence}


# -- CUDA graphs -------------------------------------------------------------------------


def section_cuda_graphs(ctx: Context) -> dict[str, Any]:
    """Two same-shape layers interleaved (A, B, A), captured on the first call and replayed on
    the second, against the same calls of the eager fused backend."""
    import torch

    import rhn

    backend = "cuda-graph" if ctx.cuda else "fused"  # no graphs on CPU: the same code path
    dev = ctx.device
    seq, batch, size, depth = (5, 3, 8, 2) if ctx.dry_run else (35, 20, 830, 10)
    torch.manual_seed(0)
    graphed = [rhn.RHN(size, size, depth=depth, backend=backend, device=dev) for _ in range(2)]
    eager = [rhn.RHN(size, size, depth=depth, backend="fused", device=dev) for _ in range(2)]
    for g, e in zip(graphed, eager, strict=True):
        e.load_state_dict(g.state_dict())
    rounds = []
    for round_ in range(2):  # capture, then replay
        x1, x2 = (torch.randn(seq, batch, size, device=dev) for _ in range(2))
        results = []
        for a, b in (graphed, eager):
            inputs = [x1.clone().requires_grad_(), x2.clone().requires_grad_()]
            ya, _ = a(inputs[0])
            yb, _ = b(ya)
            ya2, sa2 = a(inputs[1])  # A again, same shape: must not overwrite the first call
            loss = yb.pow(2).sum() + ya2.sum() + sa2.pow(2).sum()
            params = [*a.parameters(), *b.parameters()]
            grads = torch.autograd.grad(loss, [*inputs, *params])
            results.append([ya, yb, ya2, *grads])
        worst = max(max_error(p, q) for p, q in zip(*results, strict=True))
        rounds.append({"round": "capture" if round_ == 0 else "replay", "max_error": worst})
    if any(r["max_error"] > 1e-4 for r in rounds):
        raise AssertionError(f"{backend} differs from eager: {rounds}")
    return {"backend": backend, "rounds": rounds}


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


def _run(cmd: list[str], ctx: Context, timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run(
        cmd, cwd=ROOT, env=_env(ctx), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:3])} exited {done.returncode}: {done.stderr[-800:]}")
    return done


def section_bench(ctx: Context) -> dict[str, Any]:
    script = str(ROOT / "scripts" / "bench_rnn.py")
    runs = []
    if ctx.dry_run:
        runs.append(["--cases", "a", "--repeats", "1", "--warmup", "0", "--device", "cpu"])
    else:
        cases = ["--cases", "a", "b", "ptb", "enwik8", "--repeats", "5", "--device", "cuda"]
        runs += [cases, [*cases, "--bf16"]]
    rows = []
    for args in runs:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            _run([sys.executable, script, *args, "--json", f.name], ctx, timeout=240)
            rows += json.loads(Path(f.name).read_text())
    return {"rows": rows}


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


def section_train(ctx: Context) -> dict[str, Any]:
    if ctx.data_dir is None:
        ctx = dataclasses.replace(ctx, data_dir=_synthetic_data(ctx.out / "synthetic-data"))
    common = ["train.progress=false", f"train.device={ctx.device.type}"]
    if ctx.dry_run:
        lm = ["model.hidden_size=16", "model.embed_size=16", "train.max_steps=4",
              "train.eval_every=4", "train.log_every=1", "data.max_chars=20000"]  # fmt: skip
        vision = ["model.width=4", "train.max_epochs=1", "train.log_every=1"]
    else:
        minutes = ctx.train_minutes
        lm = [f"train.max_minutes={minutes}", "train.eval_every=1000000", "train.log_every=50"]
        vision = ["train.max_epochs=1"]
    jobs = {
        "ptb_rhn_d10": lm,
        "ptb_lstm_baseline": lm,
        "mnist_conv_highway_w16": vision,
    }
    results = {}
    for name, overrides in jobs.items():
        run_dir = ctx.out / "runs" / name
        sets = [arg for o in [*common, *overrides] for arg in ("--set", o)]
        cmd = [sys.executable, __file__, "--train-one", f"configs/{name}.yaml", str(run_dir)]
        started = time.perf_counter()
        _run([*cmd, *sets], ctx, timeout=60 * ctx.train_minutes + 150)
        records = [json.loads(x) for x in (run_dir / "metrics.jsonl").open() if x.strip()]
        unit = "samples" if name.startswith("mnist") else "tokens"
        rates = [v for _, v in _scalars(run_dir, f"throughput/{unit}_per_s")]
        results[name] = {
            "wall_s": round(time.perf_counter() - started, 1),
            "train_s": records[-1]["elapsed_s"] if records else None,
            "steps": records[-1]["step"] if records else None,
            f"{unit}_per_s": sorted(rates)[len(rates) // 2] if rates else None,
            "loss_curve": _scalars(run_dir, "train/loss"),
            "final": {k: v for k, v in records[-1].items() if isinstance(v, float)}
            if records
            else {},
        }
    return results


# -- the report --------------------------------------------------------------------------


def run_sections(ctx: Context, only: list[str]) -> dict[str, Any]:
    functions: dict[str, Callable[[Context], Any]] = {
        "device": section_device,
        "kernels": section_kernels,
        "cuda_graphs": section_cuda_graphs,
        "bench": section_bench,
        "train": section_train,
    }
    report: dict[str, Any] = {"dry_run": ctx.dry_run}
    for name in only:
        started = time.perf_counter()
        entry: dict[str, Any] = {"ok": True, "error": None}
        try:
            entry["data"] = functions[name](ctx)
        except Exception as err:  # record it and go on: one broken section must not hide the rest
            entry.update(ok=False, error=f"{type(err).__name__}: {err}", data=None)
            entry["traceback"] = traceback.format_exc()[-3000:]
        entry["seconds"] = round(time.perf_counter() - started, 1)
        report[name] = entry
        print(f"{name}: {'ok' if entry['ok'] else 'FAILED ' + entry['error']} "
              f"({entry['seconds']} s)", flush=True)  # fmt: skip
        (ctx.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
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
            lines += [*_table(data["variants"], keys), ""]
            lines += _table(data["recurrence"], ["layout", "max_error", "passed"])
        elif name == "cuda_graphs":
            lines += [f"backend: {data['backend']}", ""]
            lines += _table(data["rounds"], ["round", "max_error"])
        elif name == "bench":
            keys = ["name", "precision", "model", "hidden_size", "depth", "params",
                    "ms_per_batch", "tokens_per_s", "peak_mem_mib", "ratio_to_lstm"]  # fmt: skip
            lines += _table(data["rows"], keys)
        elif name == "train":
            rows = [{"config": k, **{x: y for x, y in v.items() if x != "loss_curve"}}
                    for k, v in data.items()]  # fmt: skip
            keys = sorted({k for r in rows for k in r} - {"final"}, key=lambda k: k != "config")
            lines += [*_table(rows, keys), ""]
            for config, result in data.items():
                curve = result["loss_curve"]
                points = ", ".join(f"{s}: {v:.3f}" for s, v in curve[:: max(1, len(curve) // 8)])
                lines.append(f"- {config} loss curve (step: loss): {points or '-'}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the report's folder")
    parser.add_argument("--data-dir", type=Path, help="a folder holding ptb/ and mnist/")
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes (< 3 minutes)")
    parser.add_argument("--train-minutes", type=float, default=1.5, help="per LM config")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--train-one", nargs=2, metavar=("CONFIG", "RUN_DIR"), help=argparse.SUPPRESS
    )
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
    import torch

    if args.dry_run or not torch.cuda.is_available():
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
    ctx = Context(args.out.resolve(), args.dry_run, data_dir, args.train_minutes)
    report = run_sections(ctx, args.only)
    (ctx.out / "report.md").write_text(markdown(report))
    print(f"wrote {ctx.out / 'report.json'} and {ctx.out / 'report.md'}")
    return 0 if all(report[s]["ok"] for s in args.only) else 1


if __name__ == "__main__":
    sys.exit(main())
