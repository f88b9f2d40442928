"""max_wait shedding, queue-wait statistics, resize, and aclose(timeout)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING

import pytest

from aiobound import BoundedLoopExecutor, ClosedError, OverloadedError
from conftest import (
    CountingExecutor,
    ExecutorFactory,
    GateFactory,
    ManualExecutor,
    assert_idle,
    settle,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


def noop(x: int) -> int:
    return x


class TestMaxWait:
    async def test_a_caller_waiting_longer_than_max_wait_is_refused(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_wait=0.01)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        await gate.started()
        # The slot is held until the gate opens, so this wait must expire.
        with pytest.raises(OverloadedError, match=r"max_wait=0\.01"):
            await executor.run(noop, 1)
        stats = executor.stats()
        assert (stats.timed_out, stats.rejected, stats.waiting) == (1, 0, 0)
        gate.open()
        assert await running == 0
        assert await executor.run(noop, 2) == 2  # no slot leaked
        assert_idle(executor)

    async def test_a_caller_served_in_time_is_not_refused(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_wait=60)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        await gate.started()
        waiter = asyncio.create_task(executor.run(noop, 1))
        await settle()
        gate.open()
        assert await waiter == 1
        assert await running == 0
        assert executor.stats().timed_out == 0

    async def test_expired_waiters_do_not_block_the_ones_behind_them(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_wait=0.01)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        await gate.started()
        results = await asyncio.gather(
            *(executor.run(noop, n) for n in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, OverloadedError) for r in results)
        gate.open()
        await running
        assert await executor.run(noop, 9) == 9
        assert executor.stats().timed_out == 5
        assert_idle(executor)


class TestQueueWaitStats:
    async def test_no_waiting_means_zero_queue_wait(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)
        await executor.run(noop, 1)
        stats = executor.stats()
        assert (stats.queue_wait_avg, stats.queue_wait_max) == (0.0, 0.0)

    async def test_waits_are_measured(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        await gate.started()
        waiter = asyncio.create_task(executor.run(noop, 1))
        await settle()
        gate.open()
        await asyncio.gather(running, waiter)
        stats = executor.stats()
        assert stats.queue_wait_max > 0
        # Two grants, one of them immediate: the mean is half the one wait.
        assert stats.queue_wait_avg == pytest.approx(stats.queue_wait_max / 2)


class TestResize:
    async def test_growing_admits_waiters_at_once(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=4, bound=1)
        gate = make_gate()
        tasks = [asyncio.create_task(executor.run(gate, n)) for n in range(4)]
        await gate.started()
        assert executor.stats().waiting == 3
        executor.resize(4)
        await gate.started(4)
        assert executor.stats().in_flight == 4
        assert executor.bound == 4
        gate.open()
        assert await asyncio.gather(*tasks) == [0, 1, 2, 3]

    async def test_shrinking_lets_calls_finish_and_admits_none_until_under(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=4)
        executor = make_executor(executor=counting, bound=4)
        gates = [make_gate() for _ in range(4)]
        running = [await executor.submit(gates[n], n) for n in range(4)]
        await asyncio.gather(*(g.started() for g in gates))
        waiters = [asyncio.create_task(executor.run(noop, n)) for n in range(3)]
        await settle()
        executor.resize(2)
        assert executor.stats().in_flight == 4  # nothing taken away
        gates[0].open()
        await running[0]
        await settle()
        assert (executor.stats().in_flight, executor.stats().waiting) == (3, 3)
        gates[1].open()
        await running[1]
        await settle()
        # Now under... at the bound: the next release hands over.
        assert (executor.stats().in_flight, executor.stats().waiting) == (2, 3)
        gates[2].open()
        gates[3].open()
        assert await asyncio.gather(*waiters) == [0, 1, 2]
        assert counting.peak_in_pool == 4  # never more than max(old, new)
        assert_idle(executor)

    async def test_map_window_follows_the_bound(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=2)
        pulled = 0

        def source() -> Iterator[int]:
            nonlocal pulled
            for i in range(20):
                pulled += 1
                yield i

        received = 0
        async for _ in executor.map(noop, source()):
            received += 1
            if received == 5:
                executor.resize(6)
            assert pulled - received <= executor.bound
        assert received == 20

    @pytest.mark.parametrize(("bound", "error"), [(0, ValueError), (1.5, TypeError)])
    async def test_resize_validates(
        self, make_executor: ExecutorFactory, bound: object, error: type[Exception]
    ) -> None:
        executor = make_executor(max_workers=1)
        with pytest.raises(error, match="bound"):
            executor.resize(bound)  # type: ignore[arg-type]

    async def test_resize_from_another_thread_is_refused(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        await executor.run(noop, 1)  # binds to this loop
        with pytest.raises(RuntimeError, match="event loop's thread"):
            await asyncio.to_thread(executor.resize, 3)
        assert executor.bound == 2


class TestCloseTimeout:
    async def test_calls_that_end_in_time_close_normally(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        gate = make_gate()
        fut = await executor.submit(gate, 1)
        await gate.started()
        closing = asyncio.create_task(executor.aclose(timeout=60))
        await settle()
        gate.open()
        await closing
        assert await fut == 1
        assert_idle(executor)

    async def test_timeout_cancels_calls_not_started_and_reports_running_ones(
        self, make_gate: GateFactory
    ) -> None:
        executor = BoundedLoopExecutor(max_workers=1, bound=3)
        gate = make_gate()
        futures = [await executor.submit(gate, n) for n in range(3)]
        await gate.started()
        with pytest.raises(TimeoutError, match="1 calls still running; 2 calls"):
            await executor.aclose(timeout=0.01)
        assert executor.stats().in_flight == 1
        assert executor.stats().cancelled == 2
        for fut in futures[1:]:  # dropped before they started: ClosedError
            with pytest.raises(ClosedError, match="before this call started"):
                await fut
        gate.open()
        assert await futures[0] == 0
        assert gate.calls == [0]
        await executor.aclose()  # now it returns, and joins the pool's workers
        assert_idle(executor)
        pool = executor.executor
        assert isinstance(pool, concurrent.futures.ThreadPoolExecutor)
        assert not any(thread.is_alive() for thread in pool._threads)

    async def test_timeout_leaves_a_wrapped_pool_running(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=1)
        executor = make_executor(executor=counting, bound=2)
        gate = make_gate()
        futures = [await executor.submit(gate, n) for n in range(2)]
        await gate.started()
        with pytest.raises(TimeoutError):
            await executor.aclose(timeout=0.01)
        with pytest.raises(ClosedError):
            await futures[1]
        gate.open()
        await futures[0]
        assert counting.submit(noop, 5).result() == 5

    async def test_timeout_must_be_positive(self) -> None:
        executor = BoundedLoopExecutor(max_workers=1)
        with pytest.raises(ValueError, match="timeout"):
            await executor.aclose(timeout=0)
        await executor.aclose()

    async def test_a_second_timed_out_aclose_reports_again_then_a_plain_one_waits(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=2)
        gate = make_gate()
        futures = [await executor.submit(gate, n) for n in range(2)]
        await gate.started()
        with pytest.raises(TimeoutError, match="1 calls still running; 1 calls"):
            await executor.aclose(timeout=0.01)
        with pytest.raises(TimeoutError, match="1 calls still running; 0 calls"):
            await executor.aclose(timeout=0.01)
        closing = asyncio.create_task(executor.aclose())
        await settle()
        assert not closing.done()  # waits for the running call
        gate.open()
        await closing
        assert await futures[0] == 0
        with pytest.raises(ClosedError):
            await futures[1]
        assert gate.calls == [0]
        assert_idle(executor)


class TestCloseRaces:
    async def test_a_slot_handed_over_as_the_executor_closes_submits_nothing(
        self, make_executor: ExecutorFactory
    ) -> None:
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=1)
        holder = await executor.submit(noop, 0)
        waiter = asyncio.create_task(executor.run(noop, 1))
        await settle()
        closing = asyncio.create_task(executor.aclose())  # runs first...
        manual.futures[0].set_result(0)  # ...then the waiter, holding the slot
        with pytest.raises(ClosedError):
            await waiter
        await closing
        assert await holder == 0
        assert manual.submits == 1
        assert_idle(executor)

    async def test_resize_during_close_admits_nobody_and_close_still_ends(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=2)
        gate = make_gate()
        running = [await executor.submit(gate, n) for n in range(2)]
        await gate.started(2)
        waiter = asyncio.create_task(executor.run(noop, 9))
        await settle()
        closing = asyncio.create_task(executor.aclose())
        await settle()
        executor.resize(4)  # grow: there is nobody left to admit
        with pytest.raises(ClosedError):
            await waiter
        executor.resize(1)  # shrink below the calls in flight
        assert executor.stats().in_flight == 2
        gate.open()
        await closing
        assert await asyncio.gather(*running) == [0, 1]
        assert gate.calls == [0, 1]
        assert_idle(executor)
