"""The call path: from a caller's arrival to the end of its call, written once.

A :class:`Lane` carries the calls of one partition (a plain executor has one
lane): it admits a call (a slot of its gate, then a turn of the rate
limit), hands it over through the executor's
:class:`~aiobound._submit.Submitter`, hears its end from the
:class:`~aiobound._bridge.Bridge`, counts it, feeds the limit policy and
tells the observer. A lane is also what ``map`` talks to (its port), and
what the front doors (:class:`~aiobound.BoundedLoopExecutor`,
:class:`~aiobound.Partition`) wrap.

What the lanes of one executor share (the loop, the submitter, the rate
limit, the policy, the observer, the calls in flight) is its
:class:`CallPath`; each lane has a bridge of its own back to the loop.

Features not in use cost nothing but a test of ``None``: no rate limit, no
observer, no policy is chosen at construction (or, for the observer, when
it is added), never re-decided per call. Everything here runs on the
executor's event loop.
"""

from __future__ import annotations

import asyncio
from asyncio import get_running_loop
from concurrent.futures import BrokenExecutor
from time import monotonic
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from ._bridge import Bridge, thread_id
from ._checks import check_callable, is_async_function
from ._deadlines import Deadline, run_within
from ._errors import DeadlineExceeded, closed_while_waiting, restage
from ._stats import CANCELLED, COMPLETED, FAILED, CallCounts

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

    from ._limits import LimitPolicy
    from ._observe import Observed
    from ._rate import RateLimiter
    from ._readings import ExecutorGate, Gate
    from ._submit import Submitter

__all__ = ("CallPath", "Lane", "TimedPort")

T = TypeVar("T")

# What submit() has checked before any function: no function is this object.
_NOTHING_CHECKED = object()
# The token of a call the observer has not heard of yet.
_UNSEEN = object()
# In Lane.timers: the deadline of this call has passed.
_MISSED: Any = object()


class CallPath:
    """What the lanes of one executor share.

    Args:
        gate: The executor-wide gate (closed, resized and waited on as a
            whole): a :class:`~aiobound._slots.SlotGate`, a shared bound's
            :class:`~aiobound._shared.LoopView` or a
            :class:`~aiobound._partitions.PartitionedGate`.
        submitter: How calls are handed over.
        rate: The rate limit, or ``None``.
        policy: The limit policy that sets the bound, or ``None``.
        releases_anywhere: The gate takes slots back from any thread (a
            shared bound's view): the bridge frees each slot in the thread
            where its call ended, not on the loop.
        call_timeout: The time limit of every call made on the executor
            itself (``submit``, ``run``, each ``map`` item), or ``None``.
    """

    __slots__ = (
        "call_timeout",
        "calls",
        "gate",
        "heard_all",
        "lanes",
        "loop",
        "loop_thread_id",
        "observed",
        "policy",
        "rate",
        "releases_anywhere",
        "submitter",
    )

    def __init__(
        self,
        gate: ExecutorGate,
        submitter: Submitter,
        rate: RateLimiter | None,
        policy: LimitPolicy | None,
        *,
        releases_anywhere: bool = False,
        call_timeout: float | None = None,
    ) -> None:
        self.gate = gate
        self.submitter = submitter
        self.rate = rate
        self.policy = policy
        self.releases_anywhere = releases_anywhere
        self.call_timeout = call_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread_id: int | None = None
        # Underlying futures of calls handed over and not yet ended, each
        # with its time.monotonic() at hand-off (for the run time, and so
        # that aclose(timeout=...) can cancel those not started).
        self.calls: dict[concurrent.futures.Future[Any], float] = {}
        # Set once calls is empty, while all_heard() waits for it.
        self.heard_all: asyncio.Event | None = None
        self.observed: Observed | None = None
        self.lanes: list[Lane] = []

    def lane(self, gate: Gate, name: str | None) -> Lane:
        """A new lane through *gate*, for the partition *name* (or none)."""
        lane = Lane(self, gate, name)
        self.lanes.append(lane)
        return lane

    # -- the loop ----------------------------------------------------------------

    def bind(self) -> asyncio.AbstractEventLoop:
        """Bind to the running loop on first use; refuse any other loop.

        Raises:
            RuntimeError: bound to another loop already.
        """
        loop = get_running_loop()
        if self.loop is None:
            self.loop = loop
            self.loop_thread_id = thread_id()
            gate = self.gate
            gate.bind(loop)
            if self.rate is not None:
                self.rate.bind(loop)
            for lane in self.lanes:
                release = lane.gate.release if self.releases_anywhere else None
                on_end = (
                    lane.ended_in_processes
                    if self.submitter.to_processes
                    else lane.ended
                )
                lane.bridge = Bridge(loop, on_end, release)
                lane.loop = loop
        elif self.loop is not loop:
            raise RuntimeError(
                "this executor is bound to a different event loop; create one "
                "BoundedLoopExecutor per event loop"
            )
        return loop

    def forget_checked_fn(self) -> None:
        """Check the next function again (and hold on to none meanwhile)."""
        for lane in self.lanes:
            lane.checked_fn = _NOTHING_CHECKED

    def set_observer(self, observed: Observed) -> None:
        """Tell *observed* of every call of every lane from now on."""
        self.observed = observed
        for lane in self.lanes:
            lane.observed = observed
            lane.plain = False

    # -- the end of a call -----------------------------------------------------------

    def sample(self, started: float, dropped: bool) -> None:
        """Feed the limit policy a call that ended (or missed its deadline).

        Its latency runs from *started* (its hand-off) to now; *dropped*:
        it failed with one of the policy's ``drop_on`` errors, or missed its
        deadline. Runs before the call's slot is released, so that a lower
        limit retires the slot instead of handing it to a waiter.
        """
        policy = self.policy
        assert policy is not None
        now = monotonic()
        gate = self.gate
        limit = policy.on_sample(now, now - started, gate.in_use, dropped)
        if limit != gate.bound and not gate.closed:
            gate.resize(limit)

    async def all_heard(self) -> None:
        """Wait until the loop has heard the end of every call handed over.

        Over a shared bound, a call's slot comes back in the thread where it
        ended, before its end reaches the loop (where it is counted and its
        caller told): an idle gate does not mean that every end was heard.
        Only such a path sets :attr:`heard_all` (elsewhere the two happen
        together, on the loop).

        Cancellation: only the wait is cancelled.
        """
        if not self.calls:
            return
        heard_all = self.heard_all
        if heard_all is None or heard_all.is_set():
            heard_all = self.heard_all = asyncio.Event()
        await heard_all.wait()

    def running(self) -> int:
        """Calls handed over whose underlying future has not ended."""
        return sum(1 for cfut in self.calls if not cfut.done())

    def queued(self) -> int:
        """Calls handed over that have not started in the underlying executor."""
        return sum(1 for cfut in self.calls if not cfut.running() and not cfut.done())


class Lane:
    """The calls of one partition (or of a plain executor), start to end.

    Every method runs on the executor's loop.
    """

    bridge: Bridge  # made by CallPath.bind: no call starts before it

    __slots__ = (
        "bridge",
        "calls",
        "can_reserve_now",
        "can_reserve_slot_now",
        "checked_fn",
        "counts",
        "gate",
        "loop",
        "name",
        "observed",
        "path",
        "plain",
        "policy",
        "rate",
        "releases_on_end",
        "reserve_now",
        "reserve_slot_now",
        "submitter",
        "timeout",
        "timers",
        "whole",
    )

    def __init__(self, path: CallPath, gate: Gate, name: str | None) -> None:
        self.path = path
        self.gate = gate
        self.name = name  # the partition's, for observers; None without
        self.counts = CallCounts()
        # What every call reads, kept here rather than looked up on the path.
        self.whole = path.gate
        self.submitter = path.submitter
        self.calls = path.calls
        self.rate = path.rate
        self.policy = path.policy
        self.observed = path.observed  # set again by CallPath.set_observer
        self.loop = path.loop  # set by CallPath.bind, with self.bridge
        # The last stateless function checked: its next call is not checked
        # again (a loop that submits one function pays once).
        self.checked_fn: object = _NOTHING_CHECKED
        # Else the bridge frees each slot in the thread where its call ended.
        self.releases_on_end = not path.releases_anywhere
        # No rate limit and no observer: a free slot is taken in submit.
        self.plain = path.rate is None and path.observed is None
        # The executor's call_timeout, and the deadline timers of the calls
        # handed over with one (_MISSED once their deadline passed).
        self.timeout = path.call_timeout
        self.timers: dict[concurrent.futures.Future[Any], asyncio.TimerHandle] = {}
        # The map's port, chosen once (see aiobound._map.MapPort).
        self.can_reserve_slot_now: Callable[[], bool] = gate.would_admit_now
        self.reserve_slot_now: Callable[[], bool] = gate.try_take
        if path.rate is None:
            self.can_reserve_now = gate.would_admit_now
            self.reserve_now = gate.try_take
        else:
            self.can_reserve_now = self.would_admit_now
            self.reserve_now = self._reserve_with_turn

    # -- submit --------------------------------------------------------------------

    def submit_now(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
    ) -> asyncio.Future[T] | None:
        """``submit``'s first step: check, then hand over if a slot is free.

        Returns the call's future, or ``None`` when the caller must wait
        (then :meth:`admit_and_start`). A plain function, not a coroutine: a
        call that finds a slot free costs no coroutine of its own. With a
        *timeout*, the call's deadline is that many seconds from now.
        """
        if get_running_loop() is not self.loop:
            self.path.bind()
        if fn is not self.checked_fn:
            self.check_fn(fn)
        # A closed gate takes nothing: admit_and_start() then raises.
        if self.plain and self.gate.try_take():  # a slot free: no wait at all
            if timeout is None:
                return self.start(fn, args, kwargs)
            return self.start(fn, args, kwargs, None, _UNSEEN, Deadline(timeout))
        return None

    async def admit_and_start(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
    ) -> asyncio.Future[T]:
        """Take a slot and a turn, telling the observer; then hand over.

        With a *timeout*, the call's deadline is that many seconds from now,
        over the wait and the run. An observer added while the caller waited
        hears of the call at its hand-over.
        """
        deadline = None if timeout is None else Deadline(timeout)
        observed = self.observed
        if observed is None:
            await self.admit(deadline)
            return self.start(fn, args, kwargs, None, _UNSEEN, deadline)
        token = observed.arrived(self.name)
        gate = self.gate
        # Open, no free slot: acquire() refuses at once (max_pending)
        # exactly when the caller may not queue.
        at_once = not gate.would_admit_now() and not gate.can_queue()
        try:
            await self.admit(deadline)
        except BaseException as exc:
            observed.refused(token, exc, at_once)
            raise
        return self.start(fn, args, kwargs, None, token, deadline)

    async def admit(self, deadline: Deadline | None = None) -> None:
        """Take a slot, then a turn under a rate limit.

        Raises:
            ClosedError, OverloadedError: as the gate's ``acquire`` (and a
                close while waiting for the turn).
            DeadlineExceeded: *deadline* passed first (stage ``"waiting"``).

        Cancellation: nothing is held once it propagates.
        """
        gate = self.gate
        try:
            if not gate.try_acquire():
                await gate.acquire(deadline)
            if self.rate is not None or gate.closed or deadline is not None:
                await self.take_turn(deadline)
        except DeadlineExceeded:
            self.counts.deadline_waiting += 1
            raise

    async def take_turn(self, deadline: Deadline | None = None) -> None:
        """Holding a slot: wait for the rate limit's turn; check the close.

        A call whose deadline passed meanwhile is not handed over. On any
        error or cancellation the slot is released.
        """
        gate = self.gate
        rate = self.rate
        try:
            # Not once closed: a slot handed over just as aclose() ran would
            # wait for a turn that the rate limiter's close no longer ends.
            if rate is not None and not gate.closed:
                await rate.wait_turn(deadline)
            if gate.closed:
                raise closed_while_waiting()
            if deadline is not None and deadline.passed():
                raise deadline.exceeded("waiting")
        except BaseException:
            gate.release()
            raise

    def start(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_settled: Callable[[asyncio.Future[Any]], object] | None = None,
        token: object = _UNSEEN,
        deadline: Deadline | None = None,
    ) -> asyncio.Future[T]:
        """Hand the call over; the caller holds a slot of this lane.

        ``on_settled``, if given, is called with the returned future, on the
        loop, right after it is settled (see :meth:`Bridge.chain`). If the
        hand-over fails (the observer's ``handing_over`` or the executor's
        ``submit`` raises), the slot is freed, the call counts as failed and
        the error propagates. With a *deadline*, the call carries it to its
        worker (:func:`aiobound.remaining`) and is watched until it ends.
        """
        self.counts.submitted += 1
        submitter = self.submitter
        explainer = submitter.explainer
        explain = None if explainer is None else explainer(fn, args, kwargs)
        observed = self.observed
        try:
            if observed is not None:
                if token is _UNSEEN:
                    token = observed.arrived(self.name)
                fn, args, kwargs = observed.handing_over(token, fn, args, kwargs)
            if deadline is not None:
                args = (*deadline.for_worker(submitter.same_clock), fn, *args)
                fn = run_within
            try:  # Submitter.submit, inlined: the hot path
                cfut = submitter.handover(submitter.executor, fn, args, kwargs)
            except BrokenExecutor as broken:
                cfut = submitter.resubmit(broken, fn, args, kwargs)
        except BaseException as exc:
            self.counts.failed += 1
            self.gate.release()
            if observed is not None and token is not _UNSEEN:
                observed.failed(token, exc)
            raise
        self.calls[cfut] = monotonic()
        if observed is not None:
            observed.track(cfut, token)
        if deadline is None:
            return self.bridge.chain(cfut, explain, on_settled)
        afut = self.bridge.chain(cfut, explain, on_settled)
        if not afut.done():  # else it ended at once
            self.timers[cfut] = self.loop.call_later(  # type: ignore[union-attr]
                deadline.due - monotonic(),
                self._deadline_passed,
                afut,
                cfut,
                token,
                deadline,
            )
        return afut

    def _deadline_passed(
        self,
        afut: asyncio.Future[Any],
        cfut: concurrent.futures.Future[Any],
        token: object,
        deadline: Deadline,
    ) -> None:
        """On the loop, at a handed-over call's deadline: release its caller.

        A call not started is cancelled (it never runs, its slot is freed);
        a running one is stopped where the pool can (a process pool made
        with ``kill_on_timeout=True``), else left to run on, holding its
        slot until it ends (abandoned). Either way the limit policy hears a
        drop now, and the observer hears of the miss.
        """
        timers = self.timers
        if afut.done():  # ended, or its caller left first
            timers.pop(cfut, None)
            return
        counts = self.counts
        running = cfut.running()
        stops = self.submitter.stops_running
        stage = ("stopped" if stops else "running") if running else "queued"
        # The caller's error first: cancelling the call settles it at once.
        error = deadline.exceeded(stage)
        afut.set_exception(error)
        started = self.calls.get(cfut)
        if self.policy is not None and started is not None:
            self.path.sample(started, True)
        timers[cfut] = _MISSED  # its end feeds the policy no more
        if cfut.cancel():  # never started, or stopped by the pool
            if running:
                counts.deadline_running += 1
            else:
                counts.deadline_queued += 1
        else:  # a thread, or it started after running() was read: it runs on
            if stage != "running":
                stage = "running"
                restage(error, stage)  # nobody has read it yet
            counts.deadline_running += 1
            if not cfut.done():
                counts.abandoned += 1
        observed = self.observed
        if observed is not None:
            observed.deadline_exceeded(token, stage)

    def ended_in_processes(
        self, cfut: concurrent.futures.Future[Any], outcome: int
    ) -> bool:
        """:meth:`ended`, for a process pool: a drop before start is a cancel.

        See :meth:`Submitter.outcome` (it also watches a broken pool).
        """
        if outcome == FAILED:
            outcome = self.submitter.outcome(cfut, outcome)
        return self.ended(cfut, outcome)

    def ended(self, cfut: concurrent.futures.Future[Any], outcome: int) -> bool:
        """On the loop, once a call ended: free its slot, count it, tell.

        Returns whether the executor is closed (the bridge then tells a
        caller whose call was dropped before it started).
        """
        started = self.calls.pop(cfut, None)
        policy = self.policy
        if self.timers:
            timer = self.timers.pop(cfut, None)
            if timer is _MISSED:
                policy = None  # its miss fed the policy already
            elif timer is not None:
                timer.cancel()
        if policy is not None and started is not None and outcome != CANCELLED:
            exc = None if outcome == COMPLETED else cfut.exception()
            self.path.sample(started, isinstance(exc, policy.drop_on))
        if self.releases_on_end:
            self.gate.release()
        elif not self.calls:  # its slot came back in the worker, before this
            heard_all = self.path.heard_all
            if heard_all is not None:
                heard_all.set()
        counts = self.counts
        if outcome == COMPLETED:  # CallCounts.ended, inlined: the hot path
            counts.completed += 1
            if started is not None:
                counts.run_time.record(monotonic() - started)
        else:
            counts.ended(outcome, None if started is None else monotonic() - started)
        observed = self.observed
        if observed is not None:
            observed.ended(cfut, outcome, self.path.loop)
        return self.whole.closed

    def check_fn(self, fn: object) -> None:
        """Refuse a *fn* that is not callable or is async.

        A fine *fn* that holds no state (a builtin function of a module, or a
        function without a closure) is remembered: holding on to it keeps
        nothing else alive. A builtin bound to an object (``file.write``) is
        not: remembering it would keep the object alive.
        """
        if not callable(fn) or is_async_function(fn):
            check_callable("fn", fn)
        kind = type(fn)
        if kind is FunctionType:
            if fn.__closure__ is None:  # type: ignore[attr-defined]
                self.checked_fn = fn
        elif kind is BuiltinFunctionType:
            owner = fn.__self__  # type: ignore[attr-defined]
            if owner is None or type(owner) is ModuleType:
                self.checked_fn = fn

    # -- the edge check ------------------------------------------------------------

    def shed_at_edge(self) -> bool:
        """Count and refuse a request that a call arriving now could not be."""
        if self.gate.can_queue():
            return False
        self.counts.shed += 1
        observed = self.observed
        if observed is not None:
            observed.refused_at_edge(self.name)
        return True

    def would_admit_now(self) -> bool:
        """Whether a call made now would be handed over without waiting."""
        if not self.gate.would_admit_now():
            return False
        rate = self.rate
        return rate is None or rate.would_start_now()

    # -- the map's port ----------------------------------------------------------------

    def bind(self) -> asyncio.AbstractEventLoop:
        """Bind the executor to the running loop; return it."""
        loop = get_running_loop()
        if loop is not self.loop:
            self.path.bind()
        return loop

    def bound(self) -> int:
        """The bound now: a map's window."""
        return self.gate.bound

    @property
    def rate_limited(self) -> bool:
        """Whether calls wait for turns (``max_per_second``)."""
        return self.rate is not None

    def _reserve_with_turn(self) -> bool:
        """Take a slot and a turn if both are free at once; ``False`` once closed."""
        gate = self.gate
        rate = self.rate
        assert rate is not None
        if not gate.would_admit_now() or not rate.try_start():
            return False
        return gate.try_take()

    def release(self) -> None:
        """Give back a slot reserved and not used."""
        self.gate.release()

    async def start_later(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
    ) -> asyncio.Future[T]:
        """``submit``: wait for a slot and a turn, then hand over."""
        fut = self.submit_now(fn, args, kwargs, timeout)
        if fut is not None:
            return fut
        return await self.admit_and_start(fn, args, kwargs, timeout)

    async def start_on_turn(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[T]:
        """Holding a slot from :meth:`reserve_slot_now`: wait for the turn, start."""
        await self.take_turn()
        return self.start(fn, args, kwargs)


class TimedPort:
    """A lane as a map's port, each item's call with a deadline of its own.

    See :class:`aiobound._map.MapPort`. The deadline of an item starts when
    the map hands the item on: to the pool at once, or to wait for its slot.
    """

    __slots__ = (
        "can_reserve_now",
        "can_reserve_slot_now",
        "lane",
        "reserve_now",
        "reserve_slot_now",
        "timeout",
    )

    def __init__(self, lane: Lane, timeout: float) -> None:
        self.lane = lane
        self.timeout = timeout
        self.can_reserve_now = lane.can_reserve_now
        self.reserve_now = lane.reserve_now
        self.can_reserve_slot_now = lane.can_reserve_slot_now
        self.reserve_slot_now = lane.reserve_slot_now

    @property
    def rate_limited(self) -> bool:
        """Whether calls wait for turns (``max_per_second``)."""
        return self.lane.rate is not None

    def bind(self) -> asyncio.AbstractEventLoop:
        """Bind the executor to the running loop; return it."""
        return self.lane.bind()

    def bound(self) -> int:
        """The bound now: a map's window."""
        return self.lane.gate.bound

    def release(self) -> None:
        """Give back a slot reserved and not used."""
        self.lane.gate.release()

    def start(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_settled: Callable[[asyncio.Future[Any]], object] | None = None,
    ) -> asyncio.Future[T]:
        """Hand the item's call over on a reserved slot, with its deadline."""
        return self.lane.start(
            fn, args, kwargs, on_settled, _UNSEEN, Deadline(self.timeout)
        )

    async def start_later(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[T]:
        """Wait for a slot and a turn within the deadline, then hand over."""
        return await self.lane.start_later(fn, args, kwargs, self.timeout)

    async def start_on_turn(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[T]:
        """Holding a reserved slot: wait for the turn, then hand over."""
        deadline = Deadline(self.timeout)
        await self.lane.take_turn(deadline)
        return self.lane.start(fn, args, kwargs, None, _UNSEEN, deadline)
