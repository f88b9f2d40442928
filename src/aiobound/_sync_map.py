"""The synchronous executor's ``map``: lazy, bounded, freeing as it yields.

The loop of ``BoundedExecutor.map``: pull an item, take a slot for it, hand
it over, and yield the results in order, never more than the window ahead
of the consumer. Chunking is composed around it with the pieces of
:mod:`aiobound._chunks`, shared with the async ``map``.

Promises kept here, as ``Executor.map`` keeps them:

* an item is pulled before its slot is taken, and a slot is taken only for
  an item: an exhausted source takes none;
* a result is freed as it is yielded: neither the generator's frame nor the
  window keeps it (in a chunk, each result leaves the chunk as it goes);
* leaving early (``break``, an error, ``close()``, a ``timeout``, an
  exception from a signal handler while waiting for a result) cancels every
  call not started, the one being waited for included;
* after the executor is shut down, the results of the calls already handed
  over are still delivered, then :class:`ClosedError` is raised in place of
  the next item.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._chunks import ChunkCall, ChunkSizer, chunked
from ._errors import ClosedError, closed_before_start, closed_on_arrival

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

__all__ = ("Star", "SyncPort", "map_results")

T = TypeVar("T")

_NOTHING: Any = object()  # no item in hand


class SyncPort(Protocol):
    """What the synchronous map needs from its executor."""

    @property
    def closed(self) -> bool:
        """Whether the executor was shut down."""

    def window(self) -> int:
        """Most items (or chunks) pulled and not yet yielded, now."""

    def try_reserve(self) -> bool:
        """Take a free slot at once; ``ClosedError`` once shut down."""

    def reserve(self, timeout: float | None) -> bool:
        """Take a slot, blocking up to *timeout*; ``False`` if it expired."""

    def start(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[T]:
        """Hand the call over on a reserved slot."""


class Star(Generic[T]):
    """``fn(*args)`` from one tuple: ``map`` over several iterables, pickled."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., T]) -> None:
        self.fn = fn

    def __call__(self, args: tuple[Any, ...]) -> T:
        return self.fn(*args)

    def __reduce__(self) -> tuple[type[Star[T]], tuple[Callable[..., T]]]:
        return Star, (self.fn,)


def map_results(
    port: SyncPort,
    fn: Callable[[Any], T],
    source: Iterator[Any],
    deadline: float | None,
    chunksize: int | None,
) -> Iterator[T]:
    """The results of ``fn`` over *source*, in order (chunked unless 1).

    Nothing is pulled before the first ``next()``.
    """
    if chunksize == 1:
        return _map_calls(port, fn, source, deadline)
    return _map_chunks(port, fn, source, deadline, ChunkSizer(chunksize))


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _result_or_cancel(
    cfut: concurrent.futures.Future[T], deadline: float | None, port: SyncPort
) -> T:
    """*cfut*'s result; cancelled if the wait ends any other way.

    A call that ``shutdown(cancel_futures=True)`` cancelled raises
    :class:`ClosedError`.
    """
    try:
        try:
            return cfut.result(_remaining(deadline))
        except concurrent.futures.CancelledError:
            if port.closed:
                raise closed_before_start() from None
            raise
        finally:
            cfut.cancel()  # a timeout or an interrupt: it must not run
    finally:
        del cfut  # the frame in a traceback must not keep the result


def _map_calls(
    port: SyncPort,
    fn: Callable[[Any], T],
    source: Iterator[Any],
    deadline: float | None,
) -> Generator[T, None, None]:
    """One call per item of *source* (an item may be a chunk)."""
    window: deque[concurrent.futures.Future[T]] = deque()
    held: Any = _NOTHING
    error: BaseException | None = None
    more = True
    try:
        while True:
            while more:
                if held is _NOTHING:
                    if len(window) >= port.window():
                        break
                    if port.closed:
                        more, error = False, closed_on_arrival()
                        break
                    try:
                        held = next(source)
                    except StopIteration:
                        more = False
                        break
                    except Exception as exc:
                        # Raised once the results pulled before it are out.
                        more, error = False, exc
                        break
                try:
                    if window:
                        if not port.try_reserve():
                            break  # a result first; the item waits in hand
                    elif not port.reserve(_remaining(deadline)):
                        raise concurrent.futures.TimeoutError
                except ClosedError as exc:
                    more, error, held = False, exc, _NOTHING
                    break
                window.append(port.start(fn, (held,), {}))
                held = _NOTHING
            if not window:
                if error is not None:
                    raise error
                return
            yield _result_or_cancel(window.popleft(), deadline, port)
    finally:
        for cfut in window:
            cfut.cancel()


def _map_chunks(
    port: SyncPort,
    fn: Callable[[Any], T],
    source: Iterator[Any],
    deadline: float | None,
    sizer: ChunkSizer,
) -> Generator[T, None, None]:
    run: ChunkCall[Any, T] = ChunkCall(fn)
    calls = _map_calls(port, run, chunked(source, sizer), deadline)
    try:
        for results, seconds in calls:
            sizer.measured(len(results), seconds)
            results.reverse()
            while results:
                yield results.pop()  # the chunk keeps no result it yielded
    finally:
        calls.close()  # cancels the chunks not started
