"""Deadlines: one time limit per call, over its wait and its run.

A :class:`Deadline` is made when a call with a time limit is made (``submit``
or ``run`` called, or a ``map`` item pulled) and travels with it: the
waiting room refuses a waiter at its deadline (stage ``"waiting"``), and the
call path cancels a call still queued in the pool, or releases the caller of
a running one, when it passes (:mod:`aiobound._calls`).

Inside the call, :func:`remaining` tells the function how much of its time
is left, so that it can pass the rest on (a database ``statement_timeout``,
an HTTP client's timeout). The deadline reaches the worker with the call
(:func:`run_within`): on a thread pool as a :func:`time.monotonic` instant;
on a process pool or a cluster, which may not share that clock, as a
:func:`time.time` instant, so there the remaining time is off by however
much the two machines' clocks differ.
"""

from __future__ import annotations

import contextvars
import time
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import DeadlineExceeded, deadline_exceeded

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("Deadline", "remaining", "run_within")

T = TypeVar("T")

# In a call run with a deadline: (clock, instant) of that deadline.
_current: contextvars.ContextVar[tuple[Callable[[], float], float] | None] = (
    contextvars.ContextVar("aiobound_deadline", default=None)
)


class Deadline:
    """The time limit of one call: *timeout* seconds from *start*.

    Args:
        timeout: The call's time limit, in seconds.
        start: When the limit starts, on :func:`time.monotonic` (default:
            now).
    """

    __slots__ = ("due", "timeout")

    def __init__(self, timeout: float, start: float | None = None) -> None:
        self.timeout = timeout
        self.due = (time.monotonic() if start is None else start) + timeout

    def passed(self) -> bool:
        """Whether the deadline has passed (on :func:`time.monotonic`)."""
        return time.monotonic() >= self.due

    def exceeded(self, stage: str) -> DeadlineExceeded:
        """The error for a call whose deadline passed at *stage*."""
        return deadline_exceeded(stage, self.timeout)

    def for_worker(self, same_clock: bool) -> tuple[bool, float]:
        """The deadline as it travels to the worker: ``(monotonic?, instant)``.

        *same_clock*: the worker reads this process's :func:`time.monotonic`
        (a thread); else it gets a wall-clock instant.
        """
        if same_clock:
            return True, self.due
        return False, time.time() + (self.due - time.monotonic())


def run_within(
    monotonic: bool, due: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """Run ``fn(*args, **kwargs)`` in the worker, its deadline known to it.

    :func:`remaining` reads it meanwhile; it is forgotten when ``fn`` ends,
    so that a pool's thread keeps nothing for its next call. Picklable by
    reference (a worker process imports aiobound).
    """
    token = _current.set((time.monotonic if monotonic else time.time, due))
    try:
        return fn(*args, **kwargs)
    finally:
        _current.reset(token)


def remaining() -> float | None:
    """Seconds left before the deadline of the call running this code.

    Call it inside a function run by a :class:`~aiobound.BoundedLoopExecutor`
    (or a :class:`~aiobound.BoundedExecutor`) with a time limit
    (``call_timeout=`` or ``with_timeout()``), to pass the rest on: a
    database ``statement_timeout``, an HTTP client's timeout. Never below
    ``0.0``: a call whose deadline has passed (its caller was released, and
    it runs on) reads ``0.0``.

    Returns ``None`` outside such a call: in a call without a time limit, in
    other code, or in a thread the function started itself (the deadline is
    in the call's :mod:`contextvars` context).

    On a thread pool the deadline is a :func:`time.monotonic` instant; on a
    process pool or a cluster it travels as a :func:`time.time` instant, so
    the answer is off by the difference between the two machines' clocks.
    """
    current = _current.get()
    if current is None:
        return None
    clock, due = current
    return max(0.0, due - clock())


def wall_clock_deadline(fn: object, args: tuple[Any, ...]) -> float | None:
    """The deadline of a call as a pool that keeps its own time receives it.

    A call with a deadline reaches a pool that does not share this process's
    clock (a process pool, a cluster) as ``run_within(False, due, fn, *args)``:
    this returns ``due``, a :func:`time.time` instant, for such a call, and
    ``None`` for any other (no deadline, or one on the monotonic clock).
    The Dask and Ray executors read it to cancel a task that no worker has
    taken by then.
    """
    if fn is run_within and len(args) >= 2 and args[0] is False:
        due = args[1]
        return due if isinstance(due, float) else None
    return None
