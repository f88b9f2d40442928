"""aclose() and async with: refuse, wake, drain, shut down what we own."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from aiobound import BoundedLoopExecutor, ClosedError
from conftest import ExecutorFactory, GateFactory, assert_idle, settle
from workers import identity


class TestClose:
    async def test_new_submits_after_close_raise_closed_error(self) -> None:
        executor = BoundedLoopExecutor(max_workers=1)
        await executor.aclose()
        with pytest.raises(ClosedError):
            _ = await executor.submit(identity, 1)
        with pytest.raises(ClosedError):
            await executor.run(identity, 1)
        assert executor.closed

    async def test_waiting_callers_are_woken_with_closed_error(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        running = asyncio.create_task(executor.run(gate, 1))
        await gate.started()
        waiters = [asyncio.create_task(executor.run(gate, n)) for n in range(3)]
        await settle()
        closing = asyncio.create_task(executor.aclose())
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, ClosedError) for r in results)
        assert not closing.done()  # still waiting for the running call
        gate.open()
        await closing
        assert await running == 1
        assert gate.calls == [1]
        assert_idle(executor)

    async def test_calls_in_flight_are_awaited_without_blocking_the_loop(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=2)
        gate = make_gate()
        futures = [await executor.submit(gate, n) for n in range(3)]
        await gate.started(2)
        closing = asyncio.create_task(executor.aclose())
        await settle()
        # The loop is free while aclose waits: this coroutine runs.
        assert not closing.done()
        assert executor.stats().in_flight == 3
        gate.open()
        await closing
        assert [f.result() for f in futures] == [0, 1, 2]
        assert_idle(executor)

    async def test_owned_pool_is_shut_down(self) -> None:
        executor = BoundedLoopExecutor(max_workers=1)
        assert await executor.run(identity, 5) == 5
        await executor.aclose()
        pool = executor.executor
        with pytest.raises(RuntimeError, match="shutdown"):
            pool.submit(identity, 1)

    async def test_wrapped_pool_is_left_running(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            async with BoundedLoopExecutor(executor=pool) as executor:
                assert await executor.run(identity, 1) == 1
            assert executor.closed
            assert pool.submit(identity, 2).result() == 2

    async def test_closing_twice_is_harmless(self) -> None:
        executor = BoundedLoopExecutor(max_workers=1)
        await executor.aclose()
        await executor.aclose()
        await asyncio.gather(executor.aclose(), executor.aclose())
        assert executor.closed

    async def test_close_of_an_unused_executor(self) -> None:
        async with BoundedLoopExecutor(max_workers=1) as executor:
            pass
        assert executor.closed
        assert_idle(executor)

    async def test_cancelled_aclose_leaves_it_closed_and_can_be_retried(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        gate = make_gate()
        running = await executor.submit(gate, 1)
        await gate.started()
        closing = asyncio.create_task(executor.aclose())
        await settle()
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert executor.closed
        with pytest.raises(ClosedError):
            _ = await executor.submit(identity, 2)
        gate.open()
        await executor.aclose()
        assert await running == 1
        assert_idle(executor)

    async def test_leaving_async_with_on_error_still_closes(self) -> None:
        with pytest.raises(KeyError):
            async with BoundedLoopExecutor(max_workers=1) as executor:
                raise KeyError("boom")
        assert executor.closed
