"""The snapshot returned by :meth:`BoundedLoopExecutor.stats`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("ExecutorStats",)


@dataclass(frozen=True, slots=True)
class ExecutorStats:
    """A point-in-time view of a :class:`BoundedLoopExecutor`.

    Every call handed to the underlying executor ends in exactly one of
    ``completed``, ``failed`` or ``cancelled``, so at any moment
    ``submitted == completed + failed + cancelled + running``, where ``running``
    is the number of submitted calls whose underlying future is not done yet
    (at most ``in_flight``).

    Attributes:
        bound: Most calls that may be submitted and unfinished at once.
        in_flight: Slots taken right now: calls submitted to the underlying
            executor and not finished there yet (a slot is also held for the
            instant between being granted and being submitted).
        waiting: Coroutines waiting for a slot.
        max_pending: Most coroutines allowed to wait, or ``None`` for no limit.
        peak_in_flight: Highest ``in_flight`` seen since creation.
        submitted: Calls handed to the underlying executor's ``submit``,
            including those whose ``submit`` raised.
        completed: Calls that returned a value.
        failed: Calls that raised, plus submissions the underlying executor
            refused by raising from ``submit``.
        cancelled: Calls cancelled before they started (never ran).
        rejected: Calls refused with :class:`OverloadedError`.
        closed: Whether :meth:`~BoundedLoopExecutor.aclose` has been called.
    """

    bound: int
    in_flight: int
    waiting: int
    max_pending: int | None
    peak_in_flight: int
    submitted: int
    completed: int
    failed: int
    cancelled: int
    rejected: int
    closed: bool
