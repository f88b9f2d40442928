"""Argument checks that fail early and name the argument at fault."""

from __future__ import annotations

import inspect

__all__ = (
    "check_callable",
    "check_int",
    "check_optional_int",
    "check_optional_positive",
    "is_async_function",
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
    """Raise :class:`TypeError` naming *name* unless *value* is a sync callable.

    An ``async def`` function (or async generator function) is refused too:
    run in a worker it would only return a coroutine that nobody awaits.
    """
    if not callable(value):
        raise TypeError(
            f"{name} must be callable, got {type(value).__name__} {value!r}"
        )
    if is_async_function(value):
        raise TypeError(
            f"{name} must be a blocking (sync) function, got the async function "
            f"{value!r}: await it directly instead of running it in an executor"
        )


# Code flags of functions whose call returns a coroutine or async generator.
_ASYNC_CODE_FLAGS = (
    inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
)


def is_async_function(value: object) -> bool:
    """Whether *value* is an ``async def`` function or method (cheap check).

    Reads the code flags of plain functions and bound methods only, so it
    costs a lookup on the hot path; a ``functools.partial`` of an async
    function is not seen through.
    """
    code = getattr(value, "__code__", None)
    return code is not None and bool(getattr(code, "co_flags", 0) & _ASYNC_CODE_FLAGS)


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
