"""Argument checks shared by the layer constructors: clear ``ValueError``s, never asserts.

Numbers are taken in any type that is one (NumPy's ``int64`` or ``float32`` from a sweep's
grid) and come back as Python's ``int`` / ``float``. A value that is no number at all is an
:class:`ArgumentTypeError`: a ``TypeError``, as ``nn.LSTM`` raises for ``hidden_size="4"``,
and a ``ValueError``, as these checks raised before.
"""

from __future__ import annotations

import math
import numbers

import torch


class ArgumentTypeError(TypeError, ValueError):
    """An argument of a type the layer can't take (e.g. a string for a size)."""


def _number(name: str, value: object, kind: type, wanted: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ArgumentTypeError(f"{name} must be {wanted}, got {value!r}")
    return int(value) if kind is numbers.Integral else float(value)  # type: ignore[call-overload]


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int ≥ 1, or a ``ValueError`` naming ``name``."""
    number = _number(name, value, numbers.Integral, "an integer >= 1")
    if number < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(number)


def check_probability(name: str, value: object) -> float:
    """``value`` as a float in [0, 1), or a ``ValueError`` naming ``name``."""
    number = _number(name, value, numbers.Real, "a number in [0, 1)")
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return number


def check_finite(name: str, value: object) -> float:
    """``value`` as a finite float, or a ``ValueError`` naming ``name``."""
    number = _number(name, value, numbers.Real, "a finite number")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def check_init_range(value: object) -> float | None:
    """``None`` (the layer's default range) or a finite number > 0, else a ``ValueError``."""
    if value is None:
        return None
    if check_finite("init_range", value) <= 0:
        raise ValueError(f"init_range must be None or a number > 0, got {value!r}")
    return float(value)


class ShapeError(ValueError, RuntimeError):
    """A tensor of a shape the layer can't take: a ``ValueError``, and a ``RuntimeError`` as
    ``nn.LSTM`` raises for a wrong input or ``hx`` shape, so code written for either catches
    it."""


class DtypeError(TypeError, ValueError):
    """A tensor of a dtype the layer can't take: a ``TypeError``, and a ``ValueError`` as
    ``nn.LSTM`` raises for a dtype mismatch, so code written for either catches it."""


def check_tensor_on(name: str, x: object, param: torch.Tensor) -> None:
    """Refuse what is not a tensor, or one on another device than the parameters."""
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device != param.device:
        raise ValueError(
            f"{name} is on {x.device} but the parameters are on {param.device}; move one with .to()"
        )


def check_tensor_like(name: str, x: object, param: torch.Tensor, *, state: bool = False) -> None:
    """Refuse a tensor whose device or dtype can't meet the parameters'.

    Under autocast an input may be any floating dtype but float64 (the GEMMs cast it); a
    recurrent ``state`` the parameters' dtype or the autocast dtype, in which it is then
    carried. Float64 parameters take float64 only: autocast leaves them alone.
    """
    check_tensor_on(name, x, param)
    if not x.is_floating_point():
        raise DtypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dtype == param.dtype:
        return
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        raise DtypeError(
            f"{name} has dtype {x.dtype} but the parameters have dtype {param.dtype}; "
            f"cast one to match (or run under torch.autocast)"
        )
    autocast = torch.get_autocast_dtype(device_type)
    if param.dtype == torch.float64:
        raise DtypeError(
            f"{name} has dtype {x.dtype}; float64 parameters take float64 only, autocast "
            f"({autocast}) or not (autocast leaves float64 alone)"
        )
    if state and x.dtype not in (param.dtype, autocast):
        takes = " or ".join(sorted({str(param.dtype), str(autocast)}))
    elif not state and x.dtype == torch.float64:
        takes = "any floating dtype but torch.float64"
    else:
        return
    raise DtypeError(
        f"{name} has dtype {x.dtype}; under torch.autocast({autocast}) the parameters "
        f"({param.dtype}) take {takes}"
    )


def check_bool(name: str, value: object, *, hint: str = "") -> bool:
    """``value`` if it is a bool, or an :class:`ArgumentTypeError` naming ``name`` (and
    ``hint``)."""
    if not isinstance(value, bool):
        extra = f"; {hint}" if hint else ""
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r}{extra}")
    return value
