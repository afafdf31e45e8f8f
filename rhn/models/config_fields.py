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
import os
import types
import typing
from typing import Any, Literal, Union

import numpy as np


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


def builtin_value(value: Any) -> Any:
    """``value`` with each NumPy (or other) number, bool and string as Python's int, float,
    bool or str, in lists and tuples too (``value`` itself when it holds none): YAML can't
    write NumPy's, nor can a checkpoint that loads with ``weights_only`` hold them."""
    if type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        items = [builtin_value(v) for v in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return type(value)(items) if changed else value
    return value


def check_field_types(config: Any, prefix: str = "model") -> None:
    """Raise a ValueError naming the first field of dataclass ``config`` whose value is not
    of its annotated type (``prefix.field must be ..., got ...``; no prefix: the field's name).

    A value that passes is kept as Python's own type (:func:`builtin_value`; a path given
    for a string field, its string), so that the config saves to YAML and to a checkpoint
    (an optimiser's ``lr`` of NumPy's made one that ``weights_only`` can't load)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        builtin = builtin_value(value)
        if isinstance(value, os.PathLike) and _matches(os.fspath(value), hints[f.name]):
            builtin = os.fspath(value)
        if not _matches(builtin, hints[f.name]):
            name = f"{prefix}.{f.name}" if prefix else f.name
            raise ValueError(f"{name} must be {describe_type(hints[f.name])}, got {value!r}")
        if builtin is not value:
            object.__setattr__(config, f.name, builtin)  # frozen configs too
