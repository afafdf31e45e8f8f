"""Forward+backward speed of ``rhn.RHN`` against ``torch.nn.LSTM`` at equal parameter count.

All models are timed in the same run on the same inputs, and each RHN row is reported as
a ratio to the LSTM's time, so the numbers compare across machines. Rows: ``rhn-fused``
(the hand-written backward, ``rhn.nn.rhn_fused``), ``rhn-reference`` (autograd through the
step loop, ``rhn.nn.rhn_reference``), on CUDA ``rhn-cuda-graph`` (the fused step loops replayed
from CUDA graphs, ``rhn.nn.rhn_graph``) and, with ``--naive``, an RHN written the straightforward
way (the input projected step by step, stacked weights indexed inside the loop).

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

Usage: python scripts/bench_rnn.py [--cases a ptb] [--layouts padded packed] [--repeats 5]
       [--bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rhn
from rhn.nn.rhn_graph import clear_graphs


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


def fwd_bwd_step(
    model: nn.Module, x: torch.Tensor | PackedSequence, bf16: bool
) -> Callable[[], None]:
    """One forward+backward of ``model`` on ``x`` (under bfloat16 autocast with ``bf16``)."""
    device_type = (x.data if isinstance(x, PackedSequence) else x).device.type

    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            output, _ = model(x)
        if isinstance(output, PackedSequence):
            output = output.data
        output.float().sum().backward()
        model.zero_grad(set_to_none=True)

    return step


def timed(fn: Callable[[], None], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_models(
    runs: dict[str, tuple[nn.Module, torch.Tensor | PackedSequence]],
    repeats: int,
    warmup: int,
    bf16: bool,
    cuda: bool,
) -> dict[str, tuple[float, float, float | None]]:
    """Per (model, input) run: (first call seconds, median seconds per fwd+bwd, peak CUDA
    MiB or None).

    The timed repeats go in rounds, every run once per round, so a slow spell of a
    shared machine slows all runs alike instead of whichever happened to be running.
    """
    steps = {name: fwd_bwd_step(m, x, bf16) for name, (m, x) in runs.items()}
    first: dict[str, float] = {}
    peak: dict[str, float | None] = {}
    for name, step in steps.items():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        first[name] = timed(step, cuda)
        for _ in range(warmup):
            step()
        peak[name] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(timed(step, cuda))
    return {name: (first[name], statistics.median(times[name]), peak[name]) for name in steps}


def run_case(
    case: Case,
    device: torch.device,
    repeats: int,
    warmup: int,
    naive: bool,
    bf16: bool,
    layout: str = "padded",
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
    if naive and layout == "padded":
        models["rhn-naive"] = NaiveRHN(reference)
    if device.type == "cuda":  # last: its cached graphs stay allocated, and peaks add up
        graphed = rhn.RHN(case.input_size, case.hidden, backend="cuda-graph", **size)
        graphed.load_state_dict(fused.state_dict())
        models["rhn-cuda-graph"] = graphed
    x = torch.randn(case.seq, case.batch, case.input_size, device=device)
    runs: dict[str, tuple[nn.Module, torch.Tensor | PackedSequence]] = {}
    if packed:
        lengths = torch.randint(1, case.seq + 1, (case.batch,))
        lengths[case.batch // 2] = case.seq
        x_packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        runs = {name: (m, x_packed) for name, m in models.items()}
    runs |= {f"{name}@padded" if packed else name: (m, x) for name, m in models.items()}
    timings = time_models(runs, repeats, warmup, bf16, cuda=device.type == "cuda")
    clear_graphs()  # free this case's captured graphs before the next case
    rows = []
    for name, m in models.items():
        first, seconds, peak = timings[name]
        row = {
            **asdict(case),
            "layout": layout,
            "model": name,
            "hidden_size": lstm_hidden if name == "lstm" else case.hidden,
            "params": count_parameters(m),
            "first_call_s": first,
            "ms_per_batch": seconds * 1e3,
            "tokens_per_s": (int(lengths.sum()) if packed else case.batch * case.seq) / seconds,
            "peak_mem_mib": peak,
            "device": str(device),
            "precision": "bf16 autocast" if bf16 else "fp32",
            "threads": torch.get_num_threads(),
        }
        if packed:
            row["packed_over_padded"] = seconds / timings[f"{name}@padded"][1]
        rows.append(row)
    lstm_ms = rows[0]["ms_per_batch"]
    for row in rows:
        row["ratio_to_lstm"] = row["ms_per_batch"] / lstm_ms
    return rows


def print_table(rows: list[dict]) -> None:
    header = ["case", "layout", "model", "hidden", "depth", "params", "ms/batch fwd+bwd"]
    header += ["tokens/s", "×LSTM", "×padded", "first call s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        depth = "-" if r["model"] == "lstm" else r["depth"]
        over_padded = r.get("packed_over_padded")
        print(
            f"| {r['name']} | {r['layout']} | {r['model']} | {r['hidden_size']} | {depth} | "
            f"{r['params']:,} | {r['ms_per_batch']:.1f} | {r['tokens_per_s']:,.0f} | "
            f"{r['ratio_to_lstm']:.2f} | {'-' if over_padded is None else f'{over_padded:.2f}'} | "
            f"{r['first_call_s']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["a", "b", "ptb"])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["padded"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--naive", action="store_true", help="also time the naive port (slow)")
    parser.add_argument(
        "--bf16", action="store_true", help="run every model under bfloat16 autocast"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.bf16 and device.type == "cpu":
        # oneDNN's bf16 LSTM needs AVX512-BF16 or AMX, which most CPUs (this one) lack.
        parser.error("--bf16 is for GPUs: the CPU LSTM baseline has no portable bf16 kernel")
    rows = [
        row
        for name in args.cases
        for layout in args.layouts
        for row in run_case(
            CASES[name], device, args.repeats, args.warmup, args.naive, args.bf16, layout
        )
    ]
    precision = "bf16 autocast" if args.bf16 else "fp32"
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, device {device}, {threads} threads, {precision}")
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
