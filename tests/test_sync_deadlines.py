"""BoundedExecutor's deadlines: call_timeout=, with_timeout(), remaining().

The synchronous twin of tests/test_deadlines.py. At its deadline a caller
gets ``DeadlineExceeded``, and its call, by where it is: a thread blocked
for a slot leaves the queue and nothing runs; a call queued in the pool is
cancelled; a running one goes on in its thread, holding its slot until it
ends (``abandoned``). Real thread pools; the tests wait on events and
futures, never on the clock, except for the deadlines themselves.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING

import pytest

import workers
from aiobound import (
    BoundedExecutor,
    DeadlineExceeded,
    OverloadedError,
    SharedBound,
    remaining,
)
from aiobound._deadlines import Deadline
from aiobound._shared import ThreadView
from aiobound._sync_deadlines import DeadlineWatcher
from aiobound._waiting import COMPACT_SLACK
from conftest import CountingExecutor
from sync_helpers import TIMEOUT, Latch, started, until

if TYPE_CHECKING:
    from collections.abc import Iterator

SHORT = 0.05  # a deadline that passes while a latch holds the call


def asleep(watcher: DeadlineWatcher) -> list[object]:
    """Wait until the watcher's thread sleeps on its condition; its waiters.

    CPython's ``Condition`` keeps one entry per sleeping thread: a thread
    woken drops its entry before it reads anything.
    """
    waiters: list[object] = watcher._condition._waiters  # type: ignore[attr-defined]
    until(lambda: len(waiters) == 1, "the watcher to sleep")
    return waiters


@pytest.fixture
def latch() -> Iterator[Latch]:
    made = Latch()
    yield made
    made.open()


def time_left(_: object = None) -> float | None:
    return remaining()


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aiobound-deadlines"]


class TestWhereTheCallIs:
    def test_a_thread_waiting_for_a_slot_leaves_and_nothing_runs(
        self, latch: Latch
    ) -> None:
        with BoundedExecutor(max_workers=1, bound=1) as executor:
            holder = executor.submit(latch, 0)
            latch.wait_started(1)
            ran = threading.Event()
            for _ in range(2):
                with pytest.raises(DeadlineExceeded) as info:
                    executor.with_timeout(SHORT).submit(ran.set)
                assert info.value.stage == "waiting"
                assert info.value.timeout == SHORT
            stats = executor.stats()
            assert (stats.waiting, stats.in_flight, stats.submitted) == (0, 1, 1)
            assert (stats.deadline_waiting, stats.timed_out) == (2, 0)
            latch.open()
            assert holder.result() == 0
        assert not ran.is_set()

    def test_a_call_queued_in_the_pool_is_cancelled_and_never_runs(
        self, latch: Latch
    ) -> None:
        with BoundedExecutor(max_workers=1, bound=3) as executor:
            holder = executor.submit(latch, 0)
            latch.wait_started(1)
            ran = threading.Event()
            view = executor.with_timeout(SHORT)
            for future in [view.submit(ran.set), view.submit(ran.set)]:
                with pytest.raises(DeadlineExceeded) as info:
                    future.result()
                assert info.value.stage == "queued"
            stats = executor.stats()
            assert (stats.in_flight, stats.deadline_queued, stats.cancelled) == (
                1,
                2,
                2,
            )
            assert stats.abandoned == 0
            latch.open()
            assert holder.result() == 0
        assert not ran.is_set()

    def test_a_running_call_is_abandoned_its_slot_held_until_it_ends(
        self, latch: Latch
    ) -> None:
        executor = BoundedExecutor(max_workers=1, bound=1)
        future = executor.with_timeout(SHORT).submit(latch, 0)
        with pytest.raises(DeadlineExceeded) as info:
            future.result()
        assert info.value.stage == "running"
        assert latch.running == 1  # released while the call still runs
        stats = executor.stats()
        assert (stats.in_flight, stats.deadline_running, stats.abandoned) == (1, 1, 1)
        with pytest.raises(DeadlineExceeded, match="waiting"):  # the bound holds
            executor.with_timeout(SHORT).submit(time_left)
        latch.open()
        executor.shutdown()
        stats = executor.stats()
        assert (stats.in_flight, stats.completed, stats.abandoned) == (0, 1, 1)
        assert stats.submitted == stats.completed

    def test_two_running_calls_abandoned_count_twice(self, latch: Latch) -> None:
        executor = BoundedExecutor(max_workers=2, bound=2)
        view = executor.with_timeout(SHORT)
        for future in [view.submit(latch, 0), view.submit(latch, 1)]:
            with pytest.raises(DeadlineExceeded, match="running"):
                future.result()
        stats = executor.stats()
        assert (stats.deadline_running, stats.abandoned) == (2, 2)
        latch.open()
        executor.shutdown()
        assert executor.stats().completed == 2

    def test_a_deadline_passed_when_the_free_slot_is_taken_hands_nothing_over(
        self,
    ) -> None:
        ran = threading.Event()
        with BoundedExecutor(max_workers=1, bound=1) as executor:
            view = executor.with_timeout(1e-9)  # passed by the time it is read
            for _ in range(2):
                with pytest.raises(DeadlineExceeded) as info:
                    view.submit(ran.set)
                assert info.value.stage == "waiting"
            stats = executor.stats()
            assert (stats.submitted, stats.in_flight, stats.deadline_waiting) == (
                0,
                0,
                2,
            )
            assert executor.submit(abs, -1).result() == 1  # the slot is free
        assert not ran.is_set()
        assert executor.stats().submitted == 1

    def test_a_call_that_ends_in_time_gets_its_result(self) -> None:
        with BoundedExecutor(max_workers=2) as executor:
            view = executor.with_timeout(3600)
            futures = [view.submit(pow, 2, n) for n in range(20)]
            assert [f.result() for f in futures] == [2**n for n in range(20)]
            assert not futures[0].cancel()  # ended
        stats = executor.stats()
        assert stats.completed == 20
        assert stats.deadline_waiting + stats.deadline_queued == 0
        assert stats.deadline_running == stats.abandoned == 0

    def test_the_callers_future_cancels_a_call_not_started(self, latch: Latch) -> None:
        with BoundedExecutor(max_workers=1, bound=2) as executor:
            executor.submit(latch, 0)
            latch.wait_started(1)
            future = executor.with_timeout(3600).submit(latch, 1)
            assert not future.running()
            assert future.cancel()
            assert future.cancelled()
            assert future.cancel()  # cancelled already: still True, as the pool's
            done, _ = concurrent.futures.wait([future], timeout=0)
            assert done == {future}
            assert executor.stats().in_flight == 1  # its slot is freed
            latch.open()
        assert executor.stats().cancelled == 1
        assert latch.started == [0]

    def test_the_callers_future_says_when_its_call_runs(self, latch: Latch) -> None:
        with BoundedExecutor(max_workers=1) as executor:
            future = executor.with_timeout(3600).submit(latch, 0)
            latch.wait_started(1)
            assert future.running()
            assert not future.cancel()  # running: it goes on
            latch.open()
            assert future.result() == 0
            assert not future.running()


class TestTheWatcher:
    def test_it_starts_with_the_first_timed_call_and_stops_at_shutdown(self) -> None:
        before = len(watcher_threads())
        executor = BoundedExecutor(max_workers=1)
        assert executor.submit(pow, 2, 2).result() == 4
        assert list(executor.map(abs, [-1])) == [1]
        assert executor._watcher is None  # no limit, no thread
        assert len(watcher_threads()) == before
        assert executor.with_timeout(3600).submit(pow, 2, 3).result() == 8
        assert len(watcher_threads()) == before + 1
        executor.shutdown()
        assert len(watcher_threads()) == before

    def test_shutdown_returns_once_the_thread_has_stopped(self) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        executor = BoundedExecutor(executor=pool, bound=1, call_timeout=3600)
        assert executor.submit(pow, 2, 3).result() == 8
        watcher = executor._watcher
        assert watcher is not None
        thread = watcher._thread
        assert thread is not None
        executor.shutdown()  # the pool is not its own: nothing else to wait for
        assert not thread.is_alive()
        pool.shutdown()

    def test_shutdown_again_once_the_thread_has_stopped_is_harmless(self) -> None:
        executor = BoundedExecutor(max_workers=1, call_timeout=3600)
        assert executor.submit(pow, 2, 3).result() == 8
        executor.shutdown()
        executor.shutdown()
        executor.shutdown(wait=False)
        assert executor.stats().completed == 1

    def test_many_calls_ended_early_do_not_pile_up(self) -> None:
        with BoundedExecutor(max_workers=2) as executor:
            view = executor.with_timeout(3600)
            for n in range(500):
                assert view.submit(abs, -n).result() == n
            watcher = executor._watcher
            assert watcher is not None
            assert len(watcher._heap) < 100  # compacted as calls end


class TestRemaining:
    def test_the_function_knows_its_time_left_in_a_thread(self) -> None:
        with BoundedExecutor(max_workers=1) as executor:
            left = executor.with_timeout(30).submit(time_left).result()
            assert left is not None
            assert 0 < left <= 30
            # The pool's thread keeps no deadline for its next call.
            assert executor.submit(time_left).result() is None
        assert remaining() is None

    def test_the_function_knows_its_time_left_in_a_process(self) -> None:
        with BoundedExecutor.process(max_workers=1, call_timeout=30) as executor:
            left = executor.submit(workers.time_left).result()
            assert left is not None
            assert 0 < left <= 30
            assert (
                executor.with_timeout(None).submit(workers.time_left).result() is None
            )


class TestWhereTheLimitComesFrom:
    def test_call_timeout_applies_to_every_call_and_a_view_overrides_it(
        self,
    ) -> None:
        with BoundedExecutor(max_workers=1, call_timeout=30) as executor:
            assert executor.call_timeout == 30
            left = executor.submit(time_left).result()
            assert left is not None
            assert 0 < left <= 30
            (mapped,) = executor.map(time_left, [1])
            assert mapped is not None
            assert executor.with_timeout(None).submit(time_left).result() is None
            assert list(executor.with_timeout(None).map(time_left, [1])) == [None]
            short = executor.with_timeout(5).submit(time_left).result()
            assert short is not None
            assert short <= 5
            view = executor.with_timeout(5)
            assert view.timeout == 5
            assert view.executor is executor
            assert repr(view).startswith("<TimeLimitedExecutor timeout=5.0 of <")

    @pytest.mark.parametrize("bad", [0, -1, float("inf"), "1", True])
    def test_a_bad_limit_is_refused_naming_it(self, bad: object) -> None:
        with pytest.raises((TypeError, ValueError), match=r"^call_timeout must be "):
            BoundedExecutor(max_workers=1, call_timeout=bad)  # type: ignore[arg-type]
        with (
            BoundedExecutor(max_workers=1) as executor,
            pytest.raises((TypeError, ValueError), match=r"^seconds must be "),
        ):
            executor.with_timeout(bad)  # type: ignore[arg-type]


class TestTheView:
    @pytest.mark.parametrize("seconds", [5, None])
    def test_its_submit_refuses_what_is_not_a_blocking_function_naming_fn(
        self, seconds: float | None
    ) -> None:
        async def coroutine_function() -> None:
            pass

        with BoundedExecutor(max_workers=1) as executor:
            view = executor.with_timeout(seconds)
            with pytest.raises(TypeError, match=r"^fn must be callable, got int 3$"):
                view.submit(3)  # type: ignore[arg-type]
            with pytest.raises(
                TypeError, match=r"^fn must be a blocking \(sync\) function, got "
            ):
                view.submit(coroutine_function)
            assert view.submit(abs, -2).result() == 2
        assert executor.stats().submitted == 1

    def test_its_map_keeps_chunksize_and_buffersize(self) -> None:
        pulled = 0

        def items() -> Iterator[int]:
            nonlocal pulled
            for n in range(12):
                pulled += 1
                yield n

        pool = CountingExecutor(2)
        with BoundedExecutor(executor=pool, bound=8) as executor:
            view = executor.with_timeout(3600)
            assert list(view.map(abs, range(-4, 0), chunksize=2)) == [4, 3, 2, 1]
            assert pool.submits == 2  # a call per chunk
            for n, value in enumerate(view.map(abs, items(), buffersize=2)):
                assert value == n
                assert pulled - (n + 1) <= 2  # never more than 2 ahead
            assert pool.submits == 2 + 12
        pool.shutdown()


class TestMap:
    def test_each_item_runs_knowing_its_time_left(self) -> None:
        with BoundedExecutor(max_workers=2) as executor:
            left = list(executor.with_timeout(30).map(time_left, range(6)))
        assert all(value is not None and 0 < value <= 30 for value in left)

    def test_the_maps_own_timeout_still_applies(self, latch: Latch) -> None:
        # A deadline of an hour per item; the map's timeout= is 0.05 s.
        with BoundedExecutor(max_workers=1) as executor:
            results = executor.with_timeout(3600).map(latch, [0], timeout=SHORT)
            with pytest.raises(TimeoutError) as info:
                list(results)
            assert not isinstance(info.value, DeadlineExceeded)
            latch.open()

    def test_an_item_that_misses_its_deadline_raises_in_its_place(
        self, latch: Latch
    ) -> None:
        def slow_on_two(n: int) -> int:
            if n == 2:
                latch(n)  # held past its deadline
            return n

        executor = BoundedExecutor(max_workers=2, bound=2)
        got = []
        with pytest.raises(DeadlineExceeded) as info:
            for value in executor.with_timeout(SHORT * 4).map(slow_on_two, range(4)):
                got.append(value)  # noqa: PERF402 (kept up to the error)
        assert got == [0, 1]
        assert info.value.stage == "running"
        latch.open()
        executor.shutdown()
        stats = executor.stats()
        assert (stats.deadline_running, stats.abandoned) == (1, 1)
        assert stats.in_flight == 0

    def test_the_maps_own_timeout_ends_the_wait_for_a_slot(self, latch: Latch) -> None:
        with BoundedExecutor(max_workers=1, bound=1) as executor:
            holder = executor.submit(latch, 0)  # the only slot, until opened
            results = executor.with_timeout(3600).map(abs, [-1], timeout=SHORT)
            with pytest.raises(TimeoutError) as info:
                next(results)
            assert not isinstance(info.value, DeadlineExceeded)
            latch.open()
            assert holder.result() == 0
        assert executor.stats().submitted == 1

    def test_an_items_deadline_starts_when_it_starts_waiting_for_its_slot(
        self, latch: Latch
    ) -> None:
        def due(_: object) -> float:
            now = time.monotonic()
            left = remaining()
            assert left is not None
            return now + left  # the deadline, on the same clock

        with BoundedExecutor(max_workers=1, bound=1) as executor:
            holder = executor.submit(latch, 0)  # the only slot, until opened
            results = executor.with_timeout(3600).map(due, [0])
            consumer = started(lambda: next(results))
            until(lambda: executor.stats().waiting == 1, "the item to wait")
            released = time.monotonic()  # after it started waiting
            latch.open()
            assert consumer.finish() < released + 3600
            assert holder.result() == 0

    def test_an_item_waiting_for_its_slot_raises_in_its_place(
        self, latch: Latch
    ) -> None:
        shared = SharedBound(1)
        other = BoundedExecutor(max_workers=1, bound=shared)
        executor = BoundedExecutor(max_workers=1, bound=shared)
        holder = other.submit(latch, 0)
        latch.wait_started(1)
        with pytest.raises(DeadlineExceeded) as info:
            list(executor.with_timeout(SHORT).map(abs, [-1, -2]))
        assert info.value.stage == "waiting"
        assert executor.stats().deadline_waiting == 1
        latch.open()
        assert holder.result() == 0
        other.shutdown()
        executor.shutdown()


class TestTheWaitForASlot:
    def test_a_shorter_max_wait_still_refuses_with_overloaded(
        self, latch: Latch
    ) -> None:
        with BoundedExecutor(max_workers=1, bound=1, max_wait=SHORT) as executor:
            executor.submit(latch, 0)
            latch.wait_started(1)
            with pytest.raises(OverloadedError):
                executor.with_timeout(3600).submit(time_left)
            stats = executor.stats()
            assert (stats.timed_out, stats.deadline_waiting) == (1, 0)
            latch.open()

    def test_a_slot_reaching_a_thread_past_its_deadline_refuses_it(self) -> None:
        # The slot is released (under the lock the thread needs) after the
        # deadline passed and before the thread looked: the grant refuses it
        # with the deadline's error, not with max_wait's.
        shared = SharedBound(1)
        view = ThreadView(shared, None, 3600)
        assert view.acquire_blocking()
        deadline = Deadline(SHORT)
        waiter = started(lambda: view.acquire_blocking(None, deadline))
        until(lambda: view.waiting == 1, "the thread to wait")
        with shared._lock:
            until(deadline.passed, "the deadline to pass")
            shared._release(view)
        with pytest.raises(DeadlineExceeded, match="waiting"):
            waiter.finish()
        assert (view.waiting, view.timed_out, shared.in_flight) == (0, 0, 0)


def test_the_deadline_never_refuses_a_thread_early() -> None:
    view = ThreadView(SharedBound(1), None, None)
    assert view.try_acquire()
    early = 0
    for _ in range(10):
        deadline = Deadline(0.0015)
        with pytest.raises(DeadlineExceeded):
            view.acquire_blocking(None, deadline)
        early += not deadline.passed()
    assert early == 0
    assert (view.waiting, view.timed_out) == (0, 0)
    view.release()


class _StoppableRunning(concurrent.futures.Future[None]):
    """A running call its pool can still stop (pebble's, kill_on_timeout):
    it says it runs, and cancel() succeeds."""

    def running(self) -> bool:
        return not self.done()


class TestTheWatcherInside:
    """DeadlineWatcher on its own: its count, its heap, its thread."""

    @pytest.fixture
    def misses(self) -> list[tuple[str, bool]]:
        return []

    @pytest.fixture
    def watcher(self, misses: list[tuple[str, bool]]) -> Iterator[DeadlineWatcher]:
        made = DeadlineWatcher(
            lambda stage, abandoned: misses.append((stage, abandoned))
        )
        yield made
        made.close(wait=False)

    def test_it_counts_the_calls_it_watches(self, watcher: DeadlineWatcher) -> None:
        calls = [concurrent.futures.Future[int]() for _ in range(3)]
        timed = [watcher.watch(call, Deadline(3600)) for call in calls]
        assert watcher._live == 3
        calls[0].set_result(7)
        assert timed[0].result(timeout=0) == 7
        assert watcher._live == 2
        for call in calls[1:]:
            call.set_result(0)
        assert watcher._live == 0

    def test_a_miss_leaves_the_count_and_names_its_stage(
        self, watcher: DeadlineWatcher, misses: list[tuple[str, bool]]
    ) -> None:
        queued = concurrent.futures.Future[None]()
        running = concurrent.futures.Future[None]()
        assert running.set_running_or_notify_cancel()
        stoppable = _StoppableRunning()
        for call in (queued, running, stoppable):
            with pytest.raises(DeadlineExceeded):
                watcher.watch(call, Deadline(SHORT)).result(timeout=TIMEOUT)
        assert misses == [("queued", False), ("running", True), ("stopped", False)]
        assert watcher._live == 0
        running.set_result(None)

    def test_an_earlier_deadline_wakes_the_thread(
        self, watcher: DeadlineWatcher
    ) -> None:
        # The thread sleeps until the first deadline, an hour away; a later
        # call due sooner must not wait for it.
        far = watcher.watch(concurrent.futures.Future[int](), Deadline(3600))
        asleep(watcher)
        with pytest.raises(DeadlineExceeded):
            watcher.watch(concurrent.futures.Future[int](), Deadline(SHORT)).result(
                timeout=TIMEOUT
            )
        assert not far.done()

    def test_a_call_that_ends_in_time_leaves_the_thread_asleep(
        self, watcher: DeadlineWatcher
    ) -> None:
        call = concurrent.futures.Future[int]()
        timed = watcher.watch(call, Deadline(3600))
        thread = watcher._thread
        waiters = asleep(watcher)
        call.set_result(1)
        assert timed.result(timeout=0) == 1  # settled, so any wake-up is done
        # Still asleep: its entry waits in the heap for the thread's next
        # turn. (Read after the waiters: a thread woken drops it first.)
        assert len(waiters) == 1
        assert len(watcher._heap) == 1
        assert watcher._thread is thread

    @pytest.mark.parametrize("later", [0.0, 3600.0])
    def test_a_deadline_no_earlier_than_the_first_leaves_the_thread_asleep(
        self, watcher: DeadlineWatcher, later: float
    ) -> None:
        now = time.monotonic()
        ended = concurrent.futures.Future[int]()
        watcher.watch(ended, Deadline(3600, start=now))
        waiters = asleep(watcher)
        ended.set_result(0)  # its entry stays first in the heap
        # Due at the same instant, or later: the thread sleeps on.
        due = Deadline(3600 + later, start=now)
        watcher.watch(concurrent.futures.Future[int](), due)
        assert len(waiters) == 1
        assert len(watcher._heap) == 2  # a thread woken drops the ended one

    def test_it_never_releases_a_caller_before_its_deadline(
        self, watcher: DeadlineWatcher
    ) -> None:
        deadline = Deadline(0.2)
        timed = watcher.watch(concurrent.futures.Future[int](), deadline)
        with pytest.raises(DeadlineExceeded):
            timed.result(timeout=TIMEOUT)
        assert deadline.passed()

    def test_it_keeps_only_twice_the_live_entries_and_some_slack(
        self, watcher: DeadlineWatcher
    ) -> None:
        alive = concurrent.futures.Future[int]()
        kept = watcher.watch(alive, Deadline(3600))
        model = 1  # entries in the heap, as the compaction rule says
        for _ in range(3 * COMPACT_SLACK):
            ended = concurrent.futures.Future[int]()
            ended.set_result(0)
            watcher.watch(ended, Deadline(3600))  # settles at once
            model += 1
            if model > 2 * 2 + COMPACT_SLACK:  # two live while it is pushed
                model = 2
            assert len(watcher._heap) == model
        assert any(entry[2] is kept for entry in watcher._heap)
        alive.set_result(1)
        assert kept.result(timeout=0) == 1

    def test_closed_it_stops_once_the_last_watched_call_ends(
        self, watcher: DeadlineWatcher
    ) -> None:
        call = concurrent.futures.Future[int]()
        watcher.watch(call, Deadline(3600))
        thread = watcher._thread
        assert thread is not None
        assert thread.daemon
        # Asleep until the hour is up.
        waiters = asleep(watcher)
        watcher.close(wait=False)  # returns: one call is still watched
        until(lambda: len(waiters) == 1, "the watcher to sleep again")
        assert thread.is_alive()
        call.set_result(0)
        thread.join(TIMEOUT)
        assert not thread.is_alive()

    def test_a_call_that_fails_passes_its_error_on(
        self, watcher: DeadlineWatcher
    ) -> None:
        call = concurrent.futures.Future[int]()
        timed = watcher.watch(call, Deadline(3600))
        call.set_exception(ValueError("no"))
        assert isinstance(timed.exception(timeout=0), ValueError)
