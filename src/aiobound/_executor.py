"""BoundedLoopExecutor: awaitable, bounded submission to any executor."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._bridge import chain
from ._checks import check_callable, check_optional_int
from ._errors import ClosedError
from ._map import MapIterator
from ._slots import SlotGate
from ._stats import ExecutorStats

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Iterable
    from types import TracebackType

    from typing_extensions import Self

__all__ = ("BoundedLoopExecutor",)

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")

# The stdlib pools whose worker count is read, for the default bound, from
# their ``_max_workers`` attribute (present on 3.10 to 3.13; a test checks it).
_POOLS_WITH_KNOWN_SIZE = (
    concurrent.futures.ThreadPoolExecutor,
    concurrent.futures.ProcessPoolExecutor,
)


def _default_max_workers() -> int:
    """Return the worker count ``ThreadPoolExecutor`` picks by default."""
    import os

    return min(32, (os.cpu_count() or 1) + 4)


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
            count is read.
        max_pending: Most coroutines allowed to wait for a slot; one more is
            refused at once with :class:`OverloadedError`. ``None`` (the
            default) means no limit; ``0`` means never wait.
        executor: Any :class:`concurrent.futures.Executor` to wrap (a
            ``ProcessPoolExecutor``, a Dask ``client.get_executor()``, ...).
            It is never shut down by this object.
        copy_context: Run each call in a copy of the caller's
            :mod:`contextvars` context, as :func:`asyncio.to_thread` does.
            Default: ``True`` for thread pools (``ThreadPoolExecutor`` and
            subclasses), ``False`` otherwise, since a context cannot be
            pickled to another process.

    Raises:
        TypeError: an argument has the wrong type, ``executor`` is given
            with ``max_workers``, or ``bound`` is missing for an executor
            whose size is unknown.
        ValueError: an argument is out of range.

    The object may be created outside a running loop (at module level, say).
    It binds to the first event loop that uses it; using it from another loop
    raises :class:`RuntimeError`.
    """

    __slots__ = (
        "__weakref__",
        "_cancelled",
        "_completed",
        "_copy_context",
        "_executor",
        "_failed",
        "_gate",
        "_loop",
        "_loop_thread_id",
        "_owns_executor",
        "_shutdown",
        "_submitted",
    )

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        bound: int | None = None,
        max_pending: int | None = None,
        executor: concurrent.futures.Executor | None = None,
        copy_context: bool | None = None,
    ) -> None:
        bound = check_optional_int("bound", bound, 1)
        max_pending = check_optional_int("max_pending", max_pending, 0)
        if copy_context is not None and not isinstance(copy_context, bool):
            raise TypeError(
                f"copy_context must be a bool or None, got {copy_context!r}"
            )
        if executor is None:
            workers = check_optional_int("max_workers", max_workers, 1)
            if workers is None:
                workers = _default_max_workers()
            executor = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="aiobound"
            )
            self._owns_executor = True
        else:
            if max_workers is not None:
                raise TypeError(
                    "pass either executor= (to wrap a pool you own) or "
                    "max_workers= (to have one made for you), not both"
                )
            if not isinstance(executor, concurrent.futures.Executor):
                raise TypeError(
                    "executor must be a concurrent.futures.Executor, got "
                    f"{type(executor).__name__} {executor!r}"
                )
            self._owns_executor = False
            workers = None
            if isinstance(executor, _POOLS_WITH_KNOWN_SIZE):
                workers = getattr(executor, "_max_workers", None)
            if bound is None and not isinstance(workers, int):
                raise TypeError(
                    f"bound is required when wrapping {type(executor).__name__}: "
                    "its worker count cannot be read (a good bound is twice the "
                    "number of calls it can run at once)"
                )
        if bound is None:
            assert isinstance(workers, int)
            bound = 2 * workers
        if copy_context is None:
            copy_context = isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        self._executor = executor
        self._copy_context = copy_context
        self._gate = SlotGate(bound, max_pending)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id = 0
        self._shutdown: asyncio.Future[None] | None = None
        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._cancelled = 0

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
    def executor(self) -> concurrent.futures.Executor:
        """The underlying executor (owned or wrapped)."""
        return self._executor

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._gate.closed

    def stats(self) -> ExecutorStats:
        """Return a snapshot of the counters. O(1); cheap enough per request."""
        gate = self._gate
        return ExecutorStats(
            bound=gate.bound,
            in_flight=gate.in_use,
            waiting=gate.waiting,
            max_pending=gate.max_pending,
            peak_in_flight=gate.peak_in_use,
            submitted=self._submitted,
            completed=self._completed,
            failed=self._failed,
            cancelled=self._cancelled,
            rejected=gate.rejected,
            closed=gate.closed,
        )

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
            TypeError: ``fn`` is not callable.
            OverloadedError: ``max_pending`` coroutines already wait.
            ClosedError: the executor was closed before or during the wait.
            RuntimeError: the executor is bound to another event loop.
            Exception: whatever the underlying executor's ``submit`` raises
                (shut down, broken pool, ...); the slot is freed first.

        ``fn``'s own exceptions are not raised here: they come out of the
        returned future unchanged (a ``StopIteration``, which an asyncio
        future cannot hold, arrives as the ``__cause__`` of a RuntimeError).

        Cancellation: does not yield when a slot is free. While waiting,
        nothing is submitted and no slot is held. Cancelling the returned
        future cancels a call that has not started (it never runs and its
        slot is freed); a running call keeps its slot until it ends.
        """
        if asyncio.get_running_loop() is not self._loop:
            self._bind()
        fn_object: object = fn
        if not callable(fn_object):
            check_callable("fn", fn_object)
        gate = self._gate
        if not gate.try_acquire():
            await gate.acquire()
            if gate.closed:
                gate.release()
                raise ClosedError("the executor was closed while this call waited")
        return self._start(fn, args, kwargs)

    def _start(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[T]:
        """Hand the call to the executor; the caller already holds a slot.

        On the bound loop only. If the executor's ``submit`` raises, the slot
        is freed and the error propagates.
        """
        self._submitted += 1
        try:
            if self._copy_context:
                run_in_context: Callable[..., T] = contextvars.copy_context().run
                cfut = self._executor.submit(run_in_context, fn, *args, **kwargs)
            else:
                cfut = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._failed += 1
            self._gate.release()
            raise
        assert self._loop is not None
        return chain(cfut, self._loop, self._loop_thread_id, self._settle)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Submit ``fn(*args, **kwargs)`` and wait for its result.

        Raises what :meth:`submit` raises, then whatever ``fn`` raised,
        unchanged.

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
    ) -> MapIterator[T]:
        """Apply ``fn`` to each item, pulling items lazily; iterate the results.

        See :class:`MapIterator` for how far ahead it reads, the order of
        results, errors and clean-up.

        Raises:
            TypeError: ``fn`` is not callable, ``items`` is neither iterable
                nor async iterable, or ``ordered`` is not a bool.
        """
        check_callable("fn", fn)
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered must be a bool, got {ordered!r}")
        return MapIterator(self, fn, items, ordered=ordered)

    def _settle(
        self, afut: asyncio.Future[Any], cfut: concurrent.futures.Future[Any]
    ) -> None:
        """On the loop, after the underlying call ended: free the slot, report."""
        self._gate.release()
        if cfut.cancelled():
            self._cancelled += 1
            if not afut.done():
                afut.cancel()
            return
        exc = cfut.exception()
        if exc is None:
            self._completed += 1
            if not afut.done():
                afut.set_result(cfut.result())
            return
        self._failed += 1
        if afut.done():
            return
        if isinstance(exc, StopIteration):
            # asyncio futures refuse StopIteration (it would end a coroutine).
            wrapped = RuntimeError(f"the submitted call raised {exc!r}")
            wrapped.__cause__ = exc
            exc = wrapped
        afut.set_exception(exc)

    # -- loop binding --------------------------------------------------------

    def _bind(self) -> None:
        """Bind to the running loop on first use; refuse any other loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._loop_thread_id = threading.get_ident()
            self._gate.bind(loop)
        elif self._loop is not loop:
            raise RuntimeError(
                f"{self!r} is bound to a different event loop; create one "
                "BoundedLoopExecutor per event loop"
            )

    # -- closing -------------------------------------------------------------

    async def aclose(self) -> None:
        """Close: refuse new calls, wait for calls in flight, shut down if owned.

        New submissions raise :class:`ClosedError`, and so do coroutines
        waiting for a slot, which are woken at once. Calls already submitted
        are awaited without blocking the event loop. A pool this object
        created is then shut down (in a worker thread); a wrapped executor is
        left running. Calling it again is harmless and waits the same way.

        Cancellation: the executor stays closed; calls in flight go on. Call
        ``aclose()`` again to wait for them and for the shutdown.
        """
        if asyncio.get_running_loop() is not self._loop:
            self._bind()
        self._gate.close()
        await self._gate.wait_idle()
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
