"""The call path: from a caller's arrival to the end of its call, written once.

A :class:`Lane` carries the calls of one partition (a plain executor has one
lane): it admits a call (a slot of its gate, then a turn of the rate
limit), hands it over through the executor's
:class:`~aiobound._submit.Submitter`, hears its end from the
:class:`~aiobound._bridge.Bridge`, counts it, feeds the limit policy and
tells the observer. A lane is also what ``map`` talks to (its port), and
what the front doors (:class:`~aiobound.BoundedLoopExecutor`,
:class:`~aiobound.Partition`) wrap.

What the lanes of one executor share (the loop, the bridge, the submitter,
the rate limit, the policy, the observer, the calls in flight) is its
:class:`CallPath`.

Features not in use cost nothing but a test of ``None``: no rate limit, no
observer, no policy is chosen at construction (or, for the observer, when
it is added), never re-decided per call. Everything here runs on the
executor's event loop.
"""

from __future__ import annotations

import asyncio
import time
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from ._bridge import Bridge
from ._checks import check_callable, is_async_function
from ._errors import closed_while_waiting
from ._stats import CANCELLED, FAILED, CallCounts

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

    from ._limits import LimitPolicy
    from ._observe import Observed
    from ._rate import RateLimiter
    from ._readings import ExecutorGate, Gate
    from ._submit import Submitter

__all__ = ("CallPath", "Lane")

T = TypeVar("T")

# What submit() has checked before any function: no function is this object.
_NOTHING_CHECKED = object()
# The token of a call the observer has not heard of yet.
_UNSEEN = object()


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
    """

    __slots__ = (
        "bridge",
        "calls",
        "checked_fn",
        "gate",
        "lanes",
        "loop",
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
    ) -> None:
        self.gate = gate
        self.submitter = submitter
        self.rate = rate
        self.policy = policy
        self.releases_anywhere = releases_anywhere
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bridge: Bridge | None = None
        # Underlying futures of calls handed over and not yet ended, each
        # with its time.monotonic() at hand-off (for the run time, and so
        # that aclose(timeout=...) can cancel those not started).
        self.calls: dict[concurrent.futures.Future[Any], float] = {}
        # The last stateless function checked: its next call is not checked
        # again (a loop that submits one function pays once).
        self.checked_fn: object = _NOTHING_CHECKED
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
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
            gate = self.gate
            release = gate.release if self.releases_anywhere else None
            self.bridge = Bridge(loop, release)
            gate.bind(loop)
            if self.rate is not None:
                self.rate.bind(loop)
        elif self.loop is not loop:
            raise RuntimeError(
                "this executor is bound to a different event loop; create one "
                "BoundedLoopExecutor per event loop"
            )
        return loop

    def forget_checked_fn(self) -> None:
        """Check the next function again (and hold on to none meanwhile)."""
        self.checked_fn = _NOTHING_CHECKED

    def set_observer(self, observed: Observed) -> None:
        """Tell *observed* of every call of every lane from now on."""
        self.observed = observed
        for lane in self.lanes:
            lane.plain = False

    # -- the function --------------------------------------------------------------

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

    # -- the end of a call -----------------------------------------------------------

    def sample(
        self, cfut: concurrent.futures.Future[Any], outcome: int, started: float
    ) -> None:
        """Feed the limit policy the call that ended; resize to its answer.

        Runs before the call's slot is released, so that a lower limit
        retires the slot instead of handing it to a waiter.
        """
        policy = self.policy
        assert policy is not None
        now = time.monotonic()
        dropped = outcome == FAILED and isinstance(cfut.exception(), policy.drop_on)
        gate = self.gate
        limit = policy.on_sample(now, now - started, gate.in_use, dropped)
        if limit != gate.bound and not gate.closed:
            gate.resize(limit)

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

    __slots__ = (
        "can_reserve_now",
        "can_reserve_slot_now",
        "counts",
        "gate",
        "name",
        "path",
        "plain",
        "reserve_now",
        "reserve_slot_now",
    )

    def __init__(self, path: CallPath, gate: Gate, name: str | None) -> None:
        self.path = path
        self.gate = gate
        self.name = name  # the partition's, for observers; None without
        self.counts = CallCounts()
        # No rate limit and no observer: a free slot is taken in submit.
        self.plain = path.rate is None and path.observed is None
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

    async def submit(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[T]:
        """Wait for a slot (and a turn), hand the call over; see ``submit``."""
        path = self.path
        if asyncio.get_running_loop() is not path.loop:
            path.bind()
        if fn is not path.checked_fn:
            path.check_fn(fn)
        if self.plain and self.gate.try_acquire():
            return self.start(fn, args, kwargs)  # a slot free: no wait at all
        return await self.admit_and_start(fn, args, kwargs)

    async def admit_and_start(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[T]:
        """Take a slot and a turn, telling the observer; then hand over.

        An observer added while the caller waited hears of the call at its
        hand-over.
        """
        observed = self.path.observed
        if observed is None:
            await self.admit()
            return self.start(fn, args, kwargs)
        token = observed.arrived(self.name)
        gate = self.gate
        # Open, no free slot: acquire() refuses at once (max_pending)
        # exactly when the caller may not queue.
        at_once = not gate.would_admit_now() and not gate.can_queue()
        try:
            await self.admit()
        except BaseException as exc:
            observed.refused(token, exc, at_once)
            raise
        return self.start(fn, args, kwargs, None, token)

    async def admit(self) -> None:
        """Take a slot, then a turn under a rate limit.

        Raises:
            ClosedError, OverloadedError: as the gate's ``acquire`` (and a
                close while waiting for the turn).

        Cancellation: nothing is held once it propagates.
        """
        gate = self.gate
        if not gate.try_acquire():
            await gate.acquire()
        if self.path.rate is not None or gate.closed:
            await self.take_turn()

    async def take_turn(self) -> None:
        """Holding a slot: wait for the rate limit's turn; check the close.

        On any error or cancellation the slot is released.
        """
        gate = self.gate
        rate = self.path.rate
        try:
            # Not once closed: a slot handed over just as aclose() ran would
            # wait for a turn that the rate limiter's close no longer ends.
            if rate is not None and not gate.closed:
                await rate.wait_turn()
            if gate.closed:
                raise closed_while_waiting()
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
    ) -> asyncio.Future[T]:
        """Hand the call over; the caller holds a slot of this lane.

        ``on_settled``, if given, is called with the returned future, on the
        loop, right after it is settled (see :meth:`Bridge.chain`). If the
        hand-over fails (the observer's ``handing_over`` or the executor's
        ``submit`` raises), the slot is freed, the call counts as failed and
        the error propagates.
        """
        path = self.path
        self.counts.submitted += 1
        explainer = path.submitter.explainer
        explain = None if explainer is None else explainer(fn, args, kwargs)
        observed = path.observed
        try:
            if observed is not None:
                if token is _UNSEEN:
                    token = observed.arrived(self.name)
                fn, args, kwargs = observed.handing_over(token, fn, args, kwargs)
            cfut = path.submitter.submit(fn, args, kwargs)
        except BaseException as exc:
            self.counts.failed += 1
            self.gate.release()
            if observed is not None and token is not _UNSEEN:
                observed.failed(token, exc)
            raise
        path.calls[cfut] = time.monotonic()
        if observed is not None:
            observed.track(cfut, token)
        bridge = path.bridge
        assert bridge is not None
        return bridge.chain(cfut, self.ended, explain, on_settled)

    def ended(self, cfut: concurrent.futures.Future[Any], outcome: int) -> bool:
        """On the loop, once a call ended: free its slot, count it, tell.

        Returns whether the executor is closed (the bridge then tells a
        caller whose call was dropped before it started).
        """
        path = self.path
        started = path.calls.pop(cfut, None)
        outcome = path.submitter.outcome(cfut, outcome)
        if path.policy is not None and started is not None and outcome != CANCELLED:
            path.sample(cfut, outcome, started)
        if not path.releases_anywhere:
            self.gate.release()
        self.counts.ended(
            outcome, None if started is None else time.monotonic() - started
        )
        observed = path.observed
        if observed is not None:
            observed.ended(cfut, outcome, path.loop)
        return path.gate.closed

    # -- the edge check ------------------------------------------------------------

    def shed_at_edge(self) -> bool:
        """Count and refuse a request that a call arriving now could not be."""
        if self.gate.can_queue():
            return False
        self.counts.shed += 1
        observed = self.path.observed
        if observed is not None:
            observed.refused_at_edge(self.name)
        return True

    def would_admit_now(self) -> bool:
        """Whether a call made now would be handed over without waiting."""
        if not self.gate.would_admit_now():
            return False
        rate = self.path.rate
        return rate is None or rate.would_start_now()

    # -- the map's port ----------------------------------------------------------------

    def bind(self) -> asyncio.AbstractEventLoop:
        """Bind the executor to the running loop; return it."""
        path = self.path
        loop = asyncio.get_running_loop()
        if loop is not path.loop:
            path.bind()
        return loop

    def bound(self) -> int:
        """The bound now: a map's window."""
        return self.gate.bound

    @property
    def rate_limited(self) -> bool:
        """Whether calls wait for turns (``max_per_second``)."""
        return self.path.rate is not None

    def _reserve_with_turn(self) -> bool:
        """Take a slot and a turn if both are free at once; ``False`` once closed."""
        gate = self.gate
        rate = self.path.rate
        assert rate is not None
        if not gate.would_admit_now() or not rate.try_start():
            return False
        return gate.try_take()

    def release(self) -> None:
        """Give back a slot reserved and not used."""
        self.gate.release()

    async def start_later(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[T]:
        """Wait for a slot and a turn, then hand over (as ``submit``)."""
        if self.plain and self.gate.try_acquire():
            return self.start(fn, args, kwargs)
        return await self.admit_and_start(fn, args, kwargs)

    async def start_on_turn(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[T]:
        """Holding a slot from :meth:`reserve_slot_now`: wait for the turn, start."""
        await self.take_turn()
        return self.start(fn, args, kwargs)
