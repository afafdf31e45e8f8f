"""The image classifiers of the Highway Networks papers: what they share and how to build one.

Two families (Srivastava, Greff & Schmidhuber 2015, arXiv 1505.00387 / 1507.06228):
  * ``mlp`` — the depth study's fully connected nets (:mod:`rhn.models.highway_mlp`);
  * ``mnist_conv``, ``highway_a``, ``highway_b``, ``highway_c`` — convolutional highway
    nets (:mod:`rhn.models.conv_highway_net`).
Each has a plain counterpart (``block: plain``): every highway layer replaced by a plain
layer of the same shape, for the plain-versus-highway comparisons.

Every classifier maps images ``(N, C, H, W)`` to logits ``(N, classes)`` and can trace a
forward pass for the gate analyses: ``forward(x, trace=True)`` also returns each block's
transform gate T (highway blocks) and output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rhn.models.config_fields import check_field_types
from rhn.models.registry import ModelMeta, meta_value, register_model
from rhn.nn.activation import INIT_GAIN, check_activation
from rhn.nn.highway import GatedHighwayBase

Arch = Literal["mlp", "mnist_conv", "highway_a", "highway_b", "highway_c"]


def _default(cls: type, name: str) -> object:
    return next(f.default for f in fields(cls) if f.name == name)


@dataclass
class ImageClassifierConfig:
    """The ``model`` section of image-classification configs.

    ``depth`` and ``width`` shape the ``mlp`` (layers before the softmax; units per layer,
    default 50 highway / 71 plain — equal parameters per layer) and ``width`` the
    ``mnist_conv`` net (16 or 32 in the paper). ``gate_bias`` null picks a default that
    lets the stack train: the official −1 (MNIST conv) or −2 (CIFAR), and for the MLPs a
    depth-dependent bias (:func:`rhn.models.highway_mlp.default_gate_bias`).
    """

    arch: Arch = "mlp"
    block: Literal["highway", "plain"] = "highway"
    depth: int = 10
    width: int | None = None
    activation: str = "relu"
    gate_bias: float | None = None
    coupled: bool = True
    dropout: bool = True  # the conv nets' published dropout (the MLPs have none)
    channels_last: bool = True  # the conv nets' NHWC memory order (faster on CPU)
    # The authors' Caffe details (conv nets): T weights He normal like H's ("xavier" in
    # their Caffe fork); classifier N(0, std²) (0.1 MNIST, 0.05 CIFAR) with decay × 10; the
    # CIFAR nets' first convolution N(0, 1). Null / 1 / uniform: this library's defaults.
    gate_init: Literal["uniform", "he_normal"] = "uniform"
    classifier_init_std: float | None = None
    classifier_decay_mult: float = 1.0
    first_conv_init_std: float | None = None

    def __post_init__(self) -> None:
        check_field_types(self)  # the YAML loader checks them; Python callers too
        check_activation(self.activation)
        if self.depth < 2:
            raise ValueError(
                f"model.depth must be >= 2 (a first layer and a block), got {self.depth}"
            )
        if self.width is not None and self.width < 1:
            raise ValueError(f"model.width must be null or >= 1, got {self.width}")
        if self.depth != _default(type(self), "depth") and self.arch != "mlp":
            raise ValueError(
                f"model.depth applies to arch 'mlp' only; {self.arch!r} has its published "
                f"layers (leave depth unset)"
            )
        if self.width is not None and self.arch not in ("mlp", "mnist_conv"):
            raise ValueError(
                f"model.width applies to arch 'mlp' and 'mnist_conv' only; {self.arch!r} has "
                f"the published widths (set it to null)"
            )
        for key in ("classifier_init_std", "first_conv_init_std"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"model.{key} must be null or a number > 0, got {value}")
        if not (math.isfinite(self.classifier_decay_mult) and self.classifier_decay_mult >= 0):
            raise ValueError(
                f"model.classifier_decay_mult must be a number >= 0, got "
                f"{self.classifier_decay_mult}"
            )
        caffe_defaults = {
            "gate_init": "uniform",
            "classifier_init_std": None,
            "classifier_decay_mult": 1.0,
            "first_conv_init_std": None,
        }
        changed = [k for k, default in caffe_defaults.items() if getattr(self, k) != default]
        if self.arch == "mlp" and changed:
            raise ValueError(
                f"model.{changed[0]} applies to the conv nets (arch mnist_conv, highway_a/b/c), "
                f"not arch 'mlp'"
            )
        # A plain net has no gate: a highway-only setting would be dropped unseen. (gate_init
        # is not among them: a plain variant inherits its highway base's Caffe fillers.)
        highway_only = {"gate_bias": self.gate_bias is not None, "coupled": not self.coupled}
        changed = [key for key, off_default in highway_only.items() if off_default]
        if self.block == "plain" and changed:
            raise ValueError(
                f"model.{changed[0]} applies to block 'highway' (a plain net has no transform "
                f"gate); drop it or set model.block: highway"
            )
        if self.gate_bias is not None and not math.isfinite(self.gate_bias):
            raise ValueError(
                f"model.gate_bias must be null or a finite number, got {self.gate_bias}"
            )


@dataclass
class Trace:
    """One forward pass seen block by block (blocks = the repeated highway/plain layers).

    ``gates[i]`` and ``outputs[i]`` are ``(N, F)`` for dense blocks, ``(N, C, H, W)`` for
    convolutional ones; ``gates`` is empty for plain nets.
    """

    gates: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)


class ImageClassifier(nn.Module):
    """Base of the image classifiers: the analysis interface they all provide."""

    def highway_layers(self) -> list[GatedHighwayBase]:
        """The highway layers, input to output (empty for a plain net)."""
        return [m for m in self.modules() if isinstance(m, GatedHighwayBase)]

    def forward(
        self, x: torch.Tensor, *, trace: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Trace]:
        raise NotImplementedError


@torch.no_grad()
def classification_metrics(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> dict[str, float]:
    """Mean cross-entropy, accuracy and error of ``model`` (in eval mode) on ``images``.

    Batches are moved to the model's device one at a time, so the set may stay on the CPU.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        logits = model(x).float()
        total += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(-1) == y).sum())
    model.train(was_training)
    n = max(len(images), 1)
    return {"loss": total / n, "acc": correct / n, "error": 1 - correct / n}


def he_init_(layer: nn.Linear | nn.Conv2d, activation: str) -> None:
    """He normal weights for a plain layer feeding ``activation``; zero bias."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.normal_(0.0, INIT_GAIN[activation] / math.sqrt(fan_in))
        if layer.bias is not None:
            layer.bias.zero_()


def build_image_classifier(
    cfg: ImageClassifierConfig, image_shape: tuple[int, int, int], num_classes: int
) -> ImageClassifier:
    """The net ``cfg`` describes, for images ``(C, H, W)`` and ``num_classes`` classes."""
    # Imported here: both modules subclass ImageClassifier from this one.
    from rhn.models.conv_highway_net import ConvHighwayNet
    from rhn.models.highway_mlp import HighwayMLP

    if cfg.arch == "mlp":
        return HighwayMLP(
            math.prod(image_shape),
            num_classes,
            depth=cfg.depth,
            block=cfg.block,
            width=cfg.width,
            activation=cfg.activation,
            gate_bias=cfg.gate_bias,
            coupled=cfg.coupled,
        )
    return ConvHighwayNet(
        cfg.arch,
        image_shape,
        num_classes,
        block=cfg.block,
        width=cfg.width,
        activation=cfg.activation,
        gate_bias=cfg.gate_bias,
        coupled=cfg.coupled,
        dropout=cfg.dropout,
        channels_last=cfg.channels_last,
        gate_init=cfg.gate_init,
        classifier_init_std=cfg.classifier_init_std,
        first_conv_init_std=cfg.first_conv_init_std,
        classifier_decay_mult=cfg.classifier_decay_mult,
    )


@register_model(ImageClassifierConfig)
def _build(cfg: ImageClassifierConfig, meta: ModelMeta) -> ImageClassifier:
    shape = meta_value(meta, "image_shape", (list, tuple), cfg)  # a checkpoint's: a list
    if len(shape) != 3 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(f"model metadata 'image_shape' must be [C, H, W] > 0, got {shape}")
    classes = meta_value(meta, "num_classes", int, cfg)
    if classes < 2:
        raise ValueError(f"model metadata 'num_classes' must be >= 2, got {classes}")
    return build_image_classifier(cfg, tuple(shape), classes)
