"""BoundedLoopExecutor: awaitable, bounded submission to any executor.

The front door: argument checks, loop binding, and the coordination of the
pieces below it (the slot gate, the rate limit, the submit strategy, the
owned pool, the bridge back to the loop and the map iterator).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from functools import partial
from types import BuiltinFunctionType, FunctionType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from ._bridge import CANCELLED, COMPLETED, FAILED, Bridge, thread_id
from ._checks import (
    Limits,
    check_callable,
    check_int,
    check_optional_positive,
    is_async_function,
)
from ._errors import ClosedError, OverloadedError, closed_while_waiting
from ._histogram import Recorder
from ._limits import LimitPolicy
from ._map import MapIterator, MapPort, make_map
from ._observe import CallObserver, Observed
from ._partitions import Part, PartitionedGate, Share, check_partitions
from ._process import (
    OwnedProcessPool,
    explain_broken_pool,
    failed_call_was_dropped,
    owned_process_pool,
)
from ._rate import RateLimiter
from ._shared import LoopView, SharedBound, check_bound
from ._slots import SlotGate
from ._stats import ExecutorStats, PartitionStats
from ._submit import handover_for, own_or_wrap

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Coroutine, Iterable, Mapping
    from multiprocessing.context import BaseContext
    from types import TracebackType

    from typing_extensions import Self

__all__ = ("BoundedLoopExecutor", "Partition")


class _Admit(Protocol):
    """How a call is admitted and handed over (plain, or observed)."""

    def __call__(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        part: Part | None = None,
        /,
    ) -> Coroutine[Any, Any, asyncio.Future[T]]: ...


P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")

# What submit() has checked before any function: no function is this object.
_NOTHING_CHECKED = object()


class BoundedLoopExecutor:
    """Awaitable submission to an executor, with at most ``bound`` calls in it.

    ``loop.run_in_executor`` and ``Executor.submit`` never wait: every call
    goes onto the pool's unbounded queue. Here ``await submit(...)`` first
    waits (FIFO) for one of ``bound`` slots, then hands the call to the
    underlying executor; the slot is freed when that call has really ended. A
    producer therefore runs at most ``bound`` calls ahead of the workers, and
    memory stays flat however many calls it makes.

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
            when ``max_pending`` is large). ``None`` (default): no limit.
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
        "_admit",
        "_bridge",
        "_calls",
        "_cancelled",
        "_checked_fn",
        "_completed",
        "_executor",
        "_explainer",
        "_failed",
        "_gate",
        "_handover",
        "_lanes",
        "_loop",
        "_observed",
        "_on_end",
        "_owns_executor",
        "_partitions",
        "_plain_admission",
        "_policy",
        "_process_pool",
        "_rate",
        "_run_histogram",
        "_shed",
        "_shutdown",
        "_submitted",
        "_to_processes",
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
    ) -> None:
        policy = bound if isinstance(bound, LimitPolicy) else None
        bound = None if policy is not None else check_bound(bound)
        shares = _check_partitions(partitions, bound)
        if copy_context is not None and not isinstance(copy_context, bool):
            raise TypeError(
                f"copy_context must be a bool or None, got {copy_context!r}"
            )
        limits = Limits(max_pending, max_wait, max_per_second, burst)
        executor, owned, workers = own_or_wrap(
            max_workers, executor, bound_given=bound is not None or policy is not None
        )
        if policy is not None:
            bound = policy.attach(workers if isinstance(workers, int) else None)
        elif bound is None:
            assert isinstance(workers, int)
            bound = 2 * workers
        self._setup(executor, owned, None, bound, limits, copy_context, policy, shares)

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
            bound: As in the constructor; default twice ``max_workers``.
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

        Functions and arguments are pickled: functions must be defined at
        the top level of an importable module. Calls run in the worker's own
        :mod:`contextvars` context.

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
        """
        policy = bound if isinstance(bound, LimitPolicy) else None
        bound = None if policy is not None else check_bound(bound)
        shares = _check_partitions(partitions, bound)
        limits = Limits(max_pending, max_wait, max_per_second, burst)
        pool = owned_process_pool(max_workers, mp_context, initializer, initargs)
        if policy is not None:
            try:
                bound = policy.attach(pool.workers)
            except BaseException:
                pool.executor.shutdown(wait=False)
                raise
        self = cls.__new__(cls)
        self._setup(
            pool.executor,
            True,
            pool,
            2 * pool.workers if bound is None else bound,
            limits,
            None,
            policy,
            shares,
        )
        return self

    def _setup(
        self,
        executor: concurrent.futures.Executor,
        owned: bool,
        process_pool: OwnedProcessPool | None,
        bound: int | SharedBound,
        limits: Limits,
        copy_context: bool | None = None,
        policy: LimitPolicy | None = None,
        shares: dict[str, Share] | None = None,
    ) -> None:
        """Assemble the pieces; the arguments are already checked."""
        to_processes = isinstance(executor, ProcessPoolExecutor)
        if copy_context is None:
            copy_context = isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        elif copy_context and to_processes:
            raise ValueError(
                "copy_context=True cannot be used with a process pool: a "
                "contextvars.Context cannot be pickled to another process"
            )
        self._executor = executor
        self._owns_executor = owned
        self._process_pool = process_pool
        self._to_processes = to_processes
        self._handover, self._explainer = handover_for(
            executor,
            copy_context=copy_context,
            to_processes=to_processes,
            owned=process_pool,
        )
        self._gate: SlotGate | LoopView | PartitionedGate
        self._partitions: PartitionedGate | None = None
        if shares is not None:
            assert isinstance(bound, int)
            self._gate = self._partitions = PartitionedGate(
                bound, shares, limits.max_pending, limits.max_wait
            )
        elif isinstance(bound, int):
            self._gate = SlotGate(bound, limits.max_pending, limits.max_wait)
        else:
            self._gate = LoopView(bound, limits.max_pending, limits.max_wait)
        # With partitions: the partition of each call submitted through one
        # (calls absent here are the "default" partition's).
        self._lanes: dict[concurrent.futures.Future[Any], Part] = {}
        self._policy = policy
        self._rate = (
            None
            if limits.max_per_second is None
            else RateLimiter(limits.max_per_second, limits.burst)
        )
        # Underlying futures of calls submitted and not yet settled (so that
        # aclose(timeout=...) can cancel those that have not started), each
        # with its time.monotonic() at hand-off (for the run-time histogram).
        self._calls: dict[concurrent.futures.Future[Any], float] = {}
        # The last stateless function submit() checked: the next call of it
        # is not checked again (a loop that submits one function pays once).
        self._checked_fn: object = _NOTHING_CHECKED
        self._run_histogram = Recorder()
        # The strategies an observer swaps (see add_observer).
        self._admit: _Admit = self._acquire_and_start
        # No rate limit and no observer: a free slot is taken in submit itself.
        self._plain_admission = self._rate is None
        self._on_end = (
            self._call_ended if shares is None else self._call_ended_partitioned
        )
        self._observed: Observed | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bridge: Bridge | None = None
        self._shutdown: asyncio.Future[None] | None = None
        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._cancelled = 0
        self._shed = 0

    # -- introspection -------------------------------------------------------

    @property
    def bound(self) -> int:
        """Most calls submitted to the underlying executor and unfinished."""
        return self._gate.bound

    @property
    def max_pending(self) -> int | None:
        """Most coroutines allowed to wait for a slot (``None``: no limit)."""
        return self._gate.max_pending

    @property
    def max_wait(self) -> float | None:
        """Seconds a coroutine may wait for a slot (``None``: no limit)."""
        return self._gate.max_wait

    @property
    def max_per_second(self) -> float | None:
        """Most calls started per second (``None``: no limit)."""
        return None if self._rate is None else self._rate.per_second

    @property
    def executor(self) -> concurrent.futures.Executor:
        """The underlying executor, owned or wrapped.

        For a process pool that was replaced after it broke, the current one.
        """
        return self._executor

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._gate.closed

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
        if not self._gate.would_admit_now():
            return False
        rate = self._rate
        return rate is None or rate.would_start_now()

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
        return self._gate.can_queue()

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
        return self._shed_in(None)

    def _shed_in(self, part: Part | None) -> bool:
        gate = self._gate if part is None else part
        if gate.can_queue():
            return False
        self._shed += 1
        partitions = self._partitions
        if part is None and partitions is not None:
            part = partitions.default
        if part is not None:
            part.shed += 1
        observed = self._observed
        if observed is not None:
            observed.refused_at_edge(None if part is None else part.name)
        return True

    def _queued(self) -> int:
        """Calls handed over that have not started in the underlying executor."""
        return sum(1 for cfut in self._calls if not cfut.running() and not cfut.done())

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
        return self._gate.wait_recent

    def stats(self) -> ExecutorStats:
        """Return a snapshot of the counters. O(1); cheap enough per request."""
        gate = self._gate
        rate = self._rate
        policy = self._policy
        return ExecutorStats(
            bound=gate.bound,
            in_flight=gate.in_use,
            waiting=gate.waiting,
            max_pending=gate.max_pending,
            max_wait=gate.max_wait,
            max_per_second=None if rate is None else rate.per_second,
            peak_in_flight=gate.peak_in_use,
            submitted=self._submitted,
            completed=self._completed,
            failed=self._failed,
            cancelled=self._cancelled,
            rejected=gate.rejected,
            timed_out=gate.timed_out,
            rate_limited=0 if rate is None else rate.limited,
            queue_wait_avg=gate.wait_average,
            queue_wait_max=gate.wait_maximum,
            closed=gate.closed,
            queue_wait=gate.wait_histogram(),
            run_time=self._run_histogram.snapshot(),
            pool_restarts=0
            if self._process_pool is None
            else self._process_pool.restarts,
            latency_short=None if policy is None else policy.latency_short,
            latency_no_load=None if policy is None else policy.latency_no_load,
            partitions={} if self._partitions is None else self._partition_stats(),
            shed_at_edge=self._shed,
            queued=self._queued(),
        )

    def _partition_stats(self) -> dict[str, PartitionStats]:
        gate = self._partitions
        assert gate is not None
        default = gate.default
        # Calls submitted on the executor itself are counted only in total.
        others = sum(p.submitted for p in gate.parts() if p is not default)
        return {
            part.name: PartitionStats(
                share=part.share,
                guaranteed=part.guaranteed,
                max_share=part.max_share,
                ceiling=part.ceiling,
                in_flight=part.in_use,
                waiting=part.waiting,
                max_pending=part.max_pending,
                max_wait=part.max_wait,
                peak_in_flight=part.peak_in_use,
                submitted=self._submitted - others
                if part is default
                else part.submitted,
                completed=part.completed,
                failed=part.failed,
                cancelled=part.cancelled,
                rejected=part.rejected,
                timed_out=part.timed_out,
                queue_wait_avg=part.wait_average,
                queue_wait_max=part.wait_maximum,
                queue_wait=part.wait_histogram(),
                run_time=part.run_time.snapshot(),
                shed_at_edge=part.shed,
            )
            for part in gate.parts()
        }

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
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        gate = self._partitions
        if gate is None:
            raise RuntimeError(
                f"{self!r} has no partitions; declare them with "
                "BoundedLoopExecutor(partitions={...})"
            )
        return Partition(self, gate.part(name))

    def __repr__(self) -> str:
        gate = self._gate
        state = "closed" if gate.closed else "open"
        return (
            f"<{type(self).__name__} bound={gate.bound} in_flight={gate.in_use} "
            f"waiting={gate.waiting} {state}>"
        )

    # -- submission ----------------------------------------------------------

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
        if asyncio.get_running_loop() is not self._loop:
            self._bind()
        if fn is not self._checked_fn:
            self._check_fn(fn)
        if self._plain_admission and self._gate.try_acquire():
            return self._start(fn, args, kwargs)  # a slot free: no wait at all
        return await self._admit(fn, args, kwargs)

    def _check_fn(self, fn: object) -> None:
        """Refuse a *fn* that is not callable or is async.

        A fine *fn* that holds no state (a builtin, or a function without a
        closure) is remembered: holding on to it keeps nothing else alive.
        """
        if not callable(fn) or is_async_function(fn):
            check_callable("fn", fn)
        kind = type(fn)
        if kind is BuiltinFunctionType or (
            kind is FunctionType and fn.__closure__ is None  # type: ignore[attr-defined]
        ):
            self._checked_fn = fn

    async def _acquire_and_start(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        part: Part | None = None,
    ) -> asyncio.Future[T]:
        """Take a slot (and a turn), then hand the call over.

        The slot is taken on *part*'s account if given, else on the gate's.
        An observer added while the caller waited hears of the call at its
        hand-over, in *part*.
        """
        gate = self._gate if part is None else part
        if not gate.try_acquire():
            await gate.acquire()
        if self._rate is not None or gate.closed:
            await self._wait_turn(part)
        if part is None:
            return self._start(fn, args, kwargs)
        return self._start_in(part, fn, args, kwargs)

    async def _wait_turn(self, part: Part | None = None) -> None:
        """Holding a slot: wait for the rate limit's turn; check the close.

        On any error or cancellation the slot (of *part*, if given) is
        released.
        """
        gate = self._gate if part is None else part
        try:
            # Not once closed: a slot handed over just as aclose() ran would
            # wait for a turn that the rate limiter's close no longer ends.
            if self._rate is not None and not gate.closed:
                await self._rate.wait_turn()
            if gate.closed:
                raise closed_while_waiting()
        except BaseException:
            gate.release()
            raise

    def _start(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_settled: Callable[[asyncio.Future[Any]], object] | None = None,
        *,
        part: Part | None = None,
    ) -> asyncio.Future[T]:
        """Hand the call to the executor; the caller already holds a slot.

        The slot is held on *part*'s account if given, else on the gate's.
        ``on_settled``, if given, is called with the returned future, on the
        loop, right after it is settled (see :meth:`Bridge.chain`). On the
        bound loop only. If the executor's ``submit`` raises, the slot is
        freed and the error propagates.
        """
        self._submitted += 1
        if part is not None:
            part.submitted += 1
        explainer = self._explainer
        explain = None if explainer is None else explainer(fn, args, kwargs)
        try:
            cfut = self._handover(self._executor, fn, args, kwargs)
        except BaseException as exc:
            cfut = self._submit_failed(exc, fn, args, kwargs, part)
        self._calls[cfut] = time.monotonic()
        if part is not None:
            self._lanes[cfut] = part
        assert self._bridge is not None
        return self._bridge.chain(cfut, explain, on_settled)

    # -- submission through a partition ----------------------------------------

    async def _submit_in(
        self,
        part: Part,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> asyncio.Future[T]:
        """:meth:`submit` on *part*'s account."""
        if asyncio.get_running_loop() is not self._loop:
            self._bind()
        if fn is not self._checked_fn:
            self._check_fn(fn)
        if self._plain_admission and part.try_acquire():
            return self._start(fn, args, kwargs, part=part)
        return await self._admit(fn, args, kwargs, part)

    def _start_in(
        self,
        part: Part,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_settled: Callable[[asyncio.Future[Any]], object] | None = None,
    ) -> asyncio.Future[T]:
        """:meth:`_start` of an item of *part*'s map.

        Tells an observer, if any, the item's partition (on the loop, with
        no await in between).
        """
        observed = self._observed
        if observed is None:
            return self._start(fn, args, kwargs, on_settled, part=part)
        observed.partition = part.name
        try:
            return self._start(fn, args, kwargs, on_settled, part=part)
        finally:
            observed.partition = None

    def _map_in(
        self,
        part: Part,
        fn: Callable[[A], T],
        items: Iterable[A] | AsyncIterable[A],
        ordered: bool,
        chunksize: int | None,
    ) -> MapIterator[T]:
        """:meth:`map` on *part*'s account."""
        chunksize = self._check_map(fn, ordered, chunksize)
        port = self._map_port(part)
        return make_map(port, fn, items, ordered=ordered, chunksize=chunksize)

    def _call_ended_partitioned(
        self, cfut: concurrent.futures.Future[Any], outcome: int
    ) -> bool:
        """:meth:`_call_ended`, releasing into the call's partition."""
        gate = self._partitions
        assert gate is not None
        part = self._lanes.pop(cfut, gate.default)
        started = self._calls.pop(cfut, None)
        if self._policy is not None and started is not None and outcome != CANCELLED:
            self._sample(cfut, outcome, started)
        part.release()
        if outcome == COMPLETED:
            self._completed += 1
            part.completed += 1
            if started is not None:
                ran = time.monotonic() - started
                self._run_histogram.record(ran)
                part.run_time.record(ran)
        elif outcome == FAILED:
            if self._to_processes and failed_call_was_dropped(cfut, self._executor):
                self._cancelled += 1
                part.cancelled += 1
            else:
                self._failed += 1
                part.failed += 1
                if started is not None:
                    ran = time.monotonic() - started
                    self._run_histogram.record(ran)
                    part.run_time.record(ran)
        else:
            self._cancelled += 1
            part.cancelled += 1
        return gate.closed

    def _submit_failed(
        self,
        exc: BaseException,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        part: Part | None = None,
    ) -> concurrent.futures.Future[T]:
        """The executor's ``submit`` raised *exc*; the caller holds a slot.

        The slot is held on *part*'s account if given, else on the gate's.

        An owned pool that is broken is replaced and the call submitted to
        the new one. Otherwise the slot is freed and the error raised; for a
        broken pool that is not ours, with a message that says what to do.
        """
        error = exc
        if isinstance(exc, BrokenExecutor):
            if self._process_pool is not None:
                try:
                    self._executor = self._process_pool.replace()
                    return self._handover(self._executor, fn, args, kwargs)
                except BaseException as retry_exc:
                    error = retry_exc
            else:
                error = explain_broken_pool(exc, self._executor)
        self._failed += 1
        if part is not None:
            part.failed += 1
            part.release()
        else:
            if self._partitions is not None:
                self._partitions.default.failed += 1
            self._gate.release()
        raise error

    def _call_ended(self, cfut: concurrent.futures.Future[Any], outcome: int) -> bool:
        """On the loop, once a submitted call ended: free its slot, count it.

        Returns whether the executor is closed (the bridge then tells a
        caller whose call was dropped before it started).
        """
        started = self._calls.pop(cfut, None)
        gate = self._gate
        if self._policy is not None and started is not None and outcome != CANCELLED:
            self._sample(cfut, outcome, started)
        gate.release()
        if outcome == COMPLETED:
            self._completed += 1
            if started is not None:
                self._run_histogram.record(time.monotonic() - started)
        elif outcome == FAILED:
            if self._to_processes and failed_call_was_dropped(cfut, self._executor):
                self._cancelled += 1  # dropped by aclose(timeout=...) unstarted
            else:
                self._failed += 1
                if started is not None:
                    self._run_histogram.record(time.monotonic() - started)
        else:
            self._cancelled += 1
        return gate.closed

    def _sample(
        self, cfut: concurrent.futures.Future[Any], outcome: int, started: float
    ) -> None:
        """Feed the limit policy the call that ended; resize to its answer.

        Runs before the call's slot is released, so that a lower limit
        retires the slot instead of handing it to a waiter.
        """
        policy = self._policy
        assert policy is not None
        now = time.monotonic()
        dropped = outcome == FAILED and isinstance(cfut.exception(), policy.drop_on)
        gate = self._gate
        limit = policy.on_sample(now, now - started, gate.in_use, dropped)
        if limit != gate.bound and not gate.closed:
            gate.resize(limit)

    # -- observing -----------------------------------------------------------

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
        if self._observed is not None:
            raise RuntimeError(f"{self!r} already has an observer")
        partitions = self._partitions
        observed = Observed(
            observer,
            self._handover,
            None if partitions is None else partitions.default.name,
        )
        self._observed = observed
        self._handover = observed.handover
        self._on_end = self._call_ended_observed
        if self._bridge is not None:
            self._bridge.set_on_end(self._on_end)
        self._admit = self._acquire_and_start_observed
        self._plain_admission = False

    async def _acquire_and_start_observed(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        part: Part | None = None,
    ) -> asyncio.Future[T]:
        """:meth:`_acquire_and_start`, telling the observer.

        The slot is taken on *part*'s account if given, else on the gate's.
        """
        observed = self._observed
        assert observed is not None
        observer = observed.observer
        token = observed.arrived(None if part is None else part.name)
        gate = self._gate if part is None else part
        refused_at_once = False
        try:
            if not gate.try_acquire():
                # Open, no free slot: acquire() refuses at once (max_pending)
                # exactly when the caller may not queue.
                refused_at_once = not gate.can_queue()
                await gate.acquire()
            if self._rate is not None or gate.closed:
                await self._wait_turn(part)
        except BaseException as exc:
            if isinstance(exc, OverloadedError):
                reason = "max_pending" if refused_at_once else "max_wait"
            elif isinstance(exc, ClosedError):
                reason = "closed"
            else:
                reason = "cancelled"
            observer.refused(token, reason, exc)
            raise
        observed.current = token
        # The partition of a second hand-over, to a replaced process pool.
        observed.partition = None if part is None else part.name
        try:
            return self._start(fn, args, kwargs, part=part)
        finally:
            observed.current = None
            observed.partition = None

    def _call_ended_observed(
        self, cfut: concurrent.futures.Future[Any], outcome: int
    ) -> bool:
        """:meth:`_call_ended`, then the observer's ``ended``."""
        cancelled = self._cancelled
        if self._partitions is None:
            closed = self._call_ended(cfut, outcome)
        else:
            closed = self._call_ended_partitioned(cfut, outcome)
        if self._cancelled != cancelled:
            outcome = CANCELLED  # a failure that was a drop before it started
        assert self._observed is not None
        self._observed.ended(cfut, outcome, self._loop)
        return closed

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Submit ``fn(*args, **kwargs)`` and wait for its result.

        Raises what :meth:`submit` raises, then whatever ``fn`` raised,
        unchanged (with the exceptions :meth:`submit` names).

        Cancellation: while waiting for a slot, as :meth:`submit`. While the
        call is queued in the executor, it is cancelled and never runs; while
        it runs, the caller is released at once but the call goes on and
        keeps its slot until it ends.
        """
        fut = await self.submit(fn, *args, **kwargs)
        return await fut

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
        chunksize = self._check_map(fn, ordered, chunksize)
        port = self._map_port()
        return make_map(port, fn, items, ordered=ordered, chunksize=chunksize)

    def _map_port(self, part: Part | None = None) -> MapPort:
        """The map's way to this executor, on *part*'s account if given."""
        gate = self._gate if part is None else part
        rated = self._rate is not None
        if part is None:
            return MapPort(
                bind=self._bind_running,
                bound=self._current_bound,
                reserve_now=self._reserve_now if rated else gate.try_take,
                release=gate.release,
                start_reserved=self._start,
                start=self._acquire_and_start,
                rate_limited=rated,
                reserve_slot_now=gate.try_take,
                start_on_turn=self._start_on_turn,
            )
        return MapPort(
            bind=self._bind_running,
            bound=self._current_bound,
            reserve_now=partial(self._reserve_now, part) if rated else gate.try_take,
            release=gate.release,
            start_reserved=partial(self._start_in, part),
            start=partial(self._acquire_and_start, part=part),
            rate_limited=rated,
            reserve_slot_now=gate.try_take,
            start_on_turn=partial(self._start_on_turn, part=part),
        )

    def _check_map(
        self, fn: object, ordered: object, chunksize: int | None
    ) -> int | None:
        """Check :meth:`map`'s arguments; return the chunk size to use."""
        check_callable("fn", fn)
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered must be a bool, got {ordered!r}")
        if chunksize is None:
            if not self._to_processes:
                chunksize = 1
        else:
            check_int("chunksize", chunksize, 1)
        return chunksize

    # The map's side of the executor (see MapPort).

    def _bind_running(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind()
        return loop

    def _current_bound(self) -> int:
        return self._gate.bound

    def _reserve_now(self, part: Part | None = None) -> bool:
        gate = self._gate if part is None else part
        if not gate.has_free_slot():
            return False
        rate = self._rate
        if rate is not None and not rate.try_start():
            return False
        return gate.try_take()

    async def _start_on_turn(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        part: Part | None = None,
    ) -> asyncio.Future[T]:
        await self._wait_turn(part)
        if part is None:
            return self._start(fn, args, kwargs)
        return self._start_in(part, fn, args, kwargs)

    # -- loop binding --------------------------------------------------------

    def _bind(self) -> None:
        """Bind to the running loop on first use; refuse any other loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._bridge = Bridge(loop, self._on_end)
            self._gate.bind(loop)
            if self._rate is not None:
                self._rate.bind(loop)
        elif self._loop is not loop:
            raise RuntimeError(
                f"{self!r} is bound to a different event loop; create one "
                "BoundedLoopExecutor per event loop"
            )

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
        if self._policy is not None:
            raise RuntimeError(
                f"the bound of {self!r} is set by its limit policy "
                f"{self._policy!r}; resize() would fight it"
            )
        bridge = self._bridge
        if bridge is not None and thread_id() != bridge.loop_thread_id:
            raise RuntimeError(
                "resize() must be called from the event loop's thread; use "
                "loop.call_soon_threadsafe(executor.resize, n) from others"
            )
        self._gate.resize(bound)

    # -- closing -------------------------------------------------------------

    async def aclose(self, *, timeout: float | None = None) -> None:
        """Close: refuse new calls, wait for calls in flight, shut down if owned.

        New submissions raise :class:`ClosedError`, and so do coroutines
        waiting for a slot or a turn, which are woken at once. Calls already
        submitted are awaited without blocking the event loop. A pool this
        object created is then shut down (in a worker thread); a wrapped
        executor is left running. Calling it again is harmless.

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
        if asyncio.get_running_loop() is not self._loop:
            self._bind()
        gate = self._gate
        gate.close()
        self._checked_fn = _NOTHING_CHECKED
        if self._rate is not None:
            self._rate.close()
        if timeout is None:
            await gate.wait_idle()
        else:
            try:
                await asyncio.wait_for(gate.wait_idle(), timeout)
            except asyncio.TimeoutError:
                self._give_up_on_calls_in_flight(timeout)
        await self._shut_down_owned_pool()

    def _give_up_on_calls_in_flight(self, timeout: float) -> None:
        """After aclose's timeout: cancel calls not started, report the rest."""
        not_started = sum(cfut.cancel() for cfut in list(self._calls))
        # cancel() settles each cancelled call right here, on this thread.
        running = self._gate.in_use
        if not running:
            return
        pool = self._process_pool
        if pool is not None:
            # The pool's own queue holds calls it reports as running: its
            # workers now skip those that have not started.
            pool.drop_calls_not_started()
        if self._owns_executor and self._shutdown is None:
            # Stop the pool without waiting; a later aclose() waits for the
            # running calls and then joins the pool's workers.
            self._executor.shutdown(wait=False, cancel_futures=True)
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
            return
        if self._shutdown is None:
            assert self._loop is not None
            self._shutdown = self._loop.run_in_executor(None, self._executor.shutdown)
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


def _check_partitions(
    partitions: object, bound: int | SharedBound | None
) -> dict[str, Share] | None:
    """Check ``partitions=`` against the kind of bound it is given with."""
    if partitions is None:
        return None
    if isinstance(bound, SharedBound):
        raise TypeError(
            "partitions cannot be used with a SharedBound: give an int bound "
            "or a limit policy"
        )
    return check_partitions(partitions)


class Partition:
    """One partition of a :class:`BoundedLoopExecutor`, from its ``partition()``.

    Its :meth:`submit`, :meth:`run` and :meth:`map` behave as the
    executor's, with the wait for a slot in this partition's FIFO queue and
    the slot counted against its share and ceiling, and this partition's
    ``max_pending`` and ``max_wait`` (see :class:`Share`). Closing, resizing
    and the other settings are the executor's.
    """

    __slots__ = ("_executor", "_part")

    def __init__(self, executor: BoundedLoopExecutor, part: Part) -> None:
        self._executor = executor
        self._part = part

    @property
    def name(self) -> str:
        """The partition's name."""
        return self._part.name

    @property
    def executor(self) -> BoundedLoopExecutor:
        """The executor this partition belongs to."""
        return self._executor

    def __repr__(self) -> str:
        part = self._part
        return (
            f"<Partition {part.name!r} of {self._executor!r} "
            f"guaranteed={part.guaranteed} ceiling={part.ceiling} "
            f"in_flight={part.in_use} waiting={part.waiting}>"
        )

    def would_admit_now(self) -> bool:
        """Whether a call submitted now would be handed over without waiting.

        As :meth:`BoundedLoopExecutor.would_admit_now`, for this partition:
        also false while the partition holds its ceiling, even with slots
        free. O(1); takes no slot and changes nothing.
        """
        if not self._part.would_admit_now():
            return False
        rate = self._executor._rate
        return rate is None or rate.would_start_now()

    def can_admit(self) -> bool:
        """Whether a call submitted now would be accepted, at once or to wait.

        As :meth:`BoundedLoopExecutor.can_admit`, with this partition's
        ``max_pending``. O(1); takes no slot and changes nothing.
        """
        return self._part.can_queue()

    def shed_at_edge(self) -> bool:
        """:meth:`BoundedLoopExecutor.shed_at_edge`, for this partition.

        Counts the refusal in this partition's ``shed_at_edge`` and the
        executor's.
        """
        return self._executor._shed_in(self._part)

    def stats(self) -> PartitionStats:
        """This partition's stats (as in ``executor.stats().partitions``)."""
        return self._executor.stats().partitions[self._part.name]

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
        return await self._executor._submit_in(self._part, fn, args, kwargs)

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """:meth:`BoundedLoopExecutor.run`, in this partition.

        Raises what :meth:`submit` raises, then whatever ``fn`` raised.
        Cancellation: as the executor's ``run``.
        """
        fut = await self._executor._submit_in(self._part, fn, args, kwargs)
        return await fut

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
        return self._executor._map_in(self._part, fn, items, ordered, chunksize)
