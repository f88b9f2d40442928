"""A smooth rate limit on starting calls (GCRA, decided at the real start).

The limiter keeps a theoretical arrival time ``TAT``. A call may start at the
instant ``now`` when ``now >= TAT - (burst - 1) / per_second``; starting sets
``TAT = max(TAT, now) + 1 / per_second``. So at most ``burst`` calls start
back to back after an idle spell, idle time builds no credit beyond that, and
over any window of length ``t`` at most ``burst + t * per_second`` calls
start.

The rule is applied to the real instants of start: nothing is booked ahead.
Callers that may not start yet queue in FIFO order; one timer waits for the
head's turn. When it fires, the head is woken only if its turn has come on
the limiter's clock (a timer that fires early is set again for the rest), and
the head takes its turn when its task resumes, which is when its call starts.
So a stalled loop (timers firing late, all at once) starts the queued calls
spaced as the rule says, never in a burst. A cancelled waiter leaves the
queue at once and took no turn.

The decision reads :func:`time.monotonic` (the loop's clock may tick in whole
milliseconds, as uvloop's does); the timers are the loop's ``call_later``.
:meth:`RateLimiter.bind` accepts another clock and ``call_later``, which the
tests use to drive a fake clock by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ._errors import closed_on_arrival, closed_while_waiting
from ._waiting import WaitingRoom

if TYPE_CHECKING:
    import asyncio

    from ._deadlines import Deadline
    from ._waiting import Waiter

__all__ = ("RateLimiter",)

# A start this close before its turn counts as on time: float rounding in the
# schedule, far below any clock's resolution, not a rate.
_ROUNDING = 1e-9


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


# loop.call_later's shape: (delay, callback, *args) -> a handle to cancel.
CallLater = Callable[..., _Cancellable]


class RateLimiter:
    """Spaces call starts ``1 / per_second`` apart, allowing ``burst`` at once.

    The callers that may not start yet wait in a
    :class:`~aiobound._waiting.WaitingRoom` (FIFO, exact under
    cancellation); this class holds the rule that lets its first one in.

    Args:
        per_second: Most calls started per second, on average (> 0).
        burst: Calls that may start back to back after an idle spell (>= 1).
    """

    __slots__ = (
        "_call_later",
        "_clock",
        "_closed",
        "_interval",
        "_room",
        "_tat",
        "_timer",
        "_tolerance",
        "_woken",
        "burst",
        "limited",
        "per_second",
    )

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._interval = 1.0 / per_second
        self._tolerance = (burst - 1) * self._interval
        self._tat = float("-inf")
        self._clock: Callable[[], float] = time.monotonic
        self._call_later: CallLater | None = None
        self._room = WaitingRoom(self, None, None)
        # The head, let in because its turn came; it takes the turn when its
        # task resumes. Still counted as waiting until then.
        self._woken: Waiter | None = None
        self._timer: _Cancellable | None = None
        self._closed = False
        self.limited = 0  # calls that had to wait for their turn

    def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] | None = None,
        call_later: CallLater | None = None,
    ) -> None:
        """Use *loop*'s timers and :func:`time.monotonic`, or the ones given."""
        self._room.bind(loop)
        self._clock = clock or time.monotonic
        self._call_later = call_later or loop.call_later

    @property
    def waiting(self) -> int:
        """Calls currently waiting for their turn."""
        return self._room.waiting + (self._woken is not None)

    def would_start_now(self) -> bool:
        """Whether :meth:`try_start` would take a turn now; changes nothing."""
        if self._room.waiting or self._woken is not None or self._closed:
            return False
        return self._clock() >= self._tat - self._tolerance - _ROUNDING

    def try_start(self) -> bool:
        """Take a turn now if one is free; return whether one was taken.

        A turn is taken only if nobody waits (no overtaking) and the rate
        allows a start at this instant. When ``False`` is returned nothing
        changed. Never yields; after :meth:`close` always ``False``.
        """
        if self._room.waiting or self._woken is not None or self._closed:
            return False
        now = self._clock()
        if now < self._tat - self._tolerance - _ROUNDING:
            return False
        self._tat = max(self._tat, now) + self._interval
        return True

    async def wait_turn(self, deadline: Deadline | None = None) -> None:
        """Wait until this call may start, in FIFO order; take the turn.

        Does not yield if nobody waits and a start is allowed now. The turn
        is taken at the instant this returns, so the call should start
        without awaiting anything else first.

        Raises:
            ClosedError: :meth:`close` was called, before or while waiting.
            DeadlineExceeded: *deadline* passed while it waited.

        Cancellation: the waiter leaves the queue at once and takes no turn;
        the next waiter gets its chance at once if its turn has come.
        """
        if self.try_start():
            return
        if self._closed:
            raise closed_on_arrival()
        self.limited += 1
        room = self._room
        turn = room.join(None, deadline)
        if room.waiting == 1:
            self._serve_head()
        await room.wait(turn)
        if self._closed:  # let in, then closed before this task resumed
            raise closed_while_waiting()
        self._woken = None
        self._tat = max(self._tat, self._clock()) + self._interval
        self._serve_head()

    def _serve_head(self) -> None:
        """Let the first waiter in if its turn has come, else set a timer.

        Does nothing while a woken waiter has not taken its turn yet.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._woken is not None:
            return
        room = self._room
        head = room.first()
        if head is None:
            return
        wait = self._tat - self._tolerance - self._clock()
        if wait <= _ROUNDING:
            self._woken = head
            room.admit(head)
        else:
            assert self._call_later is not None
            self._timer = self._call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._serve_head()

    def close(self) -> None:
        """Wake every waiting call with :class:`ClosedError`; refuse new ones.

        A call woken for its turn whose task has not resumed yet gets
        :class:`ClosedError` too (its turn is not taken).
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._woken = None
        self._room.close(closed_while_waiting)

    # -- the room's keeper -------------------------------------------------------

    def refusal(self, waiter: Waiter, deadline: bool) -> BaseException | None:
        """Turns have no ``max_wait``; a call's deadline refuses it."""
        if deadline and waiter.deadline is not None:
            return waiter.deadline.exceeded("waiting")
        return None

    def waiter_left(self, waiter: Waiter) -> None:
        """A cancelled waiter took no turn; with nobody left, stop the timer.

        When it was the head, the next waiter's turn comes when the head's
        would have (nothing started meanwhile): the head's timer serves it.
        """
        if not self._room.waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def admitted_but_left(self, waiter: Waiter) -> None:
        """Woken, then cancelled before resuming: the next one gets its chance."""
        if self._woken is waiter:
            self._woken = None
            self._serve_head()
