"""Command-line entry points: ``rhn-train``, ``rhn-eval``, ``rhn-sample`` and ``rhn-export``."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from rhn.data.text_file import DataFileError
from rhn.tasks.language_model import evaluate_text, sample_stream
from rhn.tasks.lm_scoring import MC_PROTOCOLS, McProtocolError, McRejectedError
from rhn.train.checkpoint import CheckpointError
from rhn.train.config import load_config
from rhn.train.evaluate import (
    EXPORT_KEYS,
    evaluate_checkpoint,
    export_checkpoint,
    is_export,
    read_export_header,
    resolve_checkpoint,
)
from rhn.train.loop import RunDirError, TrainingDivergedError, train
from rhn.train.recipes import recipe_names
from rhn.train.schema import DEVICE_NAMES, ConfigError, is_device_name
from rhn.train.seeding import SEEDS, is_seed

# What every command that reads a model takes, as resolve_checkpoint and load_model read it.
CHECKPOINT_HELP = (
    "a run directory (its best.pt, else last.pt), a .pt checkpoint or an rhn-export "
    ".safetensors file"
)

# What a user can cause and fix: reported in one line, without a traceback.
EXPECTED_ERRORS = (
    ConfigError,
    CheckpointError,
    RunDirError,
    TrainingDivergedError,
    DataFileError,
    McRejectedError,
    McProtocolError,
)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else the one-line usage error."""

    def parse(text: str) -> int:
        value = int(text) if text.lstrip("-").isdigit() else None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _number_where(accepts: Callable[[float], bool], allowed: str) -> Callable[[str], float]:
    """An argparse type: a number that ``accepts`` (never NaN), else the one-line usage error
    naming what is ``allowed``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isnan(value) or not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


_temperature = _number_where(
    lambda t: math.isfinite(t) and t >= 0, "a finite number >= 0 (0 = greedy)"
)
_top_p = _number_where(lambda p: 0 < p <= 1, "a number in (0, 1]")


def _seed(text: str) -> int:
    """An argparse type: a seed the runs can use (torch refuses one beyond 64 bits)."""
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or not is_seed(value):
        raise argparse.ArgumentTypeError(f"must be {SEEDS}, got {text!r}")
    return value


def _device(text: str) -> str:
    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"must be {DEVICE_NAMES}, got {text!r}")
    return text


def _fail(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def _warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """``warnings.formatwarning`` for the commands: one line, like their errors, without the
    library file and source line a warning names by default."""
    return f"warning: {message}\n"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line, like the commands' other errors (argparse
    prints the whole usage first); the exit status stays 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser_for(prog: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of console command ``prog``."""
    return _OneLineParser(prog=prog, description=description)


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """A console command's entry point: its warnings are printed as one line each (only
    their format changes: filters, ``-W error`` and callers recording them still apply), and
    Ctrl-C is one line with the shell's status, 130, not a traceback. (rhn-train and
    rhn-depth-study catch it themselves, to save first.)"""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        with warnings.catch_warnings():
            warnings.formatwarning = _warning_line
            try:
                return main(argv)
            except KeyboardInterrupt:
                print("stopped: interrupted", file=sys.stderr)
                return 128 + signal.SIGINT

    return run


@command
def train_main(argv: list[str] | None = None) -> int:
    parser = parser_for("rhn-train", "Train (or resume) a run from a YAML config.")
    parser.epilog = "recipes installed with rhn (a CONFIG by name): " + ", ".join(recipe_names())
    parser.add_argument(
        "config", metavar="CONFIG",
        help="a YAML config file, or a recipe's name (ptb_rhn_d10): the files of configs/",
    )  # fmt: skip
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


@command
def eval_main(argv: list[str] | None = None) -> int:
    parser = parser_for("rhn-eval", "Evaluate a run's checkpoint; prints one JSON line.")
    parser.add_argument("path", help=CHECKPOINT_HELP)
    scored = parser.add_mutually_exclusive_group()
    scored.add_argument("--split", choices=["valid", "test"], help="default: valid")
    scored.add_argument(
        "--text", metavar="FILE", type=Path,
        help="score a language model on this text file instead (read as its corpus's "
        "files, batch size 1 unless given)",
    )  # fmt: skip
    parser.add_argument(
        "--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N or mps "
        "(default: %(default)s)"
    )  # fmt: skip
    parser.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        help="evaluation columns (1 = the papers' full evaluation; default: the run's "
        "data.eval_batch_size)",
    )
    parser.add_argument(
        "--mc",
        type=_int_at_least(0),
        default=0,
        metavar="K",
        help="MC dropout: average K dropout masks (default: 0, none)",
    )
    parser.add_argument(
        "--mc-protocol",
        choices=MC_PROTOCOLS,
        default="pass",
        help="pass: the RHN code's evaluate_mc (one mask set per pass over the split, passes "
        "above 500 ppl rejected, probabilities averaged and clipped); window: fresh masks "
        "per window (not the paper's); default: %(default)s",
    )
    parser.add_argument(
        "--mc-seed", type=_seed, default=0, help="seed of the first MC pass (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    options: dict[str, object] = {"progress": True}
    if args.batch_size:
        options["batch_size"] = args.batch_size
    if args.mc:
        options.update(mc_samples=args.mc, mc_protocol=args.mc_protocol, mc_seed=args.mc_seed)
    try:
        path = resolve_checkpoint(Path(args.path))
        if args.text is None:
            metrics = evaluate_checkpoint(path, args.split or "valid", args.device, **options)
        else:
            metrics = evaluate_text(path, args.text, args.device, **options)
    except EXPECTED_ERRORS as err:
        return _fail(err)
    print(json.dumps(metrics))
    return 0


@command
def sample_main(argv: list[str] | None = None) -> int:
    parser = parser_for("rhn-sample", "Generate text with a trained language model.")
    parser.add_argument("path", help=CHECKPOINT_HELP)
    parser.add_argument(
        "--prompt",
        help="text to continue (default: a line break; a space for characters without one)",
    )
    parser.add_argument(
        "--length", type=_int_at_least(1), default=200,
        help="tokens to generate (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--temperature", type=_temperature, default=1.0,
        help="0 = greedy (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--top-k", type=_int_at_least(1), default=None,
        help="draw from the K most probable tokens only (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--top-p", type=_top_p, default=None,
        help="nucleus sampling: from the most probable tokens that hold this much of the "
        "probability (default: all)",
    )  # fmt: skip
    parser.add_argument("--seed", type=_seed, default=0, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        path = resolve_checkpoint(Path(args.path))
        pieces = sample_stream(
            path, args.prompt, args.length, args.temperature, args.seed,
            top_k=args.top_k, top_p=args.top_p,
        )  # fmt: skip
    except (*EXPECTED_ERRORS, ValueError) as err:
        return _fail(err)
    try:
        try:
            for piece in pieces:  # shown as drawn: a long sample is read while it is made
                sys.stdout.write(piece)
                sys.stdout.flush()
        finally:
            print(flush=True)  # the line ends, Ctrl-C or not, before "stopped: ..."
    except BrokenPipeError:  # `rhn-sample RUN | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python's exit flush must not fail)
    return 0


def _is_rhn_export(path: Path) -> bool:
    """Whether ``path`` is a safetensors file written by rhn-export (its header holds the
    run's config): another safetensors file is someone's model."""
    try:
        return EXPORT_KEYS[0] in read_export_header(path)
    except (CheckpointError, ValueError):
        return False


def _first_non_directory_above(path: Path) -> Path | None:
    """The nearest existing folder-to-be above ``path`` that is a file, if there is one."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


@command
def export_main(argv: list[str] | None = None) -> int:
    parser = parser_for(
        "rhn-export",
        "Write a checkpoint's weights as safetensors, with the config, vocabulary and step "
        "in its header: rhn-eval, rhn-sample and rhn.train.evaluate.load_model read it alone.",
    )
    parser.add_argument("path", help=CHECKPOINT_HELP)
    parser.add_argument("output", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.is_dir():
        return _fail(ValueError(f"output {output} is a directory; name the .safetensors file"))
    from safetensors import SafetensorError

    try:
        checkpoint = resolve_checkpoint(Path(args.path))
        same = output.exists() and output.samefile(checkpoint) and not is_export(checkpoint)
        if output.suffix == ".pt" or same:
            # It would replace a checkpoint (the one read, perhaps) with a weights file.
            return _fail(ValueError(f"output {output} is a checkpoint; name a .safetensors file"))
        if output.exists() and not _is_rhn_export(output):
            # A run's metrics.jsonl or config.yaml named by mistake, or a downloaded model:
            # replacing it loses what was saved (a run's resume). Only an export is replaced.
            return _fail(
                ValueError(
                    f"output {output} exists and is not an rhn-export file; it is kept "
                    "(name a new file, or an earlier export to replace)"
                )
            )
        blocker = _first_non_directory_above(output)
        if blocker is not None:
            return _fail(ValueError(f"could not write {output}: {blocker} is not a directory"))
        export_checkpoint(checkpoint, output)
    except EXPECTED_ERRORS as err:
        return _fail(err)
    except (OSError, SafetensorError) as err:  # a read-only place, a full disk
        return _fail(ValueError(f"could not write {output}: {getattr(err, 'strerror', 0) or err}"))
    return 0
