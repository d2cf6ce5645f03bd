"""Durations at the boundary: float seconds or ``timedelta``, normalised once."""

from __future__ import annotations

import math
from datetime import timedelta

from freight._errors import ConfigError, ConfigTypeError

__all__ = ["Duration", "to_positive_int", "to_seconds"]

Duration = float | int | timedelta
"""What a user may pass wherever freight asks for a duration."""


def to_seconds(value: object, name: str, *, allow_zero: bool = True) -> float:
    """Return ``value`` as float seconds, or raise :class:`ConfigError` naming ``name``.

    Accepts ``int``, ``float`` and ``timedelta``; refuses booleans, negatives, NaN
    and infinity, which are always a mistake in a duration. A value of another type
    (``"a"``, ``None``, a boolean) is a :class:`ConfigTypeError` (also a ``TypeError``,
    as Ray raises); a number out of range a plain :class:`ConfigError`.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigTypeError(
            f"{name} must be a number of seconds or a timedelta, got {value!r} "
            f"({type(value).__name__})"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigError(f"{name} must be a finite duration, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {rule} seconds, got {value!r}")
    return seconds


def to_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` ≥ ``minimum``; else raise :class:`ConfigError`.

    A value that is not an ``int`` (``1.1``, ``"3"``, ``None``, a boolean) is a
    :class:`ConfigTypeError` (also a ``TypeError``, as Ray raises for
    ``max_batch_size=1.1``); an ``int`` below ``minimum`` a plain :class:`ConfigError`.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigTypeError(
            f"{name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return value
