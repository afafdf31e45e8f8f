"""Forward+backward speed of ``rhn.RHN`` against ``torch.nn.LSTM`` at equal parameter count
(with ``--inference``, the forward alone under ``torch.no_grad()``: evaluation and sampling).

All models are timed in the same run on the same inputs, and each RHN row is reported as
a ratio to the LSTM's time, so the numbers compare across machines. Rows: ``rhn-fused``
(the hand-written backward, ``rhn.nn.rhn_fused``), ``rhn-reference`` (autograd through the
step loop, ``rhn.nn.rhn_reference``), on CUDA ``rhn-cuda-graph`` (the fused step loops replayed
from CUDA graphs, ``rhn.nn.rhn_graph``) and, with ``--naive``, an RHN written the straightforward
way (the input projected step by step, stacked weights indexed inside the loop; padded
layout only).

Layouts (``--layouts``, each a row per model): ``padded`` (the default), ``packed`` (a
``PackedSequence`` of lengths drawn uniformly from 1..seq, the longest = seq, unsorted),
``bidirectional`` and ``bidirectional-packed``, the LSTM with the same options. Packed rows
also give ``×padded``: the same model's time on the packed batch over its time on the padded
batch of the same longest length, measured in the same rounds.

Cases:
    a    batch 32, seq 35, input 256, RHN hidden 256, depth 4
    b    as a, depth 10, hidden 168 (the same parameter count)
    ptb  batch 20, seq 35, input 830, RHN hidden 830, depth 10 (the PTB recipe's cell)
    enwik8  batch 128, seq 50, input 205, hidden 1500, depth 10 (GPU; not in the default set)

With ``--bf16`` every model runs under bfloat16 autocast. Autocast runs cuDNN's LSTM in
float16 whatever dtype it is given (its RNN rule casts to half), so each row records the
dtype its output came out in (``output_dtype``), and a further row ``lstm-bf16`` runs the
LSTM with bfloat16 weights and input outside autocast (cuDNN ≥ 9.13; an error row where
unsupported). Peak memory is what a model's fwd+bwd allocated above what was already
resident (every model's weights and the inputs). A model that fails is an error row; the
others are still timed, and ``--json`` is rewritten after every case.

Usage: python scripts/bench_rnn.py [--cases a ptb] [--layouts padded packed] [--repeats 5]
       [--bf16] [--inference] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from _checkout import use_this_checkout
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

use_this_checkout()  # gpu_check.py runs this script from a plain copy, rhn not installed

import rhn  # noqa: E402
from rhn.data.atomic_file import atomic_write_text  # noqa: E402
from rhn.nn.rhn_graph import clear_graphs  # noqa: E402
from rhn.tasks.cli import _device, _int_at_least  # noqa: E402
from rhn.train.loop import RunDirError, resolve_device  # noqa: E402
from rhn.train.precision import float32_arithmetic  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    seq: int
    input_size: int
    hidden: int
    depth: int


CASES = {
    "a": Case("a", batch=32, seq=35, input_size=256, hidden=256, depth=4),
    # depth 10 at (a)'s parameter count: 20H² + 532H ≈ 657k → H = 168
    "b": Case("b", batch=32, seq=35, input_size=256, hidden=168, depth=10),
    "ptb": Case("ptb", batch=20, seq=35, input_size=830, hidden=830, depth=10),
    # the enwik8 recipe's cell (input = the 205-symbol embedding); meant for a GPU
    "enwik8": Case("enwik8", batch=128, seq=50, input_size=205, hidden=1500, depth=10),
}


class NaiveRHN(nn.Module):
    """What a direct port of the equations does: per-step projections, indexing in the loop."""

    def __init__(self, model: rhn.RHN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        w_ih, w_hh, b_hh = m.layer_parameters(0)
        hidden = m.hidden_size
        s = x.new_zeros(x.shape[1], hidden)
        outputs = []
        for x_t in x:
            for layer in range(m.depth):
                a = s @ w_hh[layer].T + b_hh[layer]
                if layer == 0:
                    a = a + x_t @ w_ih.T
                t = torch.sigmoid(a[:, hidden:])
                s = torch.tanh(a[:, :hidden]) * t + s * (1 - t)
            outputs.append(s)
        return torch.stack(outputs), s[None]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lstm_hidden_for(params: int, input_size: int) -> int:
    """The hidden size whose 1-layer nn.LSTM has closest to ``params`` parameters.

    nn.LSTM has 4h(I + h) weights and two bias vectors of 4h: solve 4h² + (4I + 8)h = P.
    """
    b = 4 * input_size + 8
    return round((-b + math.sqrt(b * b + 16 * params)) / 8)


LAYOUTS = ("padded", "packed", "bidirectional", "bidirectional-packed")


Run = tuple[nn.Module, "torch.Tensor | PackedSequence", bool]  # model, input, autocast


def fwd_bwd_step(
    model: nn.Module, x: torch.Tensor | PackedSequence, bf16: bool, inference: bool = False
) -> Callable[[], torch.dtype]:
    """One forward+backward of ``model`` on ``x`` (under bfloat16 autocast with ``bf16``;
    the forward alone under ``no_grad`` with ``inference``); returns the dtype the output
    came out in."""
    device_type = (x.data if isinstance(x, PackedSequence) else x).device.type

    def step() -> torch.dtype:
        with (
            torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16),
            torch.set_grad_enabled(not inference),
        ):
            output, _ = model(x)
        if isinstance(output, PackedSequence):
            output = output.data
        if not inference:
            output.float().sum().backward()
            model.zero_grad(set_to_none=True)
        return output.dtype

    return step


def timed(fn: Callable[[], None], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


@dataclass
class Timing:
    first_call_s: float | None = None
    seconds: float | None = None  # median per fwd+bwd
    peak_mib: float | None = None  # CUDA only: allocated above what was resident before
    output_dtype: str | None = None
    error: str | None = None


def time_models(
    runs: dict[str, Run], repeats: int, warmup: int, cuda: bool, inference: bool = False
) -> dict[str, Timing]:
    """Per (model, input, autocast) run, its :class:`Timing`; a run that raises keeps the
    error and leaves the rounds.

    The timed repeats go in rounds, every run once per round, so a slow spell of a
    shared machine slows all runs alike instead of whichever happened to be running.
    """
    steps = {
        name: fwd_bwd_step(m, x, autocast, inference) for name, (m, x, autocast) in runs.items()
    }
    result = {name: Timing() for name in steps}
    for name, step in steps.items():
        timing = result[name]
        try:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                resident = torch.cuda.memory_allocated()
            start = time.perf_counter()
            timing.output_dtype = str(step()).removeprefix("torch.")
            if cuda:
                torch.cuda.synchronize()
            timing.first_call_s = time.perf_counter() - start
            for _ in range(warmup):
                step()
            if cuda:
                timing.peak_mib = (torch.cuda.max_memory_allocated() - resident) / 2**20
        except Exception as err:  # this model cannot run here; the others still can
            timing.error = f"{type(err).__name__}: {err}"[:300]
    live = {name: step for name, step in steps.items() if result[name].error is None}
    times: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(repeats):
        for name, step in live.items():
            times[name].append(timed(step, cuda))
    for name in live:
        result[name].seconds = statistics.median(times[name]) if times[name] else None
    return result


def run_case(
    case: Case,
    device: torch.device,
    repeats: int,
    warmup: int,
    naive: bool,
    bf16: bool,
    layout: str = "padded",
    inference: bool = False,
) -> list[dict]:
    torch.manual_seed(0)
    bidirectional = layout.startswith("bidirectional")
    packed = layout.endswith("packed")
    size = {"depth": case.depth, "bidirectional": bidirectional, "device": device}
    fused = rhn.RHN(case.input_size, case.hidden, backend="fused", **size)
    reference = rhn.RHN(case.input_size, case.hidden, backend="reference", **size)
    reference.load_state_dict(fused.state_dict())
    # Equal parameters per direction.
    lstm_hidden = lstm_hidden_for(count_parameters(fused) // fused.num_directions, case.input_size)
    lstm = nn.LSTM(case.input_size, lstm_hidden, bidirectional=bidirectional, device=device)
    models = {"lstm": lstm, "rhn-fused": fused, "rhn-reference": reference}
    if bf16:  # bfloat16 weights and input, no autocast (which would make it float16)
        lstm_bf16 = nn.LSTM(case.input_size, lstm_hidden, bidirectional=bidirectional)
        lstm_bf16.load_state_dict(lstm.state_dict())
        models["lstm-bf16"] = lstm_bf16.to(device=device, dtype=torch.bfloat16)
    if naive and layout == "padded":
        models["rhn-naive"] = NaiveRHN(reference)
    if device.type == "cuda":  # last: its cached graphs stay allocated, and peaks add up
        graphed = rhn.RHN(case.input_size, case.hidden, backend="cuda-graph", **size)
        graphed.load_state_dict(fused.state_dict())
        models["rhn-cuda-graph"] = graphed
    x = torch.randn(case.seq, case.batch, case.input_size, device=device)
    lengths = torch.randint(1, case.seq + 1, (case.batch,))
    lengths[case.batch // 2] = case.seq

    def run(name: str, model: nn.Module, inputs: torch.Tensor, pack: bool) -> Run:
        if name == "lstm-bf16":
            inputs = inputs.bfloat16()
        feed = pack_padded_sequence(inputs, lengths, enforce_sorted=False) if pack else inputs
        return model, feed, bf16 and name != "lstm-bf16"

    runs = {name: run(name, m, x, True) for name, m in models.items()} if packed else {}
    runs |= {f"{name}@padded" if packed else name: run(name, m, x, False)
             for name, m in models.items()}  # fmt: skip
    timings = time_models(runs, repeats, warmup, cuda=device.type == "cuda", inference=inference)
    clear_graphs()  # free this case's captured graphs before the next case
    rows = []
    for name, m in models.items():
        timing = timings[name]
        seconds = timing.seconds
        tokens = int(lengths.sum()) if packed else case.batch * case.seq
        row = {
            **asdict(case),
            "layout": layout,
            "mode": "inference" if inference else "training",
            "model": name,
            "hidden_size": lstm_hidden if name == "lstm" else case.hidden,
            "params": count_parameters(m),
            "first_call_s": timing.first_call_s,
            "ms_per_batch": None if seconds is None else seconds * 1e3,
            "tokens_per_s": None if seconds is None else tokens / seconds,
            "peak_mem_mib": timing.peak_mib,
            "device": str(device),
            "precision": ("bf16 weights" if name == "lstm-bf16" else "bf16 autocast")
            if bf16
            else ("tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"),
            "output_dtype": timing.output_dtype,
            "threads": torch.get_num_threads(),
            "error": timing.error,
        }
        padded = timings.get(f"{name}@padded")
        if packed and seconds is not None and padded and padded.seconds:
            row["packed_over_padded"] = seconds / padded.seconds
        rows.append(row)
    lstm_ms = rows[0]["ms_per_batch"]
    for row in rows:
        ms = row["ms_per_batch"]
        row["ratio_to_lstm"] = None if ms is None or lstm_ms is None else ms / lstm_ms
    return rows


def error_rows(case: Case, layout: str, err: Exception) -> list[dict]:
    """The row of a case that failed before any model ran (it could not be built)."""
    return [{**asdict(case), "layout": layout, "model": "-", "error": f"{type(err).__name__}: "
             f"{err}"[:300]}]  # fmt: skip


def print_table(rows: list[dict]) -> None:
    inference = any(r.get("mode") == "inference" for r in rows)
    header = ["case", "layout", "model", "hidden", "depth", "params"]
    header += ["ms/batch fwd (no grad)" if inference else "ms/batch fwd+bwd"]
    header += ["tokens/s", "×LSTM", "×padded", "first call s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))

    def cell(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in rows:
        depth = "-" if r["model"].startswith("lstm") else r["depth"]
        if r.get("ms_per_batch") is None:
            print(f"| {r['name']} | {r['layout']} | {r['model']} | failed: {r['error']} |")
            continue
        print(
            f"| {r['name']} | {r['layout']} | {r['model']} | {r['hidden_size']} | {depth} | "
            f"{r['params']:,} | {r['ms_per_batch']:.1f} | {r['tokens_per_s']:,.0f} | "
            f"{cell(r['ratio_to_lstm'], '.2f')} | {cell(r.get('packed_over_padded'), '.2f')} | "
            f"{r['first_call_s']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["a", "b", "ptb"])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["padded"])
    parser.add_argument(
        "--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--repeats", type=_int_at_least(1), default=5)
    parser.add_argument("--warmup", type=_int_at_least(0), default=2)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--naive", action="store_true", help="also time the naive port (slow; padded layout only)"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="run every model under bfloat16 autocast"
    )
    parser.add_argument(
        "--inference", action="store_true", help="time the forward alone under no_grad"
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="float32 matmuls and cuDNN on TF32 tensor cores, for every model alike (default: "
        "IEEE float32 for all; torch's own defaults give cuDNN's LSTM TF32 alone)",
    )
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)  # one this machine lacks: one line
    except RunDirError as err:
        parser.error(str(err))
    if args.json and (Path(args.json).is_dir() or not Path(args.json).parent.is_dir()):
        # Checked before the first case is timed, not when its rows are written.
        parser.error(f"--json {args.json}: name a file in an existing folder")
    if args.tf32 and device.type == "cpu":
        parser.error("--tf32 is for GPUs: a CPU has no TF32 arithmetic, its float32 is IEEE")
    if args.bf16 and device.type == "cpu":
        # oneDNN's bf16 LSTM needs AVX512-BF16 or AMX, which most CPUs (this one) lack.
        parser.error("--bf16 is for GPUs: the CPU LSTM baseline has no portable bf16 kernel")
    float32 = "tf32" if args.tf32 else "fp32"
    with float32_arithmetic(float32):
        rows = run_cases(args, device)
    precision = ("bf16 autocast, the rest " if args.bf16 else "") + float32
    threads = torch.get_num_threads()
    mode = "inference (no grad)" if args.inference else "training (fwd+bwd)"
    print(f"torch {torch.__version__}, device {device}, {threads} threads, {precision}, {mode}")
    print_table(rows)


def run_cases(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Every case of ``args.cases`` in each layout, its rows written to ``args.json`` as it
    goes (a run stopped by a time limit keeps what it measured)."""
    rows: list[dict] = []
    for name in args.cases:
        for layout in args.layouts:
            case = CASES[name]
            try:
                rows += run_case(
                    case, device, args.repeats, args.warmup, args.naive, args.bf16, layout,
                    args.inference,
                )  # fmt: skip
            except Exception as err:  # out of memory building it, say: the next case runs
                rows += error_rows(case, layout, err)
            if args.json:
                atomic_write_text(args.json, json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
