"""Chunked ``map``: several items per call to the executor, results one by one.

A process pool pays an inter-process round trip per call: tens of
microseconds, far more than a small function costs. Sending ``chunksize``
items per call divides that cost by ``chunksize``.

:class:`ChunkedMapIterator` is a :class:`MapIterator` over *chunks*: an inner
``MapIterator`` pulls lists of items from the source, submits one call per
list (which applies ``fn`` to each item in the worker), and hands over lists
of results, which are yielded one at a time. Laziness, order, errors and
clean-up are therefore the inner iterator's, counted in chunks: ``bound``
chunks at most are pulled and not yet fully yielded, and a chunk is pulled
only when the previous one has been yielded to the end.

With ``chunksize=None`` the size adapts: the worker times each chunk, and
the next chunk is sized so that it runs for about :data:`TARGET_SECONDS`
(starting at 1 item, at most doubling per chunk, at most
:data:`MAX_AUTO_CHUNKSIZE`).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from ._map import MapIterator, close_source, open_source

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._executor import BoundedLoopExecutor

__all__ = ("MAX_AUTO_CHUNKSIZE", "TARGET_SECONDS", "ChunkedMapIterator")

A = TypeVar("A")
T = TypeVar("T")

# Automatic chunk size: aim for chunks that run this long in the worker,
# which makes a round trip of ~0.1 ms a few percent of the chunk's time...
TARGET_SECONDS = 0.005
# ...but never more items than this per chunk, so that the window
# (bound x chunksize items) stays small.
MAX_AUTO_CHUNKSIZE = 256


class ChunkCall(Generic[A, T]):
    """Apply ``fn`` to each item of a chunk; runs in the worker.

    Returns the results and the seconds they took, from which the automatic
    chunk size is computed. Picklable whenever ``fn`` is.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[A], T]) -> None:
        self.fn = fn

    def __call__(self, items: list[A]) -> tuple[list[T], float]:
        fn = self.fn
        start = time.perf_counter()
        results = [fn(item) for item in items]
        return results, time.perf_counter() - start

    def __repr__(self) -> str:
        return f"{self.fn!r} (on a chunk of items)"

    def __reduce__(self) -> tuple[type[ChunkCall[A, T]], tuple[Callable[[A], T]]]:
        return ChunkCall, (self.fn,)


class _Sizer:
    """The current chunk size, shared by the iterator and its chunkers."""

    __slots__ = ("auto", "size")

    def __init__(self, chunksize: int | None) -> None:
        self.auto = chunksize is None
        self.size = 1 if chunksize is None else chunksize

    def measured(self, count: int, seconds: float) -> None:
        """A chunk of *count* items ran for *seconds*: size the next ones."""
        if not self.auto or not count:
            return
        per_item = seconds / count
        wanted = MAX_AUTO_CHUNKSIZE if per_item <= 0 else int(TARGET_SECONDS / per_item)
        self.size = max(1, min(wanted, 2 * self.size, MAX_AUTO_CHUNKSIZE))


class _SyncChunks(Generic[A]):
    """Lists of up to ``sizer.size`` items from a sync iterator.

    If the source raises part-way through a chunk, the items already pulled
    go out as a chunk and the error is raised at the next pull, so their
    results come before it, as with ``chunksize=1``.
    """

    __slots__ = ("_error", "_sizer", "_source")

    def __init__(self, source: Iterator[A], sizer: _Sizer) -> None:
        self._source = source
        self._sizer = sizer
        self._error: Exception | None = None

    def __iter__(self) -> _SyncChunks[A]:
        return self

    def __next__(self) -> list[A]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        chunk: list[A] = []
        try:
            for item in itertools.islice(self._source, self._sizer.size):
                chunk.append(item)  # noqa: PERF402 - keep what came before an error
        except Exception as exc:
            if not chunk:
                raise
            self._error = exc
        if not chunk:
            raise StopIteration
        return chunk


class _AsyncChunks(Generic[A]):
    """Lists of up to ``sizer.size`` items from an async iterator.

    A chunk goes out when it is full or the source ends (or raises, as in
    :class:`_SyncChunks`).
    """

    __slots__ = ("_done", "_error", "_sizer", "_source")

    def __init__(self, source: AsyncIterator[A], sizer: _Sizer) -> None:
        self._source = source
        self._sizer = sizer
        self._error: Exception | None = None
        self._done = False

    def __aiter__(self) -> _AsyncChunks[A]:
        return self

    async def __anext__(self) -> list[A]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._done:
            raise StopAsyncIteration
        chunk: list[A] = []
        try:
            while len(chunk) < self._sizer.size:
                chunk.append(await anext(self._source))
        except StopAsyncIteration:
            self._done = True
        except Exception as exc:
            if not chunk:
                raise
            self._error = exc
        if not chunk:
            raise StopAsyncIteration
        return chunk


class ChunkedMapIterator(MapIterator[T]):
    """A :class:`MapIterator` that sends ``chunksize`` items per call.

    Made by :meth:`BoundedLoopExecutor.map` when ``chunksize`` is not 1. It
    behaves as the per-item iterator except that the window, and ``bound``,
    count chunks, and that an exception from ``fn`` fails its whole chunk:
    it is raised where the chunk's first result would have been yielded.
    """

    __slots__ = ("_buffer", "_chunks", "_sizer", "_source")

    def __init__(
        self,
        executor: BoundedLoopExecutor,
        fn: Callable[[A], T],
        items: Iterable[A] | AsyncIterable[A],
        *,
        ordered: bool,
        chunksize: int | None,
    ) -> None:
        # The base part stays empty and finished: the inner iterator does
        # the work, with chunks as its items.
        super().__init__(executor, fn, (), ordered=ordered)
        self._sizer = _Sizer(chunksize)
        self._buffer: deque[T] = deque()
        source: Iterator[A] | AsyncIterator[A] = open_source(items)
        chunks: _SyncChunks[A] | _AsyncChunks[A]
        if isinstance(source, AsyncIterator):
            chunks = _AsyncChunks(source, self._sizer)
        else:
            chunks = _SyncChunks(source, self._sizer)
        self._source = source
        self._chunks: MapIterator[tuple[list[T], float]] = MapIterator(
            executor, ChunkCall(fn), chunks, ordered=ordered
        )

    async def __anext__(self) -> T:
        """Return the next result.

        Cancellation: finishes the iteration (see :class:`MapIterator`).
        """
        buffer = self._buffer
        if buffer:
            return buffer.popleft()
        results, seconds = await self._chunks.__anext__()
        self._sizer.measured(len(results), seconds)
        buffer.extend(results)
        return buffer.popleft()

    @property
    def chunksize(self) -> int:
        """Items in the next chunk (it changes as it goes when automatic)."""
        return self._sizer.size

    async def aclose(self) -> None:
        """Finish the iteration and close a generator source. Idempotent.

        Cancellation: the iteration is finished before the first await, so
        only the closing of an async generator source can be interrupted.
        """
        self._buffer.clear()
        await self._chunks.aclose()
        await close_source(self._source)
