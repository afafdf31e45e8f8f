"""Run configuration: dataclasses loaded from YAML, overridden with ``--set``, validated.

A config file names its ``task`` and holds only what differs from the defaults, in four
sections: ``model`` and ``data`` (defined by the task), ``optim`` and ``train`` (shared):

    task: char_lm
    model: {hidden_size: 128, depth: 3}
    optim: {lr: 0.5, clip_norm: 10.0}
    train: {max_steps: 300}

The resolved config (every value, defaults included) is saved with each run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rhn.data.atomic_file import atomic_write_text
from rhn.models.config_fields import check_field_types
from rhn.train.recipes import recipe_path, resolve_config_path
from rhn.train.schema import (
    DEVICE_NAMES,
    ConfigError,
    check,
    coerce,
    from_dict,
    is_device_name,
    to_dict,
)
from rhn.train.seeding import SEEDS, is_seed
from rhn.train.task import Task, get_task

SECTIONS = ("model", "data", "optim", "train")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, applied on top of ``optim.lr``.

    ``constant``; ``decay_after``: divide by ``decay`` each epoch after ``start_epoch``
    (the RHN recipe: 1.02 after 20); ``step``: × ``gamma`` every ``step_size`` epochs;
    ``multistep``: × ``gamma`` at each of ``milestones`` (epochs); ``cosine``: to ``min_lr``
    over the run's steps; ``plateau``: × ``gamma`` after an evaluation, from the third on,
    whose metric improved on the previous one's by less than ``threshold`` (Kim et al.:
    halve when valid ppl improves by < 1).
    ``warmup_steps`` ramps any of them linearly from 0.
    """

    name: Literal["constant", "decay_after", "step", "multistep", "cosine", "plateau"] = "constant"
    decay: float = 1.0
    start_epoch: int = 0
    gamma: float = 0.1
    step_size: int = 1
    milestones: list[int] = field(default_factory=list)
    min_lr: float = 0.0
    threshold: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        check_field_types(self, "optim.schedule")  # Python callers' values (YAML's: coerced)
        check(self.decay >= 1.0, "optim.schedule.decay", self.decay, "a divisor >= 1")
        check(self.start_epoch >= 0, "optim.schedule.start_epoch", self.start_epoch, ">= 0")
        check(0.0 < self.gamma <= 1.0, "optim.schedule.gamma", self.gamma, "a factor in (0, 1]")
        check(self.step_size >= 1, "optim.schedule.step_size", self.step_size, ">= 1")
        check(self.min_lr >= 0.0, "optim.schedule.min_lr", self.min_lr, ">= 0")
        check(self.threshold >= 0.0, "optim.schedule.threshold", self.threshold, ">= 0")
        check(self.warmup_steps >= 0, "optim.schedule.warmup_steps", self.warmup_steps, ">= 0")
        check(
            self.milestones == sorted(self.milestones),
            "optim.schedule.milestones",
            self.milestones,
            "epochs in increasing order",
        )


@dataclass
class OptimConfig:
    """Optimiser, gradient clipping and accumulation."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decay_biases: bool = True  # false: spares optim.no_weight_decay_parameters (biases, …)
    # true: the decay is an L2 term of the gradient before it is clipped, as the RHN code
    # clips the gradient of loss + weight_decay·Σw²/2; false: torch's, added after the clip
    decay_before_clip: bool = False
    bias_lr_mult: float = 1.0  # biases learn at this × lr (Caffe's lr_mult; the Highway nets 2)
    clip_norm: float | None = None
    grad_accum: int = 1
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        check_field_types(self, "optim")  # Python callers' values (YAML's: coerced)
        check(self.lr > 0 and math.isfinite(self.lr), "optim.lr", self.lr, "a number > 0")
        check(0.0 <= self.momentum < 1.0, "optim.momentum", self.momentum, "a number in [0, 1)")
        check(
            not self.nesterov or (self.name == "sgd" and self.momentum > 0),
            "optim.nesterov",
            self.nesterov,
            "true only with optim.name 'sgd' and optim.momentum > 0",
        )
        check(
            all(0.0 <= b < 1.0 for b in self.betas),
            "optim.betas",
            self.betas,
            "two numbers in [0, 1)",
        )
        check(self.eps > 0, "optim.eps", self.eps, "a number > 0")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        check(
            self.bias_lr_mult > 0 and math.isfinite(self.bias_lr_mult),
            "optim.bias_lr_mult",
            self.bias_lr_mult,
            "a number > 0",
        )
        check(
            self.clip_norm is None or self.clip_norm > 0,
            "optim.clip_norm",
            self.clip_norm,
            "null (no clipping) or a number > 0",
        )
        check(self.grad_accum >= 1, "optim.grad_accum", self.grad_accum, "an integer >= 1")
        # Settings the optimiser would silently ignore or invert are refused.
        check(
            self.name == "sgd" or self.momentum == 0.0,
            "optim.momentum",
            self.momentum,
            f"0 with optim.name {self.name!r} (its moments are set by optim.betas)",
        )
        check(
            not self.decay_before_clip or self.name != "adamw",
            "optim.decay_before_clip",
            self.decay_before_clip,
            "false with optim.name 'adamw' (its decay is no gradient term to clip)",
        )
        check(
            self.schedule.name != "cosine" or self.schedule.min_lr <= self.lr,
            "optim.schedule.min_lr",
            self.schedule.min_lr,
            f"a number <= optim.lr = {self.lr:g} (cosine anneals from optim.lr down to it)",
        )


@dataclass
class TrainConfig:
    """How long to train, when to evaluate and checkpoint, and on what."""

    max_steps: int | None = None
    max_epochs: int | None = 1
    max_minutes: float | None = None  # wall-clock budget (steps, evaluations, saves; over resumes)
    seed: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    device: str = "auto"
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"  # rhn.train.precision
    compile: bool = False
    deterministic: bool = False
    max_bad_steps: int = 5
    progress: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, "train")  # Python callers' values (YAML's: coerced)
        check(
            self.max_steps is not None or self.max_epochs is not None,
            "train.max_steps",
            self.max_steps,
            "a step limit, or a train.max_epochs limit (both can't be null)",
        )
        for key in ("max_steps", "max_epochs"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"train.{key}", value, "null or an integer >= 1")
        check(is_seed(self.seed), "train.seed", self.seed, SEEDS)
        check(
            self.max_minutes is None or self.max_minutes > 0,
            "train.max_minutes",
            self.max_minutes,
            "null or a number of minutes > 0",
        )
        for key in ("eval_every", "checkpoint_every"):
            value = getattr(self, key)
            check(value >= 0, f"train.{key}", value, "steps >= 1, or 0 for once per epoch")
        check(self.log_every >= 1, "train.log_every", self.log_every, "an integer >= 1")
        check(is_device_name(self.device), "train.device", self.device, DEVICE_NAMES)
        check(self.max_bad_steps >= 1, "train.max_bad_steps", self.max_bad_steps, ">= 1")


@dataclass
class RunConfig:
    """A whole run: the task, its model and data sections, and the shared ones."""

    task: str
    model: Any
    data: Any
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def task_class(self) -> type[Task]:
        return get_task(self.task)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def rechecked(config: RunConfig) -> RunConfig:
    """``config`` with every section built again, so that its checks run once more: a caller
    may have set a field after the config was built (``config.optim.lr = -1``, or a sweep's
    NumPy number, which the checks turn into Python's)."""

    def again(section: Any) -> Any:
        return dataclasses.replace(section) if dataclasses.is_dataclass(section) else section

    optim = dataclasses.replace(config.optim, schedule=again(config.optim.schedule))
    return dataclasses.replace(
        config, model=again(config.model), data=again(config.data), optim=optim,
        train=again(config.train),
    )  # fmt: skip


def parse_override(text: str, *, sectioned: bool = True) -> tuple[list[str], Any]:
    """``section.key=value`` → (path, value); the value is parsed as YAML (1e-3, true, [1, 2]).

    ``sectioned=False`` also accepts a top-level ``key=value`` (configs without sections).
    """
    form = "section.key" if sectioned else "key"
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected {form}=value")
    key, _, raw = text.partition("=")
    path = key.strip().split(".")
    top_level = sectioned and path == ["task"]  # the one key outside the sections
    if (len(path) < (2 if sectioned else 1) and not top_level) or not all(path):
        example = "optim.lr (or task)" if sectioned else "trials"
        raise ConfigError(f"--set {text!r}: the key must be {form}, e.g. {example}")
    try:
        return path, parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = yaml_error(err)
        raise ConfigError(f"--set {text!r}: the value is not valid YAML: {problem}") from None


def yaml_error(err: yaml.YAMLError) -> str:
    """A YAML parse error in one line: the problem and where (PyYAML's own message spans
    several lines and names the input as "<unicode string>")."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], *, sectioned: bool = True
) -> None:
    """Set each ``--set`` override in the nested mapping ``data`` (in place)."""
    for text in overrides:
        path, value = parse_override(text, sectioned=sectioned)
        node = data
        for part in path[:-1]:
            if node.get(part) is None:  # absent, or a section left empty ('model:')
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a section")
        node[path[-1]] = value


def build_config(data: dict[str, Any], overrides: Sequence[str] = ()) -> RunConfig:
    """A validated RunConfig from a parsed YAML mapping plus ``--set`` overrides."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {data!r}")
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    apply_overrides(data, overrides)
    unknown = sorted(set(data) - {"task", *SECTIONS})
    if unknown:
        raise ConfigError(
            f"unknown top-level key {unknown[0]!r}; allowed: task, {', '.join(SECTIONS)}"
        )
    if "task" not in data:
        raise ConfigError("the config must name its task (e.g. task: char_lm)")
    task = get_task(coerce(data["task"], str, "task"))
    sections = {name: data.get(name) or {} for name in SECTIONS}
    return RunConfig(
        task=task.name,
        model=from_dict(task.model_config, sections["model"], prefix="model"),
        data=from_dict(task.data_config, sections["data"], prefix="data"),
        optim=from_dict(OptimConfig, sections["optim"], prefix="optim"),
        train=from_dict(TrainConfig, sections["train"], prefix="train"),
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: PyYAML
    keeps the last, so an ``lr:`` pasted below the section's own would silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the base loader's own error says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """``text`` as YAML (safe types only; a repeated key is an error)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file: ``{}``), or a ConfigError naming the file
    and what is wrong with it: unreadable, not UTF-8 text, not YAML, not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {what} file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {path} is not text (not UTF-8); expected YAML") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {yaml_error(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else repr(data)
        raise ConfigError(f"{path}: a {what} file must hold a mapping (key: value), got {kind}")
    return data


def read_config_file(path: str | Path, *, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping a YAML config file stands for, its ``base:`` (if any) merged in.

    ``base: other.yaml`` (relative to the file) starts from that config and merges this file
    into it at every depth: a mapping (a section, ``optim.schedule``) is merged key by key, any
    other value (a number, a list) replaces the base's. So a recipe's variant holds only what
    differs from the recipe, ``optim: {schedule: {milestones: [50]}}`` included.
    """
    path = Path(path)
    data = read_yaml_mapping(path)
    if "base" not in data:
        return data
    base_name = data.pop("base")
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"{path}: base must name another config file, got {base_name!r}")
    base_path = (path.parent / base_name).resolve()
    if base_path in (*_seen, path.resolve()):
        raise ConfigError(f"{path}: base {base_name!r} leads back to itself")
    return _merged(read_config_file(base_path, _seen=(*_seen, path.resolve())), data)


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base`` at every depth (a new mapping; neither is changed)."""
    out = dict(base)
    for key, value in override.items():
        if value is None and isinstance(out.get(key), dict):  # 'model:' left empty
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config file (and its ``base:``), apply ``--set`` overrides
    (``section.key=value``). A bare name that is no file is one of the recipes installed
    with rhn (``ptb_rhn_d10``: :mod:`rhn.train.recipes`)."""
    path = resolve_config_path(path)
    if not path.is_file():
        if (recipe := recipe_path(path.name)) is not None:
            raise ConfigError(
                f"config file {path} does not exist; rhn installs a recipe of that name: "
                f"{recipe.stem!r} (rhn-train {recipe.stem} ...)"
            )
        if path.parent == Path(".") and not path.suffix:
            raise ConfigError(
                f"no config file or recipe named {str(path)!r} (rhn-train --help lists the recipes)"
            )
    data = read_config_file(path)
    try:
        return build_config(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_config(config: RunConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
