"""BoundedExecutor: blocking submit, lazy bounded map, shutdown, stats."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import BoundedExecutor, ClosedError, OverloadedError
from conftest import CountingExecutor, FailingExecutor
from sync_helpers import Latch, started, until

if TYPE_CHECKING:
    from collections.abc import Iterator


def waiting_is(executor: BoundedExecutor, count: int) -> bool:
    return executor.stats().waiting == count


def idle(executor: BoundedExecutor) -> None:
    stats = executor.stats()
    assert stats.in_flight == 0, stats
    assert stats.waiting == 0, stats
    assert stats.submitted == stats.completed + stats.failed + stats.cancelled, stats


@pytest.fixture
def latch() -> Iterator[Latch]:
    made = Latch()
    yield made
    made.open()


def test_is_an_executor_and_works_as_one() -> None:
    with BoundedExecutor(max_workers=2) as executor:
        assert isinstance(executor, concurrent.futures.Executor)
        assert executor.bound == 4
        futures = [executor.submit(pow, i, 2) for i in range(50)]
        assert [f.result() for f in futures] == [i * i for i in range(50)]
        assert list(executor.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
    assert executor.closed
    stats = executor.stats()
    assert stats.submitted == stats.completed == 55
    assert stats.queue_wait.count == 55
    assert stats.peak_in_flight <= 4
    idle(executor)


def test_submit_blocks_at_the_bound_and_the_slot_frees_when_the_call_ends(
    latch: Latch,
) -> None:
    pool = CountingExecutor(8)
    executor = BoundedExecutor(executor=pool, bound=2)
    first = [executor.submit(latch, i) for i in range(2)]
    third = started(lambda: executor.submit(abs, -3))
    until(lambda: executor.stats().waiting == 1, "the third submit to block")
    assert pool.submits == 2
    latch.open()
    assert third.finish().result() == 3
    assert [f.result() for f in first] == [0, 1]
    assert pool.peak_in_pool <= 2
    executor.shutdown()
    pool.shutdown()
    idle(executor)


def test_repr_says_bound_in_flight_waiting_and_whether_closed(latch: Latch) -> None:
    executor = BoundedExecutor(max_workers=2, bound=2)
    first = [executor.submit(latch, i) for i in range(2)]
    third = started(lambda: executor.submit(abs, -3))
    until(lambda: executor.stats().waiting == 1, "the third submit to block")
    assert repr(executor) == "<BoundedExecutor bound=2 in_flight=2 waiting=1 open>"
    latch.open()
    assert third.finish().result() == 3
    assert [f.result() for f in first] == [0, 1]
    executor.shutdown()
    assert repr(executor) == "<BoundedExecutor bound=2 in_flight=0 waiting=0 closed>"


def test_blocked_submitters_are_served_in_fifo_order(latch: Latch) -> None:
    order: list[int] = []
    with BoundedExecutor(max_workers=4, bound=1) as executor:
        executor.submit(latch, -1)
        runners = []
        for i in range(4):
            runners.append(started(functools.partial(executor.submit, order.append, i)))
            until(functools.partial(waiting_is, executor, i + 1), "a waiter")
        latch.open()
        for runner in runners:
            runner.finish().result()
    assert order == [0, 1, 2, 3]


def test_max_pending_refuses_at_once(latch: Latch) -> None:
    with BoundedExecutor(max_workers=2, bound=1, max_pending=0) as executor:
        executor.submit(latch, 0)
        with pytest.raises(OverloadedError, match="max_pending=0"):
            executor.submit(abs, 1)
        assert executor.stats().rejected == 1
        latch.open()
    idle(executor)


def test_max_wait_refuses_a_blocked_submitter(latch: Latch) -> None:
    with BoundedExecutor(max_workers=2, bound=1, max_wait=0.01) as executor:
        executor.submit(latch, 0)
        with pytest.raises(OverloadedError, match="max_wait"):
            executor.submit(abs, 1)
        assert executor.stats().timed_out == 1
        latch.open()
    idle(executor)


def test_shutdown_wakes_blocked_submitters_with_closed_error(latch: Latch) -> None:
    executor = BoundedExecutor(max_workers=2, bound=1)
    running = executor.submit(latch, 0)
    blocked = started(lambda: executor.submit(abs, 1))
    until(lambda: executor.stats().waiting == 1, "a blocked submit")
    closer = started(lambda: executor.shutdown(wait=True))
    with pytest.raises(ClosedError):
        blocked.finish()
    assert not running.done()
    latch.open()
    closer.finish()
    assert running.result() == 0
    with pytest.raises(ClosedError):
        executor.submit(abs, 1)
    with pytest.raises(RuntimeError):  # what code written for Executor expects
        executor.submit(abs, 1)
    idle(executor)


def test_shutdown_cancel_futures_cancels_calls_not_started(latch: Latch) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    executor = BoundedExecutor(executor=pool, bound=3)
    futures = [executor.submit(latch, i) for i in range(3)]
    latch.wait_started(1)
    executor.shutdown(wait=False, cancel_futures=True)
    assert futures[1].cancelled()
    assert futures[2].cancelled()
    latch.open()
    assert futures[0].result() == 0
    stats = executor.stats()
    assert (stats.completed, stats.cancelled) == (1, 2)
    idle(executor)
    assert not pool._shutdown  # a wrapped pool is left running
    pool.shutdown()


def test_shutdown_shuts_down_the_pool_it_made() -> None:
    executor = BoundedExecutor(max_workers=1)
    pool = executor.executor
    assert executor.submit(abs, -1).result() == 1
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(abs, -1)


def test_submit_error_frees_the_slot() -> None:
    executor = BoundedExecutor(executor=FailingExecutor(ValueError("no")), bound=1)
    for _ in range(3):
        with pytest.raises(ValueError, match="no"):
            executor.submit(abs, 1)
    assert executor.stats().failed == 3
    idle(executor)


def test_cancelling_a_returned_future_frees_its_slot(latch: Latch) -> None:
    with BoundedExecutor(max_workers=1, bound=2) as executor:
        executor.submit(latch, 0)
        queued = executor.submit(abs, 1)
        assert queued.cancel()
        assert executor.stats().in_flight == 1
        latch.open()
    assert executor.stats().cancelled == 1
    idle(executor)


def test_keyboard_interrupt_in_a_blocked_submit_leaves_no_slot(latch: Latch) -> None:
    executor = BoundedExecutor(max_workers=2, bound=1)
    executor.submit(latch, 0)
    main = threading.get_ident()

    def interrupt() -> None:
        until(lambda: executor.stats().waiting == 1, "the main thread to block")
        signal.pthread_kill(main, signal.SIGINT)

    # Python's own handler, even where SIGINT was ignored when it started (a
    # background job of a non-interactive shell).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        interrupter = started(interrupt)
        with pytest.raises(KeyboardInterrupt):
            executor.submit(abs, 1)
        interrupter.finish()
    finally:
        signal.signal(signal.SIGINT, handler)
    stats = executor.stats()
    assert (stats.in_flight, stats.waiting) == (1, 0)
    latch.open()
    assert executor.submit(abs, -2).result() == 2
    executor.shutdown()
    idle(executor)


# -- map -----------------------------------------------------------------------


def test_map_is_lazy_and_never_pulls_more_than_bound_ahead(latch: Latch) -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield i

    with BoundedExecutor(max_workers=4, bound=3) as executor:
        results = executor.map(abs, items())
        assert pulled == 0
        latch.open()
        for i, value in enumerate(results):
            assert value == i
            assert pulled - (i + 1) <= 3
        assert pulled == 1000
    idle(executor)


def test_map_buffersize_caps_how_far_ahead_it_pulls() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield i

    with BoundedExecutor(max_workers=4, bound=8) as executor:
        results = executor.map(abs, items(), buffersize=2)
        for i, value in enumerate(results):
            assert value == i
            assert pulled - (i + 1) <= 2
        with pytest.raises(ValueError, match="buffersize"):
            executor.map(abs, [1], buffersize=0)
    idle(executor)


def test_map_over_an_endless_source_stops_when_the_consumer_does() -> None:
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    with BoundedExecutor(max_workers=2) as executor:
        results = executor.map(abs, endless())
        assert [next(results) for _ in range(20)] == list(range(20))
        results.close()  # type: ignore[attr-defined]
    idle(executor)


def test_map_zips_several_iterables_like_the_builtin() -> None:
    with BoundedExecutor(max_workers=2) as executor:
        assert list(executor.map(pow, [2, 3, 4], [2, 2])) == [4, 9]
        assert list(executor.map(pow, [2, 3, 4], [2, 2, 2], chunksize=2)) == [4, 9, 16]


def test_map_raises_fn_errors_in_order() -> None:
    with BoundedExecutor(max_workers=2) as executor:
        results = executor.map(int, ["1", "x", "3"])
        assert next(results) == 1
        with pytest.raises(ValueError, match="'x'"):
            next(results)
    idle(executor)


def test_map_early_exit_cancels_calls_not_started(latch: Latch) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    with BoundedExecutor(executor=pool, bound=4) as executor:
        results = executor.map(latch, range(100))
        first = started(lambda: next(results))
        latch.wait_started(1)
        until(lambda: executor.stats().in_flight == 4, "the window to fill")
        latch.open()
        assert first.finish() == 0
        results.close()  # type: ignore[attr-defined]
    stats = executor.stats()
    assert stats.submitted == 4
    assert stats.completed + stats.cancelled == 4
    idle(executor)
    pool.shutdown()


def test_map_timeout_raises_timeout_error(latch: Latch) -> None:
    with BoundedExecutor(max_workers=2, bound=2) as executor:
        results = executor.map(latch, range(3), timeout=0.01)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        latch.open()
    idle(executor)


def test_map_timeout_covers_the_wait_for_a_slot(latch: Latch) -> None:
    with BoundedExecutor(max_workers=1, bound=1) as executor:
        holder = executor.submit(latch, 0)  # the only slot, until opened
        results = executor.map(abs, [-1], timeout=0.01)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        latch.open()
        assert holder.result() == 0
    assert executor.stats().submitted == 1  # the item never went in
    idle(executor)


def test_map_timeout_applies_to_chunks_too(latch: Latch) -> None:
    with BoundedExecutor(max_workers=2, bound=2) as executor:
        results = executor.map(latch, range(4), timeout=0.01, chunksize=2)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        latch.open()
    idle(executor)


def test_map_timeout_counts_from_the_call(latch: Latch) -> None:
    with BoundedExecutor(max_workers=1, bound=1) as executor:
        holder = executor.submit(latch, 0)  # the only slot, until opened
        results = executor.map(abs, [-1], timeout=3600)
        consumer = started(lambda: next(results))
        until(lambda: waiting_is(executor, 1), "the pull to wait for its slot")
        latch.open()
        assert consumer.finish() == 1
        assert holder.result() == 0
    idle(executor)


def test_map_with_chunksize_submits_one_call_per_chunk() -> None:
    with BoundedExecutor(max_workers=2) as executor:
        assert list(executor.map(abs, range(-4, 0), chunksize=2)) == [4, 3, 2, 1]
        assert list(executor.map(abs, range(-3, 0), chunksize=1)) == [3, 2, 1]
    assert executor.stats().submitted == 2 + 3


def test_map_chunks_count_against_the_bound() -> None:
    pool = CountingExecutor(4)
    with BoundedExecutor(executor=pool, bound=2) as executor:
        assert list(executor.map(abs, range(-100, 0), chunksize=10)) == list(
            range(100, 0, -1)
        )
        assert pool.submits == 10
        assert pool.peak_in_pool <= 2
    pool.shutdown()


def test_map_source_error_comes_after_earlier_results() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise LookupError("source")

    with BoundedExecutor(max_workers=2) as executor:
        results = executor.map(abs, items())
        assert next(results) == 1
        with pytest.raises(LookupError, match="source"):
            next(results)
    idle(executor)


# -- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bound": 0}, ValueError, "bound"),
        ({"bound": "3"}, TypeError, "bound"),
        ({"bound": True}, TypeError, "bound"),
        ({"max_pending": -1}, ValueError, "^max_pending must be an int >= 0, "),
        ({"max_wait": 0}, ValueError, "max_wait"),
        ({"max_workers": 0}, ValueError, "max_workers"),
        ({"executor": object(), "bound": 2}, TypeError, "executor"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        BoundedExecutor(**kwargs)


def test_bad_map_and_submit_arguments_are_named() -> None:
    with BoundedExecutor(max_workers=1) as executor:
        with pytest.raises(TypeError, match="fn"):
            executor.submit(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^fn must be callable, got int 3$"):
            executor.map(3, [1])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^map\(\) needs at least one iterable$"):
            executor.map(abs)
        with pytest.raises(ValueError, match=r"^buffersize must be an int >= 1, "):
            executor.map(abs, [1], buffersize=0)
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(abs, [1], chunksize=0)
        with pytest.raises(ValueError, match="timeout"):
            executor.map(abs, [1], timeout=-1)
        with pytest.raises(TypeError):
            executor.map(abs, 3)  # type: ignore[arg-type]
    idle(executor)


def test_the_smallest_map_arguments_are_taken() -> None:
    with BoundedExecutor(max_workers=1) as executor:
        assert list(executor.map(abs, [-1, -2], buffersize=1)) == [1, 2]
        assert list(executor.map(abs, [], timeout=0)) == []
    idle(executor)


def test_bound_is_required_for_an_executor_of_unknown_size() -> None:
    with pytest.raises(TypeError, match="bound is required"):
        BoundedExecutor(executor=FailingExecutor(ValueError()))


# -- process pools ---------------------------------------------------------------


def test_process_pool_submit_map_and_chunks() -> None:
    with BoundedExecutor.process(max_workers=2) as executor:
        assert executor.bound == 4
        assert executor.submit(pow, 3, 2).result() == 9
        assert sum(executor.map(abs, range(-500, 0))) == sum(range(1, 501))
        assert list(executor.map(pow, [2, 3], [3, 2], chunksize=1)) == [8, 9]
        stats = executor.stats()
        assert stats.submitted < 500  # chunked automatically
    idle(executor)


def test_process_pool_is_replaced_when_broken() -> None:
    with BoundedExecutor.process(max_workers=1) as executor:
        broken = executor.submit(os._exit, 1)
        with pytest.raises(concurrent.futures.BrokenExecutor):
            broken.result()
        assert executor.submit(abs, -4).result() == 4
        assert executor.stats().pool_restarts == 1
    idle(executor)


class TestRoundThree:
    """The synchronous twin keeps what the async executor keeps (issue 23)."""

    # On 3.10 and 3.11 the pool's management thread dies of InvalidStateError
    # here, which pytest reports as an unhandled thread exception.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
    def test_calls_after_a_cancelled_one_end_when_the_worker_dies(self) -> None:
        """Item 8: the broken-pool watchdog, on Python 3.10 and 3.11 too."""
        import multiprocessing

        import process_calls
        import workers

        context = multiprocessing.get_context("forkserver")
        gate, started_, runs = (
            context.Event(),
            context.Semaphore(0),
            context.Value("i", 0),
        )
        executor = BoundedExecutor.process(
            max_workers=1,
            bound=5,
            mp_context=context,
            initializer=process_calls.install_gate,
            initargs=(gate, started_, runs),
        )
        try:
            worker = executor.submit(os.getpid).result()
            running = executor.submit(process_calls.held, 0)
            assert started_.acquire(True, 30), "the held call did not start"
            # The workers' queue is max_workers + 1 = 2 deep: 1 and 2 go
            # there, 3 and 4 wait in the pool, where 3 can still be cancelled.
            queued = [executor.submit(workers.square, n) for n in (1, 2)]
            cancelled = executor.submit(workers.square, 3)
            after = executor.submit(workers.square, 4)
            assert cancelled.cancel()
            os.kill(worker, signal.SIGKILL)
            for future in (running, *queued):
                with pytest.raises(concurrent.futures.process.BrokenProcessPool):
                    future.result(30)
            with pytest.raises(concurrent.futures.process.BrokenProcessPool):
                after.result(30)  # a guard against a hang, not a timing
        finally:
            # (The gate stays shut: setting a multiprocessing Event that a
            # killed process slept on waits for that process to wake.)
            executor.shutdown()  # returns: every call has ended
        idle(executor)
        stats = executor.stats()
        assert (stats.failed, stats.cancelled) == (4, 1)

    def test_a_max_wait_no_thread_can_wait_for_is_refused_at_construction(
        self,
    ) -> None:
        """Item 10: refused at once, naming max_wait, not at every wait."""
        for make in (BoundedExecutor, BoundedExecutor.process):
            with pytest.raises(ValueError, match="max_wait must be at most"):
                make(max_workers=1, max_wait=threading.TIMEOUT_MAX * 2)

    @pytest.mark.parametrize("number", [0, -1])
    def test_max_workers_out_of_range_has_the_standard_wording(
        self, number: int
    ) -> None:
        """Item 11: CPython's test_max_workers_negative, run against it."""
        for make in (BoundedExecutor, BoundedExecutor.process):
            with pytest.raises(ValueError, match="max_workers must be greater than 0"):
                make(max_workers=number)

    def test_a_limit_policy_as_bound_is_refused_saying_why(self) -> None:
        """Item 21: the message says what it takes, and why not a policy."""
        from aiobound import AIMD

        with pytest.raises(TypeError) as info:
            BoundedExecutor(max_workers=1, bound=AIMD())  # type: ignore[arg-type]
        message = str(info.value)
        assert "an int >= 1, a SharedBound or None" in message
        assert "limit policy" in message
        assert "BoundedLoopExecutor" in message
        assert "a limit policy or None" not in message
