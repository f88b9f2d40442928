"""The slot gate: ``bound`` slots over one FIFO waiting room, on one loop.

Why not :class:`asyncio.Semaphore`? It would do for the counting, but aiobound
needs things it lacks on every Python from 3.10 to 3.13:

* a public, O(1) count of waiters, to refuse the ``max_pending + 1``-th caller
  at once (load shedding) and to report ``waiting`` in ``stats()``;
* a way to wake every waiter with :class:`ClosedError` when the executor
  closes, and a single waiter with :class:`OverloadedError` when it has waited
  longer than ``max_wait``;
* a bound that can change at run time;
* one behaviour on every supported patch release: its FIFO order under
  cancellation and a hang when a woken waiter was cancelled were fixed only in
  patch releases (python/cpython#90155, #93222).

So the gate is written here, with the same ``acquire``/``release`` shape. A
released slot is *handed over* straight to the first live waiter (its future
gets a result) rather than put back for anyone to grab, which keeps the order
strictly FIFO and means a caller arriving later can never overtake a waiter.
The waiting itself (cancellation, ``max_wait``, close) is the waiting room's
(:mod:`aiobound._waiting`); this module holds the counting rule only.

The gate never touches threads: every method must be called from the loop it
is bound to. Cross-thread completion is :mod:`aiobound._bridge`'s business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import (
    closed_on_arrival,
    closed_while_waiting,
    overloaded_after_wait,
    overloaded_at_once,
)
from ._readings import CountingGate, WaitStats
from ._waiting import WaitingRoom

if TYPE_CHECKING:
    import asyncio

    from ._deadlines import Deadline
    from ._histogram import LatencyHistogram
    from ._waiting import Waiter

__all__ = ("SlotGate",)


class SlotGate(CountingGate):
    """A counting gate of ``bound`` slots with a FIFO waiting room.

    Args:
        bound: Number of slots (>= 1).
        max_pending: Most coroutines allowed to wait, ``None`` for no limit.
        max_wait: Seconds a coroutine may wait before it is refused with
            :class:`OverloadedError` (measured on :func:`time.monotonic`,
            never earlier), ``None`` for no limit.
    """

    __slots__ = (
        "_max_pending",
        "_max_wait",
        "_room",
        "rejected",
        "timed_out",
        "waits",
    )

    def __init__(
        self, bound: int, max_pending: int | None, max_wait: float | None = None
    ) -> None:
        super().__init__(bound)
        self._max_pending = max_pending
        self._max_wait = max_wait
        self.waits = WaitStats()
        self._room = WaitingRoom(self, max_wait, self.waits)
        self.rejected = 0  # refused at once: max_pending reached
        self.timed_out = 0  # refused after waiting max_wait

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the gate to *loop*; waiter futures are created on it."""
        self._room.bind(loop)

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return self._room.waiting

    def wait_histogram(self) -> LatencyHistogram:
        """Seconds waited per granted slot (immediate grants count 0)."""
        return self.waits.histogram()

    def would_admit_now(self) -> bool:
        """Whether a caller arriving now would get a slot at once.

        True when the gate is open, a slot is free and nobody waits (so the
        caller would overtake no one). Takes no slot and changes nothing; the
        answer holds until the next release, acquisition, resize or close.
        """
        return self._in_use < self._bound and not self._room.waiting and not self.closed

    def can_queue(self) -> bool:
        """Whether a caller arriving now would not be refused at once.

        True when the gate is open and the caller would get a slot or be
        allowed to wait for one, i.e. :meth:`acquire` would raise neither
        :class:`ClosedError` nor the ``max_pending`` :class:`OverloadedError`
        (it may still be refused later by ``max_wait``). Takes no slot and
        changes nothing.
        """
        if self.closed:
            return False
        waiting = self._room.waiting
        if self._in_use < self._bound and not waiting:
            return True
        return self._max_pending is None or waiting < self._max_pending

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; return whether one was taken.

        Never overtakes a waiter: while anyone waits, this returns ``False``.

        Raises:
            ClosedError: the gate is closed.
        """
        if self.closed:
            raise closed_on_arrival()
        return self.try_take()

    def try_take(self) -> bool:
        """Like :meth:`try_acquire`, but a closed gate answers ``False``.

        The hot path of every call (``submit`` and ``map`` with a free slot).
        """
        if self._in_use < self._bound and not self._room.waiting and not self.closed:
            self._in_use += 1
            self.waits.admitted += 1
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            return True
        return False

    async def acquire(self, deadline: Deadline | None = None) -> None:
        """Take a slot, waiting in FIFO order if none is free.

        Does not yield when a slot is free.

        Raises:
            ClosedError: the gate is closed, or was closed while waiting.
            OverloadedError: ``max_pending`` coroutines already wait, or this
                one waited ``max_wait`` seconds without getting a slot.
            DeadlineExceeded: *deadline* passed while it waited.

        Cancellation: while waiting, the caller holds no slot and stops
        counting as a waiter at the instant it is cancelled; if a slot was
        handed over in the same instant, it is passed on to the next waiter
        before :class:`asyncio.CancelledError` propagates.
        """
        if self.try_acquire():
            return
        room = self._room
        if self._max_pending is not None and room.waiting >= self._max_pending:
            self.rejected += 1
            raise overloaded_at_once(
                room.waiting, self._max_pending, self._bound, self._in_use
            )
        await room.wait(room.join(None, deadline))

    def release(self) -> None:
        """Give a slot back, handing it to the first live waiter if any.

        While more slots are held than the bound allows (after a shrink), the
        slot is retired instead of handed over.
        """
        room = self._room
        if room.waiting and self._in_use <= self._bound and room.admit_first():
            return  # the slot changed hands; in_use unchanged
        self._in_use -= 1
        if self._in_use == 0 and self._idle is not None:
            self._idle.set()

    def _hand_over_one(self) -> bool:
        return self._room.admit_first() is not None

    def _close_rooms(self) -> None:
        self._room.close(closed_while_waiting)

    # -- the room's keeper -------------------------------------------------------

    def refusal(self, waiter: Waiter, deadline: bool) -> BaseException:
        """A waiter's time is up: count it and say why it is refused."""
        if deadline:
            assert waiter.deadline is not None
            return waiter.deadline.exceeded("waiting")
        self.timed_out += 1
        return overloaded_after_wait(
            self._max_wait, self._bound, self._in_use, self._room.waiting - 1
        )

    def waiter_left(self, waiter: Waiter) -> None:
        """A cancelled waiter needs nothing more: it held nothing."""

    def admitted_but_left(self, waiter: Waiter) -> None:
        """Handed a slot, then cancelled before resuming: pass the slot on."""
        self.release()
