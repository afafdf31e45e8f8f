"""Collect finished runs into a markdown table: the published number beside ours.

    python scripts/reproduce.py runs/ [--split test] [--batched] [--mc K] [--no-eval]

Each run directory (holding ``config.yaml`` and ``checkpoints/``) is matched to its recipe
by the config file it was started from (``origin.json``). Our number is the best
checkpoint's metric on ``--split``, a language model's scored the papers' way: one column
(batch 1) with the state carried through the split. ``--batched`` uses the config's
``data.eval_batch_size`` instead (faster, slightly worse), ``--mc K`` adds MC dropout over K
passes as the RHN code's ``evaluate_mc``, ``--no-eval`` reports the best validation metric
of the training log. The ``protocol`` column says which of these each number is; ``epochs``,
``steps`` and ``wall time`` are those of the scored checkpoint. The published (test) number
stands beside a run only when it is scored on the test split and was trained on the recipe
as it is: overrides that change the run (``--set``, kept in ``origin.json``), and settings
where the config it was trained with differs from the recipe's file (``--recipes``, this
checkout's ``configs/`` by default: an edited copy, a recipe edited since), are listed in
``changes`` and blank the published number. A run that cannot be scored (no checkpoint yet,
missing data) is skipped with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from rhn.tasks.cli import EXPECTED_ERRORS
from rhn.tasks.lm_scoring import McProtocolError
from rhn.train.checkpoint import load_checkpoint
from rhn.train.config import load_config
from rhn.train.evaluate import evaluate_checkpoint, resolve_checkpoint
from rhn.train.logging import read_metrics

# recipe (config file stem) → (metric, published test value, source)
PUBLISHED: dict[str, tuple[str, float, str]] = {
    "ptb_rhn_d10": ("ppl", 65.4, "Zilly et al. 2017, Table 3 (67.9 valid)"),
    "ptb_rhn_depth01": ("ppl", 90.6, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth02": ("ppl", 75.1, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth03": ("ppl", 70.6, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth04": ("ppl", 68.6, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth05": ("ppl", 67.7, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth06": ("ppl", 66.6, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth07": ("ppl", 66.4, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth08": ("ppl", 66.1, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth09": ("ppl", 66.0, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "ptb_rhn_depth10": ("ppl", 66.0, "Zilly et al. 2017, PTB depth sweep (official README)"),
    "enwik8_rhn_d10": ("bpc", 1.27, "Zilly et al. 2017"),
    "text8_rhn_d10": ("bpc", 1.27, "Zilly et al. 2017"),
    "kim_small": ("ppl", 92.3, "Kim et al. 2016, LSTM-Char-Small"),
    "kim_large": ("ppl", 78.9, "Kim et al. 2016, LSTM-Char-Large"),
    "ptb_lstm_zaremba_small": ("ppl", 115.0, "Zaremba et al. 2014, official code (small)"),
    "mnist_conv_highway_w16": ("acc", 0.9943, "Srivastava et al. 2015 (best of runs; mean 99.4)"),
    "mnist_conv_highway_w16_1h": ("acc", 0.9943, "Srivastava et al. 2015 (in 300 epochs)"),
    "mnist_conv_highway_w32": ("acc", 0.9955, "Srivastava et al. 2015"),
    "cifar10_highway_a": ("acc", 0.8918, "Srivastava et al. 2015"),
    "cifar10_highway_b": ("acc", 0.9240, "Srivastava et al. 2015 (augmented)"),
    "cifar10_highway_c": ("acc", 0.9120, "Srivastava et al. 2015"),
    "cifar100_highway_b": ("acc", 0.6776, "Srivastava et al. 2015"),
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


LM_TASKS = ("word_lm", "char_lm", "char_aware_lm")


def protocol_options(task: str, batched: bool, mc: int) -> tuple[dict[str, object], str]:
    """The evaluation options of a run of ``task`` and the protocol's name for the table."""
    if task not in LM_TASKS:
        return {}, "whole split"
    options: dict[str, object] = {} if batched else {"batch_size": 1}
    name = "batched" if batched else "batch 1"
    if mc:
        options.update(mc_samples=mc, mc_protocol="pass")
        name += f", MC dropout {mc} passes (evaluate_mc)"
    return options, name


# Settings that leave a run's result as it is, given with --set or in a config file: where it
# ran and how much it printed, and where its data was read from (data.num_proc: the same ids
# in as many processes).
NEUTRAL_KEYS = ("train.progress", "train.device", "train.log_every", "train.checkpoint_every")
NEUTRAL_KEYS += ("data.path", "data.data_dir", "data.num_proc")
RECIPES = Path(__file__).resolve().parents[1] / "configs"


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config's values by dotted key (``optim.schedule.name``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_differences(recipe: Path, trained: dict[str, Any]) -> list[str]:
    """Where the config a run's checkpoint was trained with differs from the recipe file
    (its ``base:`` merged, defaults filled): a run of an edited copy, or of a recipe edited
    since, is not a run of the recipe as published. Keys only one side has (a version of
    this library that lacked a setting) are not compared."""
    published, ran = _flat(load_config(recipe).to_dict()), _flat(trained)
    return [
        f"{key}: {published[key]!r} → {ran[key]!r} (config)"
        for key in published
        if key in ran and key not in NEUTRAL_KEYS and published[key] != ran[key]
    ]


def _override_key(override: str) -> str:
    """The dotted key a ``--set key=value`` override sets."""
    return override.split("=", 1)[0].strip()


def invocations(origin: dict[str, Any]) -> list[dict[str, Any]]:
    """The commands that trained a run, first first (an origin.json from before
    ``invocations`` was recorded is one command)."""
    return origin.get("invocations") or [origin]


def changes(origin: dict[str, Any]) -> list[str]:
    """The ``--set`` overrides of a run that may change its result, given to any of the
    commands that trained it (``origin.json``'s ``invocations``), and a config file other
    than the one it was started from (a recipe's name, ``rhn-train ptb_rhn_d10``, and its
    file ``configs/ptb_rhn_d10.yaml`` are one; any other file is told by its path)."""
    commands = invocations(origin)
    first = _config_identity(commands[0].get("config_file"))
    found: list[str] = []
    for inv in commands:
        for o in map(str, inv.get("overrides") or []):
            if _override_key(o) not in NEUTRAL_KEYS and o not in found:
                found.append(o)
        if _config_identity(inv.get("config_file")) != first:
            found.append(f"config {inv.get('config_file')} from step {inv.get('step')}")
    return found


def _config_identity(config_file: object) -> str:
    """A recipe's name for ``X``, ``X.yaml`` and ``configs/X.yaml``; any other path as given."""
    path = Path(str(config_file))
    if path.parent in (Path("."), Path("configs")) and path.suffix in ("", ".yaml"):
        return path.stem
    return str(path)


def _differences_from_recipe(
    recipe: Path, trained: dict[str, Any], overrides: list[str]
) -> list[str]:
    """What :func:`recipe_differences` finds beyond ``overrides`` (listed already); a recipe
    that can't be read is itself the change (the run is scored, the number not shown)."""
    try:
        found = recipe_differences(recipe, trained)
    except (OSError, *EXPECTED_ERRORS) as err:
        return [f"recipe {recipe} not compared ({type(err).__name__}: {err})"]
    overridden = {_override_key(o) for o in overrides}
    return [d for d in found if d.split(":", 1)[0] not in overridden]


def run_row(
    run: Path,
    split: str,
    *,
    batched: bool = False,
    mc: int = 0,
    evaluate: bool = True,
    recipes: Path = RECIPES,
) -> dict[str, object]:
    origin = json.loads((run / "origin.json").read_text()) if (run / "origin.json").exists() else {}
    recipe = Path(invocations(origin)[0].get("config_file", "?")).stem  # what it began as
    config = yaml.safe_load((run / "config.yaml").read_text())
    records = read_metrics(run / "metrics.jsonl")
    checkpoint = resolve_checkpoint(run)
    ckpt = load_checkpoint(checkpoint)
    metric, published, source = PUBLISHED.get(recipe, ("", float("nan"), "—"))
    if evaluate:
        options, protocol = protocol_options(config["task"], batched, mc)
        try:
            ours = evaluate_checkpoint(checkpoint, split, "auto", **options)
        except McProtocolError as err:  # Kim et al.'s per-step dropout, or none at all
            options, protocol = protocol_options(config["task"], batched, 0)
            ours = evaluate_checkpoint(checkpoint, split, "auto", **options)
            protocol += f" (no MC: {err.reason})"
        metric = metric or next(m for m in ("ppl", "bpc", "acc") if m in ours)
        value, where, step = ours[metric], split, ckpt["step"]
    else:
        if not records:
            raise ValueError("no evaluation logged yet (metrics.jsonl is empty); drop --no-eval")
        metric = metric or next(m for m in ("ppl", "bpc", "acc") if m in records[-1])
        best = max if metric == "acc" else min
        logged = [r for r in records if metric in r]
        top = best(logged, key=lambda r: r[metric])
        value, where, protocol, step = top[metric], "best valid", "training log", top["step"]
    changed = changes(origin)
    if recipe in PUBLISHED:
        changed += _differences_from_recipe(recipes / f"{recipe}.yaml", ckpt["config"], changed)
    if changed or where != "test":
        published = float("nan")  # not the published recipe's test number
    at = next((r for r in reversed(records) if r["step"] == step), None)
    return {
        "run": run.name,
        "recipe": recipe,
        "task": config["task"],
        "metric": metric,
        "published": published,
        "source": source,
        "ours": value,
        "measured on": where,
        "protocol": protocol,
        "params": count_parameters(ckpt["model"]),
        "epochs": at["epoch"] if at else "-",
        "steps": step,
        "wall time": f"{at.get('elapsed_s', 0) / 60:.1f} min" if at else "-",
        "changes": ", ".join(changed) or "—",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or folders of them")
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument(
        "--batched", action="store_true", help="data.eval_batch_size columns, not batch 1"
    )
    parser.add_argument("--mc", type=int, default=0, metavar="K", help="MC dropout passes")
    parser.add_argument("--no-eval", action="store_true", help="report the best valid metric")
    parser.add_argument(
        "--recipes",
        type=Path,
        default=RECIPES,
        help="the folder of the published recipes' config files (default: this checkout's)",
    )
    args = parser.parse_args()
    if not args.recipes.is_dir():  # else every run would go uncompared, in silence
        parser.error(f"--recipes {args.recipes} is not a folder of recipe config files")
    if args.mc < 0:
        parser.error(f"--mc must be an integer >= 0, got {args.mc}")
    runs = []
    for path in args.runs:
        if not path.is_dir():
            parser.error(f"{path} is not a run directory or a folder of them")
        runs += (
            [path]
            if (path / "config.yaml").exists()
            else sorted(p for p in path.iterdir() if (p / "config.yaml").exists())
        )
    rows = []
    for run in runs:
        try:
            row = run_row(
                run,
                args.split,
                batched=args.batched,
                mc=args.mc,
                evaluate=not args.no_eval,
                recipes=args.recipes,
            )
        except (*EXPECTED_ERRORS, OSError, ValueError, KeyError, StopIteration) as err:
            print(f"skipped {run}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        rows.append(row)
    if not rows:
        print(
            f"error: no run under {', '.join(map(str, args.runs))} could be scored", file=sys.stderr
        )
        sys.exit(2)
    header = ["run", "recipe", "metric", "published", "ours", "measured on", "protocol"]
    header += ["params"]
    header += ["epochs", "steps", "wall time", "changes", "source"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = []
        for key in header:
            value = row[key]
            if key == "params":
                value = f"{value / 1e6:.2f}M"
            elif isinstance(value, float):
                # Accuracy to 4 digits: 99.43 % and 99.46 % both print as 0.994 at 3.
                digits = 4 if row["metric"] == "acc" else 3
                value = "-" if value != value else f"{value:.{digits}f}"
            cells.append(str(value))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
