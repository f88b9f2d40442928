"""BoundedExecutor: the synchronous twin of BoundedLoopExecutor.

The front door for threads: surface and wiring only. A
:class:`~aiobound._shared.ThreadView` over a shared or private
:class:`~aiobound._shared.SharedBound` counts the slots, the
:class:`~aiobound._submit.Submitter` hands calls over (and replaces a broken
pool it owns), :mod:`aiobound._sync_map` runs ``map``,
:mod:`aiobound._sync_deadlines` keeps the deadlines of calls handed over
(``call_timeout=``, :meth:`BoundedExecutor.with_timeout`) and
:mod:`aiobound._stats` builds ``stats()``, as for the async executor.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._checks import (
    check_callable,
    check_chunksize,
    check_int,
    check_optional_int,
    is_async_function,
)
from ._deadlines import Deadline, run_within
from ._errors import DeadlineExceeded, closed_while_waiting
from ._process import owned_process_pool
from ._shared import SharedBound, ThreadView, check_bound
from ._stats import CANCELLED, COMPLETED, FAILED, CallCounts, executor_stats
from ._submit import Submitter, own_or_wrap
from ._sync_deadlines import DeadlineWatcher
from ._sync_map import Star, map_results

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from multiprocessing.context import BaseContext

    from typing_extensions import Self

    from ._process import OwnedProcessPool
    from ._stats import ExecutorStats

__all__ = ("BoundedExecutor", "TimeLimitedExecutor")

P = ParamSpec("P")
T = TypeVar("T")


class BoundedExecutor(concurrent.futures.Executor):
    """A :class:`concurrent.futures.Executor` with at most ``bound`` calls in it.

    ``Executor.submit`` never blocks: every call goes onto the pool's
    unbounded queue, and memory grows with every call not yet run. Here
    :meth:`submit` first blocks the calling thread (FIFO) until one of
    ``bound`` slots is free, then hands the call to the underlying executor;
    the slot is freed when that call has really ended (returned, raised, or
    was cancelled before it started). :meth:`map` is lazy and bounded. The
    API is the standard ``Executor``'s, so it drops into code written
    against one::

        from aiobound import BoundedExecutor

        with BoundedExecutor(max_workers=8, max_pending=100) as executor:
            future = executor.submit(pow, 2, 10)  # blocks while 16 are in
            print(future.result())  # 1024
            print(sum(executor.map(abs, range(-1000, 0))))  # lazy, bounded

    Args:
        max_workers: Size of the thread pool this executor creates and owns
            (default: ``ThreadPoolExecutor``'s own, ``min(32, cpu_count + 4)``).
            Not allowed with ``executor``.
        bound: Most calls submitted and not yet finished at once: an int, or
            a :class:`SharedBound` shared with other executors (threads and
            event loops). Default: twice the worker count. Required with
            ``executor`` unless it is a ``ThreadPoolExecutor`` or
            ``ProcessPoolExecutor``, whose worker count is read.
        max_pending: Most threads allowed to block in :meth:`submit` (or a
            ``map``'s pull) waiting for a slot; one more is refused at once
            with :class:`OverloadedError`. ``None`` (default): no limit; ``0``:
            never wait.
        executor: Any :class:`concurrent.futures.Executor` to wrap. It is
            never shut down by this object.
        max_wait: Seconds a thread may block waiting for a slot; then it is
            refused with :class:`OverloadedError`. ``None`` (default): no
            limit. At most ``threading.TIMEOUT_MAX``.
        call_timeout: A time limit for every call: ``submit`` and each item
            of ``map``, over the wait for a slot and the run, as
            :meth:`with_timeout` gives one to the calls of a view (which
            overrides it). ``None`` (default): none. See :meth:`with_timeout`
            for what happens at the deadline.

    Raises:
        TypeError: an argument has the wrong type, ``executor`` is given with
            ``max_workers``, or ``bound`` is missing for an executor whose
            size is unknown.
        ValueError: an argument is out of range.

    Every method may be called from any thread.
    """

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        bound: int | SharedBound | None = None,
        max_pending: int | None = None,
        executor: concurrent.futures.Executor | None = None,
        max_wait: float | None = None,
        call_timeout: float | None = None,
    ) -> None:
        checked = check_bound(bound, policies=False)
        pending = check_optional_int("max_pending", max_pending, 0)
        wait = check_timeout("max_wait", max_wait)
        limit = check_timeout("call_timeout", call_timeout)
        executor, owned, workers = own_or_wrap(
            max_workers, executor, bound_given=checked is not None
        )
        if checked is None:
            assert workers is not None
            checked = 2 * workers
        submitter = Submitter(executor, copy_context=False)
        self._setup(submitter, owned, None, checked, pending, wait, limit)

    @classmethod
    def process(
        cls,
        *,
        max_workers: int | None = None,
        bound: int | SharedBound | None = None,
        max_pending: int | None = None,
        max_wait: float | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[object, ...] = (),
        call_timeout: float | None = None,
        kill_on_timeout: bool = False,
    ) -> Self:
        """Make an executor that owns a new :class:`ProcessPoolExecutor`.

        The pool is shut down by :meth:`shutdown`, and replaced when it
        breaks (a worker process died): the calls it had fail with
        ``BrokenProcessPool``, and the next submission starts a new pool
        (counted in ``stats().pool_restarts``).

        With ``kill_on_timeout=True`` the pool is pebble's ``ProcessPool``
        (the ``pebble`` extra), as for
        :meth:`BoundedLoopExecutor.process`: a call still running at its
        deadline is stopped (its worker terminated and replaced, its slot
        freed; no other call fails), and so is any running call whose
        future is cancelled (``shutdown(cancel_futures=True)`` included); a
        worker that dies fails only its own call; the default bound is
        ``max_workers``.

        Args:
            max_workers: Worker processes (default: ``os.cpu_count()``).
            bound: As in the constructor; default twice ``max_workers``.
            max_pending: As in the constructor.
            max_wait: As in the constructor.
            mp_context: How workers start. Default: ``forkserver`` where it
                exists, else ``spawn``. ``fork`` is refused.
            initializer: Called with ``*initargs`` in each worker at start.
            initargs: Arguments for ``initializer`` (only with it).
            call_timeout: As in the constructor; :func:`~aiobound.remaining`
                reads the deadline in the worker as a :func:`time.time`
                instant.
            kill_on_timeout: Stop a call still running at its deadline (see
                above). Needs pebble (``ImportError`` without it).

        Functions and arguments are pickled: functions must be defined at the
        top level of an importable module.

        Raises:
            TypeError: an argument has the wrong type, or ``initargs`` is
                given without ``initializer``.
            ValueError: an argument is out of range, or ``mp_context`` forks.
            ImportError: ``kill_on_timeout=True`` without pebble installed.
        """
        checked = check_bound(bound, policies=False)
        pending = check_optional_int("max_pending", max_pending, 0)
        wait = check_timeout("max_wait", max_wait)
        limit = check_timeout("call_timeout", call_timeout)
        pool = owned_process_pool(
            max_workers, mp_context, initializer, initargs, kill_on_timeout
        )
        self = cls.__new__(cls)
        submitter = Submitter(pool.executor, copy_context=False, owned_pool=pool)
        if checked is None:
            checked = pool.workers if pool.kills else 2 * pool.workers
        self._setup(submitter, True, pool, checked, pending, wait, limit)
        return self

    def _setup(
        self,
        submitter: Submitter,
        owned: bool,
        pool: OwnedProcessPool | None,
        bound: int | SharedBound,
        max_pending: int | None,
        max_wait: float | None,
        call_timeout: float | None,
    ) -> None:
        if isinstance(bound, SharedBound):
            self._shared_bound: SharedBound | None = bound
            shared = bound
        else:
            self._shared_bound = None
            shared = SharedBound(bound)
        self._gate = ThreadView(shared, max_pending, max_wait)
        self._submitter = submitter
        self._owns_executor = owned
        self._pool = pool
        # Under the gate's lock: how the calls ended, and the slots given
        # back without a submission (granted just as the executor closed).
        self._counts = CallCounts()
        self._unused = 0
        # Underlying futures of calls not yet ended, with their hand-off time.
        self._calls: dict[concurrent.futures.Future[Any], float] = {}
        self._call_timeout = call_timeout
        # Keeps the deadlines of calls handed over; made by the first one.
        self._watcher: DeadlineWatcher | None = None

    # -- introspection -------------------------------------------------------

    @property
    def bound(self) -> int:
        """Most calls submitted and unfinished (over a shared bound, in all)."""
        return self._gate.bound

    @property
    def shared_bound(self) -> SharedBound | None:
        """The :class:`SharedBound` passed as ``bound=``, or ``None``."""
        return self._shared_bound

    @property
    def max_pending(self) -> int | None:
        """Most threads allowed to wait for a slot (``None``: no limit)."""
        return self._gate.max_pending

    @property
    def max_wait(self) -> float | None:
        """Seconds a thread may wait for a slot (``None``: no limit)."""
        return self._gate.max_wait

    @property
    def call_timeout(self) -> float | None:
        """Every call's time limit, wait included (``None``: no limit)."""
        return self._call_timeout

    @property
    def executor(self) -> concurrent.futures.Executor:
        """The underlying executor (for a replaced process pool, the current one)."""
        return self._submitter.executor

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` has been called."""
        return self._gate.closed

    def stats(self) -> ExecutorStats:
        """Return a consistent snapshot of this executor's counters.

        The same :class:`ExecutorStats` as :meth:`BoundedLoopExecutor.stats`.
        Over a :class:`SharedBound`, ``bound`` is the shared bound and the
        other figures are this executor's own; :meth:`SharedBound.stats`
        has the totals. ``run_time`` is measured from each call's hand-off
        until its future is done.
        """
        gate = self._gate
        calls = list(self._calls)
        queued = sum(1 for cfut in calls if not cfut.running() and not cfut.done())
        with gate.lock:
            counts = self._counts
            counts.submitted = gate.waits.admitted - self._unused
            return executor_stats(
                gate,
                counts,
                pool_restarts=0 if self._pool is None else self._pool.restarts,
                queued=queued,
            )

    def __repr__(self) -> str:
        gate = self._gate
        state = "closed" if gate.closed else "open"
        return (
            f"<{type(self).__name__} bound={gate.bound} in_flight={gate.in_use} "
            f"waiting={gate.waiting} {state}>"
        )

    # -- submission ----------------------------------------------------------

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Block until a slot is free, then submit ``fn(*args, **kwargs)``.

        Returns the underlying executor's future, unchanged (with
        ``call_timeout``, a future that follows it and raises
        :class:`~aiobound.DeadlineExceeded` at the deadline: see
        :meth:`with_timeout`). Its slot is freed when the call has really
        ended: returned, raised, or cancelled before it started
        (``future.cancel()`` works as usual).

        Raises:
            TypeError: ``fn`` is not callable, or is an async function.
            OverloadedError: ``max_pending`` threads already wait, or this
                one waited ``max_wait`` seconds.
            ClosedError: :meth:`shutdown` was called before or during the
                wait (a ``RuntimeError``, as the standard pools raise).
            DeadlineExceeded: with ``call_timeout``, the deadline passed
                while the thread waited for a slot (nothing was submitted).
            Exception: whatever the underlying ``submit`` raises; the slot is
                freed first.

        Cancellation: a blocked thread cannot be cancelled, only refused
        (``max_wait``, ``shutdown()``) or interrupted. Waiting threads are
        served in FIFO order, with the waiters of every executor sharing the
        bound. A ``KeyboardInterrupt`` (or another exception from a signal
        handler) raised while blocked propagates with no slot held and
        nothing submitted; a slot handed over at that same moment is passed on to
        the next waiter. ``shutdown()`` from another thread wakes it with
        :class:`ClosedError`.
        """
        fn_object: object = fn
        if not callable(fn_object) or is_async_function(fn_object):
            check_callable("fn", fn_object)
        if self._call_timeout is not None:
            return self._submit_within(fn, args, kwargs, self._call_timeout)
        if not self._gate.try_acquire():
            self._gate.acquire_blocking()
        return self._start(fn, args, kwargs)

    def with_timeout(self, seconds: float | None) -> TimeLimitedExecutor:
        """A view whose calls each have a time limit of *seconds*.

        Its ``submit`` and ``map`` are this executor's, with a
        deadline *seconds* after each call is made (for ``map``, after each
        item is taken up), over its wait for a slot and its run; ``None``:
        no limit, whatever ``call_timeout`` says. When the deadline passes:

        * a thread still blocked for a slot leaves the queue and gets
          :class:`~aiobound.DeadlineExceeded` (``stage`` ``"waiting"``);
          nothing was submitted;
        * a call handed over: its future (not the pool's, one that follows
          it) raises ``DeadlineExceeded`` at the deadline. A call queued in
          the pool is cancelled and never runs (``"queued"``; its slot is
          freed); a running one goes on in its worker, holding its slot
          until it ends (``"running"``, counted in ``stats().abandoned``),
          unless the pool stops it (``process(kill_on_timeout=True)``).

        Inside the call, :func:`aiobound.remaining` gives the seconds left.
        The deadlines of calls handed over are kept by one thread per
        executor, started by its first such call and stopped by
        :meth:`shutdown`; an executor whose calls have no limit starts none.

        Raises:
            TypeError, ValueError: *seconds* is not a number > 0 (at most
                ``threading.TIMEOUT_MAX``) or ``None``.
        """
        return TimeLimitedExecutor(self, check_timeout("seconds", seconds))

    def _submit_within(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> concurrent.futures.Future[T]:
        """``submit`` with a deadline *timeout* seconds from now."""
        deadline = Deadline(timeout)
        if not self._gate.try_acquire():
            self._acquire_within(deadline, None)
        return self._start_within(fn, args, kwargs, deadline)

    def _acquire_within(self, deadline: Deadline, timeout: float | None) -> bool:
        """Block for a slot until *deadline* (or *timeout*: ``False``)."""
        gate = self._gate
        try:
            return gate.acquire_blocking(timeout, deadline)
        except DeadlineExceeded:
            with gate.lock:
                self._counts.deadline_waiting += 1
            raise

    def _start_within(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deadline: Deadline,
    ) -> concurrent.futures.Future[T]:
        """Hand the call over with its deadline, on a slot the caller holds.

        Returns the caller's :class:`~aiobound._sync_deadlines.TimedFuture`.
        A deadline that passed between the grant and now is refused here:
        the call is not handed over.
        """
        gate = self._gate
        if deadline.passed():
            with gate.lock:
                self._unused += 1
                self._counts.deadline_waiting += 1
                gate.release_locked()
            raise deadline.exceeded("waiting")
        same_clock = self._submitter.same_clock
        cfut = self._start(
            run_within, (*deadline.for_worker(same_clock), fn, *args), kwargs
        )
        watcher = self._watcher
        if watcher is None:
            with gate.lock:
                watcher = self._watcher
                if watcher is None:
                    watcher = self._watcher = DeadlineWatcher(self._missed)
        return watcher.watch(cfut, deadline)

    def _missed(self, stage: str, abandoned: bool) -> None:
        """In the watcher's thread: count a call whose deadline passed."""
        with self._gate.lock:
            counts = self._counts
            if stage == "queued":
                counts.deadline_queued += 1
            else:
                counts.deadline_running += 1
                if abandoned:
                    counts.abandoned += 1

    def _start(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[T]:
        """Hand the call over; the caller holds a slot, given back on any error."""
        gate = self._gate
        if gate.closed:  # closed between the grant and now
            with gate.lock:
                self._unused += 1
                gate.release_locked()
            raise closed_while_waiting()
        try:
            cfut = self._submitter.submit(fn, args, kwargs)
        except BaseException:
            with gate.lock:
                self._counts.failed += 1
                gate.release_locked()
            raise
        self._calls[cfut] = time.monotonic()
        cfut.add_done_callback(self._call_ended)
        return cfut

    def _call_ended(self, cfut: concurrent.futures.Future[Any]) -> None:
        """In whichever thread *cfut* ended: count it, free its slot."""
        started = self._calls.pop(cfut, None)
        if cfut.cancelled():
            outcome = CANCELLED
        else:
            raw = COMPLETED if cfut.exception() is None else FAILED
            outcome = self._submitter.outcome(cfut, raw)
        ran = None if started is None else time.monotonic() - started
        gate = self._gate
        with gate.lock:
            self._counts.ended(outcome, ran)
            gate.release_locked()

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """Like ``Executor.map``, but lazy and bounded.

        Items are pulled from ``iterables`` (zipped, as in the builtin
        ``map``) only as slots free up: never more than ``bound`` items (or
        chunks) are pulled and not yet yielded, however slowly the results
        are consumed, so an endless iterable is fine. Nothing is pulled
        before the first ``next()``. Results come in input order; an
        exception raised by ``fn`` is raised where its result would come.
        Leaving the loop early (``break``, an error, closing the iterator)
        cancels the calls not yet started, the one whose result was awaited
        included. An item is pulled before its slot is taken: a source with
        nothing left takes none. Each result is freed as it is yielded.
        After :meth:`shutdown`, the results of the calls already handed over
        are still yielded, then :class:`ClosedError` is raised in place of
        the next item; a call that ``shutdown(cancel_futures=True)``
        cancelled raises :class:`ClosedError` where its result would come.

        Args:
            fn: Applied to each item (to each tuple of items, unpacked).
            iterables: One or more iterables.
            timeout: Seconds from this call: a result (or a slot) not ready
                by then raises :class:`TimeoutError`, as the standard ``map``
                does. ``None``: no limit.
            chunksize: Items per call to the underlying executor; ``bound``
                then counts chunks, and an exception from ``fn`` fails its
                whole chunk. ``None`` (default): automatic on a process pool
                (chunks timed by the workers, from 1 item doubling up to 256
                or about 5 ms of work), 1 elsewhere.
            buffersize: Most items (or chunks) pulled and not yet yielded,
                below ``bound`` if smaller, as Python 3.14's ``Executor.map``
                takes it. ``None`` (default): ``bound``.

        Raises:
            TypeError: ``fn`` is not callable, no iterable is given, one is
                not iterable, or ``chunksize``/``timeout`` has the wrong type.
            ValueError: ``chunksize`` or ``buffersize`` is below 1 (or
                ``chunksize`` above ``sys.maxsize``), or ``timeout`` is
                below 0 or above ``threading.TIMEOUT_MAX``.

        With ``call_timeout`` (or on a :meth:`with_timeout` view), each
        item's call has a deadline of its own, which starts when the item is
        taken up (handed over, or set to wait for its slot); an item that
        misses it raises :class:`~aiobound.DeadlineExceeded` in its place,
        which ends the iteration as an error from ``fn`` does.

        Cancellation: each ``next()`` may block for a slot, as :meth:`submit`
        does, or for a result. A ``KeyboardInterrupt`` there
        propagates with no slot lost; closing the iterator then cancels the
        calls not yet started.
        """
        return self._map(
            fn, iterables, timeout, chunksize, buffersize, self._call_timeout
        )

    def _map(
        self,
        fn: Callable[..., T],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int | None,
        buffersize: int | None,
        call_timeout: float | None,
    ) -> Iterator[T]:
        """``map``, each item's call within *call_timeout* (or none)."""
        check_callable("fn", fn)
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        timeout = check_timeout("timeout", timeout, zero=True)
        if buffersize is not None:
            check_int("buffersize", buffersize, 1)
        if chunksize is not None:
            chunksize = check_chunksize(chunksize)
        elif not self._submitter.to_processes:
            chunksize = 1
        deadline = None if timeout is None else time.monotonic() + timeout
        call: Callable[[Any], T]
        source: Iterator[Any]
        if len(iterables) == 1:
            call, source = fn, iter(iterables[0])
        else:
            call, source = Star(fn), zip(*iterables, strict=False)
        port = (
            _Port(self, buffersize)
            if call_timeout is None
            else _TimedPort(self, buffersize, call_timeout)
        )
        return map_results(port, call, source, deadline, chunksize)

    # -- closing -------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls, wake blocked submitters, then wait and shut down.

        New submissions raise :class:`ClosedError`, and so do threads blocked
        in :meth:`submit` (or in a ``map``'s pull), woken at once. With
        ``cancel_futures``, calls submitted and not yet started are
        cancelled (they never run; their slots are freed). With ``wait``,
        blocks until every call this executor submitted has ended. A pool
        this object created is then shut down (with the same ``wait`` and
        ``cancel_futures``); a wrapped executor is left running. Calling it
        again is harmless.

        Cancellation: a ``KeyboardInterrupt`` during the wait leaves the
        executor closed and its calls running; call ``shutdown()`` again to
        wait for them.
        """
        gate = self._gate
        gate.close()
        if cancel_futures:
            for cfut in list(self._calls):
                cfut.cancel()
        if wait:
            gate.wait_idle()
        watcher = self._watcher
        if watcher is not None:
            # Its thread stops once the calls it watches have ended.
            watcher.close(wait=wait)
        if self._owns_executor:
            self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)


def check_timeout(name: str, value: object, *, zero: bool = False) -> float | None:
    """Return *value* as a float if it is a number a thread can wait for.

    ``None`` passes. *zero* allows 0 (a ``timeout``); else it must be > 0.

    Raises:
        TypeError: not an int or float (a bool is refused).
        ValueError: below the minimum, or above ``threading.TIMEOUT_MAX``
            (no lock can wait that long).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number or None, got {type(value).__name__} {value!r}"
        )
    if not (value >= 0 if zero else value > 0):
        raise ValueError(f"{name} must be {'>= 0' if zero else '> 0'}, got {value!r}")
    if not value <= threading.TIMEOUT_MAX:
        raise ValueError(
            f"{name} must be at most threading.TIMEOUT_MAX "
            f"({threading.TIMEOUT_MAX:g} s), got {value!r}"
        )
    return float(value)


class _Port:
    """One ``map``'s way to its executor, with its own ``buffersize``."""

    __slots__ = ("_buffersize", "_executor", "_gate", "start", "try_reserve")

    def __init__(self, executor: BoundedExecutor, buffersize: int | None) -> None:
        self._executor = executor
        self._buffersize = buffersize
        self._gate = executor._gate
        self.try_reserve = self._gate.try_acquire
        self.start = executor._start

    @property
    def closed(self) -> bool:
        """Whether the executor was shut down."""
        return self._gate.closed

    def reserve(self, timeout: float | None) -> bool:
        """Take a slot, blocking up to *timeout*; ``False`` if it expired."""
        gate = self._gate
        return gate.try_acquire() or gate.acquire_blocking(timeout)

    def window(self) -> int:
        """The bound as it is now (it may be resized), capped by buffersize."""
        bound = self._executor.bound
        size = self._buffersize
        return bound if size is None or size > bound else size


class _TimedPort(_Port):
    """A ``map``'s port whose items' calls each have a deadline.

    An item's deadline starts when it is handed over, or, if it must wait
    for its slot, when it starts waiting (and the wait is within it).
    """

    __slots__ = ("_deadline", "_limit")

    def __init__(
        self, executor: BoundedExecutor, buffersize: int | None, limit: float
    ) -> None:
        super().__init__(executor, buffersize)
        self._limit = limit
        self._deadline: Deadline | None = None  # of the item waiting for a slot
        self.start = self._start

    def reserve(self, timeout: float | None) -> bool:
        """Take a slot within the item's deadline, or *timeout* (``False``)."""
        deadline = self._deadline = Deadline(self._limit)
        return self._gate.try_acquire() or self._executor._acquire_within(
            deadline, timeout
        )

    def _start(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[T]:
        deadline = self._deadline
        self._deadline = None
        if deadline is None:
            deadline = Deadline(self._limit)
        return self._executor._start_within(fn, args, kwargs, deadline)


class TimeLimitedExecutor:
    """Calls with a time limit each, from :meth:`BoundedExecutor.with_timeout`.

    Its :meth:`submit` and :meth:`map` are those of the executor it came
    from, with a deadline :attr:`timeout` seconds after each call is made
    (for ``map``, after each item is taken up), over its wait for a slot and
    its run: see :meth:`BoundedExecutor.with_timeout` for what happens at
    the deadline. Shutting down and the other settings are the executor's.
    Any thread.
    """

    __slots__ = ("_executor", "_timeout")

    def __init__(self, executor: BoundedExecutor, timeout: float | None) -> None:
        self._executor = executor
        self._timeout = timeout

    @property
    def timeout(self) -> float | None:
        """Seconds each call may take, wait included (``None``: no limit)."""
        return self._timeout

    @property
    def executor(self) -> BoundedExecutor:
        """The executor this view's calls go to."""
        return self._executor

    def __repr__(self) -> str:
        return f"<TimeLimitedExecutor timeout={self._timeout} of {self._executor!r}>"

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """:meth:`BoundedExecutor.submit`, with this view's deadline.

        Returns a future that follows the call and raises
        :class:`~aiobound.DeadlineExceeded` at the deadline if the call has
        not ended by then (without a limit: the pool's own future).

        Raises:
            DeadlineExceeded: the deadline passed while the thread waited for
                a slot (nothing was submitted).
            TypeError, OverloadedError, ClosedError, Exception: as the
                executor's ``submit``.
        """
        fn_object: object = fn
        if not callable(fn_object) or is_async_function(fn_object):
            check_callable("fn", fn_object)
        executor = self._executor
        if self._timeout is not None:
            return executor._submit_within(fn, args, kwargs, self._timeout)
        gate = executor._gate
        if not gate.try_acquire():
            gate.acquire_blocking()
        return executor._start(fn, args, kwargs)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """:meth:`BoundedExecutor.map`, each item's call with this view's deadline.

        An item that misses its deadline raises
        :class:`~aiobound.DeadlineExceeded` in its place, which ends the
        iteration as an error from ``fn`` does (the calls not started are
        cancelled). ``timeout`` is ``map``'s own, over the whole iteration.
        """
        return self._executor._map(
            fn, iterables, timeout, chunksize, buffersize, self._timeout
        )
