"""MapIterator: a lazy, bounded ``map`` over a sync or async iterable."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from typing_extensions import Self

    from ._executor import BoundedLoopExecutor

__all__ = ("MapIterator", "close_source", "open_source")

T = TypeVar("T")


def open_source(
    items: Iterable[Any] | AsyncIterable[Any],
) -> Iterator[Any] | AsyncIterator[Any]:
    """Return the iterator to pull items from: async if *items* is async.

    Raises:
        TypeError: *items* is neither iterable nor async iterable.
    """
    if isinstance(items, AsyncIterable):
        return aiter(items)
    if isinstance(items, Iterable):
        return iter(items)
    raise TypeError(
        "items must be an iterable or an async iterable, got "
        f"{type(items).__name__} {items!r}"
    )


async def close_source(source: Iterator[Any] | AsyncIterator[Any] | None) -> None:
    """Close *source* if it is a generator or an async generator."""
    if inspect.isasyncgen(source):
        await source.aclose()
    elif inspect.isgenerator(source):
        source.close()


class MapIterator(Generic[T]):
    """The async iterator returned by :meth:`BoundedLoopExecutor.map`.

    **Laziness.** Items are pulled from the source only inside ``__anext__``,
    and never more than ``bound`` of them are pulled and not yet handed to the
    consumer (results waiting to be received count). Each pulled item is
    submitted through the executor, so it also waits for a slot like any
    other caller (and may be refused with :class:`OverloadedError` when
    ``max_pending`` is reached). While results are outstanding, a new item is
    pulled only when a slot is free at once, so ready results are not held
    back behind other producers. A sync iterable is iterated on the event
    loop's thread: it should not block.

    **Order.** ``ordered=True`` yields results in input order;
    ``ordered=False`` in the order the calls finish.

    **Errors.** An exception raised by ``fn`` ends the iteration with that
    exception when its result would have been yielded. An exception raised by
    the source ends it after the results of the items pulled before it.
    An exception raised by the executor's ``submit`` for an item (closed,
    overloaded, broken pool) is raised in that item's place. Once an
    exception has been raised, or ``StopAsyncIteration`` reached, the iterator
    is finished and keeps raising ``StopAsyncIteration``.

    **Clean-up.** The iteration is finished, and calls that have not started
    are cancelled (they never run, their slots are freed at once), when:
    it is exhausted or raises; ``aclose()`` is called or an ``async with``
    block around it is left; ``__anext__`` is cancelled (cancellation ends
    the iteration); or the iterator is garbage-collected, e.g. after a bare
    ``break`` in CPython. Calls already running go on; their slots are freed
    when they end, and their results are dropped. ``aclose()`` also closes the
    source if it is a generator or an async generator (as
    :func:`contextlib.aclosing` would); other iterators are left as they are.
    ``aclose()`` is idempotent.
    """

    __slots__ = (
        "__weakref__",
        "_aiter",
        "_done",
        "_executor",
        "_exhausted",
        "_finished",
        "_fn",
        "_iter",
        "_loop",
        "_ordered",
        "_outstanding",
        "_pending",
        "_source_error",
        "_wakeup",
    )

    def __init__(
        self,
        executor: BoundedLoopExecutor,
        fn: Callable[[Any], T],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        ordered: bool,
    ) -> None:
        self._finished = True  # until fully built, for __del__'s sake
        source = open_source(items)
        self._iter: Iterator[Any] | None = None
        self._aiter: AsyncIterator[Any] | None = None
        if isinstance(source, AsyncIterator):
            self._aiter = source
        else:
            self._iter = source
        self._executor = executor
        self._fn = fn
        self._ordered = ordered
        # Ordered: futures in input order. Unordered: futures not done yet.
        self._pending: deque[asyncio.Future[T]] = deque()
        self._done: deque[asyncio.Future[T]] = deque()  # unordered: done, unread
        self._outstanding = 0  # items pulled and not yet handed to the consumer
        self._exhausted = False
        self._source_error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        """Return the next result.

        Cancellation: finishes the iteration (see the class docstring).
        """
        if self._finished:
            raise StopAsyncIteration
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if self._loop is not self._executor._loop:
                self._executor._bind()
        try:
            if (
                self._iter is None
                or self._executor._rate is not None
                or self._fill_from_sync_source()
            ):
                await self._fill()
            if self._ordered:
                if not self._pending:
                    self._end()
                fut = self._pending[0]
                try:
                    return await fut
                finally:
                    del self._pending[0]
                    self._outstanding -= 1
            while not self._done:
                if not self._pending:
                    self._end()
                self._wakeup = self._loop.create_future()
                await self._wakeup
            fut = self._done.popleft()
            self._outstanding -= 1
            return fut.result()
        except BaseException:
            self._finish()
            raise

    def _fill_from_sync_source(self) -> bool:
        """Fast path for a sync source: fill while slots are free, no await.

        Returns whether :meth:`_fill` must take over: nothing is outstanding
        and no slot is free, so the next item has to wait for one.
        """
        gate = self._executor._gate
        start = self._executor._start
        fn = self._fn
        source = self._iter
        assert source is not None
        # Ordered (the common case) appends to pending directly.
        append = self._pending.append if self._ordered else self._track
        while not self._exhausted and self._outstanding < gate.bound:
            if gate.closed or not gate.try_acquire():
                return not self._outstanding
            try:
                item = next(source)
            except BaseException as exc:
                gate.release()
                self._source_failed(exc)
                return False
            self._outstanding += 1
            try:
                append(start(fn, (item,), {}))
            except Exception as exc:
                append(self._failed_future(exc))
        return False

    async def _fill(self) -> None:
        """Pull and submit items while the window allows, waiting if need be."""
        executor = self._executor
        gate = executor._gate
        fast = executor._rate is None  # a rate limit means awaiting submit()
        while not self._exhausted and self._outstanding < gate.bound:
            # No slot free right now, and results on their way? Deliver them
            # rather than queue behind other callers for a slot.
            if self._outstanding and not gate.has_free_slot():
                return
            # A slot free right now: take it, no coroutine and no wait needed.
            free = fast and gate.has_free_slot() and gate.try_acquire()
            try:
                if self._aiter is not None:
                    item = await anext(self._aiter)
                else:
                    assert self._iter is not None
                    item = next(self._iter)
            except BaseException as exc:
                if free:
                    gate.release()
                self._source_failed(exc)
                return
            self._outstanding += 1
            try:
                if free:
                    fut = executor._start(self._fn, (item,), {})
                else:
                    fut = await executor.submit(self._fn, item)
            except Exception as exc:
                fut = self._failed_future(exc)
            self._track(fut)

    def _source_failed(self, exc: BaseException) -> None:
        """The source raised: stop pulling; keep an error for after the rest.

        Anything that is not an :class:`Exception` (cancellation, say) is
        re-raised at once and ends the iteration.
        """
        if isinstance(exc, (StopIteration, StopAsyncIteration)):
            self._exhausted = True
            return
        if not isinstance(exc, Exception):
            raise exc
        self._exhausted = True
        self._source_error = exc

    def _failed_future(self, exc: Exception) -> asyncio.Future[T]:
        """A future holding the error the executor raised for an item."""
        assert self._loop is not None
        fut: asyncio.Future[T] = self._loop.create_future()
        fut.set_exception(exc)
        return fut

    def _track(self, fut: asyncio.Future[T]) -> None:
        """Queue a submitted item's future for delivery."""
        if self._ordered:
            self._pending.append(fut)
        elif fut.done():
            self._done.append(fut)
        else:
            self._pending.append(fut)
            fut.add_done_callback(self._on_done)

    def _on_done(self, fut: asyncio.Future[T]) -> None:
        """Unordered mode: move a finished future to the done queue."""
        if self._finished:
            return
        self._pending.remove(fut)
        self._done.append(fut)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _end(self) -> NoReturn:
        """Finish after the last result: raise the source's error or stop."""
        error, self._source_error = self._source_error, None
        self._finish()
        if error is not None:
            raise error
        raise StopAsyncIteration

    def _finish(self) -> None:
        """Mark finished and cancel every call that has not started."""
        if self._finished:
            return
        self._finished = True
        for fut in (*self._pending, *self._done):
            if not fut.cancel() and not fut.cancelled():
                fut.exception()  # mark retrieved: it will never be read
        self._pending.clear()
        self._done.clear()
        self._outstanding = 0

    async def aclose(self) -> None:
        """Finish the iteration and close a generator source. Idempotent.

        Cancellation: the iteration is finished before the first await, so
        only the closing of an async generator source can be interrupted.
        """
        self._finish()
        await close_source(self._aiter if self._iter is None else self._iter)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._finished or (not self._pending and not self._done):
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._finish()
        else:
            with contextlib.suppress(RuntimeError):  # closed in the meantime
                loop.call_soon_threadsafe(self._finish)
