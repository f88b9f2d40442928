"""From a ``concurrent.futures.Future`` to an ``asyncio.Future``, in one hop.

This is the only module that deals with other threads. The underlying
executor completes its future in a worker thread (or, for process pools, in
the pool's management thread); the done callback registered here hops to the
event loop with a single ``call_soon_threadsafe`` and, there, first tells the
executor that the call ended (which frees its slot) and then translates the
outcome into the asyncio future. The slot is therefore freed only when the
underlying call has really ended.

When the asyncio future is cancelled (the caller stopped waiting), the
underlying future is asked to cancel too. That succeeds only for a call that
has not started; a running call goes on, and keeps its slot, until it ends.

If the loop is already closed when a call ends, there is nobody left to tell:
the hop is skipped, as :func:`asyncio.wrap_future` does.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import ClosedError

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    from collections.abc import Callable

__all__ = ("CANCELLED", "COMPLETED", "FAILED", "chain", "deliverable", "thread_id")

T = TypeVar("T")

# The identity of the calling thread: the executor notes its loop's, so that
# a completion already on that thread settles without a hop.
thread_id = threading.get_ident

# How a call ended, as reported to the executor's ``on_end``.
COMPLETED = 0
FAILED = 1
CANCELLED = 2


def chain(
    cfut: concurrent.futures.Future[T],
    loop: asyncio.AbstractEventLoop,
    loop_thread_id: int,
    on_end: Callable[[concurrent.futures.Future[Any], int], bool],
    explain: Callable[[BaseException], BaseException] | None = None,
) -> asyncio.Future[T]:
    """Return an asyncio future on *loop* that follows *cfut*.

    Once *cfut* is done, whoever completed it, ``on_end(cfut, outcome)`` runs
    on the loop (it frees the slot and counts the outcome, and returns whether
    the executor is closed), then the outcome is copied into the returned
    future unless that was cancelled. ``explain``, if given, may replace the
    call's exception with a clearer one; if it raises, the original exception
    is delivered. Cancelling the returned future cancels *cfut* if the call
    has not started.
    """
    afut: asyncio.Future[T] = loop.create_future()

    def on_afut_done(afut: asyncio.Future[T]) -> None:
        if afut.cancelled():
            cfut.cancel()

    def settle() -> None:
        _settle(afut, cfut, on_end, explain)

    def on_cfut_done(cfut: concurrent.futures.Future[T]) -> None:
        if threading.get_ident() == loop_thread_id:
            # Already on the loop's thread: the future was done when the
            # callback was added, or cancel() above completed it.
            settle()
            return
        try:  # noqa: SIM105 (hot path: cheaper than contextlib.suppress)
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed; nobody is waiting any more
            pass

    afut.add_done_callback(on_afut_done)
    cfut.add_done_callback(on_cfut_done)
    return afut


def _settle(
    afut: asyncio.Future[T],
    cfut: concurrent.futures.Future[T],
    on_end: Callable[[concurrent.futures.Future[Any], int], bool],
    explain: Callable[[BaseException], BaseException] | None,
) -> None:
    """On the loop, after the underlying call ended: report, then deliver."""
    if cfut.cancelled():
        closed = on_end(cfut, CANCELLED)
        if afut.done():  # the caller cancelled it: nothing to report
            return
        if closed:
            # Dropped by aclose(timeout=...) (or by the pool's shutdown after
            # close): say so, rather than cancel a task that was never
            # cancelled.
            afut.set_exception(
                ClosedError("the executor was closed before this call started")
            )
        else:
            afut.cancel()  # the pool cancelled it, e.g. shutdown(cancel_futures)
        return
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
        wrapped = RuntimeError(f"the submitted call raised {_describe(exc)}")
        wrapped.__cause__ = exc
        return wrapped
    return exc


def _describe(exc: BaseException) -> str:
    """``type: message`` of *exc*, never failing and never very long."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:
        return name
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{name}: {text}" if text else name
