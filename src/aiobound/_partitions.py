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

import math
import time
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, cast

from ._checks import check_optional_int, check_optional_positive
from ._errors import (
    closed_on_arrival,
    closed_while_waiting,
    overloaded_after_wait,
    overloaded_at_once,
)
from ._histogram import RECENT_WEIGHT
from ._readings import CountingGate, GateReadings, WaitStats
from ._waiting import WaitingRoom

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterator

    from ._deadlines import Deadline
    from ._histogram import LatencyHistogram
    from ._waiting import Waiter

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


def check_partitions(partitions: object, *, shared: bool) -> dict[str, Share] | None:
    """Return *partitions* as a dict of :class:`Share` (``None`` passes).

    A bare number ``x`` becomes ``Share(x)``. *shared*: the bound is a
    :class:`~aiobound.SharedBound`, which partitions cannot split.

    Raises:
        TypeError: not a mapping of str names to real shares or Shares, or
            given with a shared bound.
        ValueError: empty, a name is empty, a share is outside (0, 1], or the
            shares add up to more than 1.
    """
    if partitions is None:
        return None
    if shared:
        raise TypeError(
            "partitions cannot be used with a SharedBound: give an int bound "
            "or a limit policy"
        )
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


class Part(GateReadings):
    """One partition: its guarantee and ceiling, its waiting room, its counts.

    A :class:`~aiobound._readings.Gate` of its own: it takes and gives back
    slots of the shared :class:`PartitionedGate` on this partition's account,
    and its callers wait in its own FIFO room, under its own
    ``max_pending`` and ``max_wait``. Every method runs on the gate's loop.
    """

    __slots__ = (
        "_in_use",
        "_max_pending",
        "_max_wait",
        "ceiling",
        "gate",
        "guaranteed",
        "max_share",
        "name",
        "peak_in_use",
        "rejected",
        "room",
        "share",
        "timed_out",
        "waits",
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
        self._max_pending = max_pending
        self._max_wait = max_wait
        self._in_use = 0
        self.waits = WaitStats()
        self.room = WaitingRoom(self, max_wait, self.waits)
        self.peak_in_use = 0
        self.rejected = 0
        self.timed_out = 0

    def __repr__(self) -> str:
        return (
            f"<Part {self.name!r} share={self.share:g} guaranteed={self.guaranteed} "
            f"ceiling={self.ceiling} in_use={self._in_use} waiting={self.waiting}>"
        )

    # -- the Gate protocol, on this partition's account ------------------------

    @property
    def bound(self) -> int:
        """The total bound (shared by every partition)."""
        return self.gate.bound

    @property
    def closed(self) -> bool:
        """Whether the gate is closed."""
        return self.gate.closed

    @property
    def waiting(self) -> int:
        """This partition's callers waiting for a slot."""
        return self.room.waiting

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the whole gate to *loop* (as :meth:`PartitionedGate.bind`)."""
        self.gate.bind(loop)

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
        return self._max_pending is None or self.room.waiting < self._max_pending

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

    async def acquire(self, deadline: Deadline | None = None) -> None:
        """Take a slot, waiting in this partition's FIFO queue if none is free.

        Raises:
            ClosedError: the gate is closed, or was closed while waiting.
            OverloadedError: ``max_pending`` callers of this partition already
                wait, or this one waited ``max_wait`` seconds.
            DeadlineExceeded: *deadline* passed while it waited.

        Cancellation: as :meth:`SlotGate.acquire`: the waiter stops counting
        at the instant it is cancelled, and a slot handed over in that same
        instant is passed on before :class:`asyncio.CancelledError`
        propagates.
        """
        await self.gate.acquire(self, deadline)

    def release(self) -> None:
        """Give back a slot held on this partition's account."""
        self.gate.release(self)

    def wait_histogram(self) -> LatencyHistogram:
        """Seconds waited per granted slot (immediate grants count 0)."""
        return self.waits.histogram()

    # -- the room's keeper -----------------------------------------------------

    def refusal(self, waiter: Waiter, deadline: bool) -> BaseException:
        """A waiter's time is up: count it and say why it is refused."""
        if deadline:
            assert waiter.deadline is not None
            return waiter.deadline.exceeded("waiting")
        self.timed_out += 1
        gate = self.gate
        return overloaded_after_wait(
            self._max_wait,
            gate.bound,
            gate.in_use,
            self.room.waiting - 1,
            f" in partition {self.name!r}",
        )

    def waiter_left(self, waiter: Waiter) -> None:
        """A cancelled waiter needs nothing more: it held nothing."""

    def admitted_but_left(self, waiter: Waiter) -> None:
        """Handed a slot, then cancelled before resuming: pass the slot on."""
        self.gate.release(self)


class PartitionedGate(CountingGate):
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
    partitions. Acquisition goes through each :class:`Part`.
    """

    __slots__ = (
        "_default",
        "_max_pending",
        "_max_wait",
        "_parts",
        "_recent",
        "_seq",
    )

    def __init__(
        self,
        bound: int,
        shares: Mapping[str, Share | float],
        max_pending: int | None,
        max_wait: float | None = None,
    ) -> None:
        super().__init__(bound)
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
        self._seq = 0  # the order of arrival, across partitions
        self._recent = -1.0  # moving average of every partition's waits
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

    # -- totals ----------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach every partition's room to *loop*."""
        for part in self._parts.values():
            part.room.bind(loop)

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot, all partitions."""
        return sum(p.room.waiting for p in self._parts.values())

    @property
    def rejected(self) -> int:
        """Callers refused at once (``max_pending``), all partitions."""
        return sum(p.rejected for p in self._parts.values())

    @property
    def timed_out(self) -> int:
        """Callers refused after ``max_wait``, all partitions."""
        return sum(p.timed_out for p in self._parts.values())

    @property
    def waits(self) -> WaitStats:  # type: ignore[override]
        """The waits of every partition, added up."""
        return WaitStats.merged((p.waits for p in self._parts.values()), self._recent)

    @property
    def wait_recent(self) -> float:
        """Moving average of the latest waits that ended with a slot (all)."""
        return max(self._recent, 0.0)

    def wait_histogram(self) -> LatencyHistogram:
        """Seconds waited per granted slot, all partitions."""
        return self.waits.histogram()

    def admits(self, part: Part) -> bool:
        """Whether a caller of *part* arriving now would get a slot at once.

        True when the gate is open, fewer than ``bound`` slots are held and
        *part* holds fewer than its ceiling. Then nobody it could overtake
        waits: a slot is free while someone waits only when every waiter's
        partition is at its ceiling (see the module's docstring).
        """
        return (
            self._in_use < self._bound
            and part._in_use < part.ceiling
            and not self.closed
        )

    # -- acquisition, on a partition's account -----------------------------------

    def take(self, part: Part) -> bool:
        """Take a free slot for *part* if :meth:`admits` says so."""
        if (
            self._in_use < self._bound
            and part._in_use < part.ceiling
            and not self.closed
        ):
            self._in_use += 1
            part._in_use += 1
            part.waits.admitted += 1
            if part._in_use > part.peak_in_use:
                part.peak_in_use = part._in_use
            if self._in_use > self.peak_in_use:
                self.peak_in_use = self._in_use
            return True
        return False

    async def acquire(self, part: Part, deadline: Deadline | None = None) -> None:
        """Take a slot on *part*'s account, waiting in its FIFO queue.

        Raises and cancellation: see :meth:`Part.acquire`.
        """
        if self.closed:
            raise closed_on_arrival()
        if self.take(part):
            return
        room = part.room
        max_pending = part._max_pending
        if max_pending is not None and room.waiting >= max_pending:
            part.rejected += 1
            raise overloaded_at_once(
                room.waiting,
                max_pending,
                self._bound,
                self._in_use,
                f" of partition {part.name!r}",
            )
        self._seq += 1
        await room.wait(room.join(self._seq, deadline))

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
        part._in_use -= 1
        if self._in_use <= self._bound and self._hand_over_one():
            return
        self._in_use -= 1
        if self._in_use == 0 and self._idle is not None:
            self._idle.set()

    def _hand_over_one(self) -> bool:
        """Hand a slot (already counted in the total) to the next waiter.

        Partitions at their ceiling are skipped (their waiters keep
        waiting); waiters whose ``max_wait`` has passed are refused on the
        way. Returns whether a waiter got it.
        """
        oldest: Waiter | None = None
        oldest_below: Waiter | None = None
        now = time.monotonic()
        for part in self._parts.values():
            if part._in_use >= part.ceiling:
                continue
            head = part.room.first_due(now)
            if head is None:
                continue
            seq = cast("int", head.tag)
            if oldest is None or seq < cast("int", oldest.tag):
                oldest = head
            if part._in_use < part.guaranteed and (
                oldest_below is None or seq < cast("int", oldest_below.tag)
            ):
                oldest_below = head
        chosen = oldest_below if oldest_below is not None else oldest
        if chosen is None:
            return False
        part = cast("Part", chosen.room.keeper)
        part._in_use += 1
        if part._in_use > part.peak_in_use:
            part.peak_in_use = part._in_use
        waited = now - chosen.since
        recent = self._recent
        self._recent = (
            waited if recent < 0.0 else recent + RECENT_WEIGHT * (waited - recent)
        )
        part.room.admit(chosen, now)
        return True

    def _bound_changed(self) -> None:
        """The guarantees and ceilings follow the bound (see :meth:`resize`).

        As :meth:`SlotGate.resize`, shrinking takes no slot away: a partition
        may then hold more than its new ceiling until its calls end.
        """
        self._set_guarantees()

    def _close_rooms(self) -> None:
        for part in self._parts.values():
            part.room.close(closed_while_waiting)
