"""Under anyio on asyncio: task groups, fail_after and cancel scopes."""

from __future__ import annotations

import anyio
import pytest

from conftest import CountingExecutor, ExecutorFactory, GateFactory, assert_idle


def double(x: int) -> int:
    return 2 * x


class TestAnyio:
    async def test_task_group_of_producers_respects_the_bound(
        self, make_executor: ExecutorFactory
    ) -> None:
        counting = CountingExecutor(max_workers=2)
        executor = make_executor(executor=counting, bound=3)
        results: list[int] = []

        async def produce(n: int) -> None:
            results.append(await executor.run(double, n))

        async with anyio.create_task_group() as tg:
            for n in range(100):
                tg.start_soon(produce, n)
        assert sorted(results) == [2 * n for n in range(100)]
        assert counting.peak_in_pool <= 3
        assert_idle(executor)

    async def test_cancel_scope_while_waiting_submits_nothing(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        fut = await executor.submit(gate, "running")
        await gate.started()
        with anyio.CancelScope() as scope:
            scope.cancel()  # delivered at the first await inside the scope
            _ = await executor.submit(gate, "never")
        assert scope.cancelled_caught
        assert executor.stats().waiting == 0
        gate.open()
        assert await fut == "running"
        assert gate.calls == ["running"]
        assert_idle(executor)

    async def test_fail_after_while_waiting_submits_nothing(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        fut = await executor.submit(gate, "running")
        await gate.started()
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0):  # already expired: no wall-clock wait
                await executor.run(gate, "never")
        gate.open()
        assert await fut == "running"
        assert gate.calls == ["running"]
        assert_idle(executor)

    async def test_cancel_scope_around_a_running_call_keeps_the_slot(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=2)
        executor = make_executor(executor=counting, bound=1)
        gate = make_gate()
        async with anyio.create_task_group() as tg:

            async def caller() -> None:
                with anyio.CancelScope() as scope:
                    tg.start_soon(cancel_when_started, scope)
                    await executor.run(gate, "running")

            async def cancel_when_started(scope: anyio.CancelScope) -> None:
                await gate.started()
                scope.cancel()

            tg.start_soon(caller)
        # The caller is gone, the call is not: it still holds the slot.
        assert executor.stats().in_flight == 1
        gate.open()
        assert await executor.run(double, 4) == 8
        assert counting.peak_in_pool == 1
        assert_idle(executor)

    async def test_map_inside_a_cancelled_scope_cleans_up(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=1)
        executor = make_executor(executor=counting, bound=2)
        gate = make_gate()
        received: list[int] = []
        async with anyio.create_task_group() as tg:

            async def consume(scope: anyio.CancelScope) -> None:
                with scope:
                    async for value in executor.map(gate, range(10)):
                        received.append(value)

            scope = anyio.CancelScope()
            tg.start_soon(consume, scope)
            await gate.started()
            scope.cancel()
        assert received == []
        gate.open()
        await executor.aclose()
        assert gate.calls == [0]  # the queued item 1 was cancelled
        assert_idle(executor)
