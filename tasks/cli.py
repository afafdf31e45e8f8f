"""Command-line entry points: ``rhn-train``, ``rhn-eval``, ``rhn-sample`` and ``rhn-export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tasks  # noqa: F401  (registers every task)
from rhn.data.text_file import DataFileError
from rhn.train.checkpoint import CheckpointError
from rhn.train.config import load_config
from rhn.train.evaluate import evaluate_checkpoint, export_checkpoint, resolve_checkpoint
from rhn.train.loop import RunDirError, TrainingDivergedError, train
from rhn.train.schema import ConfigError
from tasks.language_model import sample_text

# What a user can cause and fix: reported in one line, without a traceback.
EXPECTED_ERRORS = (
    ConfigError,
    CheckpointError,
    RunDirError,
    TrainingDivergedError,
    DataFileError,
)


def _fail(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rhn-train", description="Train (or resume) a run from a YAML config."
    )
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("--run-dir", required=True, help="directory for checkpoints and logs")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set optim.lr=0.5",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="refuse to run if --run-dir already holds a run"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        origin = {"config_file": args.config, "overrides": args.overrides}
        result = train(config, args.run_dir, fresh=args.fresh, origin=origin)
    except EXPECTED_ERRORS as err:
        return _fail(err)
    if result.is_main:
        print(json.dumps({"status": result.status, "step": result.position.step, **result.metrics}))
    return result.exit_status  # 128 + signal when stopped by one (after saving)


def eval_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rhn-eval", description="Evaluate a run's checkpoint; prints one JSON line."
    )
    parser.add_argument("path", help="a run directory (its best.pt, else last.pt) or a .pt file")
    parser.add_argument("--split", choices=["valid", "test"], default="valid")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--batch-size", type=int, help="evaluation columns (1 = the papers' full evaluation)"
    )
    parser.add_argument(
        "--mc", type=int, default=0, metavar="K", help="MC dropout: average K dropout masks"
    )
    args = parser.parse_args(argv)
    options: dict[str, object] = {"progress": True}
    if args.batch_size:
        options["batch_size"] = args.batch_size
    if args.mc:
        options["mc_samples"] = args.mc
    try:
        path = resolve_checkpoint(Path(args.path))
        metrics = evaluate_checkpoint(path, args.split, args.device, **options)
    except EXPECTED_ERRORS as err:
        return _fail(err)
    print(json.dumps(metrics))
    return 0


def sample_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rhn-sample", description="Generate text with a trained language model."
    )
    parser.add_argument("path", help="a run directory or a .pt checkpoint")
    parser.add_argument("--prompt", default="\n", help="text to continue")
    parser.add_argument("--length", type=int, default=200, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = resolve_checkpoint(Path(args.path))
        text = sample_text(path, args.prompt, args.length, args.temperature, args.seed)
    except (*EXPECTED_ERRORS, ValueError) as err:
        return _fail(err)
    print(text)
    return 0


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rhn-export", description="Write a checkpoint's weights as safetensors."
    )
    parser.add_argument("path", help="a run directory or a .pt checkpoint")
    parser.add_argument("output", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    try:
        export_checkpoint(resolve_checkpoint(Path(args.path)), Path(args.output))
    except EXPECTED_ERRORS as err:
        return _fail(err)
    return 0
