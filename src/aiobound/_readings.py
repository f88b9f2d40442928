"""What every gate is and shows: the gate protocol, its readings, its waits.

A *gate* counts slots. The call path (:mod:`aiobound._calls`) takes a slot
from one before it hands a call over and gives it back when the call ends;
it sees every gate through :class:`Gate`, whichever counting rule is behind
it: the loop-only :class:`~aiobound._slots.SlotGate`, one partition of a
:class:`~aiobound._partitions.PartitionedGate`, or an executor's view of a
:class:`~aiobound._shared.SharedBound`. What a gate promises (FIFO, no
overtaking, exact counts under cancellation, ``max_wait`` never early, close
wakes everyone, resize) is proven once, for every gate, by
``tests/test_gate_contract.py``.

:class:`WaitStats` is the wait bookkeeping every gate keeps the same way
(grants, the waits of those that waited, a histogram and a moving average),
and :class:`GateReadings` the read-only attributes built on it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from ._histogram import RECENT_WEIGHT, LatencyHistogram, Recorder

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._deadlines import Deadline

__all__ = (
    "Counted",
    "CountingGate",
    "ExecutorGate",
    "Gate",
    "GateReadings",
    "WaitStats",
)


class Counted(Protocol):
    """What every gate counts and shows, whole or in part."""

    @property
    def bound(self) -> int:
        """Most slots held at once (for a partition: the executor's bound)."""

    @property
    def closed(self) -> bool:
        """Whether the gate was closed."""

    @property
    def in_use(self) -> int:
        """Slots held."""

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""

    @property
    def wait_recent(self) -> float:
        """Moving average of the latest waits that ended with a slot."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create waiters on *loop* from now on."""

    def release(self) -> None:
        """Give a slot back; the first waiter it may go to gets it.

        A shared bound's view also accepts it from other threads.
        """


class Gate(Counted, Protocol):
    """The slots a call path takes and gives back, on one event loop.

    ``acquire`` waits in FIFO order, ``try_acquire``/``try_take`` never
    wait and never overtake a waiter, ``release`` hands the slot to the
    first waiter it may go to. Every method is called on the gate's loop;
    only a shared bound's view also accepts ``release`` from other threads.
    """

    @property
    def max_pending(self) -> int | None:
        """Most callers allowed to wait, or ``None``."""

    @property
    def max_wait(self) -> float | None:
        """Seconds a caller may wait, or ``None``."""

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; ``ClosedError`` once closed."""

    def try_take(self) -> bool:
        """:meth:`try_acquire`, answering ``False`` once closed."""

    async def acquire(self, deadline: Deadline | None = None) -> None:
        """Take a slot, waiting in FIFO order; see each gate's docstring."""

    def would_admit_now(self) -> bool:
        """Whether a caller arriving now would get a slot at once."""

    def can_queue(self) -> bool:
        """Whether a caller arriving now would not be refused at once."""


class ExecutorGate(Counted, Protocol):
    """The gate of a whole executor: closed, resized and waited on as one.

    A plain executor's is its lane's :class:`Gate`; with partitions, the
    :class:`~aiobound._partitions.PartitionedGate` over every lane's part.
    """

    def resize(self, bound: int) -> None:
        """Change the bound; never more than the larger of old and new held."""

    def close(self) -> None:
        """Refuse new acquisitions; wake every waiter with ``ClosedError``."""

    async def wait_idle(self) -> None:
        """Wait until no slot is held."""


class WaitStats:
    """The waits of the callers granted a slot, recorded in O(1).

    ``admitted`` counts every grant; a grant at once adds 1 to it and
    nothing else (the hot path), a grant after a wait is :meth:`record`-ed.
    """

    __slots__ = ("admitted", "maximum", "recent", "recorder", "total")

    def __init__(self) -> None:
        self.admitted = 0  # slots granted, at once or after a wait
        self.total = 0.0  # seconds waited, summed over the grants
        self.maximum = 0.0
        # Waits of the grants after a wait; the grants at once are the
        # admissions it lacks, added as zeros when it is read.
        self.recorder = Recorder()
        self.recent = -1.0  # moving average of waits; < 0: none yet

    def record(self, waited: float) -> None:
        """Count a grant after *waited* seconds."""
        self.admitted += 1
        self.total += waited
        if waited > self.maximum:
            self.maximum = waited
        self.recorder.record(waited)
        recent = self.recent
        self.recent = (
            waited if recent < 0.0 else recent + RECENT_WEIGHT * (waited - recent)
        )

    @property
    def average(self) -> float:
        """Mean seconds waited per grant (grants at once count 0)."""
        return self.total / self.admitted if self.admitted else 0.0

    def histogram(self) -> LatencyHistogram:
        """Seconds waited per grant (grants at once count 0)."""
        recorder = self.recorder
        return recorder.snapshot(self.admitted - sum(recorder.buckets))

    @classmethod
    def merged(cls, parts: Iterable[WaitStats], recent: float) -> WaitStats:
        """One :class:`WaitStats` adding up *parts*, with the given ``recent``."""
        merged = cls()
        buckets = merged.recorder.buckets
        for part in parts:
            merged.admitted += part.admitted
            merged.total += part.total
            merged.maximum = max(merged.maximum, part.maximum)
            merged.recorder.sum += part.recorder.sum
            for index, count in enumerate(part.recorder.buckets):
                buckets[index] += count
        merged.recent = recent
        return merged


class GateReadings:
    """The limits, the load and the waits of a gate, read from its attributes.

    The gates keep the same attributes under the same names; these
    read-only properties read them, so that each gate states only what it
    computes differently.
    """

    __slots__ = ()

    _bound: int
    _max_pending: int | None
    _max_wait: float | None
    _in_use: int
    waits: WaitStats

    @property
    def bound(self) -> int:
        """Total number of slots."""
        return self._bound

    @property
    def max_pending(self) -> int | None:
        """Most callers allowed to wait, or ``None`` for no limit."""
        return self._max_pending

    @property
    def max_wait(self) -> float | None:
        """Seconds a caller may wait for a slot, or ``None``."""
        return self._max_wait

    @property
    def in_use(self) -> int:
        """Slots held."""
        return self._in_use

    @property
    def wait_recent(self) -> float:
        """Moving average of the latest waits that ended with a slot.

        Exponentially weighted (the newest counts 1/8), over the callers that
        had to wait and were then granted a slot; immediate grants do not
        count, and the value stays as it was while nobody waits. ``0.0``
        before any wait. Updated in O(1) at each grant.
        """
        return max(self.waits.recent, 0.0)


class CountingGate(GateReadings):
    """Slots held against a bound, on one loop: the count every loop gate keeps.

    A subclass says how a slot goes to the next waiter
    (:meth:`_hand_over_one`) and how its rooms close (:meth:`_close_rooms`);
    resizing, closing and waiting until idle are the same for all.
    """

    __slots__ = ("_bound", "_idle", "_in_use", "closed", "peak_in_use")

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._in_use = 0
        self._idle: asyncio.Event | None = None
        self.closed = False
        self.peak_in_use = 0

    def _hand_over_one(self) -> bool:  # pragma: no cover - abstract
        """Hand a slot, already counted, to the next waiter; whether one got it."""
        raise NotImplementedError

    def _close_rooms(self) -> None:  # pragma: no cover - abstract
        """Wake every waiter with ``ClosedError``."""
        raise NotImplementedError

    def _bound_changed(self) -> None:
        """Called by :meth:`resize` before waiters are admitted."""

    def resize(self, bound: int) -> None:
        """Change the number of slots.

        Growing hands the new slots to waiters at once. Shrinking takes no
        slot away: calls holding one keep it, and no waiter is admitted until
        fewer than ``bound`` slots are held. Never more than the larger of
        the old and new bound are held.
        """
        self._bound = bound
        self._bound_changed()
        while self._in_use < self._bound:
            self._in_use += 1
            if not self._hand_over_one():
                self._in_use -= 1
                return
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use

    def close(self) -> None:
        """Refuse new acquisitions and wake every waiter with ClosedError."""
        if self.closed:
            return
        self.closed = True
        self._close_rooms()

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
