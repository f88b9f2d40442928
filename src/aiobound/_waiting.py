"""The waiting room: the one FIFO queue of waiters under every gate.

Every gate of aiobound makes callers wait the same way, on the event loop,
and the waiting is written here once, as trio's ``ParkingLot`` is the one
wait queue under all of trio's locks and limiters. A gate (the slot gate, a
partition, a shared bound's view on one loop, the rate limiter's turns) owns
one room per queue and adds only its counting rule: who may take a slot,
and when the room lets its first waiter in.

What the room keeps, for every gate alike:

* **FIFO.** Waiters join at the tail; :meth:`WaitingRoom.first` and
  :meth:`WaitingRoom.admit_first` read from the head, skipping those gone.
* **Exact counts under cancellation.** A waiter is a future whose
  ``cancel()`` takes it out of ``waiting`` at that instant (``Task.cancel``,
  ``wait_for``, ``timeout`` and anyio's cancel scopes all cancel the future
  the task awaits), so a caller arriving in the same loop iteration is
  neither refused by ``max_pending`` on its account nor queued behind it.
  Gone waiters stay in the deque until they reach the head, or until they
  outnumber the live ones by :data:`COMPACT_SLACK`: a burst of cancellations
  costs amortized O(1) each.
* **A slot handed to a waiter that just left is passed on.** A waiter let in
  (its future has a result) whose task is cancelled before it resumes, or is
  interrupted otherwise, will not use what it was given: the room tells the
  gate (:meth:`Keeper.admitted_but_left`), which passes it on.
* **``max_wait`` and deadlines, never early, never late.** A waiter is
  refused with the gate's error once it has waited ``max_wait`` seconds of
  :func:`time.monotonic`, or with :class:`~aiobound.DeadlineExceeded` at
  its call's deadline (a timer that fires early, as uvloop's may, whose
  delays are whole milliseconds, is set again for the rest). A waiter about
  to be let in after either has passed (the loop was late to run its
  timer) is refused instead: no admitted caller waited longer.
* **Close wakes everyone** with the gate's error.

The room never touches threads: every method runs on its loop. A shared
bound's view lets waiters in from other threads by scheduling
:meth:`WaitingRoom.admit` on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._deadlines import Deadline
    from ._readings import WaitStats

__all__ = ("COMPACT_SLACK", "Keeper", "Waiter", "WaitingRoom")

COMPACT_SLACK = 32
"""Gone waiters tolerated in a deque beyond twice the live ones."""


class Keeper(Protocol):
    """The gate that owns a room: the counting rule behind its waiters."""

    def refusal(self, waiter: Waiter, deadline: bool) -> BaseException | None:
        """*waiter*'s ``max_wait`` (or, with *deadline*, its deadline) passed.

        Counts the refusal and returns the error to refuse it with: for a
        deadline, ``waiter.deadline.exceeded("waiting")``. ``None`` keeps it
        waiting (a shared bound's view whose waiter was just handed a slot
        from another thread).
        """

    def waiter_left(self, waiter: Waiter) -> None:
        """*waiter* was cancelled while it waited; the room has let it go."""

    def admitted_but_left(self, waiter: Waiter) -> None:
        """*waiter* was let in, but its task will not use what it got."""


class Waiter(asyncio.Future[None]):
    """The future one caller awaits in a :class:`WaitingRoom`.

    Its :meth:`cancel` tells the room at once. ``tag`` is the gate's own
    (a sequence number, a record of a shared bound); ``deadline`` the call's
    time limit, if it has one.
    """

    __slots__ = ("deadline", "room", "since", "tag", "timer")

    def __init__(
        self,
        room: WaitingRoom,
        loop: asyncio.AbstractEventLoop,
        since: float,
        tag: object,
        deadline: Deadline | None,
    ) -> None:
        super().__init__(loop=loop)
        self.room = room
        self.since = since
        self.tag = tag
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None

    def cancel(self, msg: object | None = None) -> bool:
        """Cancel the wait and take it out of the room's count at once.

        The count comes first: on a closed loop (a coroutine collected while
        it waited) the future's own ``cancel`` raises ``RuntimeError``.
        """
        if self.done():
            return False
        self.room._left(self)
        return super().cancel(msg)


class WaitingRoom:
    """A FIFO queue of waiters on one event loop, for one :class:`Keeper`.

    Args:
        keeper: The gate that owns the room.
        max_wait: Seconds a waiter may wait, ``None`` for no limit.
        waits: Where the waits of the waiters let in are recorded, or
            ``None`` (a shared bound's view records them under its lock).
    """

    __slots__ = ("_loop", "_waiters", "keeper", "max_wait", "waiting", "waits")

    def __init__(
        self, keeper: Keeper, max_wait: float | None, waits: WaitStats | None
    ) -> None:
        self.keeper = keeper
        self.max_wait = max_wait
        self.waits = waits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[Waiter] = deque()
        # Live waiters: those in the deque, less the ones gone (let in,
        # cancelled, refused) whose departure has already been counted.
        self.waiting = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create waiters on *loop* from now on."""
        self._loop = loop

    def __len__(self) -> int:
        """Entries in the deque, the gone ones not yet dropped included."""
        return len(self._waiters)

    # -- joining and waiting ---------------------------------------------------

    def join(self, tag: object = None, deadline: Deadline | None = None) -> Waiter:
        """Queue a new waiter at the tail; time its ``max_wait`` and deadline."""
        loop = self._loop
        assert loop is not None, f"{type(self.keeper).__name__}.bind() was not called"
        now = time.monotonic()
        waiter = Waiter(self, loop, now, tag, deadline)
        left = self._time_left(waiter, now)
        if left is not None:
            waiter.timer = loop.call_later(left, self._timer_fired, waiter)
        self._waiters.append(waiter)
        self.waiting += 1
        return waiter

    def _time_left(self, waiter: Waiter, now: float) -> float | None:
        """Seconds until *waiter*'s ``max_wait`` or deadline, whichever first."""
        left = None if self.max_wait is None else self.max_wait - (now - waiter.since)
        deadline = waiter.deadline
        if deadline is not None and (left is None or deadline.due - now < left):
            left = deadline.due - now
        return left

    async def wait(self, waiter: Waiter) -> None:
        """Wait until *waiter* is let in; raise what refused it.

        Cancellation: the waiter stops counting at the instant it is
        cancelled; if it was let in during that same instant, the keeper
        passes on what it got before :class:`asyncio.CancelledError`
        propagates. The same for any other exception thrown into the wait.
        """
        try:
            await waiter
        except BaseException:
            if not waiter.done():
                # Interrupted by something other than a cancellation of the
                # future itself (an exception thrown into the coroutine, or
                # its collection): cancelling it takes it out of the count.
                with contextlib.suppress(RuntimeError):  # its loop is closed
                    waiter.cancel()
            elif not waiter.cancelled() and waiter.exception() is None:
                self.keeper.admitted_but_left(waiter)
            raise

    # -- letting in --------------------------------------------------------------

    def first(self) -> Waiter | None:
        """The first live waiter, or ``None``; gone ones at the head are dropped."""
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            if not waiter.done():
                return waiter
            del waiters[0]
        return None

    def first_due(self, now: float) -> Waiter | None:
        """The first live waiter that may still be let in at *now*, or ``None``.

        Waiters at the head whose ``max_wait`` or deadline has passed by
        *now* (on :func:`time.monotonic`) are refused on the way: none is
        let in late.
        """
        while True:
            waiter = self.first()
            if waiter is None:
                return None
            left = self._time_left(waiter, now)
            if left is None or left > 0.0 or not self.refuse(waiter):
                return waiter

    def admit_first(self) -> Waiter | None:
        """Let the first live waiter in (see :meth:`first_due`); return it.

        ``None`` when nobody (left) waits.
        """
        now = time.monotonic()
        waiter = self.first_due(now)
        if waiter is not None:
            self.admit(waiter, now)
        return waiter

    def admit(self, waiter: Waiter, now: float | None = None) -> None:
        """Let *waiter* in: its wait ends with a result (a slot, a turn).

        *now* is the instant the decision to let it in was taken (default:
        now), so that the wait recorded is the one that decision checked.
        Does nothing if it is gone already.
        """
        if self._settle(waiter):
            waits = self.waits
            if waits is not None:
                # time.monotonic, not loop.time: uvloop's clock ticks in ms.
                waits.record((time.monotonic() if now is None else now) - waiter.since)
            waiter.set_result(None)
            waiters = self._waiters
            if waiters and waiters[0] is waiter:
                del waiters[0]

    def reject(self, waiter: Waiter, error: BaseException) -> None:
        """End *waiter*'s wait with *error* (its gate refused it elsewhere).

        Does nothing if it is gone already.
        """
        if self._settle(waiter):
            waiter.set_exception(error)
            self._maybe_compact()

    def _settle(self, waiter: Waiter) -> bool:
        """Take live *waiter* out of the count, timer off; ``False`` if gone."""
        if waiter.done():
            return False
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        self.waiting -= 1
        return True

    def close(self, error: Callable[[], BaseException]) -> None:
        """Wake every live waiter with a new ``error()``; empty the room."""
        waiters, self._waiters = self._waiters, deque()
        self.waiting = 0
        for waiter in waiters:
            if waiter.timer is not None:
                waiter.timer.cancel()
                waiter.timer = None
            if not waiter.done():
                waiter.set_exception(error())

    # -- leaving -----------------------------------------------------------------

    def _timer_fired(self, waiter: Waiter) -> None:
        """*waiter*'s timer fired: refuse it if its time is up.

        Timers may fire early, so the wait is measured on
        :func:`time.monotonic` and, if short, the timer is set again for the
        rest.
        """
        if waiter.done():
            return
        assert self._loop is not None
        left = self._time_left(waiter, time.monotonic())
        if left is not None and left > 0.0:
            waiter.timer = self._loop.call_later(left, self._timer_fired, waiter)
            return
        waiter.timer = None
        self.refuse(waiter)

    def refuse(self, waiter: Waiter) -> bool:
        """Refuse live *waiter*, whose time is up, if its keeper agrees.

        Its deadline, if passed, refuses it first; else its ``max_wait``.
        Returns whether it was refused.
        """
        deadline = waiter.deadline
        error = self.keeper.refusal(waiter, deadline is not None and deadline.passed())
        if error is None:
            return False
        self.reject(waiter, error)
        return True

    def _left(self, waiter: Waiter) -> None:
        """*waiter*'s future is being cancelled while it waits: let it go."""
        self._settle(waiter)
        self._maybe_compact()
        self.keeper.waiter_left(waiter)

    def _maybe_compact(self) -> None:
        waiters = self._waiters
        if len(waiters) > 2 * self.waiting + COMPACT_SLACK:
            self._waiters = deque(w for w in waiters if not w.done())
