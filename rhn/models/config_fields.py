"""Type checks for the model configs' fields, for Python callers.

A config read from YAML has been converted and checked by :mod:`rhn.train.schema` already;
one built in Python has not, and a dataclass takes anything: ``loss_reduction="sum"`` would
fall through to the mean and ``output_dropout_kind="varitional"`` to ordinary dropout,
silently, and ``width=2.5`` would fail deep inside torch. :func:`check_field_types` refuses
each such value by name, with what the field allows.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Literal, Union


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:  # numbers.Integral: NumPy's int64 from a sweep's grid too
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return number and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    return True  # other annotations are the field's own business


def describe_type(tp: Any, *, yaml: bool = False) -> str:
    """What a value of annotation ``tp`` is, for an error message (``yaml``: in YAML's words,
    null and true / false, for config files)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a, yaml=yaml) for a in typing.get_args(tp))
    if tp is type(None):
        return "null" if yaml else "None"
    if tp is float:
        return "a finite number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false" if yaml else "True or False"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        plural = {int: "integers", float: "finite numbers", str: "strings", bool: "booleans"}
        item = plural.get(args[0]) or describe_type(args[0], yaml=yaml) if args else None
        return f"a list of {item}" if item else "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _builtin_numbers(value: Any) -> Any:
    """``value`` with each NumPy (or other) number as Python's int or float (``value``
    itself when it holds none)."""
    if isinstance(value, bool) or type(value) in (int, float):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        items = [_builtin_numbers(v) for v in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return type(value)(items) if changed else value
    return value


def check_field_types(config: Any, prefix: str = "model") -> None:
    """Raise a ValueError naming the first field of dataclass ``config`` whose value is not
    of its annotated type (``prefix.field must be ..., got ...``; no prefix: the field's name).

    A NumPy number that passes is replaced by Python's int or float: YAML can't write one,
    nor can a checkpoint that loads with ``weights_only`` hold one (an optimiser's ``lr``)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _matches(value, hints[f.name]):
            name = f"{prefix}.{f.name}" if prefix else f.name
            raise ValueError(f"{name} must be {describe_type(hints[f.name])}, got {value!r}")
        builtin = _builtin_numbers(value)
        if builtin is not value:
            object.__setattr__(config, f.name, builtin)  # frozen configs too
