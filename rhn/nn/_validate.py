"""Argument checks shared by the layer constructors: clear ``ValueError``s, never asserts."""

from __future__ import annotations

import math


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int ≥ 1, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_probability(name: str, value: object) -> float:
    """``value`` as a float in [0, 1), or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_finite(name: str, value: object) -> float:
    """``value`` as a finite float, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)
