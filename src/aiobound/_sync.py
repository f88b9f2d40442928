"""BoundedExecutor: the synchronous twin of BoundedLoopExecutor.

The front door for threads: surface and wiring only. A
:class:`~aiobound._shared.ThreadView` over a shared or private
:class:`~aiobound._shared.SharedBound` counts the slots, the
:class:`~aiobound._submit.Submitter` hands calls over (and replaces a broken
pool it owns), :mod:`aiobound._sync_map` runs ``map`` and
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
from ._errors import closed_while_waiting
from ._process import owned_process_pool
from ._shared import SharedBound, ThreadView, check_bound
from ._stats import CANCELLED, COMPLETED, FAILED, CallCounts, executor_stats
from ._submit import Submitter, own_or_wrap
from ._sync_map import Star, map_results

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from multiprocessing.context import BaseContext

    from typing_extensions import Self

    from ._process import OwnedProcessPool
    from ._stats import ExecutorStats

__all__ = ("BoundedExecutor",)

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
    ) -> None:
        checked = check_bound(bound, policies=False)
        pending = check_optional_int("max_pending", max_pending, 0)
        wait = check_timeout("max_wait", max_wait)
        executor, owned, workers = own_or_wrap(
            max_workers, executor, bound_given=checked is not None
        )
        if checked is None:
            assert workers is not None
            checked = 2 * workers
        submitter = Submitter(executor, copy_context=False)
        self._setup(submitter, owned, None, checked, pending, wait)

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
    ) -> Self:
        """Make an executor that owns a new :class:`ProcessPoolExecutor`.

        The pool is shut down by :meth:`shutdown`, and replaced when it
        breaks (a worker process died): the calls it had fail with
        ``BrokenProcessPool``, and the next submission starts a new pool
        (counted in ``stats().pool_restarts``).

        Args:
            max_workers: Worker processes (default: ``os.cpu_count()``).
            bound: As in the constructor; default twice ``max_workers``.
            max_pending: As in the constructor.
            max_wait: As in the constructor.
            mp_context: How workers start. Default: ``forkserver`` where it
                exists, else ``spawn``. ``fork`` is refused.
            initializer: Called with ``*initargs`` in each worker at start.
            initargs: Arguments for ``initializer`` (only with it).

        Functions and arguments are pickled: functions must be defined at the
        top level of an importable module.

        Raises:
            TypeError: an argument has the wrong type, or ``initargs`` is
                given without ``initializer``.
            ValueError: an argument is out of range, or ``mp_context`` forks.
        """
        checked = check_bound(bound, policies=False)
        pending = check_optional_int("max_pending", max_pending, 0)
        wait = check_timeout("max_wait", max_wait)
        pool = owned_process_pool(max_workers, mp_context, initializer, initargs)
        self = cls.__new__(cls)
        submitter = Submitter(pool.executor, copy_context=False, owned_pool=pool)
        bound_ = 2 * pool.workers if checked is None else checked
        self._setup(submitter, True, pool, bound_, pending, wait)
        return self

    def _setup(
        self,
        submitter: Submitter,
        owned: bool,
        pool: OwnedProcessPool | None,
        bound: int | SharedBound,
        max_pending: int | None,
        max_wait: float | None,
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

        Returns the underlying executor's future, unchanged. Its slot is
        freed when the call has really ended: returned, raised, or cancelled
        before it started (``future.cancel()`` works as usual).

        Raises:
            TypeError: ``fn`` is not callable, or is an async function.
            OverloadedError: ``max_pending`` threads already wait, or this
                one waited ``max_wait`` seconds.
            ClosedError: :meth:`shutdown` was called before or during the
                wait (a ``RuntimeError``, as the standard pools raise).
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
        if not self._gate.try_acquire():
            self._gate.acquire_blocking()
        return self._start(fn, args, kwargs)

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

        Cancellation: each ``next()`` may block for a slot, as :meth:`submit`
        does, or for a result. A ``KeyboardInterrupt`` there
        propagates with no slot lost; closing the iterator then cancels the
        calls not yet started.
        """
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
        return map_results(_Port(self, buffersize), call, source, deadline, chunksize)

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
