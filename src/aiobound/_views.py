"""Calls with a time limit, and what every front door's calls share.

:class:`TimeLimited` (from ``with_timeout()``) is a front door over one lane
of the executor's call path (:mod:`aiobound._calls`): surface and wiring,
the calls themselves go through the lane. :func:`run_in` and :func:`map_in`
are ``run`` and ``map`` for every front door (the executor, a partition, a
time-limited view).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._calls import Lane, TimedPort
from ._checks import check_callable, check_chunksize
from ._map import MapIterator, make_map

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterable, Callable, Iterable

    from ._map import MapPort

__all__ = ("TimeLimited", "map_in", "run_in")

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")


async def run_in(
    lane: Lane,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> T:
    """``run``: submit (within *timeout*, if given), then await the result."""
    fut = lane.submit_now(fn, args, kwargs, timeout)
    try:
        if fut is None:
            fut = await lane.admit_and_start(fn, args, kwargs, timeout)
        return await fut
    finally:
        # A failed call's traceback keeps this frame: it must not keep the
        # future, which keeps the exception (a cycle only the collector ends).
        fut = None


def map_in(
    lane: Lane,
    fn: object,
    items: Iterable[A] | AsyncIterable[A],
    ordered: object,
    chunksize: object,
    timeout: float | None,
) -> MapIterator[T]:
    """Check ``map``'s arguments and build the iterator over *lane*.

    With a *timeout*, each item's call has its own deadline.
    """
    check_callable("fn", fn)
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be a bool, got {ordered!r}")
    if chunksize is None:
        size = None if lane.path.submitter.to_processes else 1
    else:
        size = check_chunksize(chunksize)
    port: MapPort = lane if timeout is None else TimedPort(lane, timeout)
    return make_map(port, fn, items, ordered=ordered, chunksize=size)  # type: ignore[arg-type]


class TimeLimited:
    """Calls with a time limit each, from ``with_timeout()``.

    Made by :meth:`BoundedLoopExecutor.with_timeout` or
    :meth:`Partition.with_timeout`: its :meth:`submit`, :meth:`run` and
    :meth:`map` are those of the executor (or partition) it came from, with
    a deadline :attr:`timeout` seconds after each call is made, over its
    wait for a slot and its run. At the deadline the caller gets
    :class:`~aiobound.DeadlineExceeded`: a call still waiting for a slot
    leaves the queue and never runs; one queued in the pool is cancelled and
    never runs; one running goes on in its thread, holding its slot until it
    ends (``stats().abandoned``), unless the pool can stop it
    (``BoundedLoopExecutor.process(kill_on_timeout=True)``). Inside the
    call, :func:`aiobound.remaining` gives the seconds left.
    """

    __slots__ = ("_lane", "_timeout")

    def __init__(self, lane: Lane, timeout: float | None) -> None:
        self._lane = lane
        self._timeout = timeout

    @property
    def timeout(self) -> float | None:
        """Seconds each call may take, wait included (``None``: no limit)."""
        return self._timeout

    def __repr__(self) -> str:
        where = "" if self._lane.name is None else f" in {self._lane.name!r}"
        return f"<TimeLimited timeout={self._timeout}{where}>"

    async def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[R]:
        """:meth:`BoundedLoopExecutor.submit`, with this view's deadline.

        Raises:
            DeadlineExceeded: the deadline passed while the call waited for a
                slot (it was not handed over and never runs).
            OverloadedError, ClosedError, TypeError, RuntimeError: as the
                executor's ``submit``.

        The returned future raises :class:`~aiobound.DeadlineExceeded` at the
        deadline if the call has not ended by then. Cancellation: as the
        executor's ``submit``.
        """
        return await self._lane.start_later(fn, args, kwargs, self._timeout)

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """:meth:`BoundedLoopExecutor.run`, with this view's deadline.

        Raises what :meth:`submit` raises, then whatever ``fn`` raised, or
        :class:`~aiobound.DeadlineExceeded` at the deadline.
        """
        return await run_in(self._lane, fn, args, kwargs, self._timeout)

    def map(
        self,
        fn: Callable[[A], R],
        items: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = True,
        chunksize: int | None = None,
    ) -> MapIterator[R]:
        """:meth:`BoundedLoopExecutor.map`, each item with this view's deadline.

        Each item's deadline starts when it is pulled and taken up for a
        call (with chunks, each chunk's, when the chunk is); an item that
        misses it raises :class:`~aiobound.DeadlineExceeded` in its place,
        which ends the iteration as an error from ``fn`` does (the calls not
        started are cancelled).
        """
        return map_in(self._lane, fn, items, ordered, chunksize, self._timeout)
