"""Module-level functions for process-pool tests (they must be importable)."""

from __future__ import annotations

import contextvars
import os

tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="unset")


class WorkerError(Exception):
    pass


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
