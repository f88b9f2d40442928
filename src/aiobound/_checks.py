"""Argument checks that fail early and name the argument at fault."""

from __future__ import annotations

__all__ = (
    "check_callable",
    "check_int",
    "check_optional_int",
    "check_optional_positive",
)


def check_int(name: str, value: object, minimum: int) -> int:
    """Return *value* if it is an ``int`` (not a ``bool``) >= *minimum*.

    Raises:
        TypeError: *value* is not an int, or is a bool.
        ValueError: *value* is below *minimum*.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_optional_int(name: str, value: object, minimum: int) -> int | None:
    """Like :func:`check_int`, but ``None`` (meaning "no limit") passes."""
    if value is None:
        return None
    return check_int(name, value, minimum)


def check_callable(name: str, value: object) -> None:
    """Raise :class:`TypeError` naming *name* unless *value* is callable."""
    if not callable(value):
        raise TypeError(
            f"{name} must be callable, got {type(value).__name__} {value!r}"
        )


def check_optional_positive(name: str, value: object) -> float | None:
    """Return *value* as a float if it is a finite number > 0; pass ``None``.

    Raises:
        TypeError: *value* is not an int or float, or is a bool.
        ValueError: *value* is not finite and > 0.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number > 0 or None, got {type(value).__name__} {value!r}"
        )
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
