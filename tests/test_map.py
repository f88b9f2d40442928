"""map(): lazy, bounded, ordered or not, errors, and clean-up on early exit."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import TYPE_CHECKING

import pytest

from aiobound import ClosedError, MapIterator
from conftest import (
    CountingExecutor,
    ExecutorFactory,
    GateFactory,
    ManualExecutor,
    SubmitRefused,
    assert_idle,
    settle,
)
from sources import Boom, Source, agen, double, fail_on_three

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


class TestResults:
    @pytest.mark.parametrize("ordered", [True, False])
    async def test_sync_iterable(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        executor = make_executor(max_workers=3)
        results = [r async for r in executor.map(double, range(50), ordered=ordered)]
        if ordered:
            assert results == [2 * x for x in range(50)]
        else:
            assert sorted(results) == [2 * x for x in range(50)]
        assert_idle(executor)
        assert executor.stats().completed == 50

    @pytest.mark.parametrize("ordered", [True, False])
    async def test_async_iterable(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        executor = make_executor(max_workers=3)
        pulled: list[int] = []
        results = [
            r async for r in executor.map(double, agen(30, pulled), ordered=ordered)
        ]
        assert sorted(results) == [2 * x for x in range(30)]
        assert_idle(executor)

    async def test_empty_source(self, make_executor: ExecutorFactory) -> None:
        executor = make_executor(max_workers=1)
        assert [r async for r in executor.map(double, [])] == []
        assert executor.stats().submitted == 0

    async def test_ordered_yields_in_input_order_even_when_later_calls_end_first(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=4, bound=4)
        slow = make_gate()

        def work(x: int) -> int:
            return slow(x) if x == 0 else x

        results = executor.map(work, range(4))
        first = asyncio.create_task(results.__anext__())
        await slow.started()
        await asyncio.wait(list(results._window.pending)[1:])  # items 1..3 are done
        await settle()
        assert not first.done()  # but item 0 comes first
        slow.open()
        assert await first == 0
        assert [r async for r in results] == [1, 2, 3]

    async def test_unordered_yields_in_completion_order(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=4, bound=4)
        slow = make_gate()

        def work(x: int) -> int:
            return slow(x) if x == 0 else x

        results = executor.map(work, range(4), ordered=False)
        first_three = [await results.__anext__() for _ in range(3)]
        assert sorted(first_three) == [1, 2, 3]
        slow.open()
        assert [r async for r in results] == [0]


class TestIntrospection:
    @pytest.mark.parametrize("ordered", [True, False])
    async def test_repr_follows_the_state(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=2)
        mapped = executor.map(double, range(5), ordered=ordered)
        name = f"<MapIterator ordered={ordered} chunksize=1"
        assert repr(mapped) == f"{name} outstanding=0 open>"
        waiting = asyncio.create_task(mapped.__anext__())
        await settle()
        assert repr(mapped) == f"{name} outstanding=2 open>"
        await mapped.aclose()
        assert repr(mapped) == f"{name} outstanding=0 finished>"
        with pytest.raises(StopAsyncIteration):
            await waiting


class TestMemory:
    async def test_an_unordered_map_keeps_no_finished_call(
        self, make_executor: ExecutorFactory
    ) -> None:
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=2)
        mapped = executor.map(double, range(20), ordered=False)
        got = []
        for n in range(20):
            waiting = asyncio.create_task(mapped.__anext__())
            await settle()
            manual.by_tag[n].set_result(n)
            got.append(await waiting)
            # What the window holds stays within the bound, however long the map.
            window = mapped._window
            assert len(window.running) + len(window.done) <= 2
        assert got == list(range(20))
        await mapped.aclose()
        assert_idle(executor)


class TestLaziness:
    @pytest.mark.parametrize("ordered", [True, False])
    async def test_never_pulls_more_than_bound_ahead_of_the_consumer(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        executor = make_executor(max_workers=2, bound=4)
        source = Source(100)
        received = 0
        async for _ in executor.map(double, source, ordered=ordered):
            received += 1
            assert source.pulled - received <= 4
        assert received == 100

    async def test_infinite_async_generator_is_pulled_lazily(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=3)
        pulled: list[int] = []
        results = []
        async with executor.map(double, agen(None, pulled)) as mapped:
            async for value in mapped:
                results.append(value)
                assert len(pulled) - len(results) <= 3
                if len(results) == 20:
                    break
        assert results == [2 * x for x in range(20)]
        assert len(pulled) <= 23
        await executor.aclose()
        assert_idle(executor)

    async def test_a_blocked_pool_stops_the_pulling(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=1)
        executor = make_executor(executor=counting, bound=2)
        gate = make_gate()
        source = Source(None)
        results = executor.map(gate, source)
        first = asyncio.create_task(results.__anext__())
        await gate.started()
        await settle()
        assert source.pulled == 2
        assert counting.in_pool == 2
        gate.open()
        assert await first == 0
        await results.aclose()


class TestErrors:
    @pytest.mark.parametrize("ordered", [True, False])
    async def test_exception_from_fn_ends_the_iteration_with_it(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        results: list[int] = []
        mapped = executor.map(fail_on_three, range(10), ordered=ordered)
        with pytest.raises(Boom, match="item 3"):
            async for value in mapped:
                results.append(value)
        assert results == [0, 1, 2]
        assert [r async for r in mapped] == []  # finished for good
        assert_idle(executor)

    @pytest.mark.parametrize("source", ["sync", "async"])
    @pytest.mark.parametrize("ordered", [True, False])
    async def test_an_item_the_executor_refuses_raises_in_its_place(
        self, make_executor: ExecutorFactory, source: str, ordered: bool
    ) -> None:
        manual = ManualExecutor()
        manual.refuse.add(1)
        executor = make_executor(executor=manual, bound=1)
        items = range(3) if source == "sync" else agen(3)
        mapped = executor.map(double, items, ordered=ordered)
        first = asyncio.create_task(mapped.__anext__())
        await settle()
        assert manual.submit_log == [0]  # item 1 waits for the slot
        manual.by_tag[0].set_result(0)
        assert await first == 0
        with pytest.raises(SubmitRefused, match="call 1 refused"):
            await mapped.__anext__()
        assert manual.submit_log == [0, 1]
        assert [r async for r in mapped] == []  # finished for good
        assert_idle(executor)

    async def test_exception_from_the_producer_comes_after_earlier_results(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)

        def producer() -> Iterator[int]:
            yield 1
            yield 2
            raise Boom("producer")

        results: list[int] = []
        with pytest.raises(Boom, match="producer"):
            async for value in executor.map(double, producer()):
                results.append(value)
        assert results == [2, 4]
        assert_idle(executor)

    async def test_exception_from_an_async_producer(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)

        async def producer() -> AsyncIterator[int]:
            yield 1
            raise Boom("async producer")

        with pytest.raises(Boom, match="async producer"):
            async for _ in executor.map(double, producer(), ordered=False):
                pass
        assert_idle(executor)

    async def test_executor_closed_mid_map_raises_closed_error(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        results = []
        with pytest.raises(ClosedError):
            async for value in executor.map(double, range(100)):
                results.append(value)
                if value == 4:
                    await executor.aclose()
        assert results[:3] == [0, 2, 4]


class TestCleanUp:
    async def _blocked_map(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        ordered: bool = True,
    ) -> tuple[MapIterator[int], CountingExecutor, list[int]]:
        # Two workers, bound 4: two calls run (gated), two wait in the pool.
        counting = CountingExecutor(max_workers=2)
        executor = make_executor(executor=counting, bound=4)
        gate = make_gate()
        self.gate = gate
        self.executor = executor
        mapped = executor.map(gate, range(100), ordered=ordered)
        self.first = asyncio.create_task(mapped.__anext__())
        await gate.started(2)
        await settle()
        assert counting.in_pool == 4
        return mapped, counting, gate.calls  # type: ignore[return-value]

    async def _finish_and_check(self, counting: CountingExecutor) -> None:
        # Calls not started were cancelled at once; the running ones keep
        # their slots until they end.
        assert self.executor.stats().in_flight == 2
        self.gate.open()
        await self.executor.aclose()
        assert self.gate.calls == [0, 1]  # the two queued calls never ran
        assert counting.in_pool == 0
        assert_idle(self.executor)
        assert self.executor.stats().cancelled == 2

    async def test_aclose_cancels_what_has_not_started(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        mapped, counting, _ = await self._blocked_map(make_executor, make_gate)
        self.first.cancel()
        await asyncio.gather(self.first, return_exceptions=True)
        await mapped.aclose()
        await mapped.aclose()  # idempotent
        await self._finish_and_check(counting)

    @pytest.mark.parametrize("ordered", [True, False])
    async def test_cancelling_the_consumer_cancels_what_has_not_started(
        self, make_executor: ExecutorFactory, make_gate: GateFactory, ordered: bool
    ) -> None:
        mapped, counting, _ = await self._blocked_map(make_executor, make_gate, ordered)
        self.first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.first
        with pytest.raises(StopAsyncIteration):
            await mapped.__anext__()
        await self._finish_and_check(counting)

    async def test_break_then_garbage_collection_cancels_what_has_not_started(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=2)
        executor = make_executor(executor=counting, bound=4)
        gate = make_gate()
        self.gate, self.executor = gate, executor

        def work(x: int) -> int:
            return x if x == 0 else gate(x)

        async for value in executor.map(work, range(100)):
            assert value == 0
            await gate.started(2)
            await settle()
            break
        gc.collect()  # CPython already did it on `break`; others need this
        await settle()  # the cancellations reach the pool via future callbacks
        # Items 0..3 were pulled (the window is 4): 0 was received, 1 and 2
        # run, 3 was queued in the pool and is now cancelled.
        assert executor.stats().in_flight == 2
        assert executor.stats().cancelled == 1
        gate.open()
        await executor.aclose()
        assert sorted(gate.calls) == [1, 2]  # type: ignore[type-var]
        assert_idle(executor)

    async def test_exception_in_the_consumer_with_async_with_cleans_up(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        mapped, counting, _ = await self._blocked_map(make_executor, make_gate)
        self.first.cancel()
        await asyncio.gather(self.first, return_exceptions=True)
        with pytest.raises(KeyError):
            async with mapped:
                raise KeyError("consumer failed")
        await self._finish_and_check(counting)

    @pytest.mark.parametrize("source", ["sync", "async"])
    async def test_aclose_from_another_task_ends_the_waiting_anext(
        self, make_executor: ExecutorFactory, source: str
    ) -> None:
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=2)
        items = range(5) if source == "sync" else agen(5)
        mapped = executor.map(double, items)
        waiting = asyncio.create_task(mapped.__anext__())
        await settle()
        assert manual.submits == 2  # waiting for the first result
        await mapped.aclose()
        with pytest.raises(StopAsyncIteration):
            await waiting
        assert all(future.cancelled() for future in manual.futures)
        assert_idle(executor)

    @pytest.mark.skipif(
        sys.version_info < (3, 11), reason="Task.cancelling(): Python 3.11+"
    )
    @pytest.mark.parametrize("source", ["sync", "async"])
    async def test_a_consumer_cancelled_as_the_map_is_closed_stays_cancelled(
        self, make_executor: ExecutorFactory, source: str
    ) -> None:
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=2)
        items = range(5) if source == "sync" else agen(5)
        mapped = executor.map(double, items)
        waiting = asyncio.create_task(mapped.__anext__())
        await settle()
        waiting.cancel()  # the consumer's own cancellation...
        await mapped.aclose()  # ...and a close, before the consumer resumes
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert waiting.cancelled()
        assert_idle(executor)

    async def test_aclose_closes_an_async_generator_source(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        closed = asyncio.Event()

        async def source() -> AsyncIterator[int]:
            try:
                for i in range(100):
                    yield i
            finally:
                closed.set()

        async with executor.map(double, source()) as mapped:
            assert await mapped.__anext__() == 0
        assert closed.is_set()

    async def test_aclose_closes_a_generator_source(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        closed = []

        def source() -> Iterator[int]:
            try:
                yield from range(100)
            finally:
                closed.append(True)

        async with executor.map(double, source()) as mapped:
            assert await mapped.__anext__() == 0
        assert closed == [True]
