"""Chunks for ``map``: several items per call to the executor.

A process pool pays an inter-process round trip per call: tens of
microseconds, far more than a small function costs. Sending ``chunksize``
items per call divides that cost by ``chunksize``.

This module holds the pieces ``map`` composes when it chunks: the call that
runs in the worker (:class:`ChunkCall`), the chunk size (:class:`ChunkSizer`)
and the sources of chunks made from a sync or an async source of items
(:func:`chunked`). It knows nothing of the map iterator or the executor.

With ``chunksize=None`` the size adapts: the worker times each chunk, and
the next chunk is sized so that it runs for about :data:`TARGET_SECONDS`
(starting at 1 item, at most doubling per chunk, at most
:data:`MAX_AUTO_CHUNKSIZE`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar, overload

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = (
    "MAX_AUTO_CHUNKSIZE",
    "TARGET_SECONDS",
    "Chunk",
    "ChunkCall",
    "ChunkSizer",
    "chunked",
)

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
    chunk size is computed. Picklable whenever ``fn`` is (by reference to
    this class, so a worker must be able to import aiobound).
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
        return f"<{type(self).__name__} of {self.fn!r}>"

    def __reduce__(self) -> tuple[type[ChunkCall[A, T]], tuple[Callable[[A], T]]]:
        return ChunkCall, (self.fn,)


class Chunk(list):  # type: ignore[type-arg]
    """A list of items that knows where it starts in ``map``'s input.

    ``first`` is the 0-based position of its first item, so that an error
    about one of its items can name that item's position in the map. It
    crosses to a worker as a plain list.
    """

    __slots__ = ("first",)

    def __init__(self, first: int) -> None:
        super().__init__()
        self.first = first

    def __reduce__(self) -> tuple[type[list[object]], tuple[list[object]]]:
        return list, (list(self),)


class ChunkSizer:
    """The size of the next chunk: fixed, or adapted to measured run times."""

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


class _Chunks:
    """What both chunk sources share: an error held for the next pull.

    If the source raises part-way through a chunk, the items already pulled
    go out as a chunk and the error is raised at the next pull, so their
    results come before it, as with one item per call.
    """

    __slots__ = ("_error", "_pulled", "_sizer")

    def __init__(self, sizer: ChunkSizer) -> None:
        self._sizer = sizer
        self._error: Exception | None = None
        self._pulled = 0  # items pulled so far: the next chunk's first

    def _raise_held_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _new_chunk(self) -> Chunk:
        return Chunk(self._pulled)

    def _done(self, chunk: Chunk) -> Chunk:
        self._pulled += len(chunk)
        return chunk

    def _ended(self, chunk: list[object], exc: Exception) -> None:
        """The source raised *exc* after *chunk* was pulled: hold it or raise."""
        if not chunk:
            raise exc
        self._error = exc


class _SyncChunks(_Chunks, Generic[A]):
    """Lists of up to ``sizer.size`` items from a sync iterator.

    A source that ended (a chunk came out short) is not asked again.
    """

    __slots__ = ("_exhausted", "_source")

    def __init__(self, source: Iterator[A], sizer: ChunkSizer) -> None:
        super().__init__(sizer)
        self._source = source
        self._exhausted = False

    def __iter__(self) -> _SyncChunks[A]:
        return self

    def __next__(self) -> list[A]:
        self._raise_held_error()
        if self._exhausted:
            raise StopIteration
        chunk = self._new_chunk()
        size = self._sizer.size
        try:
            for item in itertools.islice(self._source, size):
                chunk.append(item)
        except Exception as exc:
            self._ended(chunk, exc)
        else:
            self._exhausted = len(chunk) < size
        if not chunk:
            raise StopIteration
        return self._done(chunk)


class _AsyncChunks(_Chunks, Generic[A]):
    """Lists of up to ``sizer.size`` items from an async iterator.

    A chunk goes out when it is full or the source ends (or raises).
    """

    __slots__ = ("_exhausted", "_source")

    def __init__(self, source: AsyncIterator[A], sizer: ChunkSizer) -> None:
        super().__init__(sizer)
        self._source = source
        self._exhausted = False

    def __aiter__(self) -> _AsyncChunks[A]:
        return self

    async def __anext__(self) -> list[A]:
        self._raise_held_error()
        if self._exhausted:
            raise StopAsyncIteration
        chunk = self._new_chunk()
        try:
            while len(chunk) < self._sizer.size:
                chunk.append(await anext(self._source))
        except StopAsyncIteration:
            self._exhausted = True
        except Exception as exc:
            self._ended(chunk, exc)
        if not chunk:
            raise StopAsyncIteration
        return self._done(chunk)


@overload
def chunked(source: Iterator[A], sizer: ChunkSizer) -> Iterator[list[A]]: ...
@overload
def chunked(source: AsyncIterator[A], sizer: ChunkSizer) -> AsyncIterator[list[A]]: ...
def chunked(
    source: Iterator[A] | AsyncIterator[A], sizer: ChunkSizer
) -> Iterator[list[A]] | AsyncIterator[list[A]]:
    """Return a source of lists of up to ``sizer.size`` items of *source*.

    The size is read at each pull, so an adapting sizer takes effect at once.
    """
    if isinstance(source, AsyncIterator):
        return _AsyncChunks(source, sizer)
    return _SyncChunks(source, sizer)
