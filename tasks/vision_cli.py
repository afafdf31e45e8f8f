"""Command-line entry points of the vision experiments: the depth study, the gate
analyses and lesioning (``scripts/depth_study.py``, ``analyze_gates.py``, ``lesion.py``)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from rhn.tasks.cli import (
    CHECKPOINT_HELP,
    EXPECTED_ERRORS,
    _device,
    _fail,
    _int_at_least,
    command,
    parser_for,
)
from rhn.tasks.depth_study import StudyInterruptedError, load_study, run_study, summary_table
from rhn.train.checkpoint import CheckpointError


@command
def depth_study_main(argv: list[str] | None = None) -> int:
    parser = parser_for(
        "rhn-depth-study",
        "Run (or continue) the plain-vs-highway depth study on MNIST (Figure 1).",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="study YAML, or an installed study's name (mnist_depth; default: the paper's "
        "study, built in, which configs/studies/mnist_depth.yaml writes out)",
    )
    parser.add_argument("--out", required=True, help="study directory (resumed if it exists)")
    parser.add_argument(
        "--workers",
        type=_int_at_least(1),
        default=1,
        help="trials run in parallel, as separate processes (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a study value (repeatable), e.g. --set trials=3 or --set device=cuda",
    )
    args = parser.parse_args(argv)
    try:
        study = load_study(args.config, args.overrides)
        records = run_study(study, args.out, workers=args.workers)
    except (*EXPECTED_ERRORS, ValueError) as err:
        return _fail(err)
    except (StudyInterruptedError, KeyboardInterrupt) as err:
        # The shell's convention, as rhn-train: 128 + the signal (SIGINT 130, SIGTERM 143).
        print(f"stopped: {str(err) or 'interrupted'}", file=sys.stderr)
        number = getattr(err, "signal_number", None) or signal.SIGINT
        return 128 + number
    print(summary_table(records))
    print(f"figure: {Path(args.out) / 'figure1.png'}", file=sys.stderr)
    return 0


def _analysis_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = parser_for(prog, description)
    parser.add_argument("checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--out", help="output directory (default: <run>/analysis)")
    parser.add_argument(
        "--examples",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="the first N training images (default: all of them, as the paper)",
    )
    parser.add_argument(
        "--device",
        type=_device,
        default="cpu",
        help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)",
    )
    return parser


def _run_analysis(action: Callable[[], str]) -> int:
    try:
        report = action()
    except (*EXPECTED_ERRORS, CheckpointError, ValueError) as err:
        return _fail(err)
    except OSError as err:  # an output that can't be written: a full disk, a folder there
        where = f" {err.filename}" if err.filename else ""
        return _fail(ValueError(f"could not write{where}: {err.strerror or err}"))
    print(report)
    return 0


@command
def analyze_gates_main(argv: list[str] | None = None) -> int:
    from rhn.tasks.gate_analysis import analyze_gates

    parser = _analysis_parser(
        "rhn-analyze-gates",
        "Figure 2: transform-gate biases, mean gate activity, one example's gates and block "
        "outputs, as PNG heatmaps and TensorBoard images.",
    )
    parser.add_argument(
        "--example",
        type=_int_at_least(0),
        default=None,
        metavar="INDEX",
        help="the training image whose gates and outputs are drawn (default: one drawn at "
        "random, the same on every run)",
    )
    args = parser.parse_args(argv)
    return _run_analysis(
        lambda: "\n".join(
            map(
                str,
                analyze_gates(
                    Path(args.checkpoint), args.out, args.examples, args.device, args.example
                ),
            )
        )
    )


@command
def lesion_main(argv: list[str] | None = None) -> int:
    from rhn.tasks.gate_analysis import lesion

    parser = _analysis_parser(
        "rhn-lesion",
        "Close each layer's transform gates in turn (T = 0, pure carry) and plot the "
        "training-set error against the unlesioned net's.",
    )
    args = parser.parse_args(argv)
    return _run_analysis(
        lambda: lesion(Path(args.checkpoint), args.out, args.examples, args.device)
    )
