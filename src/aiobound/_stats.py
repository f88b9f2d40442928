"""What ``stats()`` returns, and how both executors build it.

:class:`ExecutorStats` and :class:`PartitionStats` are the frozen snapshots;
:class:`CallCounts` is how the calls of one lane (or of a synchronous
executor) ended, kept by the call path; :func:`executor_stats` and
:func:`partition_stats` put a gate's readings and those counts together, the
same way for :class:`~aiobound.BoundedLoopExecutor`, its partitions and
:class:`~aiobound.BoundedExecutor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ._histogram import LatencyHistogram, Recorder

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._readings import WaitStats

__all__ = (
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "CallCounts",
    "ExecutorStats",
    "PartitionStats",
    "executor_stats",
    "partition_stats",
)

# How a call ended.
COMPLETED = 0
FAILED = 1
CANCELLED = 2


@dataclass(frozen=True, slots=True)
class PartitionStats:
    """A point-in-time view of one partition of a :class:`BoundedLoopExecutor`.

    The fields mean what :class:`ExecutorStats`' fields of the same name
    mean, counted over this partition's calls only; the executor's own
    fields add up every partition's (``peak_in_flight`` and
    ``queue_wait_max`` excepted: highest and longest over all).

    Attributes:
        share: The share of the bound declared for this partition (for the
            implicit ``"default"`` partition, the share left over, possibly 0).
        guaranteed: Slots guaranteed under contention now:
            ``ceil(share x bound)``, at least 1 (0 for a share of 0).
        max_share: The borrowing ceiling declared for this partition, as a
            fraction of the bound (its :class:`Share`'s ``max_share``; 1.0
            when it has none).
        ceiling: Most slots this partition may hold now, even while others
            are idle: ``floor(max_share x bound)``, at least ``guaranteed``
            (the bound when ``max_share`` is 1). After the bound shrinks,
            ``in_flight`` may exceed it until calls end.
        in_flight: Slots held by this partition's calls right now (more than
            ``guaranteed`` when it borrows idle capacity, up to ``ceiling``).
        waiting: This partition's callers waiting for a slot.
        max_pending: Most callers allowed to wait in this partition (its
            :class:`Share`'s, else the executor's).
        max_wait: Seconds a caller may wait for a slot in this partition
            (its :class:`Share`'s, else the executor's).
        peak_in_flight: Highest ``in_flight`` of this partition.
        submitted: This partition's calls handed to the underlying executor.
        completed: This partition's calls that returned a value.
        failed: This partition's calls that raised, or that the pool refused.
        cancelled: This partition's calls cancelled before they started,
            or stopped while running by a pool that can
            (``kill_on_timeout=True``).
        rejected: Callers refused at once: ``max_pending`` already waited.
        timed_out: Callers refused after waiting ``max_wait``.
        shed_at_edge: Requests refused by :meth:`Partition.shed_at_edge`
            (the web integrations' edge check) before they became calls.
        deadline_waiting: This partition's calls whose deadline passed
            while they waited for a slot (or a turn).
        deadline_queued: This partition's calls whose deadline passed while
            they were queued in the pool (cancelled, never run).
        deadline_running: This partition's calls whose deadline passed while
            they ran.
        abandoned: This partition's calls left running by their caller at
            their deadline.
        queue_wait_avg: Mean wait for a slot of this partition's calls.
        queue_wait_max: Longest wait for a slot of this partition's calls.
        queue_wait: Histogram of this partition's waits for a slot.
        run_time: Histogram of this partition's calls' run times.
    """

    share: float
    guaranteed: int
    max_share: float
    ceiling: int
    in_flight: int
    waiting: int
    max_pending: int | None
    max_wait: float | None
    peak_in_flight: int
    submitted: int
    completed: int
    failed: int
    cancelled: int
    rejected: int
    timed_out: int
    queue_wait_avg: float
    queue_wait_max: float
    queue_wait: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    run_time: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    shed_at_edge: int = 0
    deadline_waiting: int = 0
    deadline_queued: int = 0
    deadline_running: int = 0
    abandoned: int = 0


@dataclass(frozen=True, slots=True)
class ExecutorStats:
    """A point-in-time view of a :class:`BoundedLoopExecutor`.

    Every call handed to the underlying executor ends in exactly one of
    ``completed``, ``failed`` or ``cancelled``, so at any moment
    ``submitted == completed + failed + cancelled + running``, where ``running``
    is the number of submitted calls whose end the executor has not seen yet:
    it sees an end on its event loop, a moment after the underlying future
    is done in its worker. Once :meth:`~BoundedLoopExecutor.aclose` has
    returned (without a timeout), ``running`` is 0. ``running`` is at most
    ``in_flight``, except over a :class:`SharedBound`, whose slots come back
    in the worker, just before the end reaches the loop.

    Attributes:
        bound: Most calls that may be submitted and unfinished at once (with
            a limit policy, its current limit).
        in_flight: Slots taken right now: calls submitted to the underlying
            executor and not finished there yet (a slot is also held for the
            instant between being granted and being submitted).
        waiting: Coroutines waiting for a slot.
        max_pending: Most coroutines allowed to wait, or ``None`` for no limit.
        max_wait: Seconds a coroutine may wait for a slot, or ``None``.
        max_per_second: Most calls started per second, or ``None``.
        peak_in_flight: Highest ``in_flight`` seen since creation.
        submitted: Calls handed to the underlying executor's ``submit``,
            including those whose ``submit`` raised.
        completed: Calls that returned a value.
        failed: Calls that raised, plus submissions the underlying executor
            refused by raising from ``submit``.
        cancelled: Calls cancelled before they started (never ran), or
            stopped while running by a pool that can (a process pool made
            with ``kill_on_timeout=True``: at their deadline, or when their
            caller was cancelled).
        rejected: Calls refused at once with :class:`OverloadedError`
            because ``max_pending`` callers already waited.
        timed_out: Calls refused with :class:`OverloadedError` after
            waiting ``max_wait`` seconds for a slot.
        rate_limited: Calls that had to wait for their turn under
            ``max_per_second``.
        shed_at_edge: Requests refused by
            :meth:`~BoundedLoopExecutor.shed_at_edge` (the web integrations'
            edge check) before they became calls. With ``rejected`` and
            ``timed_out`` it counts every refusal for load.
        queue_wait_avg: Mean seconds a call waited for its slot, over every
            call granted one (those that got one at once count as 0).
        queue_wait_max: Longest wait for a slot, in seconds, of any call
            granted one.
        closed: Whether :meth:`~BoundedLoopExecutor.aclose` has been called.
        pool_restarts: Times the pool was replaced after it broke (only a
            pool made by :meth:`~BoundedLoopExecutor.process` is replaced).
        queue_wait: Histogram of the seconds each call waited for its slot,
            over every call granted one (those that got one at once count
            as 0), since creation.
        run_time: Histogram of the seconds each call took from its hand-off
            to the underlying executor until its end was seen on the event
            loop (its time queued in the pool, its run and the hop back),
            over the calls that completed or failed, since creation.
        latency_short: With a limit policy as ``bound``, its recent estimate
            of the calls' own latency in seconds (see the policy); ``None``
            without a policy or before any sample.
        latency_no_load: With a limit policy that measures one
            (:class:`~aiobound.Gradient`, or :class:`~aiobound.AIMD` without
            ``latency_threshold``), its estimate of the calls' own latency
            with no queueing, in seconds; ``None`` otherwise or before it is
            measured.
        queued: Calls handed to the underlying executor that have not
            started there yet (their future is neither running nor done),
            read when the snapshot is taken. A ``ProcessPoolExecutor``
            marks a call as started when it moves it to its workers' queue,
            up to ``max_workers + 1`` calls before a worker takes it; an
            executor whose futures never report running counts each call
            as queued until it ends.
        deadline_waiting: Calls whose deadline (``call_timeout`` or
            ``with_timeout()``) passed while they waited for a slot or a
            turn: never handed over, never run.
        deadline_queued: Calls whose deadline passed while they were queued
            in the pool, not started: cancelled (also counted in
            ``cancelled``), never run.
        deadline_running: Calls whose deadline passed while they ran: their
            callers were released; a thread's call goes on (``abandoned``),
            a process pool made with ``kill_on_timeout=True`` stops it.
        abandoned: Calls whose caller was released at their deadline while
            they ran on in their worker, holding their slot until they end;
            their end is counted in ``completed`` or ``failed`` as usual.
        partitions: With ``partitions=``, each partition's stats by name
            (including ``"default"``, the partition of calls made on the
            executor itself); empty without partitions.
    """

    bound: int
    in_flight: int
    waiting: int
    max_pending: int | None
    max_wait: float | None
    max_per_second: float | None
    peak_in_flight: int
    submitted: int
    completed: int
    failed: int
    cancelled: int
    rejected: int
    timed_out: int
    rate_limited: int
    queue_wait_avg: float
    queue_wait_max: float
    closed: bool
    pool_restarts: int = 0
    queue_wait: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    run_time: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    latency_short: float | None = None
    latency_no_load: float | None = None
    shed_at_edge: int = 0
    queued: int = 0
    deadline_waiting: int = 0
    deadline_queued: int = 0
    deadline_running: int = 0
    abandoned: int = 0
    # A dict, not a Mapping: the public module (where get_type_hints() looks,
    # as FastAPI does for a response model) has no Mapping in it.
    partitions: dict[str, PartitionStats] = field(default_factory=dict)


class CallCounts:
    """How the calls handed over ended, and how long they took.

    Every call handed over ends in exactly one of ``completed``, ``failed``
    or ``cancelled`` (:meth:`ended`); ``shed`` counts requests refused at the
    edge before they became calls. Not thread-safe: the loop updates it, or
    a synchronous executor under its lock.
    """

    __slots__ = (
        "abandoned",
        "cancelled",
        "completed",
        "deadline_queued",
        "deadline_running",
        "deadline_waiting",
        "failed",
        "run_time",
        "shed",
        "submitted",
    )

    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.shed = 0
        self.run_time = Recorder()
        # Calls whose deadline passed, by where they were; those left running.
        self.deadline_waiting = 0
        self.deadline_queued = 0
        self.deadline_running = 0
        self.abandoned = 0

    def ended(self, outcome: int, ran: float | None) -> None:
        """Count a call that ended; *ran* is its run time, if it was timed."""
        if outcome == COMPLETED:
            self.completed += 1
        elif outcome == FAILED:
            self.failed += 1
        else:
            self.cancelled += 1
            return  # it never ran
        if ran is not None:
            self.run_time.record(ran)

    @classmethod
    def merged(cls, parts: Iterable[CallCounts]) -> CallCounts:
        """One :class:`CallCounts` adding up *parts*."""
        merged = cls()
        buckets = merged.run_time.buckets
        for part in parts:
            merged.submitted += part.submitted
            merged.completed += part.completed
            merged.failed += part.failed
            merged.cancelled += part.cancelled
            merged.shed += part.shed
            merged.deadline_waiting += part.deadline_waiting
            merged.deadline_queued += part.deadline_queued
            merged.deadline_running += part.deadline_running
            merged.abandoned += part.abandoned
            merged.run_time.sum += part.run_time.sum
            for index, count in enumerate(part.run_time.buckets):
                buckets[index] += count
        return merged


class Readings(Protocol):
    """What the stats read of a gate (every gate has these)."""

    @property
    def bound(self) -> int: ...
    @property
    def in_use(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def max_pending(self) -> int | None: ...
    @property
    def max_wait(self) -> float | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def peak_in_use(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def timed_out(self) -> int: ...
    @property
    def waits(self) -> WaitStats: ...


def executor_stats(
    gate: Readings,
    counts: CallCounts,
    *,
    max_per_second: float | None = None,
    rate_limited: int = 0,
    pool_restarts: int = 0,
    latency_short: float | None = None,
    latency_no_load: float | None = None,
    queued: int = 0,
    partitions: dict[str, PartitionStats] | None = None,
) -> ExecutorStats:
    """The :class:`ExecutorStats` of *gate* and *counts* (one consistent read)."""
    waits = gate.waits
    return ExecutorStats(
        bound=gate.bound,
        in_flight=gate.in_use,
        waiting=gate.waiting,
        max_pending=gate.max_pending,
        max_wait=gate.max_wait,
        max_per_second=max_per_second,
        peak_in_flight=gate.peak_in_use,
        submitted=counts.submitted,
        completed=counts.completed,
        failed=counts.failed,
        cancelled=counts.cancelled,
        rejected=gate.rejected,
        timed_out=gate.timed_out,
        rate_limited=rate_limited,
        queue_wait_avg=waits.average,
        queue_wait_max=waits.maximum,
        closed=gate.closed,
        pool_restarts=pool_restarts,
        queue_wait=waits.histogram(),
        run_time=counts.run_time.snapshot(),
        latency_short=latency_short,
        latency_no_load=latency_no_load,
        shed_at_edge=counts.shed,
        queued=queued,
        deadline_waiting=counts.deadline_waiting,
        deadline_queued=counts.deadline_queued,
        deadline_running=counts.deadline_running,
        abandoned=counts.abandoned,
        partitions={} if partitions is None else partitions,
    )


class PartReadings(Readings, Protocol):
    """What the stats read of one partition."""

    share: float
    guaranteed: int
    max_share: float
    ceiling: int


def partition_stats(part: PartReadings, counts: CallCounts) -> PartitionStats:
    """The :class:`PartitionStats` of one partition and its lane's *counts*."""
    waits = part.waits
    return PartitionStats(
        share=part.share,
        guaranteed=part.guaranteed,
        max_share=part.max_share,
        ceiling=part.ceiling,
        in_flight=part.in_use,
        waiting=part.waiting,
        max_pending=part.max_pending,
        max_wait=part.max_wait,
        peak_in_flight=part.peak_in_use,
        submitted=counts.submitted,
        completed=counts.completed,
        failed=counts.failed,
        cancelled=counts.cancelled,
        rejected=part.rejected,
        timed_out=part.timed_out,
        queue_wait_avg=waits.average,
        queue_wait_max=waits.maximum,
        queue_wait=waits.histogram(),
        run_time=counts.run_time.snapshot(),
        shed_at_edge=counts.shed,
        deadline_waiting=counts.deadline_waiting,
        deadline_queued=counts.deadline_queued,
        deadline_running=counts.deadline_running,
        abandoned=counts.abandoned,
    )
