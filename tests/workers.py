"""Module-level functions for the tests: importable, so process pools can run
them too (``identity``, the call that does nothing but return its argument,
is every test's no-op)."""

from __future__ import annotations

import contextvars
import os
from typing import TypeVar

T = TypeVar("T")

tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="unset")


class WorkerError(Exception):
    pass


def identity(value: T) -> T:
    return value


def square(x: int) -> int:
    return x * x


def pid(_: object = None) -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise WorkerError(message)


def die(code: int) -> None:
    os._exit(code)


def read_tag() -> str:
    return tag.get()


def time_left(_: object = None) -> float | None:
    from aiobound import remaining

    return remaining()
