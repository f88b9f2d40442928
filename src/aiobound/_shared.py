"""The thread-safe gate: one bound shared by threads and by several event loops.

:class:`SharedBound` counts slots for every executor built over it: the
synchronous :class:`~aiobound.BoundedExecutor`, used from any thread, and
:class:`~aiobound.BoundedLoopExecutor` on any number of event loops in any
number of threads. Each executor sees it through a *view* of its own
(:class:`ThreadView` or :class:`LoopView`), which keeps that executor's
``max_pending``, ``max_wait``, close and counters, while the slots and the
single FIFO queue of waiters belong to the shared bound.

One lock guards everything. A waiter is a record in one deque, whatever it
waits on: a thread waits on a lock of its own, released to wake it; a
coroutine waits in its executor's :class:`~aiobound._waiting.WaitingRoom` on
its own loop (the room keeps its future, its cancellation and its
``max_wait`` timer, as for every gate), and is let in on that loop: directly
when the waker runs on the loop's thread, else through
``loop.call_soon_threadsafe``; a waiter whose loop is closed cannot be
reached, holds nothing, and the slot goes to the next. A released slot is
handed straight to the first live waiter, so the order is strictly FIFO
across threads and loops.

Who owns a slot is decided under the lock, by the waiter's ``state``: a
waiter that gives up (cancelled, interrupted, timed out) takes the lock and
looks. If it is still waiting, it leaves; if a slot was handed to it in the
meantime (the hand-off and the give-up raced across threads), it passes that
slot on before its error propagates. So no slot is ever lost or held twice.
A waiter reached after its ``max_wait`` has passed is refused instead of let
in late, as the waiting room does.

A :class:`LoopView` gives its slots back from whichever thread a call ends
in (:meth:`LoopView.release` is thread-safe), not through its loop: a loop
that closes with calls still running cannot keep their slots from the other
executors.

Plain integer bounds of :class:`BoundedLoopExecutor` never come here: they
keep the loop-only :class:`~aiobound._slots.SlotGate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._checks import check_int
from ._errors import (
    closed_on_arrival,
    closed_while_waiting,
    overloaded_after_wait,
    overloaded_at_once,
)
from ._readings import GateReadings, WaitStats
from ._waiting import COMPACT_SLACK, WaitingRoom

if TYPE_CHECKING:
    from ._deadlines import Deadline
    from ._errors import OverloadedError
    from ._histogram import LatencyHistogram
    from ._waiting import Waiter

__all__ = (
    "LoopView",
    "SharedBound",
    "SharedBoundStats",
    "ThreadView",
    "check_bound",
)

# Waiter states; only ever changed under the shared bound's lock.
_WAITING = 0
_GRANTED = 1  # handed a slot; it is the waiter's until it releases it
_GONE = 2  # gave up (cancelled, interrupted, timed out) or unreachable
_CLOSED = 3  # refused because its executor was closed
_EXPIRED = 4  # reached after its max_wait had passed: refused, not let in


@dataclass(frozen=True, slots=True)
class SharedBoundStats:
    """A point-in-time view of a :class:`SharedBound`, over all its executors.

    Attributes:
        bound: Most calls in flight at once, across all executors.
        in_flight: Slots taken right now, by all executors together.
        waiting: Callers (threads and coroutines) waiting for a slot.
        peak_in_flight: Highest ``in_flight`` seen since creation.
        executors: Executors built over this bound (closed ones included).
        admitted: Slots granted, at once or after a wait.
        rejected: Callers refused at once by their executor's
            ``max_pending``.
        timed_out: Callers refused after waiting their executor's
            ``max_wait``.
        queue_wait_avg: Mean seconds waited per granted slot (those granted
            at once count as 0).
        queue_wait_max: Longest wait of any caller granted a slot.
    """

    bound: int
    in_flight: int
    waiting: int
    peak_in_flight: int
    executors: int
    admitted: int
    rejected: int
    timed_out: int
    queue_wait_avg: float
    queue_wait_max: float


def check_bound(value: object, *, policies: bool) -> int | SharedBound | None:
    """Return *value* if it is ``None``, an int >= 1 or a :class:`SharedBound`.

    *policies* says whether the executor also takes a limit policy (checked
    before this), so that the message lists exactly what it takes.
    """
    if value is None or isinstance(value, SharedBound):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        if policies:
            raise TypeError(
                "bound must be an int >= 1, a SharedBound, a limit policy or "
                f"None, got {type(value).__name__} {value!r}"
            )
        why = ""
        if hasattr(value, "on_sample"):
            why = (
                ": a limit policy tunes the bound from the latency of each "
                "call as its end reaches an event loop, which the synchronous "
                "executor has not; give it to a BoundedLoopExecutor"
            )
        raise TypeError(
            "BoundedExecutor's bound must be an int >= 1, a SharedBound or "
            f"None, got {type(value).__name__} {value!r}{why}"
        )
    return check_int("bound", value, 1)


class _Record:
    """One caller waiting for a slot, in the shared FIFO queue."""

    __slots__ = ("deadline", "since", "state", "view")

    def __init__(
        self, view: _View, since: float, deadline: Deadline | None = None
    ) -> None:
        self.view = view
        self.since = since
        self.deadline = deadline
        self.state = _WAITING

    def wake(self, error: BaseException | None) -> bool:  # pragma: no cover
        """Under the lock: tell the waiter (a slot if *error* is None).

        Returns ``False`` if the waiter cannot be reached (its loop is
        closed), in which case it holds nothing.
        """
        raise NotImplementedError


class _ThreadRecord(_Record):
    """A thread blocked on ``lock``, which is released to wake it."""

    __slots__ = ("lock",)

    def __init__(
        self, view: _View, since: float, deadline: Deadline | None = None
    ) -> None:
        super().__init__(view, since, deadline)
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self, error: BaseException | None) -> bool:
        # The state says what happened; the thread reads it once awake.
        self.lock.release()
        return True


class _LoopRecord(_Record):
    """A coroutine waiting in a :class:`LoopView`'s room, as ``waiter``."""

    __slots__ = ("waiter",)

    view: LoopView
    waiter: Waiter

    def wake(self, error: BaseException | None) -> bool:
        view = self.view
        loop = view._loop
        assert loop is not None
        if threading.get_ident() == view._thread_id:
            if loop.is_closed():
                return False  # nobody waits there any more
            view._deliver(self.waiter, error)
            return True
        try:
            loop.call_soon_threadsafe(view._deliver, self.waiter, error)
        except RuntimeError:  # the loop is closed: nobody waits there any more
            return False
        return True


class SharedBound:
    """One bound that several executors share, across threads and event loops.

    Pass it as ``bound=`` to any number of :class:`BoundedExecutor` (used
    from any threads) and :class:`BoundedLoopExecutor` (each on its own event
    loop, in any thread). Across all of them at most ``bound`` calls are in
    flight, and callers waiting for a slot are served in one FIFO order,
    whichever thread or loop they wait on. A coroutine is woken on its own
    loop, without blocking any loop.

    Each executor keeps its own ``max_pending`` (counting its own waiters),
    ``max_wait``, close and :meth:`~BoundedLoopExecutor.stats`; the
    executor's ``stats().bound`` is the shared bound and its ``in_flight``
    the slots that executor holds. :meth:`stats` reports the totals.

    A slot comes back when its call ends in the worker, whatever became of
    the loop or thread that submitted it: a loop closed with calls still
    running does not keep their slots from the other executors.

    Executors with a plain ``int`` bound do not pay for this: they keep a
    gate of their own (loop-only for :class:`BoundedLoopExecutor`).

    Args:
        bound: Most calls in flight at once across all executors (>= 1).

    Raises:
        TypeError, ValueError: ``bound`` is not an int >= 1.
    """

    __slots__ = (
        "_admitted",
        "_bound",
        "_executors",
        "_in_use",
        "_lock",
        "_peak",
        "_rejected",
        "_timed_out",
        "_wait_max",
        "_wait_total",
        "_waiters",
        "_waiting",
    )

    def __init__(self, bound: int) -> None:
        self._bound = check_int("bound", bound, 1)
        self._lock = threading.Lock()
        self._in_use = 0
        self._waiters: deque[_Record] = deque()
        self._waiting = 0  # live waiters (state _WAITING) in the deque
        self._peak = 0
        self._executors = 0
        self._admitted = 0
        self._rejected = 0
        self._timed_out = 0
        self._wait_total = 0.0
        self._wait_max = 0.0

    @property
    def bound(self) -> int:
        """Most calls in flight at once, across all executors."""
        return self._bound

    @property
    def in_flight(self) -> int:
        """Slots taken right now, by all executors together."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot, in all executors together."""
        return self._waiting

    def stats(self) -> SharedBoundStats:
        """Return a consistent snapshot of the totals (takes the lock briefly)."""
        with self._lock:
            return SharedBoundStats(
                bound=self._bound,
                in_flight=self._in_use,
                waiting=self._waiting,
                peak_in_flight=self._peak,
                executors=self._executors,
                admitted=self._admitted,
                rejected=self._rejected,
                timed_out=self._timed_out,
                queue_wait_avg=(
                    self._wait_total / self._admitted if self._admitted else 0.0
                ),
                queue_wait_max=self._wait_max,
            )

    def resize(self, bound: int) -> None:
        """Change the shared bound, for every executor over it; any thread.

        Growing hands the new slots to waiters at once, in FIFO order (each
        coroutine woken on its own loop). Shrinking takes nothing away: calls
        in flight run to the end, and no one is admitted until fewer than the
        new bound are in flight. At no moment are more than the larger of the
        old and the new bound in flight.

        Raises:
            TypeError, ValueError: ``bound`` is not an int >= 1.
        """
        bound = check_int("bound", bound, 1)
        with self._lock:
            self._bound = bound
            while self._in_use < self._bound and self._grant_next():
                self._in_use += 1
                self._peak = max(self._peak, self._in_use)

    def __repr__(self) -> str:
        return (
            f"<SharedBound bound={self._bound} in_flight={self._in_use} "
            f"waiting={self._waiting}>"
        )

    # -- under the lock ------------------------------------------------------

    def _grant_next(self) -> bool:
        """Hand a slot to the first live waiter it can reach; whether one got it.

        The caller accounts for the slot in ``_in_use`` (a hand-over keeps it,
        a new slot adds one). A waiter whose ``max_wait`` has passed is
        refused on the way instead of let in late.
        """
        waiters = self._waiters
        while waiters:
            record = waiters.popleft()
            if record.state != _WAITING:
                continue
            view = record.view
            now = time.monotonic()
            waited = now - record.since
            deadline = record.deadline
            if deadline is not None and now >= deadline.due:
                self._leave(record, timed_out=False)
                record.state = _EXPIRED
                record.wake(deadline.exceeded("waiting"))
                continue
            max_wait = view._max_wait
            if max_wait is not None and waited >= max_wait:
                self._leave(record, timed_out=True)
                record.state = _EXPIRED
                record.wake(self._overloaded(view))
                continue
            self._waiting -= 1
            view._waiting -= 1
            record.state = _GRANTED
            if not record.wake(None):
                record.state = _GONE
                continue
            self._admitted += 1
            self._wait_total += waited
            self._wait_max = max(self._wait_max, waited)
            view._took(waited)
            return True
        return False

    def _release(self, view: _View) -> None:
        """*view* gives a slot back: hand it to the first live waiter, if any.

        While more slots are held than the bound allows (after a shrink), the
        slot is retired instead.
        """
        view._in_use -= 1
        if view._in_use == 0 and view.closed:
            view._now_idle()
        if self._in_use <= self._bound and self._grant_next():
            return
        self._in_use -= 1

    def _take_free(self, view: _View) -> bool:
        """Take a free slot for *view* if no one waits; return whether taken."""
        if view.closed:
            raise closed_on_arrival()
        if self._in_use < self._bound and not self._waiting:
            self._in_use += 1
            if self._in_use > self._peak:
                self._peak = self._in_use
            self._admitted += 1
            view._took(0.0)
            return True
        return False

    def _check_room(self, view: _View) -> None:
        """Refuse a new waiter of *view* if its ``max_pending`` is reached."""
        if view._max_pending is not None and view._waiting >= view._max_pending:
            view.rejected += 1
            self._rejected += 1
            raise overloaded_at_once(
                view._waiting, view._max_pending, self._bound, self._in_use
            )

    def _enqueue(self, record: _Record) -> None:
        self._waiters.append(record)
        self._waiting += 1
        record.view._waiting += 1

    def _leave(self, record: _Record, timed_out: bool) -> None:
        """Live *record* gives up: it leaves the queue holding nothing."""
        record.state = _GONE
        self._waiting -= 1
        record.view._waiting -= 1
        if timed_out:
            record.view.timed_out += 1
            self._timed_out += 1
        if len(self._waiters) > 2 * self._waiting + COMPACT_SLACK:
            self._waiters = deque(w for w in self._waiters if w.state == _WAITING)

    def _overloaded(self, view: _View) -> OverloadedError:
        return overloaded_after_wait(
            view._max_wait, self._bound, self._in_use, self._waiting
        )

    def _close(self, view: _View) -> list[_Record]:
        """Refuse *view*'s waiters (under the lock); return their records."""
        view.closed = True
        refused = []
        for record in self._waiters:
            if record.view is view and record.state == _WAITING:
                record.state = _CLOSED
                self._waiting -= 1
                view._waiting -= 1
                refused.append(record)
        if view._in_use == 0:
            view._now_idle()
        return refused


class _View(GateReadings):
    """One executor's share of a :class:`SharedBound`: its own limits and counts."""

    __slots__ = (
        "_in_use",
        "_max_pending",
        "_max_wait",
        "_shared",
        "_waiting",
        "closed",
        "peak_in_use",
        "rejected",
        "timed_out",
        "waits",
    )

    def __init__(
        self, shared: SharedBound, max_pending: int | None, max_wait: float | None
    ) -> None:
        self._shared = shared
        self._max_pending = max_pending
        self._max_wait = max_wait
        self._in_use = 0
        self._waiting = 0
        self.closed = False
        # Under the shared lock: the waits of the slots granted to this view.
        self.waits = WaitStats()
        self.peak_in_use = 0
        self.rejected = 0
        self.timed_out = 0
        with shared._lock:
            shared._executors += 1

    @property
    def shared(self) -> SharedBound:
        """The shared bound this view belongs to."""
        return self._shared

    @property
    def lock(self) -> threading.Lock:
        """The shared bound's lock, which guards this view's counts."""
        return self._shared._lock

    @property
    def bound(self) -> int:
        """The shared bound: most calls in flight across all its executors."""
        return self._shared._bound

    @property
    def waiting(self) -> int:
        """This executor's callers waiting for a slot."""
        return self._waiting

    def wait_histogram(self) -> LatencyHistogram:
        """Seconds waited per slot granted to this executor (at once: 0)."""
        with self._shared._lock:
            return self.waits.histogram()

    def would_admit_now(self) -> bool:
        """Whether a caller arriving now would get a slot at once (a hint)."""
        shared = self._shared
        return (
            not self.closed and shared._in_use < shared._bound and not shared._waiting
        )

    def can_queue(self) -> bool:
        """Whether a caller arriving now would not be refused at once (a hint)."""
        if self.closed:
            return False
        if self.would_admit_now():
            return True
        return self._max_pending is None or self._waiting < self._max_pending

    def try_take(self) -> bool:
        """Like :meth:`try_acquire`, but a closed executor answers ``False``."""
        if self.closed:
            return False
        return self.try_acquire()

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; return whether one was taken.

        Never overtakes a waiter of any executor sharing the bound.

        Raises:
            ClosedError: this executor is closed.
        """
        shared = self._shared
        with shared._lock:
            return shared._take_free(self)

    def release(self) -> None:
        """Give a slot back, from any thread; the first live waiter gets it."""
        shared = self._shared
        with shared._lock:
            shared._release(self)

    def resize(self, bound: int) -> None:
        """Resize the *shared* bound (see :meth:`SharedBound.resize`)."""
        self._shared.resize(bound)

    def _took(self, waited: float) -> None:
        """Under the lock: a slot was granted to this view after *waited* s."""
        self._in_use += 1
        if self._in_use > self.peak_in_use:
            self.peak_in_use = self._in_use
        if waited:
            self.waits.record(waited)
        else:
            self.waits.admitted += 1

    def _now_idle(self) -> None:
        """Under the lock: closed, and no slot held any more."""


class LoopView(_View):
    """A :class:`BoundedLoopExecutor`'s view: a gate on one event loop.

    Its coroutines wait in a :class:`~aiobound._waiting.WaitingRoom` of its
    own, in the shared FIFO order. Every method but :meth:`release` and
    :meth:`resize` is called from the executor's loop; :meth:`release` from
    any thread.
    """

    __slots__ = ("_idle", "_loop", "_room", "_thread_id")

    def __init__(
        self, shared: SharedBound, max_pending: int | None, max_wait: float | None
    ) -> None:
        super().__init__(shared, max_pending, max_wait)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._idle: asyncio.Event | None = None
        self._room = WaitingRoom(self, max_wait, None)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the view to *loop* (called on that loop's thread)."""
        self._loop = loop
        self._thread_id = threading.get_ident()
        self._room.bind(loop)

    async def acquire(self, deadline: Deadline | None = None) -> None:
        """Take a slot, waiting in the shared FIFO order if none is free.

        Does not yield when a slot is free and no one waits.

        Raises:
            ClosedError: the executor is closed, or was closed while waiting.
            OverloadedError: ``max_pending`` coroutines of this executor
                already wait, or this one waited ``max_wait`` seconds.
            DeadlineExceeded: *deadline* passed while it waited.

        Cancellation: while waiting, the caller holds no slot and stops
        counting as a waiter at the instant it is cancelled. If a slot was
        handed to it at the same moment, from this or another thread, it is
        passed on to the next waiter (on whichever loop or thread) before
        :class:`asyncio.CancelledError` propagates.
        """
        shared = self._shared
        room = self._room
        with shared._lock:
            if shared._take_free(self):
                return
            shared._check_room(self)
            waiter = room.join(None, deadline)
            record = _LoopRecord(self, waiter.since, deadline)
            record.waiter = waiter
            waiter.tag = record
            shared._enqueue(record)
        await room.wait(waiter)

    def _deliver(self, waiter: Waiter, error: BaseException | None) -> None:
        """On the loop: let *waiter* in, or refuse it with *error*."""
        if error is None:
            self._room.admit(waiter)
        else:
            self._room.reject(waiter, error)

    def close(self) -> None:
        """Refuse new acquisitions; wake this executor's waiters with ClosedError."""
        shared = self._shared
        with shared._lock:
            if self.closed:
                return
            refused = shared._close(self)
        room = self._room
        for record in refused:
            assert isinstance(record, _LoopRecord)
            room.reject(record.waiter, closed_while_waiting())

    def _now_idle(self) -> None:
        idle = self._idle
        if idle is None:
            return
        if threading.get_ident() == self._thread_id:
            idle.set()
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(idle.set)

    async def wait_idle(self) -> None:
        """Wait until this executor holds no slot (after :meth:`close`).

        Cancellation: only the wait is cancelled; the slots are unaffected.
        """
        with self._shared._lock:
            if self._in_use == 0:
                return
            if self._idle is None or self._idle.is_set():
                self._idle = asyncio.Event()
            idle = self._idle
        await idle.wait()

    # -- the room's keeper: every decision is taken under the lock -------------

    def refusal(self, waiter: Waiter, deadline: bool) -> BaseException | None:
        """Time is up: refuse, unless a slot was just handed over."""
        shared = self._shared
        record = waiter.tag
        assert isinstance(record, _LoopRecord)
        with shared._lock:
            if record.state != _WAITING:
                return None  # granted from another thread: on its way
            shared._leave(record, timed_out=not deadline)
            if deadline:
                assert waiter.deadline is not None
                return waiter.deadline.exceeded("waiting")
            return shared._overloaded(self)

    def waiter_left(self, waiter: Waiter) -> None:
        """Cancelled: leave the queue, or pass on a slot handed over meanwhile."""
        shared = self._shared
        record = waiter.tag
        assert isinstance(record, _LoopRecord)
        with shared._lock:
            if record.state == _WAITING:
                shared._leave(record, timed_out=False)
            elif record.state == _GRANTED:
                shared._release(self)  # handed over, not yet delivered
            # _GONE, _CLOSED or _EXPIRED: it holds no slot.

    def admitted_but_left(self, waiter: Waiter) -> None:
        """Let in, then cancelled before resuming: pass the slot on."""
        self.release()


class _TimedThreadRecord(_ThreadRecord):
    """A blocked thread with a deadline: keeps the error it is refused with.

    Refused by :meth:`SharedBound._grant_next` (its ``max_wait`` or its
    deadline passed before a slot reached it), it must tell which.
    """

    __slots__ = ("error",)

    def __init__(self, view: _View, since: float, deadline: Deadline) -> None:
        super().__init__(view, since, deadline)
        self.error: BaseException | None = None

    def wake(self, error: BaseException | None) -> bool:
        self.error = error
        return super().wake(error)


# Which limit ends a thread's wait for a slot, in ThreadView.acquire_blocking.
_NO_LIMIT = 0
_MAX_WAIT = 1  # refused: OverloadedError, counted as timed out
_TIMEOUT = 2  # the caller's own timeout: False
_DEADLINE = 3  # the call's deadline: DeadlineExceeded("waiting")


class ThreadView(_View):
    """A :class:`BoundedExecutor`'s view: blocking acquire, thread-safe release."""

    __slots__ = ("_idle",)

    def __init__(
        self, shared: SharedBound, max_pending: int | None, max_wait: float | None
    ) -> None:
        super().__init__(shared, max_pending, max_wait)
        self._idle = threading.Event()

    def acquire_blocking(
        self, timeout: float | None = None, deadline: Deadline | None = None
    ) -> bool:
        """Take a slot, blocking the calling thread in the shared FIFO order.

        Args:
            timeout: Give up after this many seconds and return ``False``
                (``None``: no limit). ``max_wait``, if not longer, refuses
                with :class:`OverloadedError` instead.
            deadline: The call's deadline: if it passes first, the thread
                leaves the queue and :class:`DeadlineExceeded` is raised
                (stage ``"waiting"``). Never before it has passed.

        Returns:
            ``True`` once a slot is held; ``False`` if ``timeout`` expired.

        Raises:
            ClosedError: the executor is closed, or was closed while waiting.
            OverloadedError: ``max_pending`` callers of this executor already
                wait, or this one waited ``max_wait`` seconds.
            DeadlineExceeded: *deadline* passed while it waited.

        Cancellation: a ``KeyboardInterrupt`` (or any exception raised by a
        signal handler) while blocked leaves the queue holding no slot; a
        slot handed over at the same moment is passed on first.
        """
        shared = self._shared
        with shared._lock:
            if shared._take_free(self):
                return True
            shared._check_room(self)
            record = (
                _ThreadRecord(self, time.monotonic())
                if deadline is None
                else _TimedThreadRecord(self, time.monotonic(), deadline)
            )
            shared._enqueue(record)
        # The first limit to expire ends the wait (max_wait wins a tie with
        # timeout; the deadline wins any tie).
        limit: float | None = None
        reason = _NO_LIMIT
        if self._max_wait is not None:
            limit, reason = self._max_wait, _MAX_WAIT
        if timeout is not None and (limit is None or timeout < limit):
            limit, reason = timeout, _TIMEOUT
        if deadline is not None:
            left = deadline.due - time.monotonic()
            if limit is None or left <= limit:
                limit, reason = max(0.0, left), _DEADLINE
        gave_up = False
        try:
            if limit is None:
                record.lock.acquire()
            else:
                while not record.lock.acquire(timeout=limit):
                    if reason != _DEADLINE:
                        break
                    assert deadline is not None
                    limit = deadline.due - time.monotonic()
                    if limit <= 0:  # never refused before the deadline
                        break
            with shared._lock:
                state = record.state
                if state == _WAITING:  # the time limit expired first
                    shared._leave(record, timed_out=reason == _MAX_WAIT)
                    gave_up = True
        except BaseException:
            # Interrupted (a signal handler raised): leave, or pass on a slot
            # handed over meanwhile. The state, read under the lock, decides.
            with shared._lock:
                if record.state == _WAITING:
                    shared._leave(record, timed_out=False)
                elif record.state == _GRANTED:
                    shared._release(self)
            raise
        if state == _GRANTED:
            return True
        if gave_up:
            if reason == _TIMEOUT:
                return False
            if reason == _DEADLINE:
                assert deadline is not None
                raise deadline.exceeded("waiting")
            raise shared._overloaded(self)
        if state == _EXPIRED:
            # Reached by a released slot after a limit passed: refused then.
            if isinstance(record, _TimedThreadRecord) and record.error is not None:
                raise record.error
            raise shared._overloaded(self)
        if state == _CLOSED:
            raise closed_while_waiting()
        raise AssertionError(f"unexpected waiter state {state}")  # pragma: no cover

    def release_locked(self) -> None:
        """:meth:`release`, for a caller that holds :attr:`lock`."""
        self._shared._release(self)

    def close(self) -> None:
        """Refuse new acquisitions; wake this executor's waiters with ClosedError.

        Any thread.
        """
        shared = self._shared
        with shared._lock:
            if not self.closed:
                for record in shared._close(self):
                    record.wake(closed_while_waiting())

    def _now_idle(self) -> None:
        self._idle.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until this executor, closed, holds no slot; ``False`` on timeout.

        Cancellation: a ``KeyboardInterrupt`` ends only the wait.
        """
        return self._idle.wait(timeout)
