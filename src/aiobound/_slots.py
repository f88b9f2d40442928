"""The slot gate: a FIFO counting gate with a waiting room, a close and a resize.

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

Cancellation: a waiter cancelled before it was handed a slot stops counting
at the instant it is cancelled (``Task.cancel()`` cancels the future the task
awaits, and the waiter's future tells the gate), so a caller arriving in the
same loop iteration is neither refused by ``max_pending`` on its account nor
queued behind it; it holds nothing. A waiter cancelled in the same loop
iteration in which it was handed a slot (the result is set, the task has not
resumed yet) passes that slot on when its task resumes, so no slot is ever
lost (the trap of anyio#947).

The gate never touches threads: every method must be called from the loop it
is bound to. Cross-thread completion is :mod:`aiobound._bridge`'s business.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ._errors import (
    OverloadedError,
    closed_on_arrival,
    closed_while_waiting,
)
from ._histogram import RECENT_WEIGHT, LatencyHistogram, Recorder
from ._readings import WaitReadings

__all__ = ("SlotGate",)

# Cancelled waiters stay in the deque until they reach its head or until they
# outnumber the live ones (plus this slack), so that a burst of cancellations
# (timeouts under overload) costs amortized O(1) each, not an O(n) remove.
_COMPACT_SLACK = 32


class _Waiter(asyncio.Future[None]):
    """The future one caller awaits while it waits for a slot.

    Its :meth:`cancel` tells the gate at once, so the gate's count of waiters
    is exact from the instant a waiting task is cancelled, not from the later
    instant its task resumes.
    """

    __slots__ = ("gate", "since", "timer")

    def __init__(
        self, gate: SlotGate, loop: asyncio.AbstractEventLoop, since: float
    ) -> None:
        super().__init__(loop=loop)
        self.gate = gate
        self.since = since
        self.timer: asyncio.TimerHandle | None = None

    def cancel(self, msg: object | None = None) -> bool:
        """Cancel the wait and take it out of the gate's count at once."""
        if not super().cancel(msg):
            return False
        self.gate._drop(self)
        return True


class SlotGate(WaitReadings):
    """A counting gate of ``bound`` slots with a FIFO waiting room.

    Args:
        bound: Number of slots (>= 1).
        max_pending: Most coroutines allowed to wait, ``None`` for no limit.
        max_wait: Seconds a coroutine may wait before it is refused with
            :class:`OverloadedError` (measured on :func:`time.monotonic`,
            never earlier), ``None`` for no limit.
    """

    __slots__ = (
        "_admitted",
        "_bound",
        "_closed",
        "_idle",
        "_in_use",
        "_loop",
        "_max_pending",
        "_max_wait",
        "_wait_histogram",
        "_wait_max",
        "_wait_recent",
        "_wait_total",
        "_waiters",
        "_waiting",
        "peak_in_use",
        "rejected",
        "timed_out",
    )

    def __init__(
        self, bound: int, max_pending: int | None, max_wait: float | None = None
    ) -> None:
        self._bound = bound
        self._max_pending = max_pending
        self._max_wait = max_wait
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()
        # Waiters not yet gone: those in the deque, less the cancelled or
        # timed-out ones whose clean-up has already run.
        self._waiting = 0
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admitted = 0  # slots granted, at once or after a wait
        self._wait_total = 0.0  # seconds waited, summed over granted waiters
        self._wait_max = 0.0
        # Waits of the granted waiters; slots granted at once are the
        # admissions it lacks, added as zeros when it is read.
        self._wait_histogram = Recorder()
        self._wait_recent = -1.0  # moving average of waits; < 0: none yet
        self.peak_in_use = 0
        self.rejected = 0  # refused at once: max_pending reached
        self.timed_out = 0  # refused after waiting max_wait

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the gate to *loop*; waiter futures are created on it."""
        self._loop = loop

    @property
    def bound(self) -> int:
        """Total number of slots."""
        return self._bound

    def wait_histogram(self) -> LatencyHistogram:
        """Seconds waited per granted slot (immediate grants count 0)."""
        recorder = self._wait_histogram
        return recorder.snapshot(self._admitted - sum(recorder.buckets))

    def has_free_slot(self) -> bool:
        """Whether :meth:`try_acquire` would succeed now (= :meth:`would_admit_now`)."""
        return not self._closed and self._in_use < self._bound and not self._waiting

    def would_admit_now(self) -> bool:
        """Whether a caller arriving now would get a slot at once.

        True when the gate is open, a slot is free and nobody waits (so the
        caller would overtake no one). Takes no slot and changes nothing; the
        answer holds until the next release, acquisition, resize or close.
        """
        return not self._closed and self._in_use < self._bound and not self._waiting

    def can_queue(self) -> bool:
        """Whether a caller arriving now would not be refused at once.

        True when the gate is open and the caller would get a slot or be
        allowed to wait for one, i.e. :meth:`acquire` would raise neither
        :class:`ClosedError` nor the ``max_pending`` :class:`OverloadedError`
        (it may still be refused later by ``max_wait``). Takes no slot and
        changes nothing.
        """
        if self._closed:
            return False
        if self._in_use < self._bound and not self._waiting:
            return True
        return self._max_pending is None or self._waiting < self._max_pending

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; return whether one was taken.

        Never overtakes a waiter: while anyone waits, this returns ``False``.

        Raises:
            ClosedError: the gate is closed.
        """
        if self._closed:
            raise closed_on_arrival()
        if self._in_use < self._bound and not self._waiting:
            self._in_use += 1
            self._admitted += 1
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            return True
        return False

    def try_take(self) -> bool:
        """Like :meth:`try_acquire`, but a closed gate answers ``False``."""
        if self._in_use < self._bound and not self._waiting and not self._closed:
            self._in_use += 1
            self._admitted += 1
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in FIFO order if none is free.

        Does not yield when a slot is free.

        Raises:
            ClosedError: the gate is closed, or was closed while waiting.
            OverloadedError: ``max_pending`` coroutines already wait, or this
                one waited ``max_wait`` seconds without getting a slot.

        Cancellation: while waiting, the caller holds no slot and stops
        counting as a waiter at the instant it is cancelled; if a slot was
        handed over in the same instant, it is passed on to the next waiter
        before :class:`asyncio.CancelledError` propagates.
        """
        if self.try_acquire():
            return
        if self._max_pending is not None and self._waiting >= self._max_pending:
            self.rejected += 1
            raise OverloadedError(
                f"overloaded: {self._waiting} callers already wait for a slot "
                f"(max_pending={self._max_pending}, bound={self._bound}, "
                f"in_flight={self._in_use})"
            )
        loop = self._loop
        assert loop is not None, "SlotGate.bind() was not called"
        waiter = _Waiter(self, loop, time.monotonic())
        if self._max_wait is not None:
            waiter.timer = loop.call_later(
                self._max_wait, self._expire_when_due, waiter
            )
        self._waiters.append(waiter)
        self._waiting += 1
        try:
            await waiter
        except BaseException:
            self._abandon(waiter)
            raise

    def _expire_when_due(self, waiter: _Waiter) -> None:
        """The ``max_wait`` timer of *waiter* fired: refuse it if it is due.

        Timers may fire early (uvloop rounds delays to whole milliseconds),
        so the wait is measured on :func:`time.monotonic` and, if short of
        ``max_wait``, the timer is set again for the rest: never refused early.
        """
        if waiter.done():
            return
        assert self._max_wait is not None
        assert self._loop is not None
        remaining = self._max_wait - (time.monotonic() - waiter.since)
        if remaining > 0.0:
            waiter.timer = self._loop.call_later(
                remaining, self._expire_when_due, waiter
            )
        else:
            self._expire(waiter)

    def _expire(self, waiter: _Waiter) -> None:
        """Refuse *waiter* with :class:`OverloadedError` (``max_wait``)."""
        if waiter.done():
            return
        waiter.timer = None
        self._waiting -= 1
        self.timed_out += 1
        waiter.set_exception(
            OverloadedError(
                f"overloaded: waited max_wait={self._max_wait}s for a slot "
                f"(bound={self._bound}, in_flight={self._in_use}, "
                f"waiting={self._waiting})"
            )
        )
        self._maybe_compact()

    def _drop(self, waiter: _Waiter) -> None:
        """*waiter*'s future was just cancelled while it waited: forget it.

        Runs inside ``cancel()``, so at the instant of the cancellation. The
        waiter stays in the deque until it reaches the head or a compaction.
        """
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        if self._closed:
            return  # close() already emptied the queue and the count
        self._waiting -= 1
        self._maybe_compact()

    def _abandon(self, waiter: _Waiter) -> None:
        """Clean up after a waiter whose task will not use its slot."""
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        if not waiter.done():
            # Interrupted by something other than a cancellation of the
            # future itself (e.g. an exception thrown into the coroutine):
            # cancelling it takes it out of the count.
            waiter.cancel()
        elif not waiter.cancelled() and waiter.exception() is None:
            # Handed a slot, then cancelled before resuming: pass it on.
            self.release()
        # else: cancelled (already out of the count), or refused (closed or
        # timed out) and holding no slot.

    def _maybe_compact(self) -> None:
        if len(self._waiters) > 2 * self._waiting + _COMPACT_SLACK:
            self._waiters = deque(w for w in self._waiters if not w.done())

    def _grant(self, waiter: _Waiter) -> None:
        """Give a slot to *waiter* (the caller has counted it in in_use)."""
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        # time.monotonic, not loop.time: uvloop's clock ticks in milliseconds.
        waited = time.monotonic() - waiter.since
        self._admitted += 1
        self._wait_total += waited
        if waited > self._wait_max:
            self._wait_max = waited
        self._wait_histogram.record(waited)
        recent = self._wait_recent
        self._wait_recent = (
            waited if recent < 0.0 else recent + RECENT_WEIGHT * (waited - recent)
        )
        waiter.set_result(None)

    def _wake(self) -> None:
        """Hand free slots to live waiters, in FIFO order."""
        waiters = self._waiters
        while waiters and self._in_use < self._bound:
            waiter = waiters.popleft()
            if waiter.done():  # cancelled or timed out
                continue
            self._waiting -= 1
            self._in_use += 1
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            self._grant(waiter)

    def release(self) -> None:
        """Give a slot back, handing it to the first live waiter if any.

        While more slots are held than the bound allows (after a shrink), the
        slot is retired instead of handed over.
        """
        if self._in_use <= self._bound:
            waiters = self._waiters
            while waiters:
                waiter = waiters.popleft()
                if waiter.done():  # cancelled or timed out
                    continue
                self._waiting -= 1
                self._grant(waiter)  # the slot changes hands; in_use unchanged
                return
        self._in_use -= 1
        if self._in_use == 0 and self._idle is not None:
            self._idle.set()

    def resize(self, bound: int) -> None:
        """Change the number of slots.

        Growing hands the new slots to waiters at once. Shrinking takes no
        slot away: calls holding one keep it, and no waiter is admitted until
        fewer than ``bound`` slots are held. Never more than the larger of
        the old and new bound are held.
        """
        self._bound = bound
        self._wake()

    def close(self) -> None:
        """Refuse new acquisitions and wake every waiter with ClosedError."""
        if self._closed:
            return
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        self._waiting = 0
        for waiter in waiters:
            if waiter.timer is not None:
                waiter.timer.cancel()
            if not waiter.done():
                waiter.set_exception(closed_while_waiting())

    async def wait_idle(self) -> None:
        """Wait until no slot is held.

        Meant for after :meth:`close`: then no slot can be taken any more, so
        "no slot held" lasts. On an open gate it returns at an instant when
        no slot was held, and new acquisitions may start right after it.

        Cancellation: only the wait is cancelled; the slots are unaffected.
        """
        if self._in_use == 0:
            return
        if self._idle is None:
            self._idle = asyncio.Event()
        await self._idle.wait()
