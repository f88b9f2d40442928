"""From a ``concurrent.futures.Future`` back to the event loop, in batches.

This is the only module (with the process pool's watchdog) that deals with
other threads. The underlying executor completes its future in a worker
thread (or, for process pools, in the pool's management thread). The done
callback registered here queues the finished call and, unless a drain is
already scheduled, schedules one with ``call_soon_threadsafe``: a burst of
completions wakes the loop once, not once per call. On the loop, the drain
takes every queued call and, for each, first tells the executor that the call
ended (which frees its slot) and then translates the outcome into the asyncio
future. The slot is therefore freed only when the underlying call has really
ended.

No completion waits for a later one: the drain marks itself unscheduled
*before* it empties the queue, so a call queued while a drain runs is either
taken by that drain or schedules the next one. A completion that happens on
the loop's own thread (the future was already done, or ``cancel()`` completed
it there) settles at once, without the queue.

When the asyncio future is cancelled (the caller stopped waiting), the
underlying future is asked to cancel too. That succeeds only for a call that
has not started; a running call goes on, and keeps its slot, until it ends.

If the loop is already closed when a call ends, there is nobody left to tell:
the hop is skipped, as :func:`asyncio.wrap_future` does. A gate whose slots
must come back whatever becomes of the loop (a shared bound's view) gives
the bridge its thread-safe ``release``, which then runs in the thread that
completed the call, before the hop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import closed_before_start, safe_str
from ._stats import CANCELLED, COMPLETED, FAILED

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    # on_end(cfut, outcome) -> whether the executor is closed.
    OnEnd: TypeAlias = Callable[[concurrent.futures.Future[Any], int], bool]

__all__ = ("CANCELLED", "COMPLETED", "FAILED", "Bridge", "deliverable", "thread_id")

T = TypeVar("T")

# The identity of the calling thread.
thread_id = threading.get_ident

# A plain concurrent future, and its state once finished: such a future is
# read without its lock (tests/test_bridge.py checks these names on every
# supported Python).
_PLAIN_FUTURE = concurrent.futures.Future
_FINISHED = "FINISHED"


class Bridge:
    """The way back to one event loop for the calls of one lane.

    Args:
        loop: The executor's event loop; the bridge must be made on its
            thread.
        on_end: ``on_end(cfut, outcome)`` runs on the loop once a call ended;
            it frees the slot and counts the outcome, and returns whether the
            executor is closed.
        release: For a gate that takes its slots back from any thread: its
            ``release``, called in the thread that completed each call,
            before the hop to the loop (so a slot comes back even if the
            loop is closed by then). ``None``: ``on_end`` frees the slot.
    """

    __slots__ = (
        "_done",
        "_drain_scheduled",
        "_ended",
        "_loop",
        "_on_end",
        "_release",
        "loop_thread_id",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_end: OnEnd,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._on_end = on_end
        self._release = release
        self.loop_thread_id = threading.get_ident()
        # (afut, cfut, explain, on_settled) of calls that ended and are not
        # settled yet.
        self._ended: deque[
            tuple[
                _CallFuture[Any],
                concurrent.futures.Future[Any],
                Callable[[BaseException], BaseException] | None,
                Callable[[asyncio.Future[Any]], object] | None,
            ]
        ] = deque()
        self._drain_scheduled = False
        # The done callback of every call, chosen once.
        self._done = self._call_ended if release is None else self._release_first

    def chain(
        self,
        cfut: concurrent.futures.Future[T],
        explain: Callable[[BaseException], BaseException] | None = None,
        on_settled: Callable[[asyncio.Future[Any]], object] | None = None,
    ) -> asyncio.Future[T]:
        """Return an asyncio future on the loop that follows *cfut*.

        Once *cfut* is done, whoever completed it, ``on_end`` runs on the loop,
        then the outcome is copied into the returned future unless that was
        cancelled. ``explain``, if given, may replace the call's exception
        with a clearer one; if it raises, the original exception is
        delivered. ``on_settled``, if given, is then called with the returned
        future in the same step (no extra hop through the loop, unlike a done
        callback); it may run before ``chain`` returns, when *cfut* is already
        done. Cancelling the returned future cancels *cfut* if the call has
        not started.
        """
        afut: _CallFuture[T] = _CallFuture(loop=self._loop)
        afut.underlying = cfut
        cfut.add_done_callback(functools.partial(self._done, afut, explain, on_settled))
        return afut

    def _release_first(self, *ended: Any) -> None:
        """:meth:`_call_ended`, after freeing the slot in this thread."""
        assert self._release is not None
        self._release()
        self._call_ended(*ended)

    def _call_ended(
        self,
        afut: _CallFuture[Any],
        explain: Callable[[BaseException], BaseException] | None,
        on_settled: Callable[[asyncio.Future[Any]], object] | None,
        cfut: concurrent.futures.Future[Any],
    ) -> None:
        """In whichever thread completed *cfut*: settle, or queue for the loop."""
        if threading.get_ident() == self.loop_thread_id:
            _settle(afut, cfut, self._on_end, explain)
            afut.underlying = None
            if on_settled is not None:
                on_settled(afut)
            return
        self._ended.append((afut, cfut, explain, on_settled))
        if not self._drain_scheduled:
            self._schedule_drain()

    def _schedule_drain(self) -> None:
        self._drain_scheduled = True
        # The loop is closed: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the loop: settle every call that ended, in the order they did.

        The common case, a plain future that returned a result, is settled
        here without a call to :func:`_settle`.
        """
        self._drain_scheduled = False  # before taking: see the module docstring
        ended = self._ended
        on_end = self._on_end
        try:
            while ended:
                afut, cfut, explain, on_settled = ended.popleft()
                if (
                    type(cfut) is _PLAIN_FUTURE
                    and cfut._state == _FINISHED
                    and cfut._exception is None
                ):
                    on_end(cfut, COMPLETED)
                    if not afut.done():
                        afut.set_result(cfut._result)
                else:
                    _settle(afut, cfut, on_end, explain)
                afut.underlying = None
                if on_settled is not None:
                    on_settled(afut)
        finally:
            if ended and not self._drain_scheduled:
                self._schedule_drain()  # an error stopped this drain early


class _CallFuture(asyncio.Future[T]):
    """The asyncio future of a submitted call: cancelling it cancels the call.

    ``cancel()`` asks the underlying future to cancel at once, in the same
    step (``Task.cancel()``, ``wait_for`` and ``gather`` all call it): a call
    not yet started never runs and its slot is freed right there. A running
    call cannot be cancelled and goes on. Doing this in ``cancel()`` rather
    than in a done callback spares every call a callback of its own.
    """

    __slots__ = ("underlying",)

    # None once settled: the underlying future keeps its done callbacks, one
    # of which refers to this future; dropping the way back breaks that cycle,
    # so a finished call is freed at once rather than by the garbage collector.
    underlying: concurrent.futures.Future[T] | None

    def cancel(self, msg: Any | None = None) -> bool:
        if not super().cancel(msg):
            return False
        if self.underlying is not None:
            self.underlying.cancel()
        return True


def _settle(
    afut: asyncio.Future[T],
    cfut: concurrent.futures.Future[T],
    on_end: OnEnd,
    explain: Callable[[BaseException], BaseException] | None,
) -> None:
    """On the loop, after the underlying call ended: report, then deliver."""
    if type(cfut) is _PLAIN_FUTURE and cfut._state == _FINISHED:
        # The common case, read without the future's lock: a finished plain
        # future never changes again, and its callbacks run after it finished.
        exc = cfut._exception
        if exc is None:
            on_end(cfut, COMPLETED)
            if not afut.done():
                afut.set_result(cfut._result)  # type: ignore[arg-type]
            return
    elif cfut.cancelled():
        closed = on_end(cfut, CANCELLED)
        if afut.done():  # the caller cancelled it: nothing to report
            return
        if closed:
            # Dropped by aclose(timeout=...) (or by the pool's shutdown after
            # close): say so, rather than cancel a task that was never
            # cancelled.
            afut.set_exception(closed_before_start())
        else:
            afut.cancel()  # the pool cancelled it, e.g. shutdown(cancel_futures)
        return
    else:
        exc = cfut.exception()
        if exc is None:
            on_end(cfut, COMPLETED)
            if not afut.done():
                afut.set_result(cfut.result())
            return
    on_end(cfut, FAILED)
    if not afut.done():
        afut.set_exception(deliverable(exc, explain))


def deliverable(
    exc: BaseException, explain: Callable[[BaseException], BaseException] | None
) -> BaseException:
    """The exception to give the caller for a call that raised *exc*.

    ``explain`` may reword it; if ``explain`` itself fails, *exc* is kept.
    What an asyncio future or an ``async for`` cannot carry faithfully is
    wrapped in a :class:`RuntimeError` whose ``__cause__`` is *exc*:
    ``StopIteration`` (it would end a coroutine), ``StopAsyncIteration`` (it
    would silently end an ``async for`` over ``map``), and any
    ``BaseException`` that is not an ``Exception`` (a ``KeyboardInterrupt`` or
    ``SystemExit`` raised by ``fn`` in a worker would escape the event loop
    and stop it; a ``CancelledError`` would pose as the caller's own
    cancellation).
    """
    if explain is not None:
        with contextlib.suppress(Exception):  # the original error still holds
            exc = explain(exc)
    if isinstance(exc, (StopIteration, StopAsyncIteration)) or not isinstance(
        exc, Exception
    ):
        wrapped = RuntimeError(f"the submitted call raised {safe_str(exc, 200)}")
        wrapped.__cause__ = exc
        return wrapped
    return exc
