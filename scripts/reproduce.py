"""Collect finished runs into a markdown table: the published number beside ours.

    python scripts/reproduce.py runs/ [--split test] [--full] [--no-eval]

Each run directory (holding ``config.yaml`` and ``checkpoints/``) is matched to its recipe
by the config file it was started from (``origin.json``). Our number is the best
checkpoint's metric on ``--split`` (batched evaluation; ``--full`` uses batch 1 as the
papers do, which is slow); ``--no-eval`` reports the best validation metric instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from rhn.train.evaluate import evaluate_checkpoint, resolve_checkpoint

# recipe (config file stem) → (metric, published test value, source)
PUBLISHED: dict[str, tuple[str, float, str]] = {
    "ptb_rhn_d10": ("ppl", 65.4, "Zilly et al. 2017, Table 3 (67.9 valid)"),
    "ptb_rhn_depth01": ("ppl", 90.6, "Zilly et al. 2017, depth sweep"),
    "ptb_rhn_depth02": ("ppl", 75.1, "Zilly et al. 2017, depth sweep"),
    "ptb_rhn_depth04": ("ppl", 68.6, "Zilly et al. 2017, depth sweep"),
    "ptb_rhn_depth06": ("ppl", 66.6, "Zilly et al. 2017, depth sweep"),
    "ptb_rhn_depth08": ("ppl", 66.1, "Zilly et al. 2017, depth sweep"),
    "enwik8_rhn_d10": ("bpc", 1.27, "Zilly et al. 2017"),
    "text8_rhn_d10": ("bpc", 1.27, "Zilly et al. 2017"),
    "kim_small": ("ppl", 92.3, "Kim et al. 2016, LSTM-Char-Small"),
    "kim_large": ("ppl", 78.9, "Kim et al. 2016, LSTM-Char-Large"),
}


def count_parameters(state: dict[str, torch.Tensor]) -> int:
    """Parameters in a state dict, tied tensors once (buffers such as tables excluded)."""
    seen: set[int] = set()
    total = 0
    for tensor in state.values():
        if not tensor.is_floating_point() or tensor.untyped_storage().data_ptr() in seen:
            continue
        seen.add(tensor.untyped_storage().data_ptr())
        total += tensor.numel()
    return total


def run_row(run: Path, split: str, full: bool, evaluate: bool) -> dict[str, object]:
    origin = json.loads((run / "origin.json").read_text()) if (run / "origin.json").exists() else {}
    recipe = Path(origin.get("config_file", "?")).stem
    config = yaml.safe_load((run / "config.yaml").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").open() if line.strip()]
    checkpoint = resolve_checkpoint(run)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    metric, published, source = PUBLISHED.get(recipe, ("", float("nan"), "—"))
    if evaluate:
        options = {"batch_size": 1} if full else {}
        ours = evaluate_checkpoint(checkpoint, split, "auto", **options)
        metric = metric or ("ppl" if "ppl" in ours else "bpc")
        value, where = ours[metric], f"{split}{' (full)' if full else ''}"
    else:
        metric = metric or ("ppl" if "ppl" in records[-1] else "bpc")
        value, where = min(r[metric] for r in records), "best valid"
    return {
        "run": run.name,
        "recipe": recipe,
        "task": config["task"],
        "metric": metric,
        "published": published,
        "source": source,
        "ours": value,
        "measured on": where,
        "params": count_parameters(state),
        "epochs": records[-1]["epoch"] if records else 0,
        "steps": records[-1]["step"] if records else 0,
        "wall time": f"{records[-1].get('elapsed_s', 0) / 60:.1f} min" if records else "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or folders of them")
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--full", action="store_true", help="batch-1 evaluation (slow)")
    parser.add_argument("--no-eval", action="store_true", help="report the best valid metric")
    args = parser.parse_args()
    runs = []
    for path in args.runs:
        runs += (
            [path]
            if (path / "config.yaml").exists()
            else sorted(p for p in path.iterdir() if (p / "config.yaml").exists())
        )
    rows = [run_row(run, args.split, args.full, not args.no_eval) for run in runs]
    header = ["run", "recipe", "metric", "published", "ours", "measured on", "params"]
    header += ["epochs", "steps", "wall time", "source"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = []
        for key in header:
            value = row[key]
            if key == "params":
                value = f"{value / 1e6:.2f}M"
            elif isinstance(value, float):
                value = "-" if value != value else f"{value:.3f}"
            cells.append(str(value))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
