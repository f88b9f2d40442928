"""Partitions: guaranteed shares of one bound, over one FIFO gate.

A :class:`PartitionedGate` owns the total bound and one :class:`Part` per
partition. Each part has a guaranteed number of slots, ``ceil(share x
bound)`` and at least 1, a ceiling, ``floor(max_share x bound)`` and at least
the guarantee (the bound when ``max_share`` is 1, the default), both
recomputed when the bound changes, its own FIFO waiting room,
``max_pending`` and ``max_wait``, and its own counters.

Who gets a slot:

* at once (:meth:`Part.try_acquire`), when fewer than ``bound`` slots are
  held in total and the partition holds fewer than its ceiling: idle
  capacity goes to whoever asks, so a partition may hold more than its
  guarantee (it *borrows*), up to its ceiling;
* when a slot is released (or the bound grows), it is handed over directly
  to the oldest waiter of a partition that holds fewer slots than its
  guarantee, if any (oldest first among those partitions); otherwise to the
  oldest waiter of a partition below its ceiling. Within a partition the
  order is always FIFO. The waiters of a partition at its ceiling are
  skipped: the slot goes to another partition's waiter, or stays free.

So a slot is left free while someone waits only when every waiter belongs
to a partition at its ceiling; that is why taking a slot at once needs only
the two counts above (and the gate open): a waiter it could overtake would
have been handed that slot already.

Never more than ``bound`` slots are held in total (or the old bound, after a
shrink, as :class:`~aiobound._slots.SlotGate` does), nor more than a
partition's ceiling by that partition (or its ceiling before a shrink), and
nothing is taken back from a call that holds a slot: a partition below its
guarantee reaches it as calls of the borrowers end, each freed slot going to
it first. When the guarantees add up to more than the bound (rounding up, or
very small bounds), the partitions below theirs are served oldest first.

Cancellation is exact and immediate, as in the slot gate: the waiter's
future tells the gate from inside its ``cancel()``. Calls made on the
executor itself belong to the partition named ``"default"``: one declared
with that name, or else an implicit one with the share left over (none when
the shares add up to 1: it then only borrows) and no ceiling.

The gate never touches threads: every method must be called from its loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from ._checks import check_optional_int, check_optional_positive
from ._errors import OverloadedError, closed_on_arrival, closed_while_waiting
from ._histogram import RECENT_WEIGHT, LatencyHistogram, Recorder
from ._readings import GateReadings

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = (
    "DEFAULT",
    "Part",
    "PartitionedGate",
    "Share",
    "ceiling_slots",
    "check_partitions",
    "guaranteed_slots",
)

DEFAULT = "default"
"""The partition of the calls made on the executor itself."""

_COMPACT_SLACK = 32


def _fraction(name: str, value: object) -> float:
    """Return *value* as a float if it is a real number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number in (0, 1], got {type(value).__name__} {value!r}"
        )
    if not (0.0 < value <= 1.0):
        raise ValueError(
            f"{name} must be a fraction of the bound in (0, 1], got {value!r}"
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class Share:
    """One partition's terms, given in ``partitions=`` in place of a bare share.

    ``partitions={"interactive": 0.75, "batch": Share(0.25, max_share=0.75)}``
    guarantees the batch a quarter of the bound under contention and never
    lets it hold more than three quarters, even while the rest is idle; a
    bare number ``x`` means ``Share(x)``. Every argument is checked when the
    object is made (``TypeError`` or ``ValueError`` naming the field).

    Attributes:
        share: The guaranteed share of the bound, in ``(0, 1]``: under
            contention the partition gets at least ``ceil(share x bound)``
            slots, at least 1.
        max_share: The borrowing ceiling, a fraction of the bound in
            ``[share, 1]``: the partition never holds more than
            ``floor(max_share x bound)`` slots (but at least its guarantee),
            even when every other slot is idle, so that much stays free for
            the other partitions' calls. Default ``1.0``: no ceiling, idle
            capacity is borrowed up to the whole bound. Recomputed when the
            bound changes, as the guarantee is.
        max_pending: Most of this partition's callers allowed to wait for a
            slot (``0``: never wait). ``None`` (default): the executor's
            ``max_pending`` applies to this partition (which may be no limit).
        max_wait: Seconds one of this partition's callers may wait for a
            slot. ``None`` (default): the executor's ``max_wait`` applies.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: ``share`` or ``max_share`` is outside ``(0, 1]``,
            ``max_share`` is below ``share``, ``max_pending`` is negative or
            ``max_wait`` is not a finite number > 0.
    """

    share: float
    _: KW_ONLY
    max_share: float = 1.0
    max_pending: int | None = None
    max_wait: float | None = None

    def __post_init__(self) -> None:
        share = _fraction("Share.share", self.share)
        max_share = _fraction("Share.max_share", self.max_share)
        if max_share < share:
            raise ValueError(
                f"Share.max_share must be at least the share {share!r}, got "
                f"{self.max_share!r}"
            )
        max_pending = check_optional_int("Share.max_pending", self.max_pending, 0)
        max_wait = check_optional_positive("Share.max_wait", self.max_wait)
        object.__setattr__(self, "share", share)
        object.__setattr__(self, "max_share", max_share)
        object.__setattr__(self, "max_pending", max_pending)
        object.__setattr__(self, "max_wait", max_wait)


def check_partitions(partitions: object) -> dict[str, Share]:
    """Return *partitions* as a dict of :class:`Share`, or raise naming it.

    A bare number ``x`` becomes ``Share(x)``.

    Raises:
        TypeError: not a mapping of str names to real shares or Shares.
        ValueError: empty, a name is empty, a share is outside (0, 1], or the
            shares add up to more than 1.
    """
    if not isinstance(partitions, Mapping):
        raise TypeError(
            "partitions must be a mapping of names to shares of the bound, got "
            f"{type(partitions).__name__} {partitions!r}"
        )
    if not partitions:
        raise ValueError("partitions must name at least one partition, got {}")
    shares: dict[str, Share] = {}
    for name, share in partitions.items():
        if not isinstance(name, str):
            raise TypeError(
                f"partitions: each name must be a str, got {type(name).__name__} "
                f"{name!r}"
            )
        if not name:
            raise ValueError("partitions: a name must not be empty")
        if isinstance(share, Share):
            shares[name] = share
            continue
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            raise TypeError(
                f"partitions[{name!r}] must be a number in (0, 1] or a Share, got "
                f"{type(share).__name__} {share!r}"
            )
        if not (0.0 < share <= 1.0):
            raise ValueError(
                f"partitions[{name!r}] must be a share of the bound in (0, 1], "
                f"got {share!r}"
            )
        shares[name] = Share(float(share))
    total = math.fsum(s.share for s in shares.values())
    if total > 1.0 + 1e-9:
        listed = {name: s.share for name, s in shares.items()}
        raise ValueError(
            f"partitions: the shares add up to {total:g}, more than 1 ({listed!r})"
        )
    return shares


def guaranteed_slots(share: float, bound: int) -> int:
    """``ceil(share x bound)``, at least 1; 0 for a share of 0."""
    if share <= 0.0:
        return 0
    # Rounded first, so that 0.7 x 10 (7.000000000000001) guarantees 7.
    return max(1, math.ceil(round(share * bound, 9)))


def ceiling_slots(max_share: float, share: float, bound: int) -> int:
    """``floor(max_share x bound)``, at least the guarantee of *share*."""
    # Rounded first, so that 0.7 x 10 (7.000000000000001) is 7 and 0.29 x
    # 100 (28.999999999999996) is 29.
    ceiling = math.floor(round(max_share * bound, 9))
    return max(guaranteed_slots(share, bound), ceiling)


class _Waiter(asyncio.Future[None]):
    """The future one caller awaits while it waits for a slot of *part*."""

    __slots__ = ("part", "seq", "since", "timer")

    def __init__(
        self, part: Part, loop: asyncio.AbstractEventLoop, since: float, seq: int
    ) -> None:
        super().__init__(loop=loop)
        self.part = part
        self.since = since
        self.seq = seq
        self.timer: asyncio.TimerHandle | None = None

    def cancel(self, msg: object | None = None) -> bool:
        """Cancel the wait and take it out of the counts at once."""
        if not super().cancel(msg):
            return False
        self.part.gate._drop(self)
        return True


class Part:
    """One partition: its guarantee and ceiling, its waiting room, its counters.

    It has the acquisition interface of :class:`~aiobound._slots.SlotGate`
    (``try_acquire``, ``try_take``, ``acquire``, ``release``,
    ``has_free_slot``, ``can_queue``, ``closed``, ``bound``), taking and
    giving back slots of the shared gate on this partition's account. The
    call counters (``submitted``, ``completed``, ``failed``, ``cancelled``,
    ``run_time``) are kept by the executor that uses the partition.
    """

    __slots__ = (
        "admitted",
        "cancelled",
        "ceiling",
        "completed",
        "failed",
        "gate",
        "guaranteed",
        "in_use",
        "max_pending",
        "max_share",
        "max_wait",
        "name",
        "peak_in_use",
        "rejected",
        "run_time",
        "share",
        "shed",
        "submitted",
        "timed_out",
        "wait_max",
        "wait_recent_ewma",
        "wait_recorder",
        "wait_total",
        "waiters",
        "waiting",
    )

    def __init__(
        self,
        gate: PartitionedGate,
        name: str,
        share: float,
        max_share: float,
        max_pending: int | None,
        max_wait: float | None,
    ) -> None:
        self.gate = gate
        self.name = name
        self.share = share
        self.max_share = max_share
        self.guaranteed = 0
        self.ceiling = 0
        self.max_pending = max_pending
        self.max_wait = max_wait
        self.in_use = 0
        self.waiters: deque[_Waiter] = deque()
        self.waiting = 0  # live waiters
        self.peak_in_use = 0
        self.admitted = 0
        self.rejected = 0
        self.timed_out = 0
        self.wait_total = 0.0
        self.wait_max = 0.0
        self.wait_recorder = Recorder()
        self.wait_recent_ewma = -1.0
        # Kept by the executor.
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.shed = 0
        self.run_time = Recorder()

    def __repr__(self) -> str:
        return (
            f"<Part {self.name!r} share={self.share:g} guaranteed={self.guaranteed} "
            f"ceiling={self.ceiling} in_use={self.in_use} waiting={self.waiting}>"
        )

    # -- the SlotGate interface, on this partition's account -------------------

    @property
    def bound(self) -> int:
        """The total bound (shared by every partition)."""
        return self.gate.bound

    @property
    def closed(self) -> bool:
        """Whether the gate is closed."""
        return self.gate.closed

    def has_free_slot(self) -> bool:
        """Whether :meth:`try_acquire` would succeed now."""
        return self.gate.admits(self)

    def would_admit_now(self) -> bool:
        """Whether a caller of this partition would get a slot at once."""
        return self.gate.admits(self)

    def can_queue(self) -> bool:
        """Whether a caller of this partition would not be refused at once."""
        gate = self.gate
        if gate.closed:
            return False
        if gate.admits(self):
            return True
        return self.max_pending is None or self.waiting < self.max_pending

    def try_acquire(self) -> bool:
        """Take a free slot without waiting (never overtaking a waiter).

        Refused while the partition holds its ceiling, even with slots free.

        Raises:
            ClosedError: the gate is closed.
        """
        gate = self.gate
        if gate.closed:
            raise closed_on_arrival()
        return gate.take(self)

    def try_take(self) -> bool:
        """Like :meth:`try_acquire`, but a closed gate answers ``False``."""
        return self.gate.take(self)

    async def acquire(self) -> None:
        """Take a slot, waiting in this partition's FIFO queue if none is free.

        Raises:
            ClosedError: the gate is closed, or was closed while waiting.
            OverloadedError: ``max_pending`` callers of this partition already
                wait, or this one waited ``max_wait`` seconds.

        Cancellation: as :meth:`SlotGate.acquire`: the waiter stops counting
        at the instant it is cancelled, and a slot handed over in that same
        instant is passed on before :class:`asyncio.CancelledError`
        propagates.
        """
        await self.gate.acquire(self)

    def release(self) -> None:
        """Give back a slot held on this partition's account."""
        self.gate.release(self)

    # -- this partition's wait statistics --------------------------------------

    @property
    def wait_average(self) -> float:
        """Mean seconds waited per granted slot (immediate grants count 0)."""
        return self.wait_total / self.admitted if self.admitted else 0.0

    @property
    def wait_maximum(self) -> float:
        """Longest wait of a caller of this partition granted a slot."""
        return self.wait_max

    @property
    def wait_recent(self) -> float:
        """Moving average of this partition's latest waits (as the slot gate's)."""
        return max(self.wait_recent_ewma, 0.0)

    def wait_histogram(self) -> LatencyHistogram:
        """Seconds waited per granted slot (immediate grants count 0)."""
        recorder = self.wait_recorder
        return recorder.snapshot(self.admitted - sum(recorder.buckets))

    def _head(self) -> _Waiter | None:
        """The oldest live waiter, dropping finished ones from the front."""
        waiters = self.waiters
        while waiters:
            head = waiters[0]
            if not head.done():
                return head
            del waiters[0]
        return None


class PartitionedGate(GateReadings):
    """A gate of ``bound`` slots shared by partitions with guaranteed shares.

    Args:
        bound: Total number of slots (>= 1).
        shares: Partition names and their terms (checked by
            :func:`check_partitions`; a bare number is ``Share(x)``).
            Without a ``"default"`` partition, one is added with the share
            left over and no ceiling.
        max_pending: Most callers allowed to wait, per partition, where its
            :class:`Share` does not say.
        max_wait: Seconds a caller may wait, per partition, where its
            :class:`Share` does not say.

    Reported totals (``in_use``, ``waiting``, ``rejected``, ...) add up the
    partitions. Acquisition through the gate itself (``try_acquire``,
    ``acquire``, ``release``, ...) is the ``"default"`` partition's.
    """

    __slots__ = (
        "_bound",
        "_closed",
        "_default",
        "_idle",
        "_in_use",
        "_loop",
        "_max_pending",
        "_max_wait",
        "_parts",
        "_seq",
        "_wait_recent",
        "_wait_recorder",
        "_waiting",
        "peak_in_use",
    )

    def __init__(
        self,
        bound: int,
        shares: Mapping[str, Share | float],
        max_pending: int | None,
        max_wait: float | None = None,
    ) -> None:
        self._bound = bound
        self._max_pending = max_pending
        self._max_wait = max_wait
        terms = {
            name: value if isinstance(value, Share) else Share(value)
            for name, value in shares.items()
        }
        self._parts: dict[str, Part] = {
            name: Part(
                self,
                name,
                term.share,
                term.max_share,
                max_pending if term.max_pending is None else term.max_pending,
                max_wait if term.max_wait is None else term.max_wait,
            )
            for name, term in terms.items()
        }
        if DEFAULT not in self._parts:
            left = 1.0 - math.fsum(term.share for term in terms.values())
            self._parts[DEFAULT] = Part(
                self,
                DEFAULT,
                left if left >= 1e-9 else 0.0,
                1.0,
                max_pending,
                max_wait,
            )
        self._default = self._parts[DEFAULT]
        self._in_use = 0
        self._waiting = 0  # live waiters, all partitions
        self._seq = 0
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wait_recent = -1.0
        self._wait_recorder = Recorder()
        self.peak_in_use = 0
        self._set_guarantees()

    def _set_guarantees(self) -> None:
        bound = self._bound
        for part in self._parts.values():
            part.guaranteed = guaranteed_slots(part.share, bound)
            part.ceiling = ceiling_slots(part.max_share, part.share, bound)

    # -- partitions ------------------------------------------------------------

    def part(self, name: str) -> Part:
        """The partition called *name*.

        Raises:
            KeyError: no partition has that name.
        """
        try:
            return self._parts[name]
        except KeyError:
            raise KeyError(
                f"no partition named {name!r}; the partitions are "
                f"{', '.join(map(repr, self._parts))}"
            ) from None

    def parts(self) -> Iterator[Part]:
        """Every partition, in declaration order (``"default"`` last if added)."""
        return iter(self._parts.values())

    @property
    def default(self) -> Part:
        """The partition of calls made without naming one."""
        return self._default

    # -- totals (the SlotGate's reporting interface) ---------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the gate to *loop*; waiter futures are created on it."""
        self._loop = loop

    @property
    def bound(self) -> int:
        """Total number of slots."""
        return self._bound

    @property
    def rejected(self) -> int:
        """Callers refused at once (``max_pending``), all partitions."""
        return sum(p.rejected for p in self._parts.values())

    @property
    def timed_out(self) -> int:
        """Callers refused after ``max_wait``, all partitions."""
        return sum(p.timed_out for p in self._parts.values())

    @property
    def wait_average(self) -> float:
        """Mean seconds waited per granted slot, all partitions."""
        admitted = sum(p.admitted for p in self._parts.values())
        total = math.fsum(p.wait_total for p in self._parts.values())
        return total / admitted if admitted else 0.0

    @property
    def wait_maximum(self) -> float:
        """Longest wait of any caller granted a slot."""
        return max(p.wait_max for p in self._parts.values())

    @property
    def wait_recent(self) -> float:
        """Moving average of the latest waits that ended with a slot (all)."""
        return max(self._wait_recent, 0.0)

    def wait_histogram(self) -> LatencyHistogram:
        """Seconds waited per granted slot, all partitions."""
        admitted = sum(p.admitted for p in self._parts.values())
        recorder = self._wait_recorder
        return recorder.snapshot(admitted - sum(recorder.buckets))

    # -- the default partition's acquisition -----------------------------------

    def has_free_slot(self) -> bool:
        """Whether a caller of the default partition would get a slot at once."""
        return self.admits(self._default)

    def would_admit_now(self) -> bool:
        """Whether a caller of the default partition would get a slot at once."""
        return self.admits(self._default)

    def admits(self, part: Part) -> bool:
        """Whether a caller of *part* arriving now would get a slot at once.

        True when the gate is open, fewer than ``bound`` slots are held and
        *part* holds fewer than its ceiling. Then nobody it could overtake
        waits: a slot is free while someone waits only when every waiter's
        partition is at its ceiling (see the module's docstring).
        """
        return (
            self._in_use < self._bound
            and part.in_use < part.ceiling
            and not self._closed
        )

    def can_queue(self) -> bool:
        """Whether a caller of the default partition would not be refused."""
        return self._default.can_queue()

    def try_acquire(self) -> bool:
        """:meth:`Part.try_acquire` of the default partition."""
        return self._default.try_acquire()

    def try_take(self) -> bool:
        """:meth:`Part.try_take` of the default partition."""
        return self.take(self._default)

    def release(self, part: Part | None = None) -> None:
        """Give back a slot held on *part*'s account (default: ``"default"``).

        The slot goes to the oldest waiter of a partition below its
        guarantee, else to the oldest waiter of a partition below its
        ceiling; while more slots are held than the bound allows (after a
        shrink), or when every waiter's partition is at its ceiling, it is
        left free instead.
        """
        if part is None:
            part = self._default
        part.in_use -= 1
        if self._in_use <= self._bound:
            waiter = self._pick()
            if waiter is not None:
                self._hand_over(waiter)
                return
        self._in_use -= 1
        if self._in_use == 0 and self._idle is not None:
            self._idle.set()

    async def acquire(self, part: Part | None = None) -> None:
        """Take a slot on *part*'s account, waiting in its FIFO queue.

        Raises and cancellation: see :meth:`Part.acquire`.
        """
        if part is None:
            part = self._default
        if self._closed:
            raise closed_on_arrival()
        if self.take(part):
            return
        if part.max_pending is not None and part.waiting >= part.max_pending:
            part.rejected += 1
            raise OverloadedError(
                f"overloaded: {part.waiting} callers of partition {part.name!r} "
                f"already wait for a slot (max_pending={part.max_pending}, "
                f"bound={self._bound}, in_flight={self._in_use})"
            )
        loop = self._loop
        assert loop is not None, "PartitionedGate.bind() was not called"
        self._seq += 1
        waiter = _Waiter(part, loop, time.monotonic(), self._seq)
        if part.max_wait is not None:
            waiter.timer = loop.call_later(part.max_wait, self._expire_when_due, waiter)
        part.waiters.append(waiter)
        part.waiting += 1
        self._waiting += 1
        try:
            await waiter
        except BaseException:
            self._abandon(waiter)
            raise

    # -- the machinery ---------------------------------------------------------

    def take(self, part: Part) -> bool:
        """Take a free slot for *part* if :meth:`admits` says so."""
        if (
            self._in_use < self._bound
            and part.in_use < part.ceiling
            and not self._closed
        ):
            self._in_use += 1
            part.in_use += 1
            part.admitted += 1
            if part.in_use > part.peak_in_use:
                part.peak_in_use = part.in_use
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            return True
        return False

    def _pick(self) -> _Waiter | None:
        """Pop the waiter the next slot goes to, or return ``None``.

        Partitions at their ceiling are skipped (their waiters keep waiting).
        """
        oldest: _Waiter | None = None
        oldest_below: _Waiter | None = None
        for part in self._parts.values():
            if part.in_use >= part.ceiling:
                continue
            head = part._head()
            if head is None:
                continue
            if oldest is None or head.seq < oldest.seq:
                oldest = head
            if part.in_use < part.guaranteed and (
                oldest_below is None or head.seq < oldest_below.seq
            ):
                oldest_below = head
        chosen = oldest_below if oldest_below is not None else oldest
        if chosen is not None:
            del chosen.part.waiters[0]
        return chosen

    def _hand_over(self, waiter: _Waiter) -> None:
        """Give a slot (already counted in the total) to *waiter*."""
        part = waiter.part
        part.waiting -= 1
        self._waiting -= 1
        part.in_use += 1
        if part.in_use > part.peak_in_use:
            part.peak_in_use = part.in_use
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        waited = time.monotonic() - waiter.since
        part.admitted += 1
        part.wait_total += waited
        if waited > part.wait_max:
            part.wait_max = waited
        part.wait_recorder.record(waited)
        self._wait_recorder.record(waited)
        recent = part.wait_recent_ewma
        part.wait_recent_ewma = (
            waited if recent < 0.0 else recent + RECENT_WEIGHT * (waited - recent)
        )
        recent = self._wait_recent
        self._wait_recent = (
            waited if recent < 0.0 else recent + RECENT_WEIGHT * (waited - recent)
        )
        waiter.set_result(None)

    def _wake(self) -> None:
        """Hand free slots to waiters, by the release rule."""
        while self._in_use < self._bound:
            waiter = self._pick()
            if waiter is None:
                return
            self._in_use += 1
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            self._hand_over(waiter)

    def _expire_when_due(self, waiter: _Waiter) -> None:
        """*waiter*'s ``max_wait`` timer fired: refuse it if due (never early)."""
        if waiter.done():
            return
        part = waiter.part
        assert part.max_wait is not None
        assert self._loop is not None
        remaining = part.max_wait - (time.monotonic() - waiter.since)
        if remaining > 0.0:
            waiter.timer = self._loop.call_later(
                remaining, self._expire_when_due, waiter
            )
            return
        waiter.timer = None
        part.waiting -= 1
        self._waiting -= 1
        part.timed_out += 1
        waiter.set_exception(
            OverloadedError(
                f"overloaded: waited max_wait={part.max_wait}s for a slot in "
                f"partition {part.name!r} (bound={self._bound}, "
                f"in_flight={self._in_use}, waiting={part.waiting})"
            )
        )
        self._maybe_compact(part)

    def _drop(self, waiter: _Waiter) -> None:
        """*waiter*'s future was just cancelled while it waited: forget it."""
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        if self._closed:
            return  # close() already emptied the queues and the counts
        part = waiter.part
        part.waiting -= 1
        self._waiting -= 1
        self._maybe_compact(part)

    def _abandon(self, waiter: _Waiter) -> None:
        """Clean up after a waiter whose task will not use its slot."""
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        if not waiter.done():
            waiter.cancel()
        elif not waiter.cancelled() and waiter.exception() is None:
            self.release(waiter.part)  # handed a slot, then cancelled: pass it on

    def _maybe_compact(self, part: Part) -> None:
        if len(part.waiters) > 2 * part.waiting + _COMPACT_SLACK:
            part.waiters = deque(w for w in part.waiters if not w.done())

    def resize(self, bound: int) -> None:
        """Change the total bound; the guarantees and ceilings follow.

        As :meth:`SlotGate.resize`: growing hands the new slots to waiters
        at once (by the release rule), shrinking takes no slot away (a
        partition may then hold more than its new ceiling until its calls
        end).
        """
        self._bound = bound
        self._set_guarantees()
        self._wake()

    def close(self) -> None:
        """Refuse new acquisitions; wake every partition's waiters (ClosedError)."""
        if self._closed:
            return
        self._closed = True
        self._waiting = 0
        for part in self._parts.values():
            waiters, part.waiters = part.waiters, deque()
            part.waiting = 0
            for waiter in waiters:
                if waiter.timer is not None:
                    waiter.timer.cancel()
                if not waiter.done():
                    waiter.set_exception(closed_while_waiting())

    async def wait_idle(self) -> None:
        """Wait until no slot is held, in any partition.

        Cancellation: only the wait is cancelled; the slots are unaffected.
        """
        if self._in_use == 0:
            return
        if self._idle is None:
            self._idle = asyncio.Event()
        await self._idle.wait()
