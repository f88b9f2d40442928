"""The slot gate: a FIFO counting gate with a waiting-room limit and a close.

Why not :class:`asyncio.Semaphore`? It would do for the counting, but aiobound
needs three things it lacks on every Python from 3.10 to 3.13:

* a public, O(1) count of waiters, to refuse the ``max_pending + 1``-th caller
  at once (load shedding) and to report ``waiting`` in ``stats()``;
* a way to wake every waiter with :class:`ClosedError` when the executor closes;
* one behaviour on every supported patch release: its FIFO order under
  cancellation and a hang when a woken waiter was cancelled were fixed only in
  patch releases (python/cpython#90155, #93222).

So the gate is written here, with the same ``acquire``/``release`` shape. A
released slot is *handed over* straight to the first live waiter (its future
gets a result) rather than put back for anyone to grab, which keeps the order
strictly FIFO and means a caller arriving later can never overtake a waiter.

Cancellation: a waiter cancelled before it was handed a slot is dropped from
the queue and holds nothing. A waiter cancelled in the same loop iteration in
which it was handed a slot (the result is set, the task has not resumed yet)
passes that slot on at once, so no slot is ever lost (the trap of anyio#947).

The gate never touches threads: every method must be called from the loop it
is bound to. Cross-thread completion is :mod:`aiobound._bridge`'s business.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ._errors import ClosedError, OverloadedError

__all__ = ("SlotGate",)

# Cancelled waiters stay in the deque until they reach its head or until they
# outnumber the live ones (plus this slack), so that a burst of cancellations
# (timeouts under overload) costs amortized O(1) each, not an O(n) remove.
_COMPACT_MIN_DEAD = 32


class SlotGate:
    """A counting gate of ``bound`` slots with a FIFO waiting room.

    Args:
        bound: Number of slots (>= 1).
        max_pending: Most coroutines allowed to wait, ``None`` for no limit.
    """

    __slots__ = (
        "_bound",
        "_closed",
        "_idle",
        "_in_use",
        "_loop",
        "_max_pending",
        "_waiters",
        "_waiting",
        "peak_in_use",
        "rejected",
    )

    def __init__(self, bound: int, max_pending: int | None) -> None:
        self._bound = bound
        self._max_pending = max_pending
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Waiters not yet gone: those in the deque, less the cancelled ones
        # whose _abandon() has already run.
        self._waiting = 0
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.peak_in_use = 0
        self.rejected = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the gate to *loop*; waiter futures are created on it."""
        self._loop = loop

    @property
    def bound(self) -> int:
        """Total number of slots."""
        return self._bound

    @property
    def max_pending(self) -> int | None:
        """Most coroutines allowed to wait, or ``None``."""
        return self._max_pending

    @property
    def in_use(self) -> int:
        """Slots currently held."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Coroutines currently waiting for a slot."""
        return self._waiting

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; return whether one was taken.

        Never overtakes a waiter: while anyone waits, this returns ``False``.

        Raises:
            ClosedError: the gate is closed.
        """
        if self._closed:
            raise ClosedError("cannot submit: the executor is closed")
        if self._in_use < self._bound and not self._waiting:
            self._in_use += 1
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in FIFO order if none is free.

        Does not yield when a slot is free.

        Raises:
            ClosedError: the gate is closed, or was closed while waiting.
            OverloadedError: ``max_pending`` coroutines already wait.

        Cancellation: while waiting, the caller holds no slot and leaves the
        queue; if a slot was handed over in the same instant, it is passed on
        to the next waiter before :class:`asyncio.CancelledError` propagates.
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
        assert self._loop is not None, "SlotGate.bind() was not called"
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        self._waiting += 1
        try:
            await waiter
        except BaseException:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        """Clean up after a waiter that will not use its slot."""
        if not waiter.done():
            # Interrupted by something other than cancelling the future
            # itself (rare, e.g. an exception thrown into the coroutine).
            waiter.cancel()
        if waiter.cancelled():
            if self._closed:
                return  # close() already emptied the queue and the count
            self._waiting -= 1
            if len(self._waiters) > 2 * self._waiting + _COMPACT_MIN_DEAD:
                self._waiters = deque(w for w in self._waiters if not w.done())
            # A release() may have skipped this waiter between its cancel and
            # now, while a newcomer queued behind it because it still counted
            # as waiting: hand out any slot that is free.
            self._wake()
        elif waiter.exception() is None:
            # Handed a slot, then cancelled before resuming: pass it on.
            self.release()
        # else: woken with ClosedError by close(); it holds no slot.

    def _wake(self) -> None:
        """Hand free slots to live waiters, in FIFO order."""
        waiters = self._waiters
        while waiters and self._in_use < self._bound:
            waiter = waiters.popleft()
            if waiter.done():  # cancelled, its _abandon still to run
                continue
            self._waiting -= 1
            self._in_use += 1
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            waiter.set_result(None)

    def release(self) -> None:
        """Give a slot back, handing it to the first live waiter if any."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if waiter.done():  # cancelled, its _abandon still to run
                continue
            self._waiting -= 1
            waiter.set_result(None)  # the slot changes hands; in_use unchanged
            return
        self._in_use -= 1
        if self._in_use == 0 and self._idle is not None:
            self._idle.set()

    def close(self) -> None:
        """Refuse new acquisitions and wake every waiter with ClosedError."""
        if self._closed:
            return
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        self._waiting = 0
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(
                    ClosedError("the executor was closed while this call waited")
                )

    async def wait_idle(self) -> None:
        """Wait until no slot is held.

        Cancellation: only the wait is cancelled; the slots are unaffected.
        """
        if self._in_use == 0:
            return
        if self._idle is None:
            self._idle = asyncio.Event()
        await self._idle.wait()
