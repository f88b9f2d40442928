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

from aiobound import BoundedExecutor, ClosedError, OverloadedError, _chunks
from aiobound._sync import _Port
from aiobound._sync_map import map_results
from conftest import CountingExecutor
from sync_helpers import TIMEOUT, Latch, started, until

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

    @pytest.mark.parametrize("chunksize", [1, 2])
    def test_a_timeout_does_not_wait_for_a_result_that_comes_later(
        self, chunksize: int
    ) -> None:
        release = threading.Event()

        def held(n: int) -> int:
            release.wait(TIMEOUT)  # then returns: a map that waited gets it
            return n

        with BoundedExecutor(max_workers=2, bound=2) as executor:
            results = executor.map(held, range(4), timeout=0.01, chunksize=chunksize)
            with pytest.raises(TimeoutError):
                next(results)
            release.set()
        assert executor.stats().in_flight == 0

    def test_a_call_cancelled_by_shutdown_raises_closed_error_in_its_place(
        self, latch: Latch
    ) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        occupant = pool.submit(latch, "occupant")  # the only worker is busy
        latch.wait_started(1)
        executor = BoundedExecutor(executor=pool, bound=4)
        results = executor.map(abs, [-1, -2])
        consumer = started(lambda: next(results))
        until(lambda: executor.stats().in_flight == 2, "both calls to queue")
        executor.shutdown(wait=False, cancel_futures=True)
        with pytest.raises(ClosedError, match="closed before this call started"):
            consumer.finish()
        latch.open()
        occupant.result()
        pool.shutdown()
        assert executor.stats().cancelled == 2


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

    def test_an_item_without_a_free_slot_waits_in_hand_behind_the_results(
        self, latch: Latch
    ) -> None:
        pulled: list[int] = []

        def items() -> Iterator[int]:
            for n in (-1, -2):
                pulled.append(n)
                yield n

        first_done = threading.Event()

        def held_on_first(n: int) -> int:
            if n == -1:
                first_done.wait(TIMEOUT)
            return abs(n)

        with BoundedExecutor(max_workers=2, bound=2) as executor:
            holder = executor.submit(latch, "holder")  # one of the two slots
            results = executor.map(held_on_first, items())
            consumer = started(lambda: next(results))
            until(lambda: pulled == [-1, -2], "-2 to be pulled")
            (first,) = (f for f in executor._calls if f is not holder)
            # The consumer waits for -1's result: -2 found no free slot.
            waiters = first._condition._waiters  # type: ignore[attr-defined]
            until(lambda: len(waiters) == 1, "the consumer to wait for -1")
            first_done.set()
            assert consumer.finish() == 1
            assert executor.stats().submitted == 2  # -2 is still in hand
            assert next(results) == 2
            with pytest.raises(StopIteration):
                next(results)
            latch.open()
            assert holder.result() == "holder"


class NoTime:
    """Stands for the time module where chunks are timed: they take none."""

    @staticmethod
    def perf_counter() -> float:
        return 0.0


class TestAutomaticChunks:
    def test_they_start_at_one_item_and_double_while_they_run_fast(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Automatic on process pools only: here map_results is asked for it.
        monkeypatch.setattr(_chunks, "time", NoTime)
        pool = CountingExecutor(1)
        with BoundedExecutor(executor=pool, bound=1) as executor:
            port = _Port(executor, None)  # one chunk at a time: each is timed
            results = map_results(port, abs, iter(range(-15, 0)), None, None)
            assert list(results) == list(range(15, 0, -1))
        assert pool.submits == 4  # chunks of 1, 2, 4 and 8 items
        pool.shutdown()


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

    def test_a_shutdown_between_a_pull_and_its_slot_comes_after_the_results_due(
        self,
    ) -> None:
        executor = BoundedExecutor(max_workers=2, bound=4)

        def items() -> Iterator[int]:
            yield -1
            executor.shutdown(wait=False)  # the next item is in hand, no slot
            yield -2
            yield -3

        results = executor.map(abs, items())
        assert next(results) == 1  # handed over before the shutdown
        with pytest.raises(
            ClosedError, match=r"^cannot submit: the executor is closed$"
        ):
            next(results)  # in place of the item held when the slot was refused
        with pytest.raises(StopIteration):
            next(results)
        executor.shutdown()
        assert executor.stats().submitted == 1

    def test_a_shutdown_while_a_pull_waits_for_its_slot_raises_closed_error(
        self, latch: Latch
    ) -> None:
        executor = BoundedExecutor(max_workers=1, bound=1)
        holder = executor.submit(latch, "holder")  # the only slot
        results = executor.map(abs, [-1, -2])
        consumer = started(lambda: next(results))
        until(lambda: executor.stats().waiting == 1, "the pull to wait for a slot")
        executor.shutdown(wait=False)
        with pytest.raises(ClosedError, match="closed while this call waited"):
            consumer.finish()
        with pytest.raises(StopIteration):
            next(results)
        latch.open()
        assert holder.result() == "holder"
        executor.shutdown()
        assert executor.stats().submitted == 1


class Pulls:
    """An iterator of -1, -2, ... that counts its pulls, a generator's twin.

    Pull *end* raises *error* (default: it stops); every pull after that
    stops, as a generator's does, and is counted.
    """

    def __init__(self, end: int, error: Exception | None = None) -> None:
        self.end = end
        self.error = error
        self.pulls = 0

    def __iter__(self) -> Pulls:
        return self

    def __next__(self) -> int:
        self.pulls += 1
        if self.pulls == self.end and self.error is not None:
            raise self.error
        if self.pulls >= self.end:
            raise StopIteration
        return -self.pulls


class TestTheSourceEnds:
    def test_a_source_is_not_pulled_again_once_it_stopped(self) -> None:
        source = Pulls(end=4)
        with BoundedExecutor(max_workers=2, bound=8) as executor:
            assert list(executor.map(abs, source)) == [1, 2, 3]
        assert source.pulls == 4

    def test_a_source_is_not_pulled_again_once_it_raised(self) -> None:
        source = Pulls(end=4, error=LookupError("source"))
        with BoundedExecutor(max_workers=2, bound=8) as executor:
            results = executor.map(abs, source)
            assert [next(results) for _ in range(3)] == [1, 2, 3]
            with pytest.raises(LookupError, match=r"^source$"):
                next(results)
            with pytest.raises(StopIteration):
                next(results)
        assert source.pulls == 4


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
