"""Transform-gate statistics of a trained highway net (Srivastava et al. 2015, Figure 2).

For each highway layer ℓ and unit (or conv channel) u:

    bias[u, ℓ]            b_T of the unit: where its gate started and how it was trained
    mean_gate[u, ℓ]       mean of T over the examples (and a channel's positions)
    example_gate[u, ℓ]    T for one example
    example_output[u, ℓ]  the block's output y for that example

Matrices are ``(units, layers)``, one column per layer (the paper's figure draws them
transposed, a row per layer: :func:`rhn.analysis.plots.gate_figure`). Layers of
different widths (conv stages) are padded with NaN, drawn blank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rhn.models.image_classifier import ImageClassifier


@dataclass
class GateStats:
    bias: torch.Tensor
    mean_gate: torch.Tensor
    example_gate: torch.Tensor
    example_output: torch.Tensor

    def panels(self) -> dict[str, torch.Tensor]:
        return {
            "transform gate bias": self.bias,
            "mean transform gate": self.mean_gate,
            "transform gate (one example)": self.example_gate,
            "block output (one example)": self.example_output,
        }


def _per_unit(t: torch.Tensor) -> torch.Tensor:
    """``(N, F)`` or ``(N, C, H, W)`` → ``(N, units)``: conv channels averaged over positions."""
    return t.flatten(2).mean(-1) if t.dim() > 2 else t


def _columns(vectors: list[torch.Tensor]) -> torch.Tensor:
    """Per-layer vectors as the columns of one ``(units, layers)`` matrix, NaN-padded."""
    width = max(v.numel() for v in vectors)
    out = torch.full((width, len(vectors)), float("nan"))
    for layer, v in enumerate(vectors):
        out[: v.numel(), layer] = v.float().cpu()
    return out


@torch.no_grad()
def gate_statistics(
    model: ImageClassifier, images: torch.Tensor, *, example: int = 0, batch_size: int = 1000
) -> GateStats:
    """Gate biases, mean gate activity over ``images`` and one example's gates and outputs."""
    layers = model.highway_layers()
    if not layers:
        raise ValueError(f"{type(model).__name__} has no highway layers to analyse")
    n = len(images)
    if isinstance(example, bool) or not isinstance(example, int) or not 0 <= example < n:
        raise ValueError(
            f"example must index one of the {n} analysed images (0..{n - 1}), got {example!r}"
        )
    was_training = model.training
    model.eval()
    sums: list[torch.Tensor] | None = None
    for start in range(0, len(images), batch_size):
        _, trace = model(images[start : start + batch_size], trace=True)
        batch_sums = [_per_unit(t).sum(0) for t in trace.gates]
        sums = (
            batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums, strict=True)]
        )
    _, one = model(images[example : example + 1], trace=True)
    model.train(was_training)
    features = [layer.features for layer in layers]
    return GateStats(
        bias=_columns(
            [layer.bias[f : 2 * f].detach() for layer, f in zip(layers, features, strict=True)]
        ),
        mean_gate=_columns([s / len(images) for s in sums or []]),
        example_gate=_columns([_per_unit(t)[0] for t in one.gates]),
        example_output=_columns([_per_unit(y)[0] for y in one.outputs]),
    )
