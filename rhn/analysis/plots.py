"""The papers' figures, drawn with matplotlib (headless ``Agg`` backend).

Every function returns the ``Figure``, for TensorBoard's ``add_figure`` and to be saved with
:data:`SAVEFIG` (the tasks write it atomically: ``rhn.data.atomic_file.atomic_save_figure``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Curve = Sequence[tuple[float, float]]  # (epoch, value)


SAVEFIG = {"dpi": 120, "bbox_inches": "tight"}  # how every figure here is saved


def depth_study_figure(curves: Mapping[tuple[int, str], Curve]) -> Figure:
    """Figure 1 of Srivastava et al. (2015): one panel per depth, the best plain and the
    best highway run's training cross-entropy (log scale) against epochs."""
    if not curves:
        raise ValueError("depth_study_figure needs at least one (depth, block) curve, got none")
    depths = sorted({depth for depth, _ in curves})
    fig, axes = plt.subplots(1, len(depths), figsize=(3.6 * len(depths), 3.2), squeeze=False)
    styles = {"plain": ("tab:blue", "--"), "highway": ("tab:red", "-")}
    for ax, depth in zip(axes[0], depths, strict=True):
        for block, (color, line) in styles.items():
            curve = curves.get((depth, block))
            if curve:
                epochs, values = zip(*curve, strict=True)
                ax.plot(epochs, values, line, color=color, label=block)
        ax.set_yscale("log")
        ax.set_title(f"{depth} layers")
        ax.set_xlabel("epoch")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("training cross-entropy")
    # In the first panel that drew a curve (every trial of a depth may have diverged).
    drawn = next((ax for ax in axes[0] if ax.get_legend_handles_labels()[0]), None)
    if drawn is not None:
        drawn.legend()
    fig.tight_layout()
    return fig


def gate_figure(panels: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """Figure 2 of Srivastava et al. (2015): heatmaps of ``(units, layers)`` matrices drawn
    as the paper's, whose "highway layers (y-axis) consist of 50 blocks (x-axis)": one row
    per layer, the first (1) at the top, one column per unit (or channel) — e.g.
    transform-gate biases, mean gate activity, one example's gates and block outputs."""
    if not panels:
        raise ValueError("gate_figure needs at least one (units, layers) panel, got none")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.0), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels.items(), strict=True):
        rows = np.asarray(values).T  # (layers, units)
        extent = (-0.5, rows.shape[1] - 0.5, rows.shape[0] + 0.5, 0.5)  # layers from 1
        image = ax.imshow(
            rows, aspect="auto", interpolation="nearest", cmap="viridis", extent=extent
        )
        ax.set_title(name)
        ax.set_xlabel("unit / channel")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=ax, fraction=0.046)
    axes[0][0].set_ylabel("layer")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def lesion_figure(errors: Sequence[float], baseline: float, title: str = "") -> Figure:
    """Lesioning (Srivastava et al. 2015, Figure 4): the error with one layer's transform
    gates closed, for each layer, against the unlesioned net's error."""
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    layers = np.arange(1, len(errors) + 1)
    ax.plot(layers, errors, "o-", color="tab:red", label="layer lesioned")
    ax.axhline(baseline, color="gray", linestyle="--", label="no lesion")
    ax.set_xlabel("lesioned layer")
    ax.set_ylabel("training-set error")
    finite = [e for e in (baseline, *errors) if math.isfinite(e)]  # a NaN has no height
    ax.set_ylim(0, max(finite, default=0.0) * 1.15 or 1.0)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
