"""From a ``concurrent.futures.Future`` to an ``asyncio.Future``, in one hop.

This is the only module that deals with other threads. The underlying
executor completes its future in a worker thread (or, for process pools, in
the pool's management thread); the done callback registered here hops to the
event loop with a single ``call_soon_threadsafe`` and runs ``settle`` there,
which frees the slot *and* settles the asyncio future. The slot is therefore
freed only when the underlying call has really ended.

When the asyncio future is cancelled (the caller stopped waiting), the
underlying future is asked to cancel too. That succeeds only for a call that
has not started; a running call goes on, and keeps its slot, until it ends.

If the loop is already closed when a call ends, there is nobody left to tell:
the hop is skipped, as :func:`asyncio.wrap_future` does.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    from collections.abc import Callable

__all__ = ("chain",)

T = TypeVar("T")


def chain(
    cfut: concurrent.futures.Future[T],
    loop: asyncio.AbstractEventLoop,
    loop_thread_id: int,
    settle: Callable[[asyncio.Future[T], concurrent.futures.Future[T]], None],
) -> asyncio.Future[T]:
    """Return an asyncio future on *loop* that follows *cfut*.

    ``settle(afut, cfut)`` runs on the loop once *cfut* is done, whoever
    completed it; it must free the slot and copy the outcome into ``afut``
    unless ``afut`` was cancelled. Cancelling ``afut`` cancels ``cfut`` if the
    call has not started.
    """
    afut: asyncio.Future[T] = loop.create_future()

    def on_afut_done(afut: asyncio.Future[T]) -> None:
        if afut.cancelled():
            cfut.cancel()

    def on_cfut_done(cfut: concurrent.futures.Future[T]) -> None:
        if threading.get_ident() == loop_thread_id:
            # Already on the loop's thread: the future was done when the
            # callback was added, or cancel() above completed it.
            settle(afut, cfut)
            return
        try:  # noqa: SIM105 (hot path: cheaper than contextlib.suppress)
            loop.call_soon_threadsafe(settle, afut, cfut)
        except RuntimeError:  # the loop is closed; nobody is waiting any more
            pass

    afut.add_done_callback(on_afut_done)
    cfut.add_done_callback(on_cfut_done)
    return afut
