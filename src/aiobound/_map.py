"""MapIterator: a lazy, bounded ``map`` over a sync or async iterable.

One pull-acquire-submit loop (:class:`_Window`) serves every kind of map;
chunking is composed around it: the window then pulls chunks (lists of items,
see :mod:`aiobound._chunks`) and :class:`MapIterator` yields their results one
by one. The window talks to its executor only through a :class:`MapPort`.

The window, not the public iterator, is what the loop's callbacks and the
background pull refer to, so that nothing the iterator registers keeps it
alive: dropping the iterator (a bare ``break``) finishes the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, TypeVar

from ._chunks import ChunkCall, ChunkSizer, chunked

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType

    from typing_extensions import Self

__all__ = ("MapIterator", "MapPort", "close_source", "make_map", "open_source")

T = TypeVar("T")

# The keyword arguments of every call a map makes: none (never mutated).
_NO_KWARGS: dict[str, Any] = {}


class MapPort(Protocol):
    """What a map needs from its executor (a lane of the call path).

    Cancellation of the awaitables: as ``submit``.
    """

    @property
    def rate_limited(self) -> bool:
        """Whether calls wait for turns (``max_per_second``)."""

    def bind(self) -> asyncio.AbstractEventLoop:
        """Bind the executor to the running loop and return that loop."""

    def bound(self) -> int:
        """The executor's current bound: the window."""

    # Whether reserve_now() would succeed now; changes nothing.
    can_reserve_now: Callable[[], bool]
    # Take a slot (and a turn) if free at once; False once closed.
    reserve_now: Callable[[], bool]
    # Whether reserve_slot_now() would succeed now; changes nothing.
    can_reserve_slot_now: Callable[[], bool]
    # Take a slot, without a turn, if one is free at once.
    reserve_slot_now: Callable[[], bool]

    def release(self) -> None:
        """Give back a slot taken and not used."""

    def start(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_settled: Callable[[asyncio.Future[Any]], object] | None = None,
    ) -> asyncio.Future[Any]:
        """Hand the call over on a reserved slot; return its future.

        Raises what the pool's ``submit`` raises, the slot freed.
        ``on_settled``, unless ``None``, is called with the future on the
        loop as soon as it is settled, possibly before this returns.
        """

    async def start_later(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Wait for a slot and a turn, then hand over; raises as ``submit``."""

    async def start_on_turn(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Holding a reserved slot: wait for the turn, then hand over.

        On error or cancellation the slot is given back.
        """


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
        f"{type(items).__name__} {_short_repr(items)}"
    )


async def close_source(source: Iterator[Any] | AsyncIterator[Any]) -> None:
    """Close *source* if it is a generator or an async generator."""
    if inspect.isasyncgen(source):
        await source.aclose()
    elif inspect.isgenerator(source):
        source.close()


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
    return text if len(text) <= 80 else text[:77] + "..."


_NOTHING: Any = object()  # no item in hand


class _Window(Generic[T]):
    """The pull-acquire-submit loop: the items pulled and not yet delivered.

    ``pending`` holds, in input order, the futures of calls not yet delivered
    (ordered) or not yet done (unordered, where done ones move to ``done``).
    ``held`` is an item pulled and not yet submitted: it waits for a slot
    that is free at once, or for nothing else to be outstanding (then the
    consumer waits for its slot). ``pulling`` is a task that goes on while
    results are delivered: it pulls the next item of an async source, or,
    under a rate limit, holds a slot for the next item until its turn.
    """

    __slots__ = (
        "__weakref__",
        "async_source",
        "awaiting",
        "done",
        "exhausted",
        "finished",
        "fn",
        "held",
        "interrupted",
        "loop",
        "ordered",
        "outstanding",
        "pending",
        "port",
        "pulling",
        "running",
        "source_error",
        "sync_source",
        "wakeup",
    )

    def __init__(
        self,
        port: MapPort,
        fn: Callable[[Any], T],
        source: Iterator[Any] | AsyncIterator[Any],
        *,
        ordered: bool,
    ) -> None:
        self.port = port
        self.fn = fn
        self.ordered = ordered
        self.sync_source: Iterator[Any] | None = None
        self.async_source: AsyncIterator[Any] | None = None
        if isinstance(source, AsyncIterator):
            self.async_source = source
        else:
            self.sync_source = source
        self.pending: deque[asyncio.Future[T]] = deque()
        self.running: set[asyncio.Future[T]] = set()  # unordered: not done yet
        self.done: deque[asyncio.Future[T]] = deque()  # unordered: done, unread
        self.outstanding = 0  # items pulled and not yet handed to the consumer
        self.held: Any = _NOTHING
        self.exhausted = False
        self.source_error: BaseException | None = None
        self.pulling: asyncio.Task[None] | None = None
        self.wakeup: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.finished = False
        self.awaiting = False  # a consumer awaits the head future directly
        self.interrupted = False  # ...and aclose() finished the window meanwhile

    async def next_in_order(self, owner: object) -> T:
        """:meth:`next` for an ordered map of a sync source, with no rate limit.

        The common case, with nothing to run in the background: fill the
        window, then return the head's result, waiting for it if need be.
        """
        if self.finished:
            raise StopAsyncIteration
        if self.loop is None:
            self.loop = self.port.bind()
        pending = self.pending
        try:
            self._fill_now()
            if not pending:
                return await self.next(owner)
            if not pending[0].done():
                # Awaited unnamed: a failed call's traceback keeps this
                # frame, which must not keep the future (and its exception).
                self.awaiting = True
                try:
                    await pending[0]
                except asyncio.CancelledError:
                    if self.interrupted and not _cancelling():
                        raise StopAsyncIteration from None  # aclose() elsewhere
                    raise
                finally:
                    self.awaiting = False
            self.outstanding -= 1
            return pending.popleft().result()
        except BaseException:
            self.finish()
            raise

    async def next(self, owner: object) -> T:
        """Return the next result (``owner`` is kept alive meanwhile).

        Cancellation: finishes the window.
        """
        if self.finished:
            raise StopAsyncIteration
        if self.loop is None:
            self.loop = self.port.bind()
        try:
            while True:
                pulling = self.pulling
                if pulling is not None and pulling.done():
                    self.pulling = None
                    pulling.result()  # re-raise what the source raised
                    pulling = None
                if pulling is None:
                    self._fill_now()
                ready = self._ready()
                if ready is not None:
                    self.outstanding -= 1
                    return ready.result()
                if pulling is None:
                    in_hand = self.held is not _NOTHING
                    if self.outstanding == in_hand:  # nothing to deliver
                        await self._advance_alone()
                        continue
                    can_pull = (
                        not in_hand
                        and not self.exhausted
                        and self.outstanding < self.port.bound()
                    )
                    if self.async_source is not None and can_pull:
                        self._pull_in_background()
                    elif (
                        self.port.rate_limited
                        and (in_hand or can_pull)
                        and self._start_on_turn_in_background()
                    ):
                        pass
                    elif self.ordered:
                        return await self._await_head()
                await self._wait()
                if self.finished:
                    raise StopAsyncIteration
        except BaseException:
            self.finish()
            raise

    def _ready(self) -> asyncio.Future[T] | None:
        """Take the next deliverable future, if one is ready."""
        if self.ordered:
            pending = self.pending
            if pending and pending[0].done():
                return pending.popleft()
            return None
        if self.done:
            return self.done.popleft()
        return None

    async def _await_head(self) -> T:
        """Ordered, nothing else to do: wait for the head's result itself."""
        self.awaiting = True
        try:
            result = await self.pending[0]  # unnamed: see next_in_order
        except asyncio.CancelledError:
            if self.interrupted and not _cancelling():
                raise StopAsyncIteration from None  # aclose() from elsewhere
            raise
        finally:
            self.awaiting = False
        del self.pending[0]
        self.outstanding -= 1
        return result

    async def _wait(self) -> None:
        """Wait until a result is ready, a pull is done, or finished."""
        assert self.loop is not None
        wakeup = self.wakeup = self.loop.create_future()
        head = self.pending[0] if self.ordered and self.pending else None
        if head is not None:
            head.add_done_callback(self._wake)
        try:
            await wakeup
        finally:
            self.wakeup = None
            if head is not None:
                head.remove_done_callback(self._wake)

    def _wake(self, _: object = None) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _fill_now(self) -> None:
        """Submit what a slot (and turn) free at once allows; never waits.

        First the item in hand, then, from a sync source, more items.
        """
        port = self.port
        reserve_now = port.reserve_now
        if self.held is not _NOTHING:
            if not reserve_now():
                return
            item, self.held = self.held, _NOTHING
            self._start_reserved(item)
        source = self.sync_source
        if source is None:
            return
        can_reserve_now = port.can_reserve_now
        start = port.start
        fn = self.fn
        if self.ordered:
            track = self.pending.append
            on_settled = None
        else:
            track = self._track_watched
            on_settled = self._on_done
        bound = port.bound()
        # An item is pulled only when its slot (and turn) is free, and the
        # slot is taken only once there is an item: an empty source takes
        # none, and no read runs ahead of the pool.
        while self.outstanding < bound and not self.exhausted:
            if not can_reserve_now():
                return
            try:
                item = next(source)
            except BaseException as exc:
                self._source_failed(exc)
                return
            self.outstanding += 1
            if not reserve_now():  # the source's own code took the slot
                self.held = item
                return
            try:
                fut = start(fn, (item,), _NO_KWARGS, on_settled)
            except Exception as exc:
                fut = self._failed(exc)
            track(fut)

    def _start_reserved(self, item: object) -> None:
        try:
            fut = self.port.start(self.fn, (item,), _NO_KWARGS)
        except Exception as exc:
            fut = self._failed(exc)
        self._track(fut)

    async def _advance_alone(self) -> None:
        """Nothing to deliver: pull an item, or wait for the held one's slot.

        No slot is held while the source is awaited. An error from the
        executor (closed, overloaded) takes the item's place.
        """
        if self.held is _NOTHING:
            if self.exhausted:
                self._end()
            await self._pull()
            return
        item, self.held = self.held, _NOTHING
        try:
            fut = await self.port.start_later(self.fn, (item,), _NO_KWARGS)
        except Exception as exc:
            fut = self._failed(exc)
        self._track(fut)

    async def _pull(self, *, once: bool = True) -> None:
        """Pull an item into ``held`` (or note the end or error of the source).

        Unless *once*, the item is submitted at once if a slot (and turn) is
        free, and the next is pulled, while the window has room.
        """
        port = self.port
        while True:
            try:
                if self.async_source is not None:
                    item = await anext(self.async_source)
                else:
                    assert self.sync_source is not None
                    item = next(self.sync_source)
            except BaseException as exc:
                self._source_failed(exc)
                return
            if self.finished:
                return
            self.outstanding += 1
            if once or not port.reserve_now():
                self.held = item
                return
            self._start_reserved(item)
            if self.outstanding >= port.bound():
                return

    def _start_on_turn_in_background(self) -> bool:
        """Under a rate limit: hold a free slot for the next item's turn.

        A task waits for the turn while results are delivered.

        Returns whether it did (``False``: no slot free, or the source ended).
        The item is pulled before its slot is taken, and only when a slot is
        free.
        """
        port = self.port
        if not port.can_reserve_slot_now():
            return False
        if self.held is _NOTHING:
            assert self.sync_source is not None
            try:
                item = next(self.sync_source)
            except BaseException as exc:
                self._source_failed(exc)
                return False
            self.outstanding += 1
            self.held = item
        if not port.reserve_slot_now():  # the source's own code took it
            return False
        item, self.held = self.held, _NOTHING
        assert self.loop is not None
        task = self.pulling = self.loop.create_task(self._start_on_turn(item))
        task.add_done_callback(self._wake)
        return True

    async def _start_on_turn(self, item: object) -> None:
        try:
            fut = await self.port.start_on_turn(self.fn, (item,), _NO_KWARGS)
        except Exception as exc:
            fut = self._failed(exc)
        self._track(fut)

    def _pull_in_background(self) -> None:
        assert self.loop is not None
        task = self.pulling = self.loop.create_task(self._pull(once=False))
        task.add_done_callback(self._wake)

    def _source_failed(self, exc: BaseException) -> None:
        """The source raised: stop pulling; keep an error for after the rest.

        Anything that is not an :class:`Exception` (cancellation, say) is
        re-raised at once and ends the iteration.
        """
        self.exhausted = True
        if isinstance(exc, (StopIteration, StopAsyncIteration)):
            return
        if not isinstance(exc, Exception):
            raise exc
        self.source_error = exc

    def _failed(self, exc: Exception) -> asyncio.Future[T]:
        """A future holding the error the executor raised for an item."""
        assert self.loop is not None
        fut: asyncio.Future[T] = self.loop.create_future()
        fut.set_exception(exc)
        return fut

    def _track(self, fut: asyncio.Future[T]) -> None:
        """Queue a submitted item's future for delivery."""
        if self.finished:  # aclose() came while the item waited for its slot
            if not fut.cancel() and not fut.cancelled():
                fut.exception()
            return
        if self.ordered:
            self.pending.append(fut)
            if len(self.pending) == 1:
                self._wake()  # a new head: a waiting consumer must watch it
        elif fut.done():
            self.done.append(fut)
            self._wake()
        else:
            self.running.add(fut)
            fut.add_done_callback(self._on_done)

    def _track_watched(self, fut: asyncio.Future[T]) -> None:
        """Unordered: queue a future whose settling calls :meth:`_on_done`."""
        if fut.done():  # settled before it could be tracked
            self.done.append(fut)
            self._wake()
        else:
            self.running.add(fut)

    def _on_done(self, fut: asyncio.Future[T]) -> None:
        """Unordered: move a finished future to the done queue.

        A future not (or no longer) tracked as running is left alone.
        """
        if self.finished:
            return
        try:
            self.running.remove(fut)
        except KeyError:
            return
        self.done.append(fut)
        self._wake()

    def _end(self) -> NoReturn:
        """Finish after the last result: raise the source's error or stop."""
        error, self.source_error = self.source_error, None
        self.finish()
        if error is not None:
            raise error
        raise StopAsyncIteration

    def finish(self) -> None:
        """Finish: cancel the background pull and every call not started."""
        if self.finished:
            return
        self.finished = True
        self.interrupted = self.awaiting
        if self.pulling is not None:
            self.pulling.cancel()
        self.held = _NOTHING
        for fut in (*self.pending, *self.running, *self.done):
            if not fut.cancel() and not fut.cancelled():
                fut.exception()  # mark retrieved: it will never be read
        self.pending.clear()
        self.running.clear()
        self.done.clear()
        self.outstanding = 0
        self._wake()


def _cancelling() -> bool:
    """Whether the current task is being cancelled (always ``False`` on 3.10)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling is not None and cancelling())


class MapIterator(Generic[T]):
    """The async iterator returned by :meth:`BoundedLoopExecutor.map`.

    **Laziness.** Never more than ``bound`` items are pulled from the source
    and not yet handed to the consumer (results waiting to be received
    count; with chunks, a chunk counts until its last item is handed out).
    An item is pulled before a slot is taken for it: the map never holds a
    slot while it waits for its source, and takes a slot (and a rate turn)
    only for an item, so a pull that finds the source empty takes none; a
    sync source is read only when a slot is free. Each pulled item then waits
    for a slot like any other caller (and may be refused with
    :class:`OverloadedError` under ``max_pending`` or ``max_wait``), and,
    with ``max_per_second``, for its turn. While no result is ready and the
    window has room, ``__anext__`` pulls and submits items; when a result
    becomes ready while an item is still being pulled or waits for its slot
    or turn, ``__anext__`` returns that result at once and the pulling goes
    on in the background, within the window, until the window is full or the
    iteration is finished. Ready results are therefore never held back behind
    the source, a slot or a turn. A sync iterable is iterated on the event
    loop's thread: it should not block.

    **Order.** ``ordered=True`` yields results in input order;
    ``ordered=False`` in the order the calls finish.

    **Context.** On a thread pool, each call runs in a copy of the
    :mod:`contextvars` context of the consumer's ``__anext__`` that pulled
    its item (for items pulled in the background: as it was when that
    ``__anext__`` started the pulling).

    **Errors.** An exception raised by ``fn`` ends the iteration with that
    exception when its result would have been yielded (a
    ``StopIteration`` or ``StopAsyncIteration`` raised by ``fn`` arrives as
    the ``__cause__`` of a ``RuntimeError``, never as a silent end). An
    exception raised by the source ends it after the results of the items
    pulled before it. An exception raised by the executor for an item
    (closed, overloaded, broken pool) is raised in that item's place. Once
    an exception has been raised, or ``StopAsyncIteration`` reached, the
    iterator is finished and keeps raising ``StopAsyncIteration``.

    **Clean-up.** The iteration is finished, and calls that have not started
    are cancelled (they never run, their slots are freed at once), when: it
    is exhausted or raises; ``aclose()`` is called or an ``async with`` block
    around it is left; ``__anext__`` is cancelled (cancellation ends the
    iteration); or the iterator is garbage-collected, e.g. right after a bare
    ``break`` in CPython (nothing the iterator registers with the loop keeps
    it alive). Calls already running go on; their slots are freed when they
    end, and their results are dropped. ``aclose()`` also closes the source
    if it is a generator or an async generator (as
    :func:`contextlib.aclosing` would); other iterators are left as they are.
    ``aclose()`` is idempotent; called while another task awaits
    ``__anext__``, that ``__anext__`` raises ``StopAsyncIteration``.

    With uvloop in debug mode on Python 3.12 and later, prefer ``async
    with`` or ``aclose()`` to a bare ``break``: finishing a collected
    iterator schedules callbacks, and uvloop's debug mode can crash the
    interpreter when a callback is scheduled while a frame is being torn
    down (uvloop issues 730 and 756; asyncio's own loop is not affected).
    """

    __slots__ = ("__weakref__", "_buffer", "_next", "_sizer", "_source", "_window")

    def __init__(
        self,
        window: _Window[Any],
        source: Iterator[Any] | AsyncIterator[Any],
        sizer: ChunkSizer | None,
    ) -> None:
        self._window = window
        # The window's way to the next result, chosen once.
        self._next = (
            window.next_in_order
            if window.ordered
            and window.sync_source is not None
            and not window.port.rate_limited
            else window.next
        )
        self._source = source
        self._sizer = sizer
        self._buffer: deque[T] = deque()

    @property
    def chunksize(self) -> int:
        """Items sent per call to the executor.

        When automatic, the size of the next chunk: it changes as it goes.
        """
        return 1 if self._sizer is None else self._sizer.size

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Coroutine[Any, Any, T]:
        """Return the next result.

        Cancellation: finishes the iteration (see the class docstring).
        """
        if self._sizer is None:
            return self._next(self)
        return self._next_from_chunks()

    async def _next_from_chunks(self) -> T:
        buffer = self._buffer
        if not buffer:
            results, seconds = await self._next(self)
            assert self._sizer is not None
            self._sizer.measured(len(results), seconds)
            buffer.extend(results)
            del results  # yielded items must not stay alive here
            # The chunk counts against the window until its last item is out.
            self._window.outstanding += 1
        item = buffer.popleft()
        if not buffer:
            window = self._window
            if not window.finished:
                window.outstanding -= 1
        return item

    async def aclose(self) -> None:
        """Finish the iteration and close a generator source. Idempotent.

        Cancellation: the iteration is finished before the first await, so
        only the closing of the source can be interrupted.
        """
        window = self._window
        window.finish()
        self._buffer.clear()
        pulling = window.pulling
        if pulling is not None:
            window.pulling = None
            if not pulling.done():
                # A pull under way must end before the source can be closed.
                await asyncio.wait([pulling])
        await close_source(self._source)

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
        window = getattr(self, "_window", None)
        if window is None or window.finished:
            return
        loop = window.loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            window.finish()
        else:
            with contextlib.suppress(RuntimeError):  # closed in the meantime
                loop.call_soon_threadsafe(window.finish)

    def __repr__(self) -> str:
        window = self._window
        state = "finished" if window.finished else "open"
        return (
            f"<{type(self).__name__} ordered={window.ordered} "
            f"chunksize={self.chunksize} outstanding={window.outstanding} {state}>"
        )


def make_map(
    port: MapPort,
    fn: Callable[[Any], T],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    ordered: bool,
    chunksize: int | None,
) -> MapIterator[T]:
    """Build the iterator for ``executor.map``.

    One item per call if ``chunksize == 1``, else chunks of ``chunksize``
    items (``None``: automatic size).

    Raises:
        TypeError: *items* is neither iterable nor async iterable.
    """
    source = open_source(items)
    if chunksize == 1:
        return MapIterator(_Window(port, fn, source, ordered=ordered), source, None)
    sizer = ChunkSizer(chunksize)
    window: _Window[Any] = _Window(
        port, ChunkCall(fn), chunked(source, sizer), ordered=ordered
    )
    return MapIterator(window, source, sizer)
