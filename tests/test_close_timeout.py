"""aclose(timeout=...): what is cancelled, what is reported, and races with close."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from aiobound import BoundedLoopExecutor, ClosedError
from conftest import (
    CountingExecutor,
    ExecutorFactory,
    GateFactory,
    ManualExecutor,
    assert_idle,
    settle,
)
from workers import identity


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
        with pytest.raises(TimeoutError) as raised:
            await executor.aclose(timeout=0.01)
        assert str(raised.value) == (
            "aclose(timeout=0.01): 1 calls still running; 2 calls not yet "
            "started were cancelled. Running calls cannot be interrupted; their "
            "slots are freed when they end."
        )
        assert executor.stats().in_flight == 1
        assert executor.stats().cancelled == 2
        pool = executor.executor
        with pytest.raises(RuntimeError, match="after shutdown"):
            pool.submit(identity, 9)  # the pool it owns is stopped, not waited for
        for fut in futures[1:]:  # dropped before they started: ClosedError
            with pytest.raises(ClosedError, match="before this call started"):
                await fut
        gate.open()
        assert await futures[0] == 0
        assert gate.calls == [0]
        await executor.aclose()  # now it returns, and joins the pool's workers
        assert_idle(executor)
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
        assert counting.submit(identity, 5).result() == 5

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
        holder = await executor.submit(identity, 0)
        waiter = asyncio.create_task(executor.run(identity, 1))
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
        waiter = asyncio.create_task(executor.run(identity, 9))
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
