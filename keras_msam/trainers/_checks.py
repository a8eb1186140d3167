"""Validation of trainer options, shared by every trainer's ``__init__``.

Each helper returns the normalised value or raises a `ValueError` that names the option and the
value it got, so a bad option fails at construction, before any training, on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: What a trainer does when a training step's gradients hold NaN or inf (``nonfinite=``).
NONFINITE_POLICIES = ("skip", "raise", "ignore")


def number(
    value: Any,
    name: str,
    minimum: float | None = 0.0,
    *,
    strict: bool = False,
    maximum: float | None = None,
) -> float:
    """A finite real number ≥ ``minimum`` (> with ``strict``) and ≤ ``maximum`` when given.

    NaN, ±inf, booleans and non-numbers are rejected.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}.") from None
    bounds = []
    if minimum is not None:
        bounds.append(f"> {minimum:g}" if strict else f">= {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    wanted = " and ".join(bounds + ["finite"])
    if (
        not math.isfinite(result)
        or (minimum is not None and (result < minimum or (strict and result == minimum)))
        or (maximum is not None and result > maximum)
    ):
        raise ValueError(f"{name} must be {wanted}, got {value!r}.")
    return result


def positive(value: Any, name: str, allow_zero: bool = True) -> float:
    """A finite number ≥ 0 (> 0 with ``allow_zero=False``)."""
    return number(value, name, 0.0, strict=not allow_zero)


def integer(value: Any, name: str, minimum: int | None = 1) -> int:
    """An integer ≥ ``minimum`` (integral floats such as 5.0 are accepted; bools are not)."""
    wanted = "an integer" if minimum is None else f"an integer >= {minimum}"
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be {wanted}, got {value!r}.")
    if isinstance(value, (int, np.integer)):
        result = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
        result = int(value)
    else:
        raise ValueError(f"{name} must be {wanted}, got {value!r}.")
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value!r}.")
    return result


def optional_integer(value: Any, name: str, minimum: int | None = 0) -> int | None:
    """None, or an integer ≥ ``minimum`` (seeds)."""
    return None if value is None else integer(value, name, minimum)


def flag(value: Any, name: str) -> bool:
    """A boolean (``True``/``False``, numpy bools included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """One of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f"Unknown {name} {value!r}; use one of {tuple(choices)}.")
    return value


def window(value: Any, name: str = "modulation_epochs") -> tuple[int, int] | None:
    """An inclusive ``(start, end)`` epoch window with 0 <= start <= end, or None (every epoch)."""
    if value is None:
        return None
    try:
        start, end = (integer(item, name, minimum=None) for item in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (start, end) epochs or None, got {value!r}.") from None
    if start < 0 or end < start:
        raise ValueError(f"{name} must satisfy 0 <= start <= end, got {value!r}.")
    return start, end
