"""``shed_at_edge()`` and ``stats().queued``: what an operator counts.

``shed_at_edge()`` is ``can_admit()`` that counts what it refuses, so that the
refusal counters (``rejected``, ``timed_out``, ``shed_at_edge``) add up to
every request refused for load, the edge check's included. ``queued`` counts
the calls handed to the pool that have not started there.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiobound import CallObserver
from conftest import settle
from workers import identity

if TYPE_CHECKING:
    from conftest import ExecutorFactory, GateFactory


class EdgeRecorder(CallObserver):
    def __init__(self) -> None:
        self.shed: list[str | None] = []

    def refused_at_edge(self, partition: str | None) -> None:
        self.shed.append(partition)


class TestShedAtEdge:
    async def test_sheds_and_counts_exactly_when_a_call_would_be_refused(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_pending=1)
        gate = make_gate()
        assert not executor.shed_at_edge()  # a slot is free
        running = await executor.submit(gate, 0)
        assert not executor.shed_at_edge()  # would wait, and may
        waiter = asyncio.create_task(executor.run(identity, 1))
        await settle()
        assert executor.shed_at_edge()  # the waiting room is full
        assert executor.shed_at_edge()
        stats = executor.stats()
        assert (stats.shed_at_edge, stats.rejected, stats.waiting) == (2, 0, 1)
        gate.open()
        await asyncio.gather(running, waiter)
        assert not executor.shed_at_edge()
        assert executor.stats().shed_at_edge == 2

    async def test_a_closed_executor_sheds(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        await executor.aclose()
        assert executor.shed_at_edge()
        assert executor.stats().shed_at_edge == 1

    async def test_the_observer_hears_each_shed_request(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_pending=0)
        recorder = EdgeRecorder()
        executor.add_observer(recorder)
        assert not executor.shed_at_edge()
        assert recorder.shed == []
        await executor.aclose()
        assert executor.shed_at_edge()
        assert recorder.shed == [None]

    async def test_a_partition_counts_its_own_and_the_executor_total(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(
            max_workers=2, bound=2, max_pending=0, partitions={"batch": 0.5}
        )
        recorder = EdgeRecorder()
        executor.add_observer(recorder)
        gate = make_gate()
        batch = executor.partition("batch")
        held = [await batch.submit(gate, 0), await executor.submit(gate, 1)]
        assert batch.shed_at_edge()
        assert executor.shed_at_edge()
        assert executor.shed_at_edge()
        stats = executor.stats()
        assert stats.shed_at_edge == 3
        assert stats.partitions["batch"].shed_at_edge == 1
        assert stats.partitions["default"].shed_at_edge == 2
        assert recorder.shed == ["batch", "default", "default"]
        gate.open()
        await asyncio.gather(*held)


class TestQueued:
    async def test_counts_calls_handed_over_and_not_started(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=3)
        gate = make_gate()
        first = await executor.submit(gate, 0)
        await gate.started()
        rest = [await executor.submit(gate, i) for i in (1, 2)]
        stats = executor.stats()
        assert (stats.in_flight, stats.queued) == (3, 2)
        gate.open()
        await asyncio.gather(first, *rest)
        assert executor.stats().queued == 0
