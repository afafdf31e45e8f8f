"""Gate analyses and lesioning of a trained image-classification checkpoint.

Writes into ``<run>/analysis`` (or ``--out``): ``gates.png`` / ``lesion.png`` (the papers'
Figure 2 and lesioning plots), the numbers behind them (``gates.pt``, ``lesion.csv``) and
``tensorboard/gates`` and ``tensorboard/lesion`` with the same figures.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from rhn.analysis.gates import gate_statistics
from rhn.analysis.lesion import lesion_errors
from rhn.analysis.plots import SAVEFIG, gate_figure, lesion_figure
from rhn.data.atomic_file import atomic_open, atomic_save_figure
from rhn.models.image_classifier import ImageClassifier
from rhn.tasks.image_classification import ImageClassificationTask
from rhn.train.evaluate import Trained, load_model, resolve_checkpoint, with_task
from rhn.train.loop import resolve_device


def _load(path: Path, out: str | Path | None, device: str) -> tuple[Trained, Path]:
    resolve_device(device)  # a device this machine lacks: one line, before anything loads
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file; name a folder for the analysis")
    checkpoint = resolve_checkpoint(path)
    # The checkpoint alone says what it holds: checked before its data set is read (an LM's
    # corpus, say, that this machine may not have, or would download).
    loaded = load_model(checkpoint, device)
    if not issubclass(loaded.config.task_class, ImageClassificationTask):
        raise ValueError(
            f"{checkpoint} is a {loaded.config.task!r} run; gate analyses need an "
            f"image_classification run"
        )
    if not isinstance(loaded.model, ImageClassifier) or not loaded.model.highway_layers():
        raise ValueError(f"{checkpoint} holds a net without highway layers (model.block: plain?)")
    run_dir = (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
    out_dir = Path(out) if out else run_dir / "analysis"
    try:  # before the analysis runs, not after
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{out_dir}: can't make the analysis folder ({err.strerror})") from None
    return with_task(loaded, checkpoint), out_dir


def _add_figure(out_dir: Path, name: str, figure: object, step: int) -> None:
    """The figure in ``tensorboard/<name>``, replacing what an earlier run of this analysis
    logged at this step (a purge from ``step``, which would also drop the other analysis'
    figure, hence a folder each): a rerun is not a second image."""
    with SummaryWriter(str(out_dir / "tensorboard" / name), purge_step=step) as tb:
        tb.add_figure(name, figure, step)


def _describe(trained: Trained) -> str:
    m = trained.config.model
    name = f"{m.arch} {m.block}" + (f" depth {m.depth}" if m.arch == "mlp" else "")
    return f"{name} on {trained.config.data.dataset}, step {trained.step}"


def _check_examples(examples: int | None) -> None:
    """Refuse a count that slicing would misread, before the checkpoint and its data load.

    Checked here and not only by the CLIs: a negative count would slice from the end
    (``images[:-5]`` is all but five images) and zero would analyse nothing.
    """
    if examples is None:
        return
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ValueError(f"examples must be an integer >= 1 (or None, all), got {examples!r}")


def _training_examples(trained: Trained, examples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and labels the paper's analyses read — all of them ("all training
    examples", "the full training set") or the first ``examples`` — on the model's device."""
    train = trained.task.train_set
    return (
        train.images[:examples].to(trained.device),  # [:None]: all of them
        train.labels[:examples].to(trained.device),
    )


def _pick_example(example: int | None, count: int) -> int:
    """The paper's "single random training sample": drawn with a fixed seed, so a rerun
    shows the same one; or the index a user names (checked by ``gate_statistics``)."""
    if example is None:
        return int(torch.randint(count, (), generator=torch.Generator().manual_seed(0)))
    return example


def analyze_gates(
    path: Path,
    out: str | Path | None,
    examples: int | None,
    device: str,
    example: int | None = None,
) -> list[Path]:
    """Figure 2 for a checkpoint: gate biases, mean activity over ``examples`` training images
    (None: all), and the gates and block outputs of one of them (``example``, default a
    random one)."""
    _check_examples(examples)
    trained, out_dir = _load(path, out, device)
    images, _ = _training_examples(trained, examples)
    index = _pick_example(example, len(images))
    stats = gate_statistics(trained.model, images, example=index)
    panels = {k: v.numpy() for k, v in stats.panels().items()}
    figure = gate_figure(panels, f"{_describe(trained)}; example: training image {index}")
    atomic_save_figure(figure, out_dir / "gates.png", **SAVEFIG)
    with atomic_open(out_dir / "gates.pt", "wb") as f:
        saved = {k.replace(" ", "_"): v for k, v in stats.panels().items()}
        torch.save({**saved, "example_index": index, "examples": len(images)}, f)
    _add_figure(out_dir, "gates", figure, trained.step)
    return [out_dir / "gates.png", out_dir / "gates.pt"]


def lesion(path: Path, out: str | Path | None, examples: int | None, device: str) -> str:
    """Training-set error with each layer's gates closed, over ``examples`` training images
    (None: the full training set, as the paper); returns a Markdown table."""
    _check_examples(examples)
    trained, out_dir = _load(path, out, device)
    images, labels = _training_examples(trained, examples)
    baseline, errors = lesion_errors(trained.model, images, labels)
    figure = lesion_figure(errors, baseline, _describe(trained))
    atomic_save_figure(figure, out_dir / "lesion.png", **SAVEFIG)
    with atomic_open(out_dir / "lesion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "train_error"])
        writer.writerow(["none", baseline])
        writer.writerows((i + 1, e) for i, e in enumerate(errors))
    _add_figure(out_dir, "lesion", figure, trained.step)
    lines = [
        f"unlesioned training error {baseline:.4f} ({len(images)} images)",
        "",
        "| layer | error |",
        "|---|---|",
    ]
    lines += [f"| {i + 1} | {e:.4f} |" for i, e in enumerate(errors)]
    lines.append(f"\nfigure: {out_dir / 'lesion.png'}")
    return "\n".join(lines)
