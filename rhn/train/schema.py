"""Build dataclasses from plain dicts (parsed YAML) with type checks and clear errors.

Every error is a :class:`ConfigError` naming the dotted key, the value and what is
allowed; an unknown key suggests the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, TypeVar, Union

from rhn.models.config_fields import builtin_value, describe_type

T = TypeVar("T")

_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A config value or key that is not allowed."""


def _describe(tp: Any) -> str:
    return describe_type(tp, yaml=True)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to type ``tp``, or a ConfigError naming ``key``.

    Allowed conversions are the lossless ones: int → float, and exponent notation that
    YAML 1.1 leaves as a string ("1e-3") → float. A float is never made an int (a typo
    like ``max_steps: 1.5`` is an error).
    """
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(
                coerce(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            # YAML 1.1 reads "1e-3" (no dot) as a string; it is meant as a number.
            number = float(value)
        # No setting takes .nan or .inf (a bound that is none is null): they would reach a
        # layer's initialiser or the optimiser and fail there, or silently train on NaN.
        if number is None or not math.isfinite(number):
            raise bad
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"{key}: unsupported config type {tp!r}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """An instance of dataclass ``cls`` from ``data``; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown key {dotted!r}{hint} (allowed: {', '.join(names)})")
        kwargs[key] = coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ValueError as err:  # includes ConfigError; dataclasses outside rhn.train raise this
        raise ConfigError(str(err)) from None


def to_dict(obj: Any) -> Any:
    """A dataclass as plain dicts and lists (tuples become lists), ready for YAML and for a
    checkpoint that loads with ``weights_only``: a NumPy value a Python caller set (after
    the config was built, say) becomes Python's (:func:`builtin_value`)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return builtin_value(obj)


DEVICE_NAMES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def is_device_name(name: str) -> bool:
    """Whether a run may ask for device ``name`` (:data:`DEVICE_NAMES`, and ``cpu:N``/``mps:N``
    as torch takes them; ``auto``: CUDA if there is one). Whether this machine has it is
    checked when the run starts."""
    return re.fullmatch(r"auto|(cpu|mps|cuda)(:\d+)?", name) is not None


def check(condition: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError for ``key`` unless ``condition``; for ``__post_init__`` checks."""
    if not condition:
        raise ConfigError(f"{key}: {value!r} is not allowed; expected {allowed}")
