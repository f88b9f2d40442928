"""Deadlines of the synchronous executor's calls once handed over.

A call made on a :class:`~aiobound.BoundedExecutor` with a time limit first
waits for its slot within its deadline (the shared bound's
:class:`~aiobound._shared.ThreadView` refuses it at the deadline). Once it is
handed over, its caller gets a :class:`TimedFuture`, which follows the
pool's future but raises :class:`~aiobound.DeadlineExceeded` at the deadline
if the call has not ended by then: the call is cancelled if it has not
started (it never runs, its slot is freed), stopped if the pool can stop it,
else left to run on, holding its slot until it ends (abandoned).

One :class:`DeadlineWatcher` per executor keeps those deadlines: a heap of
them and one thread, started at the first call handed over with a deadline
(an executor whose calls have none never starts it), that sleeps until the
earliest one. Calls that end before their deadline are settled by the
pool's own completion and leave their place in the heap, which is compacted
when more than half of it is such places.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import heapq
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

from ._waiting import COMPACT_SLACK

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._deadlines import Deadline

__all__ = ("DeadlineWatcher", "TimedFuture")

T = TypeVar("T")

# TimedFuture.watch: where it is in the watcher's hands (under its lock).
_WATCHED = 0
_SETTLED = 1  # the call ended first: its outcome was passed on
_MISSED = 2  # its deadline passed first: its caller got DeadlineExceeded


class TimedFuture(concurrent.futures.Future[T]):
    """The future of a call with a deadline, as its caller gets it.

    It ends with the call's outcome, or with
    :class:`~aiobound.DeadlineExceeded` at the deadline if the call has not
    ended by then. :meth:`cancel` cancels the call itself, and succeeds only
    if the call has not started (or the pool stops it); :meth:`running` is
    the call's. Its done callbacks run after the call's slot was freed.
    """

    def __init__(
        self,
        call: concurrent.futures.Future[T],
        deadline: Deadline,
        watcher: DeadlineWatcher,
    ) -> None:
        super().__init__()
        self._call: concurrent.futures.Future[T] | None = call
        self._deadline = deadline
        self._watcher = watcher
        self._watch = _WATCHED

    def cancel(self) -> bool:
        """Cancel the call if it has not started; then this future is cancelled.

        Returns ``False`` if the call runs (it goes on), has ended, or missed
        its deadline (this future then holds ``DeadlineExceeded``).
        """
        if self.cancelled():
            return True
        call = self._call
        if call is None or self.done():
            return False
        # A cancelled call ends at once: _follow cancels this future too.
        return call.cancel() and self.cancelled()

    def running(self) -> bool:
        """Whether the call is running (and its deadline has not passed)."""
        call = self._call
        return call is not None and not self.done() and call.running()

    def _follow(self, call: concurrent.futures.Future[T]) -> None:
        """The call ended (any thread): pass its outcome on, unless too late."""
        if not self._watcher.settled(self):
            return  # the caller was released at the deadline
        self._call = None
        if call.cancelled():
            if concurrent.futures.Future.cancel(self):
                self.set_running_or_notify_cancel()
            return
        exc = call.exception()
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if exc is None:
                self.set_result(call.result())
            else:
                self.set_exception(exc)


class DeadlineWatcher:
    """One executor's deadlines of calls handed over, kept by one thread.

    Args:
        on_miss: ``on_miss(stage, abandoned)``, in the watcher's thread, for
            each call whose deadline passed first: *stage* ``"queued"``
            (cancelled, never runs), ``"stopped"`` (running, stopped by the
            pool) or ``"running"`` (it ran on; *abandoned* unless it had
            just ended).
    """

    __slots__ = (
        "_closing",
        "_condition",
        "_heap",
        "_live",
        "_on_miss",
        "_order",
        "_thread",
    )

    def __init__(self, on_miss: Callable[[str, bool], None]) -> None:
        self._on_miss = on_miss
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimedFuture[Any]]] = []
        self._order = itertools.count()  # ties in the heap: first made first
        self._live = 0  # futures in the heap still _WATCHED
        self._closing = False
        self._thread: threading.Thread | None = None

    def watch(
        self, call: concurrent.futures.Future[T], deadline: Deadline
    ) -> TimedFuture[T]:
        """Return the caller's future of *call*, released at *deadline*."""
        timed = TimedFuture(call, deadline, self)
        entry = (deadline.due, next(self._order), timed)
        with self._condition:
            heap = self._heap
            earliest = heap[0][0] if heap else None
            heapq.heappush(heap, entry)
            self._live += 1
            if len(heap) > 2 * self._live + COMPACT_SLACK:
                heap[:] = [e for e in heap if e[2]._watch == _WATCHED]
                heapq.heapify(heap)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="aiobound-deadlines", daemon=True
                )
                self._thread.start()
            elif earliest is None or deadline.due < earliest:
                self._condition.notify()
        call.add_done_callback(timed._follow)  # at once if it has ended
        return timed

    def settled(self, timed: TimedFuture[Any]) -> bool:
        """*timed*'s call ended: whether its outcome is to be passed on."""
        with self._condition:
            if timed._watch != _WATCHED:
                return False
            timed._watch = _SETTLED
            self._live -= 1
            if self._closing and not self._live:
                self._condition.notify()
        return True

    def close(self, wait: bool) -> None:
        """Stop the thread once no call is watched (at once if none is).

        With *wait*, block until it has stopped. Calls still watched keep
        their deadlines until they end.
        """
        with self._condition:
            self._closing = True
            self._condition.notify()
            thread = self._thread
        if wait and thread is not None:
            thread.join()

    def _run(self) -> None:
        """The thread: sleep until the earliest deadline; release its caller."""
        condition = self._condition
        heap = self._heap
        while True:
            with condition:
                while True:
                    while heap and heap[0][2]._watch != _WATCHED:
                        heapq.heappop(heap)
                    if not heap:
                        if self._closing:
                            self._thread = None
                            return
                        condition.wait()
                        continue
                    left = heap[0][0] - time.monotonic()
                    if left <= 0:  # never before the deadline
                        timed = heapq.heappop(heap)[2]
                        timed._watch = _MISSED
                        self._live -= 1
                        break
                    condition.wait(left)
            self._missed(timed)

    def _missed(self, timed: TimedFuture[Any]) -> None:
        """Out of the lock: stop or leave the call; release its caller."""
        call = timed._call
        timed._call = None
        assert call is not None
        running = call.running()
        if call.cancel():
            stage, abandoned = ("stopped" if running else "queued"), False
        else:  # running: it goes on, unless it has just ended
            stage, abandoned = "running", not call.done()
        error = timed._deadline.exceeded(stage)
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            timed.set_exception(error)
        self._on_miss(stage, abandoned)
