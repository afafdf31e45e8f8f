"""Convolutional highway nets of "Training Very Deep Networks" (Srivastava et al. 2015, §3).

Each stage opens with a plain convolution that sets the width, followed by highway
convolutions at that width (``y = H(x)·T(x) + x·(1 − T(x))``, H and T 3 × 3 or 1 × 1
convolutions with "same" padding, H ReLU). Layers (the paper counts every conv and the
classifier):

    mnist_conv (10, width w; w = 16: 38,986 params, w = 32: 151,690 — published 39K / 151K)
        drop .2 · conv5×5 w (no pad) · 2 hw · maxpool 3/2 · drop .3 · 3 hw · maxpool 3/2 ·
        drop .4 · 3 hw · maxpool 2/2 · drop .5 · linear 9w → classes
    highway_b (19, Fitnet-4-like, 2,256,838 params for 10 classes — published 2.3M)
        drop .2 · conv 32 · 4 hw · pool · drop .2 · conv 80 · 5 hw · pool · drop .2 ·
        conv 128 · 5 hw · conv1×1 100 · global average pool · drop .2 · linear → classes
    highway_a (11, Fitnet-1-like, 225,078 params — published 236K)
        as highway_b with stages conv 16 · 2 hw, conv 32 · 2 hw, conv 64 · 2 hw
    highway_c (32, 1,239,932 params — published 1.25M)
        as highway_b with stages of conv + 9 hw alternating 3×3 and 1×1 kernels
        (3, 1, 3, 1, 3, 1, 3, 1, 3) at widths 32, 64, 82

``mnist_conv`` and ``highway_b`` follow the authors' released Caffe definitions (their
highway-networks repository: mnist-10layers and cifar10-19layers); Caffe rounds pooled
sizes up, hence ``ceil_mode`` (24 → 12 → 6 → 3). The paper describes A and C only by
depth, parameter count and (for C) the alternating kernels; their stage widths here are
reconstructions chosen to land near the published sizes.

``block: plain`` replaces every highway convolution with a plain convolution of the same
kernel and width, followed by the net's ``activation`` (half the parameters), for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rhn.models.image_classifier import ImageClassifier, Trace, he_init_
from rhn.nn.activation import get_activation
from rhn.nn.highway_conv import HighwayConv2d


@dataclass(frozen=True)
class Op:
    """One step of a structure: ``conv`` (plain, to ``width``), ``hw`` (a highway block at
    the current width), ``pool`` (max), ``gap`` (global average pool), ``drop``."""

    kind: str
    width: int = 0
    kernel: int = 3
    padding: int = 1
    stride: int = 2
    p: float = 0.0


def _stage(width: int, kernels: tuple[int, ...]) -> list[Op]:
    return [Op("conv", width), *(Op("hw", kernel=k) for k in kernels)]


def _cifar(stages: list[tuple[int, tuple[int, ...]]]) -> list[Op]:
    ops = [Op("drop", p=0.2)]
    for i, (width, kernels) in enumerate(stages):
        if i:
            ops += [Op("pool", kernel=2), Op("drop", p=0.2)]
        ops += _stage(width, kernels)
    return [*ops, Op("conv", 100, kernel=1, padding=0), Op("gap"), Op("drop", p=0.2)]


def structure(arch: str, width: int | None = None) -> list[Op]:
    """The layer sequence of ``arch`` (before the final linear classifier)."""
    if arch == "mnist_conv":
        w = width or 16
        return [
            Op("drop", p=0.2),
            Op("conv", w, kernel=5, padding=0),
            *(Op("hw"),) * 2,
            Op("pool", kernel=3),
            Op("drop", p=0.3),
            *(Op("hw"),) * 3,
            Op("pool", kernel=3),
            Op("drop", p=0.4),
            *(Op("hw"),) * 3,
            Op("pool", kernel=2),
            Op("drop", p=0.5),
        ]
    alternating = (3, 1, 3, 1, 3, 1, 3, 1, 3)
    stages = {
        "highway_a": [(16, (3, 3)), (32, (3, 3)), (64, (3, 3))],
        "highway_b": [(32, (3,) * 4), (80, (3,) * 5), (128, (3,) * 5)],
        "highway_c": [(32, alternating), (64, alternating), (82, alternating)],
    }
    if arch not in stages:
        raise ValueError(f"arch must be one of {['mnist_conv', *stages]}, got {arch!r}")
    return _cifar(stages[arch])


OFFICIAL_GATE_BIAS = {"mnist_conv": -1.0, "highway_a": -2.0, "highway_b": -2.0, "highway_c": -2.0}


class ConvHighwayNet(ImageClassifier):
    """A convolutional highway net (or its plain counterpart): images → logits.

    Args:
        arch: ``mnist_conv``, ``highway_a``, ``highway_b`` or ``highway_c``.
        image_shape: ``(C, H, W)`` of the input.
        num_classes: size of the logits.
        block: ``highway`` or ``plain``.
        width: the ``mnist_conv`` width (16 or 32 in the paper).
        activation: H's and the plain layers' nonlinearity (ReLU in the paper).
        gate_bias: initial transform-gate bias; None → the official −1 (MNIST) / −2 (CIFAR).
        coupled: carry gate 1 − T (True) or a free carry gate.
        dropout: apply the published dropout layers.
        channels_last: keep weights and activations in NHWC memory order, where oneDNN's
            convolutions run faster on CPU (15 % a step on one core for ``mnist_conv``;
            the numbers are the same up to float rounding).
        gate_init, classifier_init_std, first_conv_init_std, classifier_decay_mult: the
            authors' Caffe details (see :meth:`reset_parameters`); ``classifier_decay_mult``
            scales the weight decay of the classifier's weight (Caffe's ``decay_mult``).
    """

    def __init__(
        self,
        arch: str,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        block: str = "highway",
        width: int | None = None,
        activation: str = "relu",
        gate_bias: float | None = None,
        coupled: bool = True,
        dropout: bool = True,
        channels_last: bool = False,
        gate_init: str = "uniform",
        classifier_init_std: float | None = None,
        first_conv_init_std: float | None = None,
        classifier_decay_mult: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.classifier_init_std = classifier_init_std
        self.first_conv_init_std = first_conv_init_std
        self.classifier_decay_mult = classifier_decay_mult
        if block not in ("highway", "plain"):
            raise ValueError(f"block must be 'highway' or 'plain', got {block!r}")
        self.arch, self.block, self.activation = arch, block, activation
        self._act = get_activation(activation)
        self.gate_bias = OFFICIAL_GATE_BIAS.get(arch, -2.0) if gate_bias is None else gate_bias
        factory = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        channels = image_shape[0]
        for op in structure(arch, width):
            if op.kind == "conv":
                layers.append(
                    nn.Conv2d(channels, op.width, op.kernel, padding=op.padding, **factory)
                )
                channels = op.width
            elif op.kind == "hw" and block == "highway":
                layers.append(
                    HighwayConv2d(
                        channels,
                        op.kernel,
                        activation,
                        self.gate_bias,
                        coupled=coupled,
                        gate_init=gate_init,
                        **factory,
                    )
                )
            elif op.kind == "hw":
                layers.append(_PlainBlock(channels, op.kernel, activation, **factory))
            elif op.kind == "pool":
                layers.append(nn.MaxPool2d(op.kernel, op.stride, ceil_mode=True))
            elif op.kind == "gap":
                layers.append(nn.AdaptiveAvgPool2d(1))
            elif op.kind == "drop":
                layers.append(nn.Dropout(op.p if dropout else 0.0))
        self.layers = nn.ModuleList(layers)
        self.image_shape = tuple(image_shape)
        # Global average pooling takes any image size; without it the classifier's input
        # size is fixed by image_shape.
        self._any_size = any(isinstance(m, nn.AdaptiveAvgPool2d) for m in layers)
        try:
            with torch.no_grad():
                features = self._trunk(torch.zeros(1, *image_shape, **factory), None).numel()
        except RuntimeError as err:  # a kernel larger than what is left of the image
            raise ValueError(
                f"image_shape {self.image_shape} is too small for arch {arch!r}: "
                f"{str(err).splitlines()[0]}"
            ) from None
        self.classifier = nn.Linear(features, num_classes, **factory)
        self.reset_parameters()
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def reset_parameters(self) -> None:
        """Highway layers their own init; plain convolutions He normal, zero bias; the
        classifier torch's default.

        The authors' Caffe nets, as options: ``first_conv_init_std`` N(0, std²) for the
        first convolution (the CIFAR nets' is effectively std 1: Caffe ignored its
        ``value``); ``classifier_init_std`` N(0, std²) weights and a zero bias for the
        classifier (0.1 MNIST, 0.05 CIFAR); the gates' ``gate_init`` is the layers' own.
        """
        first_conv = next(m for m in self.layers if isinstance(m, nn.Conv2d))
        for layer in self.layers:
            if isinstance(layer, HighwayConv2d):
                layer.reset_parameters()
            elif isinstance(layer, _PlainBlock):
                he_init_(layer.conv, self.activation)
            elif isinstance(layer, nn.Conv2d):
                he_init_(layer, self.activation)
        with torch.no_grad():
            if self.first_conv_init_std is not None:
                first_conv.weight.normal_(0.0, self.first_conv_init_std)
            if self.classifier_init_std is None:
                self.classifier.reset_parameters()
            else:
                self.classifier.weight.normal_(0.0, self.classifier_init_std)
                self.classifier.bias.zero_()

    def decay_multipliers(self) -> dict[str, float]:
        """Parameter name → factor on the run's weight decay (Caffe's ``decay_mult``)."""
        if self.classifier_decay_mult == 1.0:
            return {}
        return {"classifier.weight": self.classifier_decay_mult}

    def _trunk(self, x: torch.Tensor, record: Trace | None) -> torch.Tensor:
        for layer in self.layers:
            if isinstance(layer, HighwayConv2d):
                x, t = layer(x, return_gates=True)
                if record is not None:
                    record.gates.append(t)
                    record.outputs.append(x)
            elif isinstance(layer, nn.Conv2d):
                x = self._act(layer(x))
            else:
                x = layer(x)
                if record is not None and isinstance(layer, _PlainBlock):
                    record.outputs.append(x)
        return x.flatten(1)

    def forward(
        self, x: torch.Tensor, *, trace: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Trace]:
        """``x`` ``(N, C, H, W)`` → logits ``(N, classes)`` (and the Trace if ``trace``)."""
        self._check_images(x)
        record = Trace() if trace else None
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.classifier(self._trunk(x, record))
        return (logits, record) if record is not None else logits

    def _check_images(self, x: torch.Tensor) -> None:
        c, h, w = self.image_shape
        fits = x.dim() == 4 and x.shape[1] == c and (self._any_size or x.shape[2:] == (h, w))
        if not fits:
            size = "any H, W" if self._any_size else f"H, W = {h}, {w}"
            raise ValueError(
                f"ConvHighwayNet ({self.arch}) expects images (N, C, H, W) with C = {c}, "
                f"{size}; got shape {tuple(x.shape)}"
            )


class _PlainBlock(nn.Module):
    """The plain counterpart of a highway convolution: ``act(conv(x))``, same shape."""

    def __init__(self, channels: int, kernel: int, activation: str, **factory: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, **factory)
        self.act = get_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))
