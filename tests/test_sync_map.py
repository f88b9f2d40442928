"""BoundedExecutor.map's promises (aiobound._sync_map), held as Executor.map's.

* leaving early cancels every call not started, the one whose result was
  awaited included (a ``timeout``, an exception from a signal handler);
* an item is pulled before its slot is taken: a source with nothing left
  takes no slot, and is never refused or blocked for one;
* after ``shutdown()``, the results of the calls already handed over are
  still delivered, then :class:`ClosedError`;
* each result is freed as it is yielded, in chunks too, on thread and
  process pools (CPython's own ``test_free_reference``);
* ``chunksize`` and ``timeout`` are checked at the call, naming them.
"""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import signal
import sys
import threading
import weakref
from typing import TYPE_CHECKING

import pytest

from aiobound import BoundedExecutor, ClosedError, OverloadedError
from sync_helpers import Latch, until

if TYPE_CHECKING:
    from collections.abc import Iterator

# forkserver, not fork: forking a process that runs threads can deadlock.
CONTEXT = multiprocessing.get_context("forkserver")


@pytest.fixture
def latch() -> Iterator[Latch]:
    made = Latch()
    yield made
    made.open()


class Dummy:
    """An object a weak reference can watch."""

    def __init__(self, n: int) -> None:
        self.n = n


def make_dummy(n: int) -> Dummy:
    return Dummy(n)


class Recorder:
    def __init__(self) -> None:
        self.ran: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, n: int) -> int:
        with self._lock:
            self.ran.append(n)
        return n


class TestLeavingEarly:
    def test_a_timeout_while_waiting_for_a_result_cancels_that_call_too(
        self, latch: Latch
    ) -> None:
        """Issue 23, item 5: the head's call must not run after the consumer left."""
        pool = concurrent.futures.ThreadPoolExecutor(1)
        occupant = pool.submit(latch, "occupant")  # the only worker is busy
        latch.wait_started(1)
        record = Recorder()
        with BoundedExecutor(executor=pool, bound=4) as executor:
            results = executor.map(record, range(3), timeout=0.01)
            with pytest.raises(TimeoutError):
                next(results)  # waits for item 0, queued behind the occupant
            latch.open()
            occupant.result()
        pool.shutdown()
        assert record.ran == []  # none of the three ran, item 0 included
        stats = executor.stats()
        assert (stats.submitted, stats.cancelled, stats.in_flight) == (3, 3, 0)

    def test_an_interrupt_while_waiting_for_a_result_cancels_that_call_too(
        self, latch: Latch
    ) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        occupant = pool.submit(latch, "occupant")
        latch.wait_started(1)
        record = Recorder()
        executor = BoundedExecutor(executor=pool, bound=4)
        results = executor.map(record, range(3))

        handled = threading.Event()

        def raise_interrupted(signum: int, frame: object) -> None:
            if not handled.is_set():  # once: later signals are ignored
                handled.set()
                raise Interrupted

        def send_and_check() -> bool:
            # Sent again until handled: a signal that lands just before the
            # thread blocks waits for it to wake; the next one interrupts it.
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
            return handled.is_set()

        def interrupt_the_consumer() -> None:
            until(lambda: executor.stats().in_flight == 3, "the calls to queue")
            until(send_and_check, "the consumer to be interrupted")

        previous = signal.signal(signal.SIGUSR1, raise_interrupted)
        try:
            interrupter = threading.Thread(target=interrupt_the_consumer)
            interrupter.start()
            with pytest.raises(Interrupted):
                next(results)  # blocked on item 0's result when the signal comes
            interrupter.join()
        finally:
            signal.signal(signal.SIGUSR1, previous)
        latch.open()
        occupant.result()
        executor.shutdown()
        pool.shutdown()
        assert record.ran == []


class Interrupted(Exception):
    """Raised by a signal handler in the consumer's thread."""


class TestPullThenSlot:
    def test_an_empty_source_takes_no_slot_and_is_never_refused(
        self, latch: Latch
    ) -> None:
        """Item 6: nothing to pull, nothing to wait for or refuse."""
        with BoundedExecutor(max_workers=1, bound=1, max_pending=0) as executor:
            held = executor.submit(latch, "holder")
            assert list(executor.map(abs, [])) == []
            assert executor.stats().rejected == 0
            latch.open()
            held.result()

    def test_the_last_pull_takes_no_slot_when_every_result_is_in(
        self, latch: Latch
    ) -> None:
        with BoundedExecutor(max_workers=1, bound=1, max_pending=0) as executor:
            results = executor.map(abs, [-1])
            assert next(results) == 1
            held = executor.submit(latch, "holder")  # the only slot
            with pytest.raises(StopIteration):
                next(results)  # the source is empty: no slot wanted
            assert executor.stats().rejected == 0
            latch.open()
            held.result()
        stats = executor.stats()
        assert (stats.submitted, stats.peak_in_flight) == (2, 1)
        assert stats.queue_wait.count == 2  # one grant per call, no phantom


class TestAfterShutdown:
    def test_results_of_calls_already_handed_over_come_then_closed_error(
        self,
    ) -> None:
        """Item 7: as the async map: the results due, then ClosedError."""
        executor = BoundedExecutor(max_workers=2, bound=4)
        results = executor.map(abs, range(0, -10, -1))
        assert next(results) == 0  # items 0-3 were handed over
        executor.shutdown(wait=True)
        assert [next(results) for _ in range(3)] == [1, 2, 3]
        with pytest.raises(ClosedError):
            next(results)
        with pytest.raises(StopIteration):
            next(results)


class TestFreeAsYouYield:
    @pytest.mark.parametrize("chunksize", [1, 4])
    def test_threads_free_each_result_as_it_is_yielded(self, chunksize: int) -> None:
        """Item 9, on threads: with chunks, the chunk keeps no yielded result."""
        with BoundedExecutor(max_workers=2) as executor:
            for obj in executor.map(make_dummy, range(12), chunksize=chunksize):
                ref = weakref.ref(obj)
                del obj
                gc.collect()
                assert ref() is None

    def test_process_pools_free_each_result_as_it_is_yielded(self) -> None:
        """Item 9: CPython's test_free_reference, on automatic chunks."""
        with BoundedExecutor.process(max_workers=2, mp_context=CONTEXT) as executor:
            for obj in executor.map(make_dummy, range(10)):
                ref = weakref.ref(obj)
                del obj
                gc.collect()
                assert ref() is None


class TestArguments:
    def test_a_huge_chunksize_is_refused_at_the_call_naming_it(self) -> None:
        """Item 15, the synchronous half."""
        with BoundedExecutor(max_workers=1) as executor:
            with pytest.raises(ValueError, match="chunksize must be at most"):
                executor.map(abs, [1], chunksize=2**63)
            assert list(executor.map(abs, [-1], chunksize=sys.maxsize)) == [1]

    def test_a_timeout_no_thread_can_wait_for_is_refused(self) -> None:
        with (
            BoundedExecutor(max_workers=1) as executor,
            pytest.raises(ValueError, match="timeout must be at most"),
        ):
            executor.map(abs, [1], timeout=threading.TIMEOUT_MAX * 2)


class TestOverloadStillHolds:
    def test_max_pending_still_refuses_an_item_that_has_to_wait(
        self, latch: Latch
    ) -> None:
        with BoundedExecutor(max_workers=1, bound=1, max_pending=0) as executor:
            held = executor.submit(latch, "holder")
            with pytest.raises(OverloadedError):
                list(executor.map(abs, [-1]))
            latch.open()
            held.result()
