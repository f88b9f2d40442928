"""BoundedLoopExecutor and Partition: the front doors of the call path.

Surface and wiring only: signatures, docstrings, argument checks, and the
choice of parts at construction (the gate, the submit strategy, the rate
limit, the limit policy, the owned pool). The calls themselves go through
the lanes of :mod:`aiobound._calls`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from ._bridge import thread_id
from ._calls import CallPath
from ._checks import (
    Limits,
    check_int,
    check_optional_positive,
)
from ._limits import LimitPolicy
from ._observe import CallObserver, Observed
from ._partitions import PartitionedGate, Share, check_partitions
from ._process import owned_process_pool
from ._rate import RateLimiter
from ._shared import LoopView, SharedBound, check_bound
from ._slots import SlotGate
from ._stats import CallCounts, ExecutorStats, PartitionStats, executor_stats
from ._stats import partition_stats as _partition_stats
from ._submit import Submitter, own_or_wrap
from ._views import TimeLimited, map_in, run_in

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Iterable, Mapping
    from multiprocessing.context import BaseContext
    from types import TracebackType

    from typing_extensions import Self

    from ._calls import Lane
    from ._map import MapIterator
    from ._partitions import Part
    from ._process import OwnedProcessPool
    from ._readings import ExecutorGate

__all__ = ("BoundedLoopExecutor", "Partition")

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")


class BoundedLoopExecutor:
    """Awaitable submission to an executor, with at most ``bound`` calls in it.

    ``loop.run_in_executor`` and ``Executor.submit`` never wait: every call
    goes onto the pool's unbounded queue. Here ``await submit(...)`` first
    waits (FIFO) for one of ``bound`` slots, then hands the call to the
    underlying executor; the slot is freed when that call has really ended. A
    producer therefore runs at most ``bound`` calls ahead of the workers, and
    memory stays flat however many calls it makes::

        import asyncio, time
        from aiobound import BoundedLoopExecutor, OverloadedError

        def fetch(n: int) -> int:
            time.sleep(0.01)  # a blocking driver call
            return n

        async def main() -> None:
            # 8 threads, at most 16 calls in the pool, refuse past 50 waiting.
            async with BoundedLoopExecutor(max_workers=8, max_pending=50) as ex:
                print(await ex.run(fetch, 1))  # wait for a slot, run, await
                async for n in ex.map(fetch, range(100)):  # lazy and bounded
                    pass
                try:
                    await ex.run(fetch, 2)
                except OverloadedError:  # 50 callers already wait
                    ...  # shed: answer 503, retry later

        asyncio.run(main())

    Args:
        max_workers: Size of the thread pool this executor creates and owns
            (default: ``ThreadPoolExecutor``'s own default,
            ``min(32, os.cpu_count() + 4)``). Not allowed with ``executor``.
        bound: Most calls submitted and not yet finished at once. Default:
            twice the worker count, which keeps every worker busy (with
            ``bound == workers`` a worker can sit idle between one call's end
            and the next submission). Required with ``executor`` unless it is
            a ``ThreadPoolExecutor`` or ``ProcessPoolExecutor``, whose worker
            count is read. A :class:`SharedBound` instead shares one bound
            with other executors, on other loops and threads (see its docs).
            A limit policy (:class:`~aiobound.AIMD`,
            :class:`~aiobound.Gradient`) makes the bound tune itself: each
            call that ends feeds it its own latency (from hand-off to end,
            never the wait for a slot) and the bound follows its limit
            through :meth:`resize`'s rules. The policy's ``max`` is lowered
            to the pool's worker count when it is known, so that no call
            waits in the pool's own queue.
        max_pending: Most coroutines allowed to wait for a slot; one more is
            refused at once with :class:`OverloadedError`. ``None`` (the
            default) means no limit; ``0`` means never wait.
        executor: Any :class:`concurrent.futures.Executor` to wrap (a
            ``ProcessPoolExecutor``, a Dask ``client.get_executor()``, ...).
            It is never shut down by this object.
        copy_context: Run each call in a copy of the caller's
            :mod:`contextvars` context, as :func:`asyncio.to_thread` does.
            Default: ``True`` for thread pools (``ThreadPoolExecutor`` and
            subclasses), ``False`` otherwise. ``True`` is refused for a
            process pool: a context cannot be pickled to another process.
        max_wait: Seconds a coroutine may wait for a slot; one that has
            waited this long is refused with :class:`OverloadedError`
            (queue-delay shedding: accepted calls keep a bounded wait even
            when ``max_pending`` is large). Never refused earlier (measured
            on :func:`time.monotonic`, on every loop), and never granted a
            slot later: a waiter the loop reaches only after its
            ``max_wait`` (a busy loop runs timers late) is refused then,
            instead of admitted, so every admitted call waited at most
            ``max_wait`` for its slot. The refusal itself reaches the caller
            when the loop gets to it. ``None`` (default): no limit.
        max_per_second: Most calls *started* per second, spaced evenly
            (``1 / max_per_second`` apart). A call waits for a slot, then
            for its turn, holding the slot meanwhile. ``None``: no limit.
        burst: With ``max_per_second``, how many calls may start back to
            back after an idle spell (default 1: none). Over any window of
            ``t`` seconds at most ``burst + t * max_per_second`` calls start.
            Refused without ``max_per_second``, where it would mean nothing.
        partitions: Guaranteed shares of the bound, by partition name (for
            example ``{"interactive": 0.8, "batch": 0.2}``; each share in
            ``(0, 1]``, their sum at most 1), each a number or a
            :class:`Share` (a number ``x`` is ``Share(x)``). Calls go to a
            partition through :meth:`partition`; calls made on the executor
            itself belong to ``"default"`` (declared, or else implicit with
            the share left over). Under contention a partition gets at least
            ``ceil(share x bound)`` slots (at least 1): each slot freed goes
            first to the oldest waiter of a partition below its guarantee,
            else to the oldest waiter of a partition below its ceiling, so
            idle capacity is borrowed by whoever waits, up to a partition's
            ceiling (``Share(max_share=)``, none by default): a partition at
            its ceiling takes no more slots, and its waiters are skipped. FIFO
            within a partition; ``max_pending`` and ``max_wait`` apply to
            each partition separately (the :class:`Share`'s own, where it
            gives them). Works with an int bound or a limit policy (the
            guarantees and ceilings follow the bound), not with a
            :class:`SharedBound`. ``None`` (default): none.
        call_timeout: A time limit for every call made on this executor
            (and its partitions): ``submit``, ``run`` and each item of
            ``map``, over the wait for a slot and the run, as
            :meth:`with_timeout` gives one to the calls of a view (which
            overrides it). At the deadline the caller gets
            :class:`~aiobound.DeadlineExceeded`. ``None`` (default): none.

    Raises:
        TypeError: an argument has the wrong type, ``executor`` is given
            with ``max_workers``, ``burst`` without ``max_per_second``,
            ``bound`` is missing for an executor whose size is unknown, or
            ``partitions`` is given with a :class:`SharedBound`.
        ValueError: an argument is out of range, or ``copy_context=True``
            is asked of a process pool.

    The object may be created outside a running loop (at module level, say).
    It binds to the first event loop that uses it; using it from another loop
    raises :class:`RuntimeError`.
    """

    __slots__ = (
        "__weakref__",
        "_lane",
        "_owns_executor",
        "_parts",
        "_path",
        "_pool",
        "_shutdown",
    )

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        bound: int | SharedBound | LimitPolicy | None = None,
        max_pending: int | None = None,
        executor: concurrent.futures.Executor | None = None,
        copy_context: bool | None = None,
        max_wait: float | None = None,
        max_per_second: float | None = None,
        burst: int | None = None,
        partitions: Mapping[str, float | Share] | None = None,
        call_timeout: float | None = None,
    ) -> None:
        policy = bound if isinstance(bound, LimitPolicy) else None
        bound = None if policy is not None else check_bound(bound, policies=True)
        shares = check_partitions(partitions, shared=isinstance(bound, SharedBound))
        if copy_context is not None and not isinstance(copy_context, bool):
            raise TypeError(
                f"copy_context must be a bool or None, got {copy_context!r}"
            )
        limits = Limits(max_pending, max_wait, max_per_second, burst, call_timeout)
        executor, owned, workers = own_or_wrap(
            max_workers, executor, bound_given=bound is not None or policy is not None
        )
        try:
            if copy_context is None:
                copy_context = isinstance(
                    executor, concurrent.futures.ThreadPoolExecutor
                )
            submitter = Submitter(executor, copy_context=copy_context)
            if policy is not None:
                bound = policy.attach(workers)
        except BaseException:
            if owned:
                executor.shutdown(wait=False)
            raise
        if bound is None:
            assert workers is not None
            bound = 2 * workers
        self._setup(submitter, owned, None, bound, limits, policy, shares)

    @classmethod
    def process(
        cls,
        *,
        max_workers: int | None = None,
        bound: int | SharedBound | LimitPolicy | None = None,
        max_pending: int | None = None,
        max_wait: float | None = None,
        max_per_second: float | None = None,
        burst: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[object, ...] = (),
        partitions: Mapping[str, float | Share] | None = None,
        call_timeout: float | None = None,
        kill_on_timeout: bool = False,
    ) -> Self:
        """Make an executor that owns a new :class:`ProcessPoolExecutor`.

        The pool is shut down by :meth:`aclose`, and replaced when it breaks:
        if a worker process dies (killed, ``os._exit``, out of memory), the
        calls it had are failed by the pool with ``BrokenProcessPool``, and
        the next submission starts a new pool (counted in
        ``stats().pool_restarts``) instead of failing too. A pool passed as
        ``executor=`` is never replaced.

        Args:
            max_workers: Worker processes (default: ``os.cpu_count()``).
            bound: As in the constructor; default twice ``max_workers``
                (``max_workers`` with ``kill_on_timeout=True``).
            max_pending: As in the constructor.
            max_wait: As in the constructor.
            max_per_second: As in the constructor.
            burst: As in the constructor.
            mp_context: How workers start. Default: ``forkserver`` where it
                exists (Linux, macOS), else ``spawn``. ``fork`` is refused:
                the event loop's process runs threads, and forking it can
                deadlock the workers.
            initializer: Called with ``*initargs`` in each worker at start.
            initargs: Arguments for ``initializer`` (only with it).
            partitions: As in the constructor.
            call_timeout: As in the constructor. The deadline travels to the
                worker as a :func:`time.time` instant, where
                :func:`~aiobound.remaining` reads it.
            kill_on_timeout: Stop a call still running at its deadline: its
                worker process is terminated and replaced, its slot freed,
                and no other call fails (``DeadlineExceeded.stage`` is
                ``"running"``; counted in ``stats().deadline_running``, not
                ``abandoned``). The pool is then pebble's ``ProcessPool``
                (the ``pebble`` extra: ``pip install 'aiobound[pebble]'``;
                ``ImportError`` without it), not a ``ProcessPoolExecutor``,
                which cannot stop one call without failing them all. See
                below for what else changes.

        Functions and arguments are pickled: functions must be defined at
        the top level of an importable module. Calls run in the worker's own
        :mod:`contextvars` context.

        With ``kill_on_timeout=True``, a call is stopped whenever it is
        cancelled while it runs: at its deadline, when its caller cancels
        it, and when :meth:`aclose`'s ``timeout`` expires (then nothing is
        left running: the calls still running are stopped with those not
        started, their callers get :class:`ClosedError`, they count in
        ``stats().cancelled``, and no ``TimeoutError`` is raised). A stopped
        call's slot is freed at once; the pool terminates its worker within
        about 0.1 s (``SIGTERM``, then ``SIGKILL`` after 3 s) and starts
        another, so a call given that slot meanwhile waits for a worker. A
        worker that dies fails only its own call (with
        ``BrokenProcessPool``) and is replaced by the pool: neither counts
        in ``stats().pool_restarts``, which counts whole pools replaced
        (when the pool itself stops working, or its workers' initializer
        fails). The default bound is ``max_workers``, not twice that: the
        pool passes every call it is given to its workers at once, and a
        call they have taken cannot be withdrawn without stopping a worker,
        so calls wait for a free worker in aiobound's queue instead, where a
        deadline takes them out cleanly.

        A pool that keeps breaking is replaced at most 3 times within 60
        seconds; meanwhile calls fail with a ``BrokenProcessPool`` that says
        why (naming the workers' initializer's error when it raised). The
        first call checks that it does not come from a script's top level
        outside ``if __name__ == "__main__":`` (``RuntimeError``): each
        worker imports the main script again.

        Raises:
            TypeError: an argument has the wrong type, ``initargs`` is given
                without ``initializer``, or ``initializer`` or an item of
                ``initargs`` cannot be pickled (the message names it).
            ValueError: an argument is out of range, or ``mp_context`` forks.
            ImportError: ``kill_on_timeout=True`` without pebble installed.
        """
        policy = bound if isinstance(bound, LimitPolicy) else None
        bound = None if policy is not None else check_bound(bound, policies=True)
        shares = check_partitions(partitions, shared=isinstance(bound, SharedBound))
        limits = Limits(max_pending, max_wait, max_per_second, burst, call_timeout)
        pool = owned_process_pool(
            max_workers, mp_context, initializer, initargs, kill_on_timeout
        )
        try:
            if policy is not None:
                bound = policy.attach(pool.workers)
        except BaseException:
            pool.executor.shutdown(wait=False)
            raise
        self = cls.__new__(cls)
        submitter = Submitter(pool.executor, copy_context=False, owned_pool=pool)
        if bound is None:
            bound = pool.workers if pool.kills else 2 * pool.workers
        self._setup(submitter, True, pool, bound, limits, policy, shares)
        return self

    def _setup(
        self,
        submitter: Submitter,
        owned: bool,
        pool: OwnedProcessPool | None,
        bound: int | SharedBound,
        limits: Limits,
        policy: LimitPolicy | None,
        shares: dict[str, Share] | None,
    ) -> None:
        """Choose the parts; the arguments are already checked."""
        gate: ExecutorGate
        self._parts: PartitionedGate | None = None
        if shares is not None:
            assert isinstance(bound, int)
            gate = self._parts = PartitionedGate(
                bound, shares, limits.max_pending, limits.max_wait
            )
        elif isinstance(bound, int):
            gate = SlotGate(bound, limits.max_pending, limits.max_wait)
        else:
            gate = LoopView(bound, limits.max_pending, limits.max_wait)
        rate = (
            None
            if limits.max_per_second is None
            else RateLimiter(limits.max_per_second, limits.burst)
        )
        self._path = path = CallPath(
            gate,
            submitter,
            rate,
            policy,
            releases_anywhere=isinstance(gate, LoopView),
            call_timeout=limits.call_timeout,
        )
        if self._parts is None:
            self._lane = path.lane(gate, None)  # type: ignore[arg-type]
        else:
            for part in self._parts.parts():
                path.lane(part, part.name)
            self._lane = self._lane_of(self._parts.default)
        self._pool = pool
        self._owns_executor = owned
        self._shutdown: asyncio.Future[None] | None = None

    def _lane_of(self, part: Part) -> Lane:
        for lane in self._path.lanes:
            if lane.gate is part:
                return lane
        raise AssertionError(f"no lane for {part!r}")  # pragma: no cover

    # -- introspection -------------------------------------------------------

    @property
    def bound(self) -> int:
        """Most calls submitted to the underlying executor and unfinished."""
        return self._path.gate.bound

    @property
    def max_pending(self) -> int | None:
        """Most coroutines allowed to wait for a slot (``None``: no limit)."""
        return self._lane.gate.max_pending

    @property
    def max_wait(self) -> float | None:
        """Seconds a coroutine may wait for a slot (``None``: no limit)."""
        return self._lane.gate.max_wait

    @property
    def max_per_second(self) -> float | None:
        """Most calls started per second (``None``: no limit)."""
        rate = self._path.rate
        return None if rate is None else rate.per_second

    @property
    def executor(self) -> concurrent.futures.Executor:
        """The underlying executor, owned or wrapped.

        For a process pool that was replaced after it broke, the current one.
        """
        return self._path.submitter.executor

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._path.gate.closed

    # -- admission, without taking a slot --------------------------------------

    def would_admit_now(self) -> bool:
        """Whether a call submitted now would be handed over without waiting.

        True when the executor is open, a slot is free, nobody waits for one
        who could take it (a new call overtakes no one; with partitions, the
        ``"default"`` partition is below its ceiling) and, with
        ``max_per_second``, the rate allows a start at this instant with
        nobody waiting for a turn. O(1); takes no slot and changes nothing.
        The answer can change at the next await; :meth:`submit` still
        decides.
        """
        return self._lane.would_admit_now()

    def can_admit(self) -> bool:
        """Whether a call submitted now would be accepted, at once or to wait.

        False when the executor is closed (:meth:`submit` would raise
        :class:`ClosedError`) or when it would have to wait and
        ``max_pending`` callers already do (:class:`OverloadedError` at once);
        True otherwise. An accepted caller may still be refused later by
        ``max_wait``. O(1); takes no slot and changes nothing, so it is a
        cheap pre-filter (the web integrations' edge check): whenever
        :meth:`would_admit_now` is true, so is this. With partitions, it
        answers for a call made on the executor itself: the waiters counted
        are the ``"default"`` partition's.
        """
        return self._lane.gate.can_queue()

    def shed_at_edge(self) -> bool:
        """Refuse a request before it becomes a call, if it would be refused.

        When :meth:`can_admit` is false (a call arriving now would be refused
        at once: the executor is closed, or ``max_pending`` callers already
        wait), count one request in ``stats().shed_at_edge``, tell the
        observer (:meth:`CallObserver.refused_at_edge`) and return ``True``:
        the caller answers the request itself (the web integrations' edge
        check sends a 503). Otherwise return ``False`` and change nothing.
        O(1); takes no slot. With partitions, it answers for the
        ``"default"`` partition, as :meth:`can_admit` does.
        """
        return self._lane.shed_at_edge()

    @property
    def queue_wait_recent(self) -> float:
        """Recent wait for a slot in seconds, as a moving average.

        Exponentially weighted over the calls that had to wait and were then
        granted a slot (the newest wait weighs 1/8, so about the last eight
        count); calls granted a slot at once do not count, and the value
        holds while nobody waits. ``0.0`` before any call waited. Updated in
        O(1) when a slot is granted; the web integrations derive
        ``Retry-After`` from it.
        """
        return self._path.gate.wait_recent

    def stats(self) -> ExecutorStats:
        """Return a snapshot of the counters; cheap enough per request.

        O(1) but for ``queued``, which looks at each call in flight (at
        most ``bound``), and for each partition's figures.
        """
        path = self._path
        rate = path.rate
        policy = path.policy
        parts = self._parts
        return executor_stats(
            path.gate,  # type: ignore[arg-type]
            CallCounts.merged(lane.counts for lane in path.lanes),
            max_per_second=None if rate is None else rate.per_second,
            rate_limited=0 if rate is None else rate.limited,
            pool_restarts=0 if self._pool is None else self._pool.restarts,
            latency_short=None if policy is None else policy.latency_short,
            latency_no_load=None if policy is None else policy.latency_no_load,
            queued=path.queued(),
            partitions=None
            if parts is None
            else {
                lane.gate.name: _partition_stats(lane.gate, lane.counts)  # type: ignore[attr-defined,arg-type]
                for lane in path.lanes
            },
        )

    def partition(self, name: str) -> Partition:
        """The partition called *name*: its ``submit``, ``run`` and ``map``.

        Calls made through it wait in that partition's FIFO queue and count
        against its share (see ``partitions`` in the constructor). The
        object is cheap and may be kept; ``"default"`` is the partition of
        the calls made on the executor itself.

        Raises:
            TypeError: *name* is not a str.
            KeyError: no partition has that name.
            RuntimeError: the executor was made without ``partitions``.
        """
        return Partition(self, name)

    def __repr__(self) -> str:
        gate = self._path.gate
        state = "closed" if gate.closed else "open"
        return (
            f"<{type(self).__name__} bound={gate.bound} in_flight={gate.in_use} "
            f"waiting={gate.waiting} {state}>"
        )

    # -- calls ----------------------------------------------------------------

    async def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        """Wait for a free slot, then hand ``fn(*args, **kwargs)`` to the executor.

        Returns an :class:`asyncio.Future` of ``fn``'s result, already
        submitted. The slot is freed when the call really ends in the
        underlying executor, whatever happens to the returned future.

        Raises:
            TypeError: ``fn`` is not callable, or is an async function.
            OverloadedError: ``max_pending`` coroutines already wait, or this
                one waited ``max_wait`` seconds for a slot.
            ClosedError: the executor was closed before or during the wait.
            RuntimeError: the executor is bound to another event loop.
            Exception: whatever the underlying executor's ``submit`` raises
                (shut down, broken pool, ...); the slot is freed first.

        ``fn``'s own exceptions are not raised here: they come out of the
        returned future unchanged. A ``StopIteration`` or
        ``StopAsyncIteration``, which an asyncio future or an ``async for``
        cannot carry faithfully, and anything that is not an ``Exception``
        (``KeyboardInterrupt``, ``SystemExit``, which would stop the event
        loop) arrive as the ``__cause__`` of a RuntimeError.

        Cancellation: does not yield when a slot is free (and, with
        ``max_per_second``, the call's turn has come). While waiting for
        either, nothing is submitted and no slot is held. Cancelling the
        returned future cancels a call that has not started (it never runs
        and its slot is freed); a running call keeps its slot until it ends.
        """
        lane = self._lane
        fut = lane.submit_now(fn, args, kwargs, lane.timeout)
        if fut is not None:
            return fut
        return await lane.admit_and_start(fn, args, kwargs, lane.timeout)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Submit ``fn(*args, **kwargs)`` and wait for its result.

        Raises what :meth:`submit` raises, then whatever ``fn`` raised,
        unchanged (with the exceptions :meth:`submit` names).

        Cancellation: while waiting for a slot, as :meth:`submit`. While the
        call is queued in the executor, it is cancelled and never runs; while
        it runs, the caller is released at once but the call goes on and
        keeps its slot until it ends.
        """
        return await run_in(self._lane, fn, args, kwargs, self._lane.timeout)

    def map(
        self,
        fn: Callable[[A], T],
        items: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = True,
        chunksize: int | None = None,
    ) -> MapIterator[T]:
        """Apply ``fn`` to each item, pulling items lazily; iterate the results.

        See :class:`MapIterator` for how far ahead it reads, the order of
        results, errors and clean-up.

        Args:
            fn: Applied to each item in the underlying executor.
            items: A sync or async iterable.
            ordered: Yield in input order (``True``) or as calls finish.
            chunksize: Items sent per call to the underlying executor;
                results are still yielded one by one. With chunks, ``bound``
                counts chunks: at most ``bound`` chunks are pulled and not
                yet fully yielded, and an exception from ``fn`` fails its
                whole chunk (raised where the chunk's first result would
                come). ``None`` (default): automatic on a process pool (the
                workers time each chunk; chunks grow from 1 item, doubling,
                up to 256 items or about 5 ms of work), 1 on any other
                executor.

        Raises:
            TypeError: ``fn`` is not callable, ``items`` is neither iterable
                nor async iterable, ``ordered`` is not a bool, or
                ``chunksize`` is not an int.
            ValueError: ``chunksize`` is below 1.
        """
        return map_in(self._lane, fn, items, ordered, chunksize, self._lane.timeout)

    def with_timeout(self, seconds: float | None) -> TimeLimited:
        """A view whose calls each have a time limit of *seconds*.

        Its :meth:`~TimeLimited.submit`, :meth:`~TimeLimited.run` and
        :meth:`~TimeLimited.map` are the executor's, with a deadline
        *seconds* after each call is made (for ``map``, after each item is
        pulled) over its wait for a slot and its run; see
        :class:`~aiobound.DeadlineExceeded` for what happens at the deadline
        and :func:`aiobound.remaining` for the function's side. ``None``:
        no limit (even over the executor's ``call_timeout``). The view is
        cheap and may be kept.

        Raises:
            TypeError, ValueError: *seconds* is not a finite number > 0 or
                ``None``.
        """
        return TimeLimited(self._lane, check_optional_positive("seconds", seconds))

    # -- tuning --------------------------------------------------------------

    def resize(self, bound: int) -> None:
        """Change ``bound`` while running.

        Growing admits waiting callers at once. Shrinking takes nothing away:
        calls in flight run to the end, and no new call is admitted until
        fewer than the new ``bound`` are in flight. At no moment are more
        than the larger of the old and the new bound in flight. ``map``
        iterators read the bound as they go, so their window follows.

        Call it from the event loop's thread (in a coroutine or a callback).
        Over a :class:`SharedBound`, this resizes the shared bound, for every
        executor that shares it (as :meth:`SharedBound.resize` does).

        Raises:
            TypeError, ValueError: ``bound`` is not an int >= 1.
            RuntimeError: called from another thread than the bound loop's,
                or the bound is set by a limit policy.
        """
        bound = check_int("bound", bound, 1)
        path = self._path
        if path.policy is not None:
            raise RuntimeError(
                f"the bound of {self!r} is set by its limit policy "
                f"{path.policy!r}; resize() would fight it"
            )
        owner = path.loop_thread_id
        if owner is not None and thread_id() != owner:
            raise RuntimeError(
                "resize() must be called from the event loop's thread; use "
                "loop.call_soon_threadsafe(executor.resize, n) from others"
            )
        path.gate.resize(bound)

    def add_observer(self, observer: CallObserver) -> None:
        """Tell *observer* of the life of every call from now on.

        Calls already handed over are not reported; a caller already
        waiting for a slot is reported from its hand-over on (its
        :meth:`~CallObserver.arrived` just before, in its partition), and not
        at all if it is refused. One observer per executor
        (:mod:`aiobound.opentelemetry` installs one); an executor never given
        one pays nothing for the feature: this method swaps the way calls are
        admitted, handed over and ended for observed ones.
        With partitions, the calls of every partition are reported, each
        arrival through :meth:`CallObserver.arrived_in` with the call's
        partition name.

        Call it from the event loop's thread, or before the executor is used.

        Raises:
            TypeError: *observer* is not a :class:`CallObserver`.
            RuntimeError: the executor already has an observer.
        """
        if not isinstance(observer, CallObserver):
            raise TypeError(
                f"observer must be a CallObserver, got {type(observer).__name__}"
            )
        path = self._path
        if path.observed is not None:
            raise RuntimeError(f"{self!r} already has an observer")
        path.set_observer(Observed(observer))

    # -- closing -------------------------------------------------------------

    async def aclose(self, *, timeout: float | None = None) -> None:
        """Close: refuse new calls, wait for calls in flight, shut down if owned.

        New submissions raise :class:`ClosedError`, and so do coroutines
        waiting for a slot or a turn, which are woken at once. Calls already
        submitted are awaited without blocking the event loop: once it
        returns, each has ended, its caller has its outcome and ``stats()``
        counts it. A pool this object created is then shut down (in a worker
        thread); a wrapped executor is left running. Calling it again is
        harmless.

        Args:
            timeout: Seconds to wait for calls in flight (``None``: as long
                as they take). When it expires, calls that have not started
                in the underlying executor are cancelled (they never run;
                their callers get :class:`ClosedError`, and they count in
                ``stats().cancelled``). A call already running cannot be
                stopped: if any remain, :class:`TimeoutError` is raised
                naming how many; their slots are freed when they end. An
                owned pool is then shut down without waiting for them.
                On a pool made by :meth:`process`, calls the pool has
                already queued for its workers but that have not started are
                dropped too: a worker that takes one skips it, and its caller
                gets :class:`ClosedError` then (when a worker is free). A
                ``ProcessPoolExecutor`` passed as ``executor=`` reports the
                calls it has moved to its workers' queue (``max_workers +
                1`` deep) as running: there only the calls it has not moved
                yet can be cancelled (with the default bound, few or none);
                the others run.

        Raises:
            TimeoutError: ``timeout`` expired with calls still running.
            RuntimeError: the executor is bound to another event loop.

        Cancellation: the executor stays closed; calls in flight go on. Call
        ``aclose()`` again to wait for them and for the shutdown.
        """
        timeout = check_optional_positive("timeout", timeout)
        path = self._path
        if asyncio.get_running_loop() is not path.loop:
            path.bind()
        gate = path.gate
        gate.close()
        path.forget_checked_fn()
        if path.rate is not None:
            path.rate.close()
        if timeout is None:
            await self._all_ended()
        else:
            try:
                await asyncio.wait_for(self._all_ended(), timeout)
            except asyncio.TimeoutError:
                self._give_up_on_calls_in_flight(timeout)
        await self._shut_down_owned_pool()

    async def _all_ended(self) -> None:
        """Every slot back, and every call's end heard on the loop."""
        path = self._path
        await path.gate.wait_idle()
        if path.releases_anywhere:  # a slot comes back before its end is heard
            await path.all_heard()

    def _give_up_on_calls_in_flight(self, timeout: float) -> None:
        """After aclose's timeout: cancel calls not started, report the rest."""
        path = self._path
        # cancel() settles each cancelled call right here, on this thread.
        not_started = sum(cfut.cancel() for cfut in list(path.calls))
        running = path.running()
        if not running:
            return
        pool = self._pool
        if pool is not None:
            # The pool's own queue holds calls it reports as running: its
            # workers now skip those that have not started.
            pool.drop_calls_not_started()
        if self._owns_executor and self._shutdown is None:
            # Stop the pool without waiting; a later aclose() waits for the
            # running calls and then joins the pool's workers.
            self.executor.shutdown(wait=False, cancel_futures=True)
        if pool is not None:
            raise TimeoutError(
                f"aclose(timeout={timeout}): {running} calls still running or "
                f"queued in the worker processes; {not_started} calls not yet "
                "handed to them were cancelled. Queued calls will not run: their "
                "callers get ClosedError when a worker reaches them. Running "
                "calls cannot be interrupted; their slots are freed when they end."
            )
        raise TimeoutError(
            f"aclose(timeout={timeout}): {running} calls still running; "
            f"{not_started} calls not yet started were cancelled. Running calls "
            "cannot be interrupted; their slots are freed when they end."
        )

    async def _shut_down_owned_pool(self) -> None:
        if not self._owns_executor:
            return  # a wrapped executor is left running
        if self._shutdown is None:
            loop = self._path.loop
            assert loop is not None
            self._shutdown = loop.run_in_executor(None, self.executor.shutdown)
        await asyncio.shield(self._shutdown)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Partition:
    """One partition of a :class:`BoundedLoopExecutor`, from its ``partition()``.

    Its :meth:`submit`, :meth:`run` and :meth:`map` behave as the
    executor's, with the wait for a slot in this partition's FIFO queue and
    the slot counted against its share and ceiling, and this partition's
    ``max_pending`` and ``max_wait`` (see :class:`Share`). Closing, resizing
    and the other settings are the executor's.
    """

    __slots__ = ("_executor", "_lane")

    def __init__(self, executor: BoundedLoopExecutor, name: str) -> None:
        """The partition *name* of *executor* (as ``executor.partition(name)``).

        Raises:
            TypeError: *name* is not a str.
            KeyError: no partition has that name.
            RuntimeError: the executor was made without ``partitions``.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        parts = executor._parts
        if parts is None:
            raise RuntimeError(
                f"{executor!r} has no partitions; declare them with "
                "BoundedLoopExecutor(partitions={...})"
            )
        self._executor = executor
        self._lane = executor._lane_of(parts.part(name))

    @property
    def name(self) -> str:
        """The partition's name."""
        name = self._lane.name
        assert name is not None
        return name

    @property
    def executor(self) -> BoundedLoopExecutor:
        """The executor this partition belongs to."""
        return self._executor

    def __repr__(self) -> str:
        part = self._lane.gate
        return (
            f"<Partition {self.name!r} of {self._executor!r} "
            f"guaranteed={part.guaranteed} ceiling={part.ceiling} "  # type: ignore[attr-defined]
            f"in_flight={part.in_use} waiting={part.waiting}>"
        )

    def would_admit_now(self) -> bool:
        """Whether a call submitted now would be handed over without waiting.

        As :meth:`BoundedLoopExecutor.would_admit_now`, for this partition:
        also false while the partition holds its ceiling, even with slots
        free. O(1); takes no slot and changes nothing.
        """
        return self._lane.would_admit_now()

    def can_admit(self) -> bool:
        """Whether a call submitted now would be accepted, at once or to wait.

        As :meth:`BoundedLoopExecutor.can_admit`, with this partition's
        ``max_pending``. O(1); takes no slot and changes nothing.
        """
        return self._lane.gate.can_queue()

    def shed_at_edge(self) -> bool:
        """:meth:`BoundedLoopExecutor.shed_at_edge`, for this partition.

        Counts the refusal in this partition's ``shed_at_edge`` and the
        executor's.
        """
        return self._lane.shed_at_edge()

    def stats(self) -> PartitionStats:
        """This partition's stats (as in ``executor.stats().partitions``)."""
        return self._executor.stats().partitions[self.name]

    async def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[R]:
        """:meth:`BoundedLoopExecutor.submit`, in this partition.

        Raises:
            OverloadedError: ``max_pending`` callers of this partition
                already wait, or this one waited ``max_wait`` seconds.
            ClosedError: the executor was closed before or during the wait.
            TypeError, RuntimeError, Exception: as the executor's ``submit``.

        Cancellation: as the executor's ``submit``: while waiting, nothing
        is submitted and no slot is held, and the caller stops counting as a
        waiter of this partition at once.
        """
        return await self._lane.start_later(fn, args, kwargs, self._lane.timeout)

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """:meth:`BoundedLoopExecutor.run`, in this partition.

        Raises what :meth:`submit` raises, then whatever ``fn`` raised.
        Cancellation: as the executor's ``run``.
        """
        return await run_in(self._lane, fn, args, kwargs, self._lane.timeout)

    def map(
        self,
        fn: Callable[[A], R],
        items: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = True,
        chunksize: int | None = None,
    ) -> MapIterator[R]:
        """:meth:`BoundedLoopExecutor.map`, in this partition.

        The window of items read ahead is the executor's bound; the slots
        are taken on this partition's account.

        Raises:
            TypeError, ValueError: as the executor's ``map``.
        """
        return map_in(self._lane, fn, items, ordered, chunksize, self._lane.timeout)

    def with_timeout(self, seconds: float | None) -> TimeLimited:
        """:meth:`BoundedLoopExecutor.with_timeout`, in this partition."""
        return TimeLimited(self._lane, check_optional_positive("seconds", seconds))
