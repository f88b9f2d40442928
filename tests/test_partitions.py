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
    Share,
    SharedBound,
)
from aiobound._partitions import (
    PartitionedGate,
    ceiling_slots,
    check_partitions,
    guaranteed_slots,
)
from conftest import ManualExecutor, settle

if TYPE_CHECKING:
    from conftest import ExecutorFactory, GateFactory


def partitioned_gate(
    bound: int,
    shares: dict[str, float | Share],
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
            ({"a": Share(0.7), "b": 0.4}, ValueError, "add up to 1.1"),
            ({"a": [0.5]}, TypeError, r"partitions\['a'\] must be .* or a Share"),
        ],
    )
    def test_bad_partitions_are_refused_naming_the_argument(
        self, partitions: object, error: type[Exception], match: str
    ) -> None:
        with pytest.raises(error, match=match):
            check_partitions(partitions, shared=False)
        with pytest.raises(error, match=match):
            BoundedLoopExecutor(max_workers=1, partitions=partitions)  # type: ignore[arg-type]

    def test_shares_adding_up_to_one_are_accepted(self) -> None:
        assert check_partitions({"a": 1}, shared=False) == {"a": Share(1.0)}
        assert check_partitions(
            {"a": 0.7, "b": Share(0.2), "c": 0.1}, shared=False
        ) == {
            "a": Share(0.7),
            "b": Share(0.2),
            "c": Share(0.1),
        }

    @pytest.mark.parametrize(
        ("args", "kwargs", "error", "match"),
        [
            (("0.5",), {}, TypeError, r"Share\.share must be a number"),
            ((True,), {}, TypeError, r"Share\.share must be a number"),
            ((0,), {}, ValueError, r"Share\.share must be .* in \(0, 1\], got 0"),
            ((1.5,), {}, ValueError, r"Share\.share must be .* got 1\.5"),
            ((0.5,), {"max_share": "1"}, TypeError, r"Share\.max_share must be"),
            ((0.5,), {"max_share": 1.5}, ValueError, r"Share\.max_share must be"),
            (
                (0.5,),
                {"max_share": 0.25},
                ValueError,
                r"Share\.max_share must be at least the share 0\.5, got 0\.25",
            ),
            ((0.5,), {"max_pending": -1}, ValueError, r"Share\.max_pending must"),
            ((0.5,), {"max_pending": 1.0}, TypeError, r"Share\.max_pending must"),
            ((0.5,), {"max_wait": 0}, ValueError, r"Share\.max_wait must"),
            ((0.5,), {"max_wait": float("nan")}, ValueError, r"Share\.max_wait must"),
            ((0.5,), {"max_wait": "1"}, TypeError, r"Share\.max_wait must"),
        ],
    )
    def test_a_bad_share_is_refused_when_made_naming_the_field(
        self,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        error: type[Exception],
        match: str,
    ) -> None:
        with pytest.raises(error, match=match):
            Share(*args, **kwargs)  # type: ignore[arg-type]

    def test_a_share_holds_its_settings_and_a_float_stays_a_bare_share(
        self,
    ) -> None:
        share = Share(1, max_share=1, max_pending=0, max_wait=2)
        assert (share.share, share.max_share, share.max_pending, share.max_wait) == (
            1.0,
            1.0,
            0,
            2.0,
        )
        assert isinstance(share.share, float)
        assert isinstance(share.max_wait, float)
        assert Share(0.25) == Share(0.25, max_share=1.0)
        assert "max_share=0.75" in repr(Share(0.25, max_share=0.75))
        with pytest.raises(TypeError):
            Share(0.25, 0.75)  # type: ignore[call-arg]  # keywords only
        with pytest.raises(AttributeError):
            share.max_share = 0.5  # type: ignore[misc]
        assert check_partitions({"a": 0.25}, shared=False) == {"a": Share(0.25)}

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

    def test_ceilings_round_down_but_never_below_the_guarantee(self) -> None:
        assert ceiling_slots(1.0, 0.25, 10) == 10
        assert ceiling_slots(0.55, 0.25, 10) == 5
        assert ceiling_slots(0.7, 0.25, 10) == 7  # 7.000000000000001 in floats
        assert ceiling_slots(0.35, 0.3, 10) == 3  # floor 3.5, guarantee 3
        assert ceiling_slots(0.5, 0.5, 3) == 2  # floor 1.5 < ceil 1.5
        assert ceiling_slots(0.3, 0.1, 1) == 1
        assert ceiling_slots(1.0, 0.0, 4) == 4  # the implicit default

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
        gate = partitioned_gate(10, {"a": 0.6, "b": 0.2})
        assert {p.name: p.guaranteed for p in gate.parts()} == {
            "a": 6,
            "b": 2,
            "default": 2,
        }
        full = partitioned_gate(10, {"a": 0.5, "b": 0.5})
        assert full.part("default").guaranteed == 0

    async def test_idle_capacity_is_borrowed_and_the_bound_holds(self) -> None:
        gate = partitioned_gate(4, {"a": 0.75, "b": 0.25})
        b = gate.part("b")
        assert all(b.try_acquire() for _ in range(4))
        assert not b.try_acquire()
        assert not gate.part("a").try_acquire()
        assert (gate.in_use, b.in_use, b.peak_in_use) == (4, 4, 4)

    async def test_a_freed_slot_goes_to_a_partition_below_its_guarantee(
        self,
    ) -> None:
        gate = partitioned_gate(4, {"a": 0.5, "b": 0.5})
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
        gate = partitioned_gate(4, {"a": 0.25, "b": 0.25})  # 1, 1 and default 2
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
        gate = partitioned_gate(1, {"a": 0.5, "b": 0.5})
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
        gate = partitioned_gate(2, {"a": 0.5, "b": 0.5})
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
        gate = partitioned_gate(1, {"a": 0.5, "b": 0.5}, max_pending=1)
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
        gate = partitioned_gate(1, {"a": 0.5, "b": 0.5}, max_wait=0.001)
        a, b = gate.part("a"), gate.part("b")
        assert a.try_acquire()
        with pytest.raises(OverloadedError, match=r"max_wait.*partition 'b'"):
            await b.acquire()
        assert (b.timed_out, a.timed_out, gate.timed_out) == (1, 0, 1)
        assert (b.waiting, gate.waiting) == (0, 0)

    async def test_a_cancelled_waiter_stops_counting_at_once(self) -> None:
        gate = partitioned_gate(1, {"a": 0.5, "b": 0.5}, max_pending=1)
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
        gate = partitioned_gate(1, {"a": 0.5, "b": 0.5})
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
        gate = partitioned_gate(1, {"a": 0.5, "b": 0.5})
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
        gate = partitioned_gate(2, {"a": 0.5, "b": 0.5})
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
        gate = partitioned_gate(1, {"a": 0.5, "b": 0.5})
        a, b = gate.part("a"), gate.part("b")
        assert a.try_acquire()
        task = asyncio.create_task(b.acquire())
        await settle()
        a.release()
        await task
        assert (a.waits.admitted, b.waits.admitted) == (1, 1)
        assert a.wait_histogram().count == 1
        assert b.wait_histogram().count == 1
        assert gate.wait_histogram().count == 2
        assert b.waits.maximum > 0.0
        assert a.waits.maximum == 0.0
        assert gate.waits.maximum == b.waits.maximum


class TestCeiling:
    async def test_a_capped_partition_never_holds_more_than_its_ceiling(
        self,
    ) -> None:
        gate = partitioned_gate(4, {"a": 0.5, "b": Share(0.25, max_share=0.5)})
        a, b = gate.part("a"), gate.part("b")
        assert (b.guaranteed, b.ceiling, a.ceiling) == (1, 2, 4)
        assert b.try_acquire()
        assert b.try_acquire()
        assert not b.try_acquire()  # two slots idle, but b is at its ceiling
        assert not b.would_admit_now()
        assert b.can_queue()
        assert (gate.in_use, b.in_use, b.peak_in_use) == (2, 2, 2)
        log: list[str] = []
        capped = waiter(gate, "b", log)
        await settle()
        assert (b.waiting, gate.waiting, log) == (1, 1, [])
        # b's waiter does not hold the idle slots back from the others.
        assert a.would_admit_now()
        assert gate.default.would_admit_now()
        assert a.try_acquire()
        assert gate.default.try_acquire()
        assert not a.try_acquire()  # now the bound is reached
        a.release()  # nobody eligible waits: the slot is left free
        await settle()
        assert (log, gate.in_use) == ([], 3)
        b.release()  # b below its ceiling again: its waiter
        await capped
        assert (log, b.in_use, gate.in_use) == (["b"], 2, 3)
        for part in (b, b, gate.default):
            part.release()
        assert gate.in_use == 0

    async def test_a_capped_waiter_is_skipped_not_blocking_the_others(
        self,
    ) -> None:
        gate = partitioned_gate(4, {"a": 0.5, "b": Share(0.25, max_share=0.5)})
        a, b = gate.part("a"), gate.part("b")
        assert b.try_acquire()
        assert b.try_acquire()
        assert a.try_acquire()
        assert a.try_acquire()
        log: list[str] = []
        tasks = [waiter(gate, "b", log), waiter(gate, "a", log)]  # b older
        await settle()
        a.release()  # the oldest waiter is b's, but b is at its ceiling
        await settle()
        assert log == ["a"]
        assert (a.in_use, b.in_use, gate.in_use) == (2, 2, 4)
        a.release()
        await settle()
        assert log == ["a"]  # still capped: the slot stays free
        assert gate.in_use == 3
        b.release()
        await asyncio.gather(*tasks)
        assert log == ["a", "b"]
        assert (a.in_use, b.in_use, gate.in_use) == (1, 2, 3)

    async def test_guarantees_come_first_and_fifo_holds_within_a_capped_partition(
        self,
    ) -> None:
        gate = partitioned_gate(4, {"a": 0.5, "b": Share(0.5, max_share=0.75)})
        a, b = gate.part("a"), gate.part("b")
        assert (a.guaranteed, b.guaranteed, b.ceiling) == (2, 2, 3)
        for _ in range(3):
            assert b.try_acquire()
        assert a.try_acquire()
        order: list[str] = []

        async def wait(name: str, n: int) -> None:
            await gate.part(name).acquire()
            order.append(f"{name}{n}")

        tasks = [asyncio.create_task(wait("b", n)) for n in range(3)]
        tasks += [asyncio.create_task(wait("a", n)) for n in range(2)]
        await settle()
        b.release()  # b at 2 < ceiling 3, a at 1 < guarantee 2: a first
        await settle()
        assert order == ["a0"]
        a.release()  # a at 1 < 2 again: a's next waiter
        await settle()
        assert order == ["a0", "a1"]
        a.release()  # a at 1, below its guarantee but nobody of a waits
        await settle()
        assert order == ["a0", "a1", "b0"]  # b at 3: its ceiling
        b.release()
        await settle()
        assert order == ["a0", "a1", "b0", "b1"]
        b.release()
        await asyncio.gather(*tasks)
        assert order == ["a0", "a1", "b0", "b1", "b2"]
        assert (a.in_use, b.in_use, gate.in_use) == (1, 3, 4)

    async def test_resize_recomputes_the_ceilings(self) -> None:
        gate = partitioned_gate(4, {"a": 0.5, "b": Share(0.25, max_share=0.5)})
        b = gate.part("b")
        assert b.try_acquire()
        assert b.try_acquire()
        log: list[str] = []
        tasks = [waiter(gate, "b", log) for _ in range(3)]
        await settle()
        gate.resize(8)  # ceiling 4: two of b's waiters get the new room
        await settle()
        assert (b.guaranteed, b.ceiling, b.in_use, log) == (2, 4, 4, ["b", "b"])
        gate.resize(4)  # ceiling 2: nothing taken back, nobody admitted
        assert (b.ceiling, b.in_use, gate.in_use) == (2, 4, 4)
        gate.resize(6)  # two slots free, but b holds more than its ceiling 3
        await settle()
        assert (b.ceiling, b.in_use, log) == (3, 4, ["b", "b"])
        assert gate.part("a").try_acquire()
        b.release()
        b.release()  # b at 2 < 3: its last waiter
        await asyncio.gather(*tasks)
        assert (b.in_use, gate.in_use, log) == (3, 4, ["b", "b", "b"])

    async def test_cancelled_and_closed_capped_waiters_leave_exact_counts(
        self,
    ) -> None:
        gate = partitioned_gate(4, {"a": 0.5, "b": Share(0.25, max_share=0.25)})
        b = gate.part("b")
        assert b.try_acquire()
        log: list[str] = []
        first, second, third = (waiter(gate, "b", log) for _ in range(3))
        await settle()
        first.cancel()
        assert (b.waiting, gate.waiting) == (2, 2)
        b.release()  # handed to the second: cancelled in the same instant
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        await settle()
        assert (log, b.in_use, b.waiting) == (["b"], 1, 0)  # passed to third
        await third
        late = waiter(gate, "b", log)
        await settle()
        gate.close()
        assert isinstance(
            (await asyncio.gather(late, return_exceptions=True))[0], ClosedError
        )
        assert (b.waiting, gate.waiting, b.in_use) == (0, 0, 1)
        b.release()
        await gate.wait_idle()

    async def test_max_pending_and_max_wait_per_partition_override_the_executors(
        self,
    ) -> None:
        gate = partitioned_gate(
            1,
            {
                "a": Share(0.5, max_pending=1),
                "b": Share(0.5, max_wait=0.001),
            },
            max_pending=3,
            max_wait=None,
        )
        a, b, default = gate.part("a"), gate.part("b"), gate.default
        assert (a.max_pending, a.max_wait) == (1, None)
        assert (b.max_pending, b.max_wait) == (3, 0.001)
        assert (default.max_pending, default.max_wait) == (3, None)
        assert gate.max_pending == 3  # the executor's own, reported in total
        assert default.try_acquire()
        first = waiter(gate, "a", [])
        await settle()
        assert not a.can_queue()
        with pytest.raises(OverloadedError, match=r"partition 'a'.*max_pending=1"):
            await a.acquire()
        with pytest.raises(OverloadedError, match=r"max_wait=0\.001.*partition 'b'"):
            await b.acquire()
        others = [asyncio.create_task(default.acquire()) for _ in range(3)]
        await settle()
        assert not default.can_queue()  # the executor's max_pending=3
        assert (a.rejected, b.timed_out, default.waiting) == (1, 1, 3)
        for task in (first, *others):
            task.cancel()
        await asyncio.gather(first, *others, return_exceptions=True)
        assert gate.waiting == 0


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

    async def test_a_lazy_map_under_a_ceiling_leaves_room_for_the_others(
        self,
    ) -> None:
        manual = ManualExecutor(cap=lambda: 4)
        executor = BoundedLoopExecutor(
            executor=manual,
            bound=4,
            partitions={"interactive": 0.5, "batch": Share(0.5, max_share=0.75)},
        )
        batch = executor.partition("batch")
        results: list[int] = []

        async def consume() -> None:
            async for x in batch.map(abs, range(100, 110)):
                results.append(x)

        job = asyncio.create_task(consume())
        await settle()
        assert manual.submit_log == [100, 101, 102]  # 3 of 4: the ceiling
        stats = executor.stats()
        assert (stats.in_flight, stats.partitions["batch"].in_flight) == (3, 3)
        assert executor.partition("interactive").would_admit_now()
        # An interactive call is handed over at once, without waiting.
        future = await executor.partition("interactive").submit(abs, 7)
        assert manual.submit_log[-1] == 7
        manual.by_tag[7].set_result(7)
        assert await future == 7
        for tag in range(100, 110):
            while tag not in manual.by_tag:
                await settle()
            manual.by_tag[tag].set_result(tag)
            await settle()
            assert executor.stats().partitions["batch"].in_flight <= 3
        await job
        assert results == list(range(100, 110))
        stats = executor.stats()
        assert stats.partitions["batch"].peak_in_flight == 3
        assert stats.partitions["interactive"].queue_wait.count == 1
        assert stats.partitions["interactive"].queue_wait_max == 0.0
        assert manual.violations == []
        await executor.aclose()

    async def test_stats_report_the_ceiling_and_the_per_partition_limits(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(
            max_workers=2,
            bound=8,
            max_pending=10,
            max_wait=5.0,
            partitions={
                "interactive": 0.75,
                "batch": Share(0.25, max_share=0.6, max_pending=2, max_wait=0.5),
            },
        )
        parts = executor.stats().partitions
        batch, interactive = parts["batch"], parts["interactive"]
        assert (batch.share, batch.guaranteed) == (0.25, 2)
        assert (batch.max_share, batch.ceiling) == (0.6, 4)
        assert (batch.max_pending, batch.max_wait) == (2, 0.5)
        assert (interactive.max_share, interactive.ceiling) == (1.0, 8)
        assert (interactive.max_pending, interactive.max_wait) == (10, 5.0)
        assert (parts["default"].ceiling, parts["default"].max_pending) == (8, 10)
        assert executor.partition("batch").stats() == batch
        assert "ceiling=4" in repr(executor.partition("batch"))
        executor.resize(4)
        assert executor.partition("batch").stats().ceiling == 2

    async def test_a_partitions_max_pending_refuses_through_the_executor(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        block = make_gate()
        executor = make_executor(
            max_workers=1,
            bound=1,
            partitions={"a": 0.5, "b": Share(0.5, max_pending=0)},
        )
        running = await executor.partition("a").submit(block, 1)
        await block.started()
        assert not executor.partition("b").can_admit()
        with pytest.raises(OverloadedError, match="partition 'b'"):
            await executor.partition("b").run(abs, 1)
        queued = asyncio.create_task(executor.partition("a").run(abs, -2))
        await settle()
        assert executor.stats().partitions["a"].waiting == 1  # no limit for a
        block.open()
        assert (await running, await queued) == (1, 2)
        assert executor.stats().partitions["b"].rejected == 1

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
