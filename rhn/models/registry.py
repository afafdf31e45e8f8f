"""Every model is built in one place: from its config section plus its metadata.

The metadata is what the data decided about a model and what its checkpoint saves beside the
weights — JSON-like values, no data set needed to read them:

    LanguageModelConfig    {"vocab_size": V}
    CharAwareConfig        {"words": [V words]}   (the character table is built from them)
    ImageClassifierConfig  {"image_shape": [C, H, W], "num_classes": K}

so a trained model comes back from ``build_model(config.model, checkpoint["model_meta"])`` and
its state dict alone. Each model module registers its builder with :func:`register_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

ModelMeta = Mapping[str, Any]
Builder = Callable[[Any, ModelMeta], nn.Module]
B = TypeVar("B", bound=Builder)

_BUILDERS: dict[type, Builder] = {}


def register_model(config_type: type) -> Callable[[B], B]:
    """Decorator: ``builder(cfg, meta) → model`` builds the models ``config_type`` describes."""

    def add(builder: B) -> B:
        _BUILDERS[config_type] = builder
        return builder

    return add


def build_model(cfg: Any, meta: ModelMeta) -> nn.Module:
    """The model of config ``cfg`` (a registered model-config dataclass) and ``meta``."""
    builder = next((_BUILDERS[t] for t in type(cfg).__mro__ if t in _BUILDERS), None)
    if builder is None:
        known = ", ".join(sorted(t.__name__ for t in _BUILDERS))
        raise ValueError(f"no model is registered for {type(cfg).__name__} (known: {known})")
    return builder(cfg, meta)


def meta_value(meta: ModelMeta, key: str, kind: type | tuple[type, ...], cfg: Any) -> Any:
    """``meta[key]``, checked to be a ``kind`` (or one of them); a ValueError names what is
    missing or wrong."""
    owner = type(cfg).__name__
    if key not in meta:
        have = ", ".join(sorted(meta)) or "nothing"
        raise ValueError(f"model metadata for {owner} needs {key!r}, but holds {have}")
    value = meta[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(
            f"model metadata {key!r} for {owner} must be "
            f"{' or '.join(k.__name__ for k in kinds)}, got {value!r:.60}"
        )
    return value
