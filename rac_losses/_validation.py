"""Argument checks shared by every public function.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, length,
device, value) with a message that names the argument, what was expected and what was received.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "check_choice",
    "check_finite",
    "check_float_tensor",
    "check_index_tensor",
    "check_mask",
    "check_number",
    "check_same_device",
    "check_shape",
]


def _describe(x: torch.Tensor) -> str:
    return f"shape {tuple(x.shape)}, dtype {x.dtype}"


def _require_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_shape(x: torch.Tensor, name: str, shape: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (``None`` matches any size)."""
    expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")


def check_float_tensor(x: object, name: str, shape: Sequence[int | None]) -> torch.Tensor:
    """A floating-point tensor of the given shape."""
    x = _require_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {_describe(x)}")
    check_shape(x, name, shape)
    return x


def check_index_tensor(x: object, name: str, shape: Sequence[int | None]) -> torch.Tensor:
    """An integer id tensor (any integer dtype; bool and floats are refused) of the given shape."""
    x = _require_tensor(x, name)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (ids, e.g. int64), got {_describe(x)}")
    check_shape(x, name, shape)
    return x


def check_mask(x: object, name: str, shape: Sequence[int | None]) -> torch.Tensor:
    """A bool mask, or a 0/1 tensor of any real dtype; returned as bool."""
    x = _require_tensor(x, name)
    check_shape(x, name, shape)
    if x.dtype == torch.bool:
        return x
    if x.is_complex():
        raise TypeError(f"{name} must be a bool or 0/1 tensor, got {_describe(x)}")
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must hold only 0 and 1 (or be bool), got other values ({_describe(x)})")
    return x != 0


def check_finite(x: torch.Tensor, name: str, where: torch.Tensor | None = None) -> None:
    """Raise ``ValueError`` if ``x`` (restricted to ``where`` when given) holds NaN or inf."""
    bad = ~torch.isfinite(x)
    if where is not None:
        bad = bad & where
    if bool(bad.any()):
        count = int(bad.sum())
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} must be finite, got {count} non-finite value(s), first at index {first}")


def check_same_device(tensors: Iterable[tuple[str, torch.Tensor | None]]) -> None:
    """Raise ``ValueError`` if the given (non-``None``) tensors live on different devices."""
    present = [(n, t) for n, t in tensors if t is not None]
    if not present:
        return
    first_name, first = present[0]
    for name, t in present[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; all inputs must share a device"
            )


def check_number(value: object, name: str, *, positive: bool = False) -> float:
    """Raise unless ``value`` is a finite real number (not a bool) ``>= 0`` (``> 0`` with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (the message lists them)."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value  # type: ignore[return-value]
