"""resize(): growing admits at once, shrinking takes nothing away."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from conftest import (
    CountingExecutor,
    ExecutorFactory,
    GateFactory,
    assert_idle,
    settle,
)
from workers import identity

if TYPE_CHECKING:
    from collections.abc import Iterator


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
        waiters = [asyncio.create_task(executor.run(identity, n)) for n in range(3)]
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
        # The waiters may pass each other the slots before the last gated
        # calls report back from their threads: wait for those too.
        assert await asyncio.gather(*running[2:]) == [2, 3]
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
        async for _ in executor.map(identity, source()):
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
        await executor.run(identity, 1)  # binds to this loop
        with pytest.raises(RuntimeError) as raised:
            await asyncio.to_thread(executor.resize, 3)
        assert str(raised.value) == (
            "resize() must be called from the event loop's thread; use "
            "loop.call_soon_threadsafe(executor.resize, n) from others"
        )
        assert executor.bound == 2

    async def test_a_bad_bound_is_named_in_full(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        with pytest.raises(ValueError, match=r"^bound must be an int >= 1, got 0$"):
            executor.resize(0)
