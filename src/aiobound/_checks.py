"""Argument checks that fail early and name the argument at fault."""

from __future__ import annotations

import functools
import inspect
import sys
import types

__all__ = (
    "Limits",
    "check_callable",
    "check_chunksize",
    "check_int",
    "check_max_workers",
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


def check_max_workers(value: object) -> int | None:
    """Return *value* if it is ``None`` or an int > 0, as the stdlib pools want.

    The out-of-range message is the standard pools' own ("max_workers must
    be greater than 0"), so code that checks it keeps working.

    Raises:
        TypeError: *value* is not an int, or is a bool.
        ValueError: *value* is 0 or negative.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"max_workers must be an int >= 1, got {type(value).__name__} {value!r}"
        )
    if value <= 0:
        raise ValueError(f"max_workers must be greater than 0, got {value!r}")
    return value


def check_chunksize(value: object) -> int:
    """Return *value* if it is an int from 1 to ``sys.maxsize``.

    Raises:
        TypeError: *value* is not an int, or is a bool.
        ValueError: *value* is below 1 or above ``sys.maxsize`` (no source
            is sliced in chunks that large).
    """
    size = check_int("chunksize", value, 1)
    if size > sys.maxsize:
        raise ValueError(
            f"chunksize must be at most sys.maxsize ({sys.maxsize}), got {size!r}"
        )
    return size


def check_optional_int(name: str, value: object, minimum: int) -> int | None:
    """Like :func:`check_int`, but ``None`` (meaning "no limit") passes."""
    if value is None:
        return None
    return check_int(name, value, minimum)


def check_callable(name: str, value: object) -> None:
    """Raise :class:`TypeError` naming *name* unless *value* is a sync callable.

    An async function is refused too, in any of the shapes
    :func:`is_async_function` sees through (a ``functools.partial`` of one, a
    callable object with an ``async def __call__``...): run in a worker it
    would only return a coroutine (or async generator) that nobody awaits.
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
# Kinds whose call is always synchronous: answered by one type comparison.
_SYNC_KINDS = frozenset(
    {
        types.BuiltinFunctionType,
        types.BuiltinMethodType,
        types.MethodDescriptorType,
        types.WrapperDescriptorType,
        types.MethodWrapperType,
        types.ClassMethodDescriptorType,
    }
)
# functools.lru_cache and functools.cache wrap a function in this type.
_LRU_WRAPPER = type(functools.lru_cache(maxsize=None)(len))
# Wrappers unwrapped before giving up: deep enough for any real nesting of
# partials, methods and callable objects, and an end to a cycle of them.
_MAX_UNWRAP = 64


def is_async_function(value: object) -> bool:
    """Whether calling *value* returns a coroutine or an async generator.

    Sees through ``functools.partial`` (nested), ``functools.lru_cache``
    and ``functools.cache``, bound methods, ``staticmethod`` and
    ``classmethod`` objects, functions marked with
    ``inspect.markcoroutinefunction`` and callable objects whose
    ``__call__`` is ``async def``.

    A plain function or a bound method costs a type comparison and a few
    attribute reads, a builtin a type comparison and a set lookup; other
    shapes take a slower path that asks :mod:`inspect`.
    """
    kind = type(value)
    if kind is types.MethodType:
        value = value.__func__  # type: ignore[attr-defined]
        kind = type(value)
    if kind is types.FunctionType:
        if value.__code__.co_flags & _ASYNC_CODE_FLAGS:  # type: ignore[attr-defined]
            return True
        # inspect.markcoroutinefunction stores its mark in the function's
        # __dict__: a function whose __dict__ is empty carries no mark.
        return bool(value.__dict__) and inspect.iscoroutinefunction(value)
    if kind in _SYNC_KINDS:
        return False
    return _is_async_wrapped(value)


def _function_is_async(func: types.FunctionType) -> bool:
    if func.__code__.co_flags & _ASYNC_CODE_FLAGS:
        return True
    # inspect.markcoroutinefunction stores its mark in the function's
    # __dict__: a function whose __dict__ is empty carries no mark.
    return bool(func.__dict__) and inspect.iscoroutinefunction(func)


def _is_async_wrapped(value: object) -> bool:
    """The slow path of :func:`is_async_function`: unwrap, then ask inspect."""
    for _ in range(_MAX_UNWRAP):
        kind = type(value)
        if kind is types.FunctionType:
            return _function_is_async(value)  # type: ignore[arg-type]
        if kind in _SYNC_KINDS:
            return False
        if isinstance(value, functools.partial):
            value = value.func
        elif kind is _LRU_WRAPPER:
            value = value.__wrapped__  # type: ignore[attr-defined]
        elif isinstance(value, (types.MethodType, staticmethod, classmethod)):
            value = value.__func__
        elif inspect.iscoroutinefunction(value) or inspect.isasyncgenfunction(value):
            return True  # a function-like object, or a marked one
        else:
            # A callable object (a class included: its metaclass's __call__
            # builds the instance): what runs is its type's __call__. A type
            # without one yields type.__call__, a method-wrapper: sync.
            value = kind.__call__
    return False


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


class Limits:
    """The limits common to every executor, checked; each names its argument.

    Raises:
        TypeError, ValueError: as the ``check_*`` functions; ``TypeError``
            for ``burst`` without ``max_per_second``.
    """

    __slots__ = ("burst", "call_timeout", "max_pending", "max_per_second", "max_wait")

    def __init__(
        self,
        max_pending: object,
        max_wait: object,
        max_per_second: object,
        burst: object,
        call_timeout: object = None,
    ) -> None:
        self.max_pending = check_optional_int("max_pending", max_pending, 0)
        self.max_wait = check_optional_positive("max_wait", max_wait)
        self.call_timeout = check_optional_positive("call_timeout", call_timeout)
        self.max_per_second = check_optional_positive("max_per_second", max_per_second)
        if burst is None:
            self.burst = 1
        else:
            self.burst = check_int("burst", burst, 1)
            if self.max_per_second is None:
                raise TypeError(
                    f"burst={burst!r} has no effect without max_per_second: "
                    "pass both, or neither"
                )
