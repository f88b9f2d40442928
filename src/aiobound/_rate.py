"""A smooth rate limit on starting calls (GCRA, a virtual-schedule bucket).

Each admitted call books the next start time on a virtual schedule spaced
``1 / per_second`` apart. A call may start up to ``burst - 1`` intervals ahead
of the schedule, so at most ``burst`` calls start back to back after an idle
spell, and over any window of length ``t`` at most ``burst + t * per_second``
calls start. Idle time does not build up credit beyond ``burst``.

The limiter is bound to a clock and a ``call_later`` (the event loop's by
default), which the tests replace with a fake clock they advance by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ._errors import ClosedError

if TYPE_CHECKING:
    import asyncio

__all__ = ("RateLimiter",)


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


# loop.call_later's shape: (delay, callback, *args) -> a handle to cancel.
CallLater = Callable[..., _Cancellable]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RateLimiter:
    """Spaces call starts ``1 / per_second`` apart, allowing ``burst`` at once.

    Args:
        per_second: Most calls started per second, on average (> 0).
        burst: Calls that may start back to back after an idle spell (>= 1).
    """

    __slots__ = (
        "_call_later",
        "_clock",
        "_interval",
        "_loop",
        "_next",
        "_tolerance",
        "_waiters",
        "burst",
        "limited",
        "per_second",
    )

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._interval = 1.0 / per_second
        self._tolerance = (burst - 1) * self._interval
        self._next = float("-inf")  # the virtual schedule's next start
        self._clock: Callable[[], float] | None = None
        self._call_later: CallLater | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self.limited = 0  # calls that had to wait for their turn

    def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] | None = None,
        call_later: CallLater | None = None,
    ) -> None:
        """Use *loop* (and its clock and timers unless others are given)."""
        self._loop = loop
        self._clock = clock or loop.time
        self._call_later = call_later or loop.call_later

    def _book(self) -> tuple[float, float]:
        """Book the next start; return (seconds to wait, booked schedule)."""
        assert self._clock is not None, "RateLimiter.bind() was not called"
        now = self._clock()
        scheduled = max(self._next, now)
        self._next = scheduled + self._interval
        return max(0.0, scheduled - self._tolerance - now), self._next

    async def wait_turn(self) -> None:
        """Wait until this call may start. Does not yield if it may start now.

        Raises:
            ClosedError: :meth:`close` was called while waiting.

        Cancellation: the turn is given back if no later call booked one
        after it (otherwise the schedule stays as it is: the rate can only
        come out lower, never higher).
        """
        delay, booked = self._book()
        if delay <= 0.0:
            return
        self.limited += 1
        assert self._loop is not None
        assert self._call_later is not None
        future: asyncio.Future[None] = self._loop.create_future()
        timer = self._call_later(delay, _wake, future)
        self._waiters.add(future)
        try:
            await future
        except BaseException:
            timer.cancel()
            if self._next == booked:
                self._next -= self._interval
            raise
        finally:
            self._waiters.discard(future)

    def close(self) -> None:
        """Wake every waiting call with :class:`ClosedError`."""
        for future in self._waiters:
            if not future.done():
                future.set_exception(
                    ClosedError("the executor was closed while this call waited")
                )
