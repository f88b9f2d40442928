"""The gate's promises seen through the executor, on every loop.

What every gate keeps on its own (FIFO, cancellation, ``max_wait``, close,
resize, the admission questions) is proven once, over every gate, in
``test_gate_contract.py``. These tests hold the same promises at the
executor's level: many concurrent callers each wait their full
``max_wait``, and ``stats()`` and a newcomer see a cancelled waiter gone in
the same step.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from aiobound import OverloadedError
from conftest import ExecutorFactory, GateFactory, assert_idle, settle
from workers import identity


class TestMaxWaitNeverRefusesEarly:
    async def test_concurrent_waiters_each_wait_their_full_max_wait(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_wait=0.0004)
        blocker = make_gate()
        running = await executor.submit(blocker, 0)
        await blocker.started()

        async def refused_after() -> float:
            began = time.monotonic()
            with pytest.raises(OverloadedError):
                await executor.run(identity, 1)
            return time.monotonic() - began

        for _ in range(5):
            waits = await asyncio.gather(*(refused_after() for _ in range(20)))
            assert min(waits) >= 0.0004, sorted(waits)[:3]
        assert executor.stats().timed_out == 100
        blocker.open()
        assert await running == 0
        assert_idle(executor)


class TestCancelledWaiterCountsNoMore:
    async def test_executor_stats_and_submit_in_the_same_step(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_pending=1)
        blocker = make_gate()
        running = await executor.submit(blocker, 0)
        await blocker.started()
        doomed = asyncio.create_task(executor.run(identity, 1))
        await settle()
        assert executor.stats().waiting == 1
        doomed.cancel()
        assert executor.stats().waiting == 0
        assert executor._path.gate.waiting == 0
        asyncio.get_running_loop().call_soon(blocker.open)
        assert await executor.run(identity, 2) == 2  # old: OverloadedError
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await running == 0
        assert executor.stats().rejected == 0
        assert_idle(executor)
