"""Optimisers and learning-rate schedules built from :class:`OptimConfig`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from rhn.train.config import OptimConfig, ScheduleConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser of ``model``'s trainable parameters, in groups by (rate, decay).

    What :func:`no_weight_decay_parameters` names (biases, norm weights) takes no decay
    unless ``decay_biases``: a decayed transform-gate bias would drift from its negative
    start towards 0. Biases alone (:func:`bias_parameters`) learn at ``bias_lr_mult`` × the
    rate, as Caffe's ``lr_mult`` on a layer's bias; a norm's scale is not a bias. A module's
    ``decay_multipliers()`` scales the decay of the weights it names (Caffe's
    ``decay_mult``). Each group's ``lr_mult`` is applied by :func:`set_lr`.

    With ``decay_before_clip`` a group's decay is its ``l2`` (its ``weight_decay`` 0), which
    :func:`add_l2_gradient` adds to the gradient before the clip: the gradient of
    ``loss + l2·Σw²/2``, the RHN code's objective.
    """
    no_decay = {id(p) for p in no_weight_decay_parameters(model)}
    biases = {id(p) for p in bias_parameters(model)}
    decay_mult = {id(p): mult for p, mult in decay_multiplied_parameters(model)}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for p in model.parameters():  # model order within each group
        if not p.requires_grad:
            continue
        lr_mult = cfg.bias_lr_mult if id(p) in biases else 1.0
        spared = id(p) in no_decay and not cfg.decay_biases
        decay = 0.0 if spared else cfg.weight_decay * decay_mult.get(id(p), 1.0)
        groups.setdefault((lr_mult, decay), []).append(p)
    # Groups holding weights before those of no-decay parameters only: the layout checkpoints
    # were saved in (one group when nothing differs; weights, then spared biases).
    ordered = sorted(groups.items(), key=lambda kv: all(id(p) in no_decay for p in kv[1]))
    l2 = cfg.decay_before_clip
    params: list[Any] = [
        {
            "params": ps,
            "lr": cfg.lr * lr_mult,
            "lr_mult": lr_mult,
            "weight_decay": 0.0 if l2 else decay,
            "l2": decay if l2 else 0.0,
        }
        for (lr_mult, decay), ps in ordered
    ]
    default_decay = 0.0 if l2 else cfg.weight_decay
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=default_decay,
        )
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=default_decay)


def add_l2_gradient(optimizer: torch.optim.Optimizer) -> None:
    """Add each group's ``l2`` × weight to the gradients it holds, before they are clipped
    (:func:`build_optimizer`'s ``decay_before_clip``); parameters without a gradient stay
    without, as the optimiser's own decay skips them."""
    for group in optimizer.param_groups:
        l2 = group.get("l2", 0.0)
        for p in group["params"] if l2 else ():
            if p.grad is not None:
                p.grad.add_(p.detach(), alpha=l2)


def _declared(model: nn.Module, method: str) -> Iterator[tuple[nn.Parameter, Any]]:
    """(parameter, value) for each name → value a module's ``method()`` declares (names
    relative to that module; a method returning names gives value None)."""
    for module in model.modules():
        declared = getattr(module, method, None)
        if callable(declared):
            named = dict(module.named_parameters())
            result = declared()
            items = result.items() if isinstance(result, dict) else ((n, None) for n in result)
            yield from ((named[n], value) for n, value in items if n in named)


def no_weight_decay_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that take no weight decay: every 1-D parameter (biases, norms), and
    those a module names in its ``no_weight_decay()`` (timm's convention; names relative to
    that module) — e.g. the RHN's ``bias_hh_l{k}``, which are ``(depth, G·H)``."""
    spared = {id(p): p for p in model.parameters() if p.dim() <= 1}
    spared.update({id(p): p for p, _ in _declared(model, "no_weight_decay")})
    return list(spared.values())


def bias_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The biases: parameters whose own name starts with ``bias`` (``bias``, the RHN's
    ``bias_hh_l{k}``, the LSTM's ``bias_ih_l{k}``), a norm's ``bias`` among them but not
    its ``weight``."""
    return [p for name, p in model.named_parameters() if name.rpartition(".")[2].startswith("bias")]


def decay_multiplied_parameters(model: nn.Module) -> list[tuple[nn.Parameter, float]]:
    """(parameter, factor) for the weights a module's ``decay_multipliers()`` names."""
    return list(_declared(model, "decay_multipliers"))


class LRSchedule:
    """The learning rate as a function of (optimiser step, epoch), plus plateau memory.

    A pure function of its inputs except for the plateau rule, whose state
    (``state_dict``) is saved with checkpoints, so a resumed run sets the same rates.
    """

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_steps: int | None) -> None:
        if cfg.name == "cosine" and total_steps is None:
            raise ValueError("optim.schedule.name 'cosine' needs a known run length")
        self.cfg = cfg
        self.base_lr = base_lr
        self.total_steps = total_steps
        self.plateau_scale = 1.0
        self.plateau_last: float | None = None
        self.plateau_seen = 0  # evaluations observed

    def lr(self, step: int, epoch: int) -> float:
        """The rate for optimiser step ``step`` (0-based) in ``epoch`` (0-based)."""
        cfg = self.cfg
        if cfg.name == "decay_after":
            factor = cfg.decay ** -max(0, epoch - cfg.start_epoch)
        elif cfg.name == "step":
            factor = cfg.gamma ** (epoch // cfg.step_size)
        elif cfg.name == "multistep":
            factor = cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        elif cfg.name == "cosine":
            progress = min(1.0, step / max(1, self.total_steps))
            low = cfg.min_lr / self.base_lr
            factor = low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))
        elif cfg.name == "plateau":
            factor = self.plateau_scale
        else:
            factor = 1.0
        if cfg.warmup_steps and step < cfg.warmup_steps:
            factor *= (step + 1) / cfg.warmup_steps
        return self.base_lr * factor

    def observe(self, metric: float, higher_is_better: bool) -> None:
        """Feed an evaluation's metric to the plateau rule (a no-op for other schedules)."""
        if self.cfg.name != "plateau":
            return
        # As Kim et al.'s main.lua (`#val_losses > 2`): from the third evaluation on, compare
        # with the previous evaluation, not the best one.
        score = metric if higher_is_better else -metric
        self.plateau_seen += 1
        if self.plateau_seen > 2 and score - self.plateau_last < self.cfg.threshold:
            self.plateau_scale *= self.cfg.gamma
        self.plateau_last = score

    def state_dict(self) -> dict[str, Any]:
        return {
            "plateau_scale": self.plateau_scale,
            "plateau_last": self.plateau_last,
            "plateau_seen": self.plateau_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = state["plateau_scale"]
        self.plateau_last = state["plateau_last"]
        # A checkpoint from before the count compared from the second evaluation: it goes on
        # comparing once it has seen one.
        self.plateau_seen = state.get("plateau_seen", 0 if self.plateau_last is None else 2)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """A checkpoint's optimiser state into ``optimizer``, keeping what the config decides:
    every setting of each group (``lr_mult``, ``weight_decay``, ``momentum``, ``nesterov``,
    ``betas``, ``eps``, …) comes from the freshly built groups — ``load_state_dict`` would
    put back the saved ones, so a resume with ``--set optim.momentum=0.9`` would train on
    with the old momentum —, the moments and step counts from the checkpoint. The two must
    be of one optimiser class (the caller checks ``optim.name``).

    Raises ValueError when the saved groups do not match (another grouping of parameters).
    """
    decided = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    saved = [len(g["params"]) for g in state["param_groups"]]
    built = [len(g["params"]) for g in optimizer.param_groups]
    if saved != built:
        raise ValueError(
            f"the checkpoint's optimiser has parameter groups of sizes {saved}, this run's "
            f"{built} (optim.decay_biases, bias_lr_mult or a decay multiplier changed?)"
        )
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, decided, strict=True):
        group.update(settings)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate ``lr`` × each group's ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
