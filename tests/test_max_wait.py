"""max_wait: queue-delay shedding, and the queue-wait statistics."""

from __future__ import annotations

import asyncio
import types

import pytest

from aiobound import OverloadedError, _waiting
from conftest import (
    ExecutorFactory,
    GateFactory,
    ManualExecutor,
    assert_idle,
    settle,
)
from workers import identity


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
            await executor.run(identity, 1)
        stats = executor.stats()
        assert (stats.timed_out, stats.rejected, stats.waiting) == (1, 0, 0)
        gate.open()
        assert await running == 0
        assert await executor.run(identity, 2) == 2  # no slot leaked
        assert_idle(executor)

    async def test_a_caller_served_in_time_is_not_refused(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_wait=60)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        await gate.started()
        waiter = asyncio.create_task(executor.run(identity, 1))
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
            *(executor.run(identity, n) for n in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, OverloadedError) for r in results)
        gate.open()
        await running
        assert await executor.run(identity, 9) == 9
        assert executor.stats().timed_out == 5
        assert_idle(executor)


class TestQueueWaitStats:
    async def test_no_waiting_means_zero_queue_wait(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)
        await executor.run(identity, 1)
        stats = executor.stats()
        assert (stats.queue_wait_avg, stats.queue_wait_max) == (0.0, 0.0)

    async def test_waits_are_measured(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        await gate.started()
        waiter = asyncio.create_task(executor.run(identity, 1))
        await settle()
        gate.open()
        await asyncio.gather(running, waiter)
        stats = executor.stats()
        assert stats.queue_wait_max > 0
        # Two grants, one of them immediate: the mean is half the one wait.
        assert stats.queue_wait_avg == pytest.approx(stats.queue_wait_max / 2)

    async def test_the_mean_and_the_longest_wait_on_a_fake_clock(
        self, make_executor: ExecutorFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = [100.0]
        monkeypatch.setattr(
            _waiting, "time", types.SimpleNamespace(monotonic=lambda: now[0])
        )
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=2)
        held = [await executor.submit(identity, n) for n in (0, 1)]  # waited 0 each
        first = asyncio.create_task(executor.run(identity, 3))  # waits from 100
        await settle()
        now[0] = 110.0
        second = asyncio.create_task(executor.run(identity, 4))  # waits from 110
        await settle()
        now[0] = 130.0
        executor.resize(4)  # both granted at 130: waited 30 and 20
        await settle()
        for future in manual.futures:
            future.set_result(None)
        await asyncio.gather(*held, first, second)
        stats = executor.stats()
        assert stats.queue_wait_max == 30.0
        assert stats.queue_wait_avg == pytest.approx(50.0 / 4)
