"""BoundedExecutor: the synchronous twin of BoundedLoopExecutor.

The front door for threads: argument checks and the coordination of the
pieces below (a :class:`~aiobound._shared.ThreadView` over a shared or private
:class:`~aiobound._shared.SharedBound`, the owned process pool, the chunk
pieces of ``map``).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ._checks import (
    check_callable,
    check_int,
    check_optional_int,
    check_optional_positive,
    is_async_function,
)
from ._chunks import ChunkCall, ChunkSizer, chunked
from ._errors import closed_before_start, closed_while_waiting
from ._process import (
    OwnedProcessPool,
    explain_broken_pool,
    owned_process_pool,
)
from ._shared import FAILED, UNUSED, SharedBound, ThreadView, check_bound
from ._stats import ExecutorStats
from ._submit import own_or_wrap

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator
    from multiprocessing.context import BaseContext

    from typing_extensions import Self

__all__ = ("BoundedExecutor",)

P = ParamSpec("P")
T = TypeVar("T")


class _Star(Generic[T]):
    """``fn(*args)`` from one tuple: ``map`` over several iterables, pickled."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., T]) -> None:
        self.fn = fn

    def __call__(self, args: tuple[Any, ...]) -> T:
        return self.fn(*args)

    def __reduce__(self) -> tuple[type[_Star[T]], tuple[Callable[..., T]]]:
        return _Star, (self.fn,)


class _Ahead:
    """How many items (or chunks) a map may pull and not yet yield."""

    __slots__ = ("_buffersize", "_gate")

    def __init__(self, gate: ThreadView, buffersize: int | None) -> None:
        self._gate = gate
        self._buffersize = buffersize

    def limit(self) -> int:
        """The bound as it is now (it may be resized), capped by buffersize."""
        bound = self._gate.bound
        size = self._buffersize
        return bound if size is None or size > bound else size


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


class BoundedExecutor(concurrent.futures.Executor):
    """A :class:`concurrent.futures.Executor` with at most ``bound`` calls in it.

    ``Executor.submit`` never blocks: every call goes onto the pool's
    unbounded queue, and memory grows with every call not yet run. Here
    :meth:`submit` first blocks the calling thread (FIFO) until one of
    ``bound`` slots is free, then hands the call to the underlying executor;
    the slot is freed when that call has really ended (returned, raised, or
    was cancelled before it started). :meth:`map` is lazy and bounded. The
    API is the standard ``Executor``'s, so it drops into code written
    against one.

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
            refused with :class:`OverloadedError`. ``None`` (default): no limit.

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
        checked = check_bound(bound)
        pending = check_optional_int("max_pending", max_pending, 0)
        wait = check_optional_positive("max_wait", max_wait)
        executor, owned, workers = own_or_wrap(
            max_workers, executor, bound_given=checked is not None
        )
        if checked is None:
            assert isinstance(workers, int)
            checked = 2 * workers
        self._setup(executor, owned, None, checked, pending, wait)

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
        checked = check_bound(bound)
        pending = check_optional_int("max_pending", max_pending, 0)
        wait = check_optional_positive("max_wait", max_wait)
        pool = owned_process_pool(max_workers, mp_context, initializer, initargs)
        self = cls.__new__(cls)
        self._setup(
            pool.executor,
            True,
            pool,
            2 * pool.workers if checked is None else checked,
            pending,
            wait,
        )
        return self

    def _setup(
        self,
        executor: concurrent.futures.Executor,
        owned: bool,
        process_pool: OwnedProcessPool | None,
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
        self._ended = self._gate.ended
        self._executor = executor
        self._owns_executor = owned
        self._process_pool = process_pool
        self._to_processes = isinstance(executor, ProcessPoolExecutor)
        self._replace_lock = threading.Lock()
        # Underlying futures not yet done, for shutdown(cancel_futures=True).
        self._calls: set[concurrent.futures.Future[Any]] = set()

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
        return self._executor

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` has been called."""
        return self._gate.closed

    def stats(self) -> ExecutorStats:
        """Return a consistent snapshot of this executor's counters.

        The same :class:`ExecutorStats` as :meth:`BoundedLoopExecutor.stats`.
        Over a :class:`SharedBound`, ``bound`` is the shared bound and the
        other figures are this executor's own; :meth:`SharedBound.stats`
        has the totals. ``run_time`` is not measured here (always empty).
        """
        gate = self._gate
        with gate.shared._lock:
            return ExecutorStats(
                bound=gate.bound,
                in_flight=gate.in_use,
                waiting=gate.waiting,
                max_pending=gate.max_pending,
                max_wait=gate.max_wait,
                max_per_second=None,
                peak_in_flight=gate.peak_in_use,
                submitted=gate.submitted,
                completed=gate.completed,
                failed=gate.failed,
                cancelled=gate.cancelled,
                rejected=gate.rejected,
                timed_out=gate.timed_out,
                rate_limited=0,
                queue_wait_avg=gate.wait_average,
                queue_wait_max=gate.wait_maximum,
                closed=gate.closed,
                pool_restarts=0
                if self._process_pool is None
                else self._process_pool.restarts,
                queue_wait=gate.wait_histogram_locked(),
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
        gate = self._gate
        if not gate.try_acquire():
            gate.acquire_blocking()
        return self._start(fn, args, kwargs)

    def _start(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[T]:
        """Submit the call; the caller holds a slot, given back on any error."""
        gate = self._gate
        if gate._closed:  # closed between the grant and now
            gate.release(UNUSED)
            raise closed_while_waiting()
        try:
            try:
                cfut = self._executor.submit(fn, *args, **kwargs)
            except BrokenExecutor as exc:
                cfut = self._resubmit(exc, fn, args, kwargs)
        except BaseException:
            gate.release(FAILED)
            raise
        self._calls.add(cfut)
        cfut.add_done_callback(self._call_ended)
        return cfut

    def _call_ended(self, cfut: concurrent.futures.Future[Any]) -> None:
        self._calls.discard(cfut)
        self._ended(cfut)

    def _resubmit(
        self,
        exc: BrokenExecutor,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> concurrent.futures.Future[T]:
        """The pool is broken: replace it if it is ours, else explain."""
        pool = self._process_pool
        if pool is None:
            raise explain_broken_pool(exc, self._executor) from None
        with self._replace_lock:
            if pool.executor is self._executor:
                self._executor = pool.replace()
            return self._executor.submit(fn, *args, **kwargs)

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
        cancels the calls not yet started. After :meth:`shutdown`, the next
        pull raises :class:`ClosedError`, and so does a call that
        ``shutdown(cancel_futures=True)`` cancelled, where its result would
        come.

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
            ValueError: ``chunksize`` or ``buffersize`` is below 1, or
                ``timeout`` below 0.

        Cancellation: each ``next()`` may block for a slot, as :meth:`submit`
        does, or for a result. A ``KeyboardInterrupt`` there
        propagates with no slot lost; closing the iterator then cancels the
        calls not yet started.
        """
        check_callable("fn", fn)
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number or None, got {timeout!r}")
            if not timeout >= 0:
                raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        if buffersize is not None:
            check_int("buffersize", buffersize, 1)
        if chunksize is not None:
            check_int("chunksize", chunksize, 1)
        elif not self._to_processes:
            chunksize = 1
        deadline = None if timeout is None else time.monotonic() + timeout
        call: Callable[[Any], T]
        source: Iterator[Any]
        if len(iterables) == 1:
            call, source = fn, iter(iterables[0])
        else:
            call, source = _Star(fn), zip(*iterables, strict=False)
        ahead = _Ahead(self._gate, buffersize)
        if chunksize == 1:
            return self._map_items(call, source, deadline, ahead)
        return self._map_chunks(call, source, deadline, ahead, ChunkSizer(chunksize))

    def _reserve(
        self, window: deque[Any], deadline: float | None, ahead: _Ahead
    ) -> bool:
        """Take a slot for one more pull; block only with nothing in the window."""
        gate = self._gate
        if len(window) >= ahead.limit():
            return False
        if window:
            return gate.try_acquire()
        if gate.try_acquire() or gate.acquire_blocking(_remaining(deadline)):
            return True
        raise concurrent.futures.TimeoutError

    def _result(self, cfut: concurrent.futures.Future[T], deadline: float | None) -> T:
        """The result of a map's call; ClosedError if shutdown cancelled it."""
        try:
            return cfut.result(_remaining(deadline))
        except concurrent.futures.CancelledError:
            if self._gate.closed:
                raise closed_before_start() from None
            raise

    def _map_items(
        self,
        fn: Callable[[Any], T],
        source: Iterator[Any],
        deadline: float | None,
        ahead: _Ahead,
    ) -> Generator[T, None, None]:
        """One call per item of *source* (an item may be a chunk).

        Results come in order, never more than the window ahead of the
        consumer.
        """
        window: deque[concurrent.futures.Future[T]] = deque()
        error: Exception | None = None
        try:
            more = True
            while True:
                while more and self._reserve(window, deadline, ahead):
                    try:
                        item = next(source)
                    except StopIteration:
                        self._gate.release(UNUSED)
                        more = False
                        break
                    except Exception as exc:
                        # Raised once the results pulled before it are out.
                        self._gate.release(UNUSED)
                        more, error = False, exc
                        break
                    except BaseException:
                        self._gate.release(UNUSED)
                        raise
                    window.append(self._start(fn, (item,), {}))
                if not window:
                    if error is not None:
                        raise error
                    return
                yield self._result(window.popleft(), deadline)
        finally:
            for cfut in window:
                cfut.cancel()

    def _map_chunks(
        self,
        fn: Callable[[Any], T],
        source: Iterator[Any],
        deadline: float | None,
        ahead: _Ahead,
        sizer: ChunkSizer,
    ) -> Iterator[T]:
        run: ChunkCall[Any, T] = ChunkCall(fn)
        calls = self._map_items(run, chunked(source, sizer), deadline, ahead)
        try:
            for results, seconds in calls:
                sizer.measured(len(results), seconds)
                yield from results
        finally:
            calls.close()  # cancels the chunks not started

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
            for cfut in self._calls.copy():
                cfut.cancel()
        if wait:
            gate.wait_idle()
        if self._owns_executor:
            self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)
