"""Backpressure against a Dask cluster (extra ``dask``).

``import aiobound`` never imports this module, so the core stays standard
library only. :func:`from_client` builds a :class:`BoundedLoopExecutor` that
submits to a ``distributed.Client``: at most ``bound`` tasks of its making
exist on the scheduler at once, so a producer streaming millions of items
never floods the scheduler (or the client) with futures.

``BoundedLoopExecutor(executor=client.get_executor(), bound=...)`` works
too, and bounds the tasks the scheduler is *running*; but Dask's own executor
lets go of a finished task only when Python garbage-collects its future, so
the scheduler may briefly hold a few finished tasks beyond the bound. The
executor made here releases each task explicitly, before its slot is freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from distributed import Client

from ._checks import check_optional_int
from ._executor import BoundedLoopExecutor

if TYPE_CHECKING:
    from collections.abc import Callable

    from distributed import Future as DaskFuture
    from tornado.ioloop import IOLoop

__all__ = ("from_client",)

P = ParamSpec("P")
T = TypeVar("T")


def from_client(
    client: Client,
    /,
    *,
    bound: int | None = None,
    max_pending: int | None = None,
    max_wait: float | None = None,
    max_per_second: float | None = None,
    burst: int | None = None,
) -> BoundedLoopExecutor:
    """Return a :class:`BoundedLoopExecutor` that runs calls on *client*'s cluster.

    Each call becomes one task (``pure=False``: equal calls are not merged).
    The task is released on the scheduler before its slot is freed, so the
    scheduler never holds more than ``bound`` tasks made by this executor.
    ``map(..., chunksize=N)`` sends N items per task, which pays off when
    calls are short (a task costs about a millisecond of scheduling).

    A worker that dies is Dask's business: its tasks are retried on other
    workers (up to ``distributed.scheduler.allowed-failures`` times), then
    fail with ``KilledWorker``, which reaches the caller. Cancelling a call
    releases its task: one not started never runs; one already running
    finishes on its worker (Dask cannot interrupt it) but is no longer held
    by the scheduler. :meth:`~BoundedLoopExecutor.aclose` waits for the
    calls in flight and leaves the client open.

    Args:
        client: A synchronous ``distributed.Client`` (made without
            ``asynchronous=True``); this executor does not close it.
        bound: Most tasks at once. Default: twice the cluster's threads
            at the time of the call (``client.nthreads()``).
        max_pending: As in :class:`BoundedLoopExecutor`.
        max_wait: As in :class:`BoundedLoopExecutor`.
        max_per_second: As in :class:`BoundedLoopExecutor`.
        burst: As in :class:`BoundedLoopExecutor`.

    Raises:
        TypeError: *client* is not a synchronous ``distributed.Client``, or
            another argument has the wrong type.
        ValueError: an argument is out of range, or the cluster has no
            workers and ``bound`` is not given.
    """
    if not isinstance(client, Client):
        raise TypeError(
            f"client must be a distributed.Client, got {type(client).__name__} "
            f"{client!r}"
        )
    if client.asynchronous:
        raise TypeError(
            "client must be a synchronous distributed.Client (not "
            "asynchronous=True); with an asynchronous one, use "
            "BoundedLoopExecutor(executor=client.get_executor(), bound=...)"
        )
    bound = check_optional_int("bound", bound, 1)
    if bound is None:
        threads = sum(client.nthreads().values())
        if not threads:
            raise ValueError(
                "bound is required when the cluster has no workers yet "
                "(the default is twice its threads)"
            )
        bound = 2 * threads
    return BoundedLoopExecutor(
        executor=_ClientExecutor(client),
        bound=bound,
        max_pending=max_pending,
        max_wait=max_wait,
        max_per_second=max_per_second,
        burst=burst,
    )


class _TaskFuture(concurrent.futures.Future[T]):
    """The future of one Dask task; marked running as soon as it exists.

    ``cancel()`` releases the task instead of cancelling this future, which
    then completes (with the error Dask reports) only once the release is on
    its way to the scheduler, so the slot is freed after the task is gone.
    """

    def __init__(self, task: DaskFuture[T], loop: IOLoop) -> None:
        super().__init__()
        self._task = task
        self._loop = loop
        self.set_running_or_notify_cancel()

    def cancel(self) -> bool:
        """Release the task on the cluster; return ``False`` (see class)."""
        if not self.done():
            # On the client's loop, like the release in _follow: Dask's
            # Future.release() checks and sets a flag with no lock, so two
            # threads could both pass it and drop the task's reference twice.
            self._loop.add_callback(self._task.release)
        return False


class _ClientExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures`` executor over a ``distributed.Client``.

    Unlike ``client.get_executor()``, it releases each task on the scheduler
    *before* completing the task's future: the release and the next
    submission go to the scheduler in that order.
    """

    def __init__(self, client: Client) -> None:
        loop = client.loop
        if loop is None:
            raise ValueError(f"client has no event loop (is it closed?): {client!r}")
        self._client = client
        self._loop = loop
        self._lock = threading.Lock()
        self._futures: set[_TaskFuture[Any]] = set()
        self._shutdown = False

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Submit ``fn(*args, **kwargs)`` as one task."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        # Keyword arguments travel inside the call, where they cannot clash
        # with Client.submit's own (key=, workers=, priority=, ...).
        call: Callable[..., T] = functools.partial(fn, **kwargs) if kwargs else fn
        task: DaskFuture[T] = self._client.submit(call, *args, pure=False)
        cfut = _TaskFuture(task, self._loop)
        with self._lock:
            self._futures.add(cfut)
        cfut.add_done_callback(self._forget)
        self._loop.add_callback(self._follow, task, cfut)
        return cfut

    def _forget(self, cfut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(cfut)  # type: ignore[arg-type,unused-ignore]

    async def _follow(self, task: DaskFuture[T], cfut: _TaskFuture[T]) -> None:
        """On the client's loop: wait for the task, release it, then report."""
        try:
            result = await self._client.gather(task, asynchronous=True)
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        try:
            # release() queues its message to the scheduler ahead of the
            # callback below; the slot, and the next submission, come after.
            task.release()
        finally:
            self._loop.add_callback(_complete, cfut, outcome)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; release those pending if asked; wait if asked."""
        with self._lock:
            self._shutdown = True
            pending = list(self._futures)
        if cancel_futures:
            for cfut in pending:
                cfut.cancel()
        if wait:
            concurrent.futures.wait(pending)


def _complete(cfut: concurrent.futures.Future[Any], outcome: tuple[bool, Any]) -> None:
    ok, value = outcome
    if ok:
        cfut.set_result(value)
    else:
        if isinstance(value, asyncio.CancelledError):
            # concurrent.futures would treat it as a cancellation marker.
            error = RuntimeError(f"the Dask task was cancelled: {value!r}")
            error.__cause__ = value
            value = error
        cfut.set_exception(value)
