"""Partitions: guaranteed shares of the bound, on the gate alone and through
the executor on real thread pools."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import (
    AIMD,
    BoundedLoopExecutor,
    ClosedError,
    OverloadedError,
    Partition,
    PartitionStats,
    SharedBound,
)
from aiobound._partitions import PartitionedGate, check_partitions, guaranteed_slots
from conftest import ManualExecutor, settle

if TYPE_CHECKING:
    from conftest import ExecutorFactory, GateFactory


def make_gate(
    bound: int,
    shares: dict[str, float],
    max_pending: int | None = None,
    max_wait: float | None = None,
) -> PartitionedGate:
    gate = PartitionedGate(bound, shares, max_pending, max_wait)
    gate.bind(asyncio.get_running_loop())
    return gate


def waiter(gate: PartitionedGate, name: str, log: list[str]) -> asyncio.Task[None]:
    part = gate.part(name)

    async def wait() -> None:
        await part.acquire()
        log.append(name)

    return asyncio.create_task(wait())


class TestValidation:
    @pytest.mark.parametrize(
        ("partitions", "error", "match"),
        [
            ([("a", 0.5)], TypeError, "partitions must be a mapping"),
            ({}, ValueError, "at least one"),
            ({"": 0.5}, ValueError, "name must not be empty"),
            ({1: 0.5}, TypeError, "each name must be a str"),
            ({"a": "0.5"}, TypeError, r"partitions\['a'\] must be a number"),
            ({"a": True}, TypeError, r"partitions\['a'\] must be a number"),
            ({"a": 0}, ValueError, r"partitions\['a'\] must be a share"),
            ({"a": 1.5}, ValueError, r"partitions\['a'\] must be a share"),
            ({"a": -0.1}, ValueError, r"partitions\['a'\] must be a share"),
            ({"a": 0.7, "b": 0.4}, ValueError, "add up to 1.1"),
        ],
    )
    def test_bad_partitions_are_refused_naming_the_argument(
        self, partitions: object, error: type[Exception], match: str
    ) -> None:
        with pytest.raises(error, match=match):
            check_partitions(partitions)
        with pytest.raises(error, match=match):
            BoundedLoopExecutor(max_workers=1, partitions=partitions)  # type: ignore[arg-type]

    def test_shares_adding_up_to_one_are_accepted(self) -> None:
        assert check_partitions({"a": 0.7, "b": 0.2, "c": 0.1}) == {
            "a": 0.7,
            "b": 0.2,
            "c": 0.1,
        }

    def test_a_shared_bound_is_refused(self) -> None:
        with pytest.raises(TypeError, match="SharedBound"):
            BoundedLoopExecutor(
                max_workers=1, bound=SharedBound(2), partitions={"a": 0.5}
            )

    def test_guarantees_round_up_and_are_at_least_one(self) -> None:
        assert guaranteed_slots(0.7, 10) == 7  # 7.000000000000001 in floats
        assert guaranteed_slots(0.25, 10) == 3
        assert guaranteed_slots(0.01, 10) == 1
        assert guaranteed_slots(0.0, 10) == 0

    async def test_partition_names_are_checked(self) -> None:
        executor = BoundedLoopExecutor(max_workers=1, partitions={"a": 0.5})
        with pytest.raises(KeyError, match="no partition named 'b'"):
            executor.partition("b")
        with pytest.raises(TypeError, match="name must be a str"):
            executor.partition(3)  # type: ignore[arg-type]
        plain = BoundedLoopExecutor(max_workers=1)
        with pytest.raises(RuntimeError, match="has no partitions"):
            plain.partition("a")
        await executor.aclose()
        await plain.aclose()


class TestGate:
    async def test_the_default_partition_gets_the_share_left_over(self) -> None:
        gate = make_gate(10, {"a": 0.6, "b": 0.2})
        assert {p.name: p.guaranteed for p in gate.parts()} == {
            "a": 6,
            "b": 2,
            "default": 2,
        }
        full = make_gate(10, {"a": 0.5, "b": 0.5})
        assert full.part("default").guaranteed == 0

    async def test_idle_capacity_is_borrowed_and_the_bound_holds(self) -> None:
        gate = make_gate(4, {"a": 0.75, "b": 0.25})
        b = gate.part("b")
        assert all(b.try_acquire() for _ in range(4))
        assert not b.try_acquire()
        assert not gate.part("a").try_acquire()
        assert (gate.in_use, b.in_use, b.peak_in_use) == (4, 4, 4)

    async def test_a_freed_slot_goes_to_a_partition_below_its_guarantee(
        self,
    ) -> None:
        gate = make_gate(4, {"a": 0.5, "b": 0.5})
        b = gate.part("b")
        for _ in range(4):
            assert b.try_acquire()
        log: list[str] = []
        tasks = [waiter(gate, "b", log) for _ in range(3)]  # older
        tasks += [waiter(gate, "a", log) for _ in range(3)]
        await settle()
        assert (gate.waiting, b.waiting, gate.part("a").waiting) == (6, 3, 3)
        for _ in range(4):
            b.release()
            await settle()
        # a (0 held, 2 guaranteed) gets the first two freed slots although
        # b's waiters are older; then b is below its guarantee of 2 (it
        # holds 0 of its own) and gets the next two.
        assert log == ["a", "a", "b", "b"]
        assert (gate.part("a").in_use, b.in_use, gate.in_use) == (2, 2, 4)
        # A slot a gives back leaves a below its guarantee: a's waiter.
        gate.part("a").release()
        await settle()
        assert log[-1] == "a"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def test_with_no_partition_below_its_guarantee_the_oldest_is_next(
        self,
    ) -> None:
        gate = make_gate(4, {"a": 0.25, "b": 0.25})  # 1, 1 and default 2
        a, b, default = gate.part("a"), gate.part("b"), gate.part("default")
        assert a.try_acquire()
        assert a.try_acquire()  # borrows
        assert b.try_acquire()
        assert default.try_acquire()
        log: list[str] = []
        tasks = [waiter(gate, "b", log), waiter(gate, "a", log)]
        await settle()
        default.release()  # default is below its guarantee but has no waiter
        await settle()
        assert log == ["b"]  # b's waiter is the oldest; b now borrows too
        assert (a.in_use, b.in_use, default.in_use) == (2, 2, 0)
        b.release()
        await settle()
        assert log == ["b", "a"]
        await asyncio.gather(*tasks)

    async def test_fifo_within_a_partition(self) -> None:
        gate = make_gate(1, {"a": 0.5, "b": 0.5})
        a = gate.part("a")
        assert a.try_acquire()
        order: list[int] = []

        async def wait(n: int) -> None:
            await a.acquire()
            order.append(n)
            a.release()

        tasks = [asyncio.create_task(wait(n)) for n in range(5)]
        await settle()
        a.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
        assert gate.in_use == 0

    async def test_a_newcomer_never_overtakes_a_waiter(self) -> None:
        gate = make_gate(2, {"a": 0.5, "b": 0.5})
        a, b = gate.part("a"), gate.part("b")
        assert a.try_acquire()
        assert a.try_acquire()
        task = asyncio.create_task(b.acquire())
        await settle()
        a.release()  # handed to b's waiter, not left free
        assert not a.try_acquire()
        assert not gate.part("default").try_take()
        await task
        assert (a.in_use, b.in_use) == (1, 1)

    async def test_max_pending_is_per_partition(self) -> None:
        gate = make_gate(1, {"a": 0.5, "b": 0.5}, max_pending=1)
        a, b = gate.part("a"), gate.part("b")
        assert a.try_acquire()
        first = asyncio.create_task(a.acquire())
        other = asyncio.create_task(b.acquire())
        await settle()
        with pytest.raises(OverloadedError, match="partition 'a'"):
            await a.acquire()
        assert (a.rejected, b.rejected, gate.rejected) == (1, 0, 1)
        assert gate.waiting == 2
        assert not a.can_queue()
        assert b.can_queue() is False  # b's one waiting place is taken too
        first.cancel()
        other.cancel()
        await asyncio.gather(first, other, return_exceptions=True)
        assert gate.waiting == 0
        assert a.can_queue()

    async def test_max_wait_is_per_partition(self) -> None:
        gate = make_gate(1, {"a": 0.5, "b": 0.5}, max_wait=0.001)
        a, b = gate.part("a"), gate.part("b")
        assert a.try_acquire()
        with pytest.raises(OverloadedError, match=r"max_wait.*partition 'b'"):
            await b.acquire()
        assert (b.timed_out, a.timed_out, gate.timed_out) == (1, 0, 1)
        assert (b.waiting, gate.waiting) == (0, 0)

    async def test_a_cancelled_waiter_stops_counting_at_once(self) -> None:
        gate = make_gate(1, {"a": 0.5, "b": 0.5}, max_pending=1)
        b = gate.part("b")
        assert gate.part("a").try_acquire()
        task = asyncio.create_task(b.acquire())
        await settle()
        assert (b.waiting, gate.waiting) == (1, 1)
        task.cancel()  # no loop iteration yet
        assert (b.waiting, gate.waiting) == (0, 0)
        assert b.can_queue()
        await asyncio.gather(task, return_exceptions=True)
        gate.part("a").release()
        assert gate.in_use == 0

    async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on(self) -> None:
        gate = make_gate(1, {"a": 0.5, "b": 0.5})
        a, b = gate.part("a"), gate.part("b")
        assert a.try_acquire()
        log: list[str] = []
        first = waiter(gate, "b", log)
        second = waiter(gate, "a", log)
        await settle()
        a.release()  # a is below its guarantee: a's waiter gets it
        second.cancel()  # in the same iteration: it passes the slot on
        await asyncio.gather(second, return_exceptions=True)
        await first
        assert log == ["b"]
        assert (a.in_use, b.in_use, gate.in_use) == (0, 1, 1)
        b.release()
        assert gate.in_use == 0

    async def test_close_wakes_every_partitions_waiters(self) -> None:
        gate = make_gate(1, {"a": 0.5, "b": 0.5})
        assert gate.part("a").try_acquire()
        tasks = [asyncio.create_task(gate.part(name).acquire()) for name in "abab"]
        await settle()
        gate.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, ClosedError) for r in results)
        assert gate.waiting == 0
        assert all(p.waiting == 0 for p in gate.parts())
        with pytest.raises(ClosedError):
            gate.part("b").try_acquire()
        assert not gate.part("b").try_take()
        gate.part("a").release()
        await gate.wait_idle()
        assert gate.in_use == 0

    async def test_resize_recomputes_guarantees_and_wakes_waiters(self) -> None:
        gate = make_gate(2, {"a": 0.5, "b": 0.5})
        b = gate.part("b")
        assert b.try_acquire()
        assert b.try_acquire()
        log: list[str] = []
        tasks = [waiter(gate, "b", log), waiter(gate, "a", log)]
        await settle()
        gate.resize(4)
        await asyncio.gather(*tasks)
        assert {p.name: p.guaranteed for p in gate.parts()} == {
            "a": 2,
            "b": 2,
            "default": 0,
        }
        assert sorted(log) == ["a", "b"]
        gate.resize(1)  # shrink: nothing taken away, no slot handed on
        late = waiter(gate, "a", log)
        await settle()
        for _ in range(3):
            b.release()
            await settle()
        assert not late.done()  # 1 still held (a's): the bound is 1
        gate.part("a").release()
        await late
        assert gate.in_use == 1
        gate.part("a").release()
        assert gate.in_use == 0

    async def test_wait_stats_are_kept_per_partition_and_in_total(self) -> None:
        gate = make_gate(1, {"a": 0.5, "b": 0.5})
        a, b = gate.part("a"), gate.part("b")
        assert a.try_acquire()
        task = asyncio.create_task(b.acquire())
        await settle()
        a.release()
        await task
        assert (a.admitted, b.admitted) == (1, 1)
        assert a.wait_histogram().count == 1
        assert b.wait_histogram().count == 1
        assert gate.wait_histogram().count == 2
        assert b.wait_maximum > 0.0
        assert a.wait_maximum == 0.0
        assert gate.wait_maximum == b.wait_maximum


class TestExecutor:
    async def test_submit_run_and_map_through_a_partition(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(
            max_workers=2, partitions={"interactive": 0.8, "batch": 0.2}
        )
        batch = executor.partition("batch")
        assert isinstance(batch, Partition)
        assert batch.name == "batch"
        assert await batch.run(abs, -3) == 3
        future = await batch.submit(abs, -4)
        assert await future == 4
        assert [x async for x in batch.map(abs, range(-5, 0))] == [5, 4, 3, 2, 1]
        unordered = batch.map(abs, range(-40, 0), ordered=False)
        assert sorted([x async for x in unordered]) == list(range(1, 41))
        assert await executor.partition("interactive").run(abs, -1) == 1
        assert await executor.run(abs, -2) == 2  # the "default" partition
        stats = executor.stats()
        assert set(stats.partitions) == {"interactive", "batch", "default"}
        assert stats.partitions["batch"].submitted == 47
        assert stats.partitions["batch"].completed == 47
        assert stats.partitions["interactive"].completed == 1
        assert stats.partitions["default"].submitted == 1
        assert stats.partitions["default"].completed == 1
        assert stats.submitted == stats.completed == 49
        assert batch.stats() == stats.partitions["batch"]
        assert isinstance(batch.stats(), PartitionStats)
        assert stats.partitions["batch"].run_time.count == 47
        assert stats.partitions["default"].share == pytest.approx(0.0)
        assert stats.partitions["default"].guaranteed == 0

    async def test_interactive_calls_overtake_a_saturating_batch(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        block = make_gate()
        executor = make_executor(
            max_workers=4, bound=4, partitions={"interactive": 0.5, "batch": 0.5}
        )
        batch = executor.partition("batch")
        interactive = executor.partition("interactive")
        running = [await batch.submit(block, n) for n in range(4)]  # borrows all
        await block.started(4)
        queued_batch = [asyncio.create_task(batch.run(abs, -n)) for n in range(10)]
        await settle()
        late = asyncio.create_task(interactive.run(abs, -99))
        await settle()
        stats = executor.stats()
        assert stats.partitions["batch"].in_flight == 4
        assert stats.partitions["batch"].waiting == 10
        assert stats.partitions["interactive"].waiting == 1
        assert stats.in_flight == 4
        block.open()
        assert await late == 99
        await asyncio.gather(*running, *queued_batch)
        # The interactive call was handed the first freed slot although ten
        # batch callers had waited longer: its partition was below its share.
        stats = executor.stats()
        assert stats.partitions["interactive"].queue_wait.count == 1
        assert stats.partitions["batch"].completed == 14
        assert stats.peak_in_flight == 4
        order = executor.executor
        assert isinstance(order, concurrent.futures.ThreadPoolExecutor)

    async def test_handover_order_on_a_manual_executor(self) -> None:
        manual = ManualExecutor(cap=lambda: 2)
        executor = BoundedLoopExecutor(
            executor=manual, bound=2, partitions={"a": 0.5, "b": 0.5}
        )
        a, b = executor.partition("a"), executor.partition("b")
        tasks = [asyncio.create_task(b.run(abs, n)) for n in (1, 2, 3, 4)]
        await settle()
        tasks.append(asyncio.create_task(a.run(abs, 10)))
        await settle()
        assert manual.submit_log == [1, 2]
        manual.by_tag[1].set_result(1)
        await settle()
        assert manual.submit_log == [1, 2, 10]  # a was below its guarantee
        manual.by_tag[2].set_result(2)
        await settle()
        assert manual.submit_log == [1, 2, 10, 3]
        for tag in (10, 3, 4):
            while tag not in manual.by_tag:
                await settle()
            manual.by_tag[tag].set_result(tag)
            await settle()
        assert await asyncio.gather(*tasks) == [1, 2, 3, 4, 10]
        assert manual.violations == []
        await executor.aclose()
        stats = executor.stats()
        assert stats.partitions["a"].completed == 1
        assert stats.partitions["b"].completed == 4

    async def test_refused_submission_frees_the_partitions_slot(self) -> None:
        manual = ManualExecutor()
        manual.refuse.add(5)
        executor = BoundedLoopExecutor(
            executor=manual, bound=1, partitions={"a": 0.5, "b": 0.5}
        )
        with pytest.raises(Exception, match="call 5 refused"):
            await executor.partition("a").run(abs, 5)
        stats = executor.stats()
        assert stats.partitions["a"].failed == 1
        assert stats.partitions["a"].in_flight == 0
        assert stats.in_flight == 0
        with pytest.raises(Exception, match="call 5 refused"):
            await executor.run(abs, 5)
        assert executor.stats().partitions["default"].failed == 1
        await executor.aclose()

    async def test_cancelled_and_closed_waiters_leave_exact_counts(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        block = make_gate()
        executor = make_executor(
            max_workers=1, bound=1, partitions={"a": 0.5, "b": 0.5}
        )
        a, b = executor.partition("a"), executor.partition("b")
        running = await a.submit(block, 1)
        await block.started()
        waiting = [asyncio.create_task(b.run(abs, n)) for n in range(3)]
        waiting += [asyncio.create_task(a.run(abs, n)) for n in range(2)]
        await settle()
        waiting[0].cancel()
        stats = executor.stats()
        assert stats.partitions["b"].waiting == 2
        assert stats.waiting == 4
        closing = asyncio.create_task(executor.aclose())
        await settle()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert all(isinstance(r, ClosedError) for r in results[1:])
        block.open()
        assert await running == 1
        await closing
        stats = executor.stats()
        assert (stats.in_flight, stats.waiting) == (0, 0)
        assert all(
            (p.in_flight, p.waiting) == (0, 0) for p in stats.partitions.values()
        )
        assert stats.partitions["a"].completed == 1
        with pytest.raises(ClosedError):
            await b.run(abs, 1)

    async def test_with_a_limit_policy_the_guarantees_follow_the_bound(
        self, make_executor: ExecutorFactory
    ) -> None:
        policy = AIMD(initial=4, min=1, max=8)
        executor = make_executor(
            max_workers=8, bound=policy, partitions={"a": 0.5, "b": 0.25}
        )
        assert executor.stats().partitions["a"].guaranteed == 2
        for _ in range(5):
            await executor.partition("a").run(abs, -1)
        stats = executor.stats()
        assert stats.bound == policy.limit
        assert stats.partitions["a"].guaranteed == guaranteed_slots(0.5, stats.bound)
        assert stats.partitions["b"].guaranteed == guaranteed_slots(0.25, stats.bound)

    async def test_a_process_pool_with_partitions(self) -> None:
        executor = BoundedLoopExecutor.process(
            max_workers=1, partitions={"a": 0.5, "b": 0.5}
        )
        try:
            assert await executor.partition("b").run(abs, -7) == 7
            assert executor.stats().partitions["b"].completed == 1
        finally:
            await executor.aclose()

    async def test_rate_limited_partition(self, make_executor: ExecutorFactory) -> None:
        executor = make_executor(
            max_workers=2, partitions={"a": 0.5}, max_per_second=1000.0, burst=5
        )
        a = executor.partition("a")
        results: list[Any] = [await a.run(abs, -n) for n in range(3)]
        results += [x async for x in a.map(abs, [-1, -2])]
        assert results == [0, 1, 2, 1, 2]
        assert executor.stats().partitions["a"].completed == 5
