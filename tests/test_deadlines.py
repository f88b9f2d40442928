"""Per-call deadlines: one time limit over the wait and the run (issue 26).

At its deadline a caller gets ``DeadlineExceeded``, and its call, by where it
is: still waiting for a slot, it leaves the queue and never runs; queued in
the pool, it is cancelled and never runs; running on a thread, it goes on
and keeps its slot until it ends (``abandoned``). ``remaining()`` tells the
function its time left. Every test runs on asyncio and uvloop, on real
thread pools; the deadlines are real, and each test waits on events, not on
the clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pytest

import workers
from aiobound import (
    AIMD,
    BoundedLoopExecutor,
    CallObserver,
    DeadlineExceeded,
    remaining,
)
from aiobound._deadlines import Deadline, run_within, wall_clock_deadline
from conftest import GATE_TIMEOUT, ExecutorFactory, GateFactory, assert_idle, settle
from workers import identity

if TYPE_CHECKING:
    from collections.abc import Callable

P = ParamSpec("P")
T = TypeVar("T")

SHORT = 0.05  # a deadline that passes while a gate holds the call


def time_left(_: object = None) -> float | None:
    return remaining()


class Recorder(CallObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def refused(self, token: object, reason: str, error: BaseException) -> None:
        self.events.append(("refused", reason))

    def deadline_exceeded(self, token: object, stage: str) -> None:
        self.events.append(("deadline", stage))

    def ended(self, token: object, outcome: str, error: BaseException | None) -> None:
        self.events.append(("ended", outcome))


class TestWhereTheCallIs:
    async def test_waiting_for_a_slot_it_leaves_and_never_runs(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        holder = await executor.submit(gate, 0)
        ran = threading.Event()
        with pytest.raises(DeadlineExceeded) as info:
            await executor.with_timeout(SHORT).run(lambda: ran.set())
        assert info.value.stage == "waiting"
        assert info.value.timeout == SHORT
        assert isinstance(info.value, TimeoutError)
        stats = executor.stats()
        assert (stats.waiting, stats.in_flight, stats.submitted) == (0, 1, 1)
        assert (stats.deadline_waiting, stats.timed_out) == (1, 0)
        gate.open()
        assert await holder == 0
        assert not ran.is_set()
        assert_idle(executor)

    async def test_queued_in_the_pool_it_is_cancelled_and_never_runs(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=2)
        gate = make_gate()
        holder = await executor.submit(gate, 0)
        await gate.started()
        ran = threading.Event()
        with pytest.raises(DeadlineExceeded) as info:
            await executor.with_timeout(SHORT).run(lambda: ran.set())
        assert info.value.stage == "queued"
        stats = executor.stats()
        assert (stats.in_flight, stats.deadline_queued, stats.cancelled) == (1, 1, 1)
        assert stats.abandoned == 0
        gate.open()
        assert await holder == 0
        assert not ran.is_set()
        assert_idle(executor)

    async def test_running_its_caller_is_released_and_the_slot_held_until_it_ends(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        with pytest.raises(DeadlineExceeded) as info:
            await executor.with_timeout(SHORT).run(gate, 0)
        assert info.value.stage == "running"
        assert gate.finished == 0  # released while the call still runs
        stats = executor.stats()
        assert (stats.in_flight, stats.deadline_running, stats.abandoned) == (1, 1, 1)
        assert not executor.would_admit_now()  # the bound stays true
        gate.open()
        await executor.aclose()
        stats = executor.stats()
        assert (stats.in_flight, stats.completed, stats.abandoned) == (0, 1, 1)
        assert stats.run_time.count == 1  # its end is timed as any other

    async def test_a_call_that_ends_in_time_leaves_no_timer(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)
        view = executor.with_timeout(3600)
        assert await view.run(identity, 5) == 5
        assert executor._lane.timers == {}
        stats = executor.stats()
        assert stats.deadline_waiting + stats.deadline_queued == 0
        assert stats.deadline_running == 0

    async def test_a_caller_cancelled_first_leaves_nothing_to_time_out(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        fut = await executor.with_timeout(3600).submit(gate, 0)
        await gate.started()
        fut.cancel()
        gate.open()
        await executor.aclose()
        stats = executor.stats()
        assert (stats.abandoned, stats.deadline_running, stats.completed) == (0, 0, 1)
        assert executor._lane.timers == {}


class StartsInTheGap(concurrent.futures.Future[Any]):
    """A call that starts (or ends) between ``running()`` and ``cancel()``.

    At the deadline the lane reads ``running()`` (False: not started), sets
    the caller's error, then tries ``cancel()``, which fails: the call had
    started meanwhile. With *ends*, it has also ended by then.
    """

    def __init__(self, ends: bool) -> None:
        super().__init__()
        self.ends = ends

    def running(self) -> bool:
        return False

    def cancel(self) -> bool:
        if self.ends:
            self.set_result("late")
        return False


class GapPool(concurrent.futures.Executor):
    def __init__(self, ends: bool) -> None:
        self.ends = ends
        self.futures: list[StartsInTheGap] = []

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future = StartsInTheGap(self.ends)
        self.futures.append(future)
        return future


class TestTheStageIsTrue:
    @pytest.mark.parametrize("ends", [False, True])
    async def test_a_call_that_started_after_running_was_read_is_running(
        self, ends: bool
    ) -> None:
        pool = GapPool(ends)
        async with BoundedLoopExecutor(executor=pool, bound=1) as executor:
            with pytest.raises(DeadlineExceeded) as info:
                await executor.with_timeout(SHORT).run(identity, 1)
            assert info.value.stage == "running"
            assert "goes on in its worker" in str(info.value)
            stats = executor.stats()
            assert (stats.deadline_queued, stats.deadline_running) == (0, 1)
            assert stats.cancelled == 0
            # Still running: abandoned, its slot held; ended already: neither.
            assert (stats.abandoned, stats.in_flight) == ((0, 0) if ends else (1, 1))
            if not ends:
                pool.futures[0].set_result("late")
        stats = executor.stats()
        assert (stats.in_flight, stats.completed) == (0, 1)


class TestRemaining:
    async def test_the_function_knows_its_time_left_on_a_thread(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        left = await executor.with_timeout(30).run(time_left)
        assert left is not None
        assert 0 < left <= 30
        assert await executor.run(time_left) is None  # no limit, no deadline
        assert remaining() is None  # not in a call at all

    def test_the_function_knows_its_time_left_in_a_process(self) -> None:
        async def main() -> float | None:
            async with BoundedLoopExecutor.process(max_workers=1) as executor:
                return await executor.with_timeout(30).run(workers.time_left)

        left = asyncio.run(main())
        assert left is not None
        assert 0 < left <= 30

    async def test_a_pool_thread_keeps_no_deadline_for_its_next_call(self) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            async with BoundedLoopExecutor(executor=pool, copy_context=False) as ex:
                assert await ex.with_timeout(30).run(time_left) is not None
                assert await ex.run(time_left) is None
        finally:
            pool.shutdown()


class TestTheDeadlineAClusterReads:
    """What the Dask and Ray executors read to cancel a task no worker took."""

    def test_a_call_for_another_clock_carries_its_wall_clock_deadline(self) -> None:
        before = time.time()
        args = (*Deadline(5.0).for_worker(False), identity, 1)
        due = wall_clock_deadline(run_within, args)
        assert due is not None
        assert before < due <= time.time() + 5.0
        assert wall_clock_deadline(run_within, (False, 7.0)) == 7.0  # shortest form

    def test_any_other_call_has_none(self) -> None:
        on_this_clock = (*Deadline(5.0).for_worker(True), identity, 1)
        assert wall_clock_deadline(run_within, on_this_clock) is None
        assert wall_clock_deadline(identity, (False, time.time() + 5.0)) is None
        assert wall_clock_deadline(run_within, (False,)) is None
        assert wall_clock_deadline(run_within, (False, 5)) is None  # not a time


class TestWhereTheLimitComesFrom:
    async def test_call_timeout_applies_to_every_call_and_a_view_overrides_it(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1, call_timeout=30)
        left = await executor.run(time_left)
        assert left is not None
        assert 0 < left <= 30
        fut = await executor.submit(time_left)
        assert await fut is not None
        (mapped,) = [x async for x in executor.map(time_left, [1])]
        assert mapped is not None
        assert await executor.with_timeout(None).run(time_left) is None
        short = await executor.with_timeout(5).run(time_left)
        assert short is not None
        assert short <= 5
        submitted = await (await executor.with_timeout(5).submit(time_left))
        assert submitted is not None
        assert submitted <= 5
        assert repr(executor.with_timeout(2.5)) == "<TimeLimited timeout=2.5>"

    async def test_a_partition_keeps_the_executors_call_timeout(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2, call_timeout=30, partitions={"b": 0.5})
        batch = executor.partition("b")
        left = await (await batch.submit(time_left))
        assert left is not None
        assert 0 < left <= 30

    async def test_a_partitions_map_is_ordered_by_default(
        self, make_executor: ExecutorFactory
    ) -> None:
        # The first item ends only once the second has: in order all the same.
        executor = make_executor(max_workers=2, bound=2, partitions={"b": 0.5})
        second_ran = threading.Event()

        def first_waits(n: int) -> int:
            if n == 0:
                assert second_ran.wait(GATE_TIMEOUT)
            else:
                second_ran.set()
            return n

        got = [x async for x in executor.partition("b").map(first_waits, range(2))]
        assert got == [0, 1]

    async def test_a_partition_has_its_own_view(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=2, partitions={"batch": 0.5})
        batch = executor.partition("batch")
        gate = make_gate()
        holders = [await batch.submit(gate, n) for n in range(2)]
        with pytest.raises(DeadlineExceeded):
            await batch.with_timeout(SHORT).run(identity, 1)
        stats = executor.stats()
        assert stats.partitions["batch"].deadline_waiting == 1
        assert stats.deadline_waiting == 1
        gate.open()
        await asyncio.gather(*holders)
        assert repr(batch.with_timeout(1)) == "<TimeLimited timeout=1.0 in 'batch'>"

    @pytest.mark.parametrize("bad", [0, -1, float("inf"), "1", True])
    async def test_a_bad_limit_is_refused_naming_it(
        self, make_executor: ExecutorFactory, bad: object
    ) -> None:
        with pytest.raises((TypeError, ValueError), match="call_timeout"):
            BoundedLoopExecutor(max_workers=1, call_timeout=bad)  # type: ignore[arg-type]
        executor = make_executor(max_workers=1)
        with pytest.raises((TypeError, ValueError), match="seconds"):
            executor.with_timeout(bad)  # type: ignore[arg-type]


class TestMap:
    async def test_an_item_that_misses_its_deadline_raises_in_its_place(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=2)
        gate = make_gate()

        def slow_on_two(n: int) -> int:
            if n == 2:
                gate(n)  # held past its deadline
            return n

        results = executor.with_timeout(SHORT * 4).map(slow_on_two, range(4))
        got = []
        with pytest.raises(DeadlineExceeded):
            async for value in results:
                got.append(value)
        assert got == [0, 1]
        gate.open()
        await executor.aclose()
        assert executor.stats().deadline_running == 1

    async def test_an_item_waiting_for_a_slot_leaves_at_its_deadline(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        holder = await executor.submit(gate, 0)  # the only slot, until opened
        ran = threading.Event()
        with pytest.raises(DeadlineExceeded) as info:
            async for _ in executor.with_timeout(SHORT).map(lambda _: ran.set(), [0]):
                pass
        assert (info.value.stage, info.value.timeout) == ("waiting", SHORT)
        stats = executor.stats()
        assert (stats.in_flight, stats.deadline_waiting, stats.submitted) == (1, 1, 1)
        gate.open()
        assert await holder == 0
        assert not ran.is_set()
        assert_idle(executor)

    async def test_items_that_wait_for_a_slot_keep_their_deadline(
        self, make_executor: ExecutorFactory
    ) -> None:
        # One slot: every item after the first waits for it, then runs
        # knowing what is left of its own deadline.
        executor = make_executor(max_workers=1, bound=1)
        left = [x async for x in executor.with_timeout(30).map(time_left, range(4))]
        assert all(value is not None and 0 < value <= 30 for value in left)
        stats = executor.stats()
        assert (stats.completed, stats.deadline_waiting) == (4, 0)


class TestItComposes:
    async def test_the_observer_hears_each_miss_by_stage(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        recorder = Recorder()
        executor.add_observer(recorder)
        gate = make_gate()
        view = executor.with_timeout(SHORT)
        with pytest.raises(DeadlineExceeded):
            await view.run(gate, 0)  # running
        with pytest.raises(DeadlineExceeded):
            await view.run(identity, 1)  # waiting: the slot is still held
        gate.open()
        await executor.aclose()
        assert recorder.events == [
            ("deadline", "running"),
            ("refused", "deadline"),
            ("ended", "completed"),
        ]

    async def test_a_miss_is_a_drop_for_the_limit_policy(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        policy = AIMD(min=1, max=8, initial=8)
        executor = make_executor(max_workers=8, bound=policy)
        gate = make_gate()
        with pytest.raises(DeadlineExceeded):
            await executor.with_timeout(SHORT).run(gate, 0)
        assert executor.bound < 8  # cut at the miss, not when the call ends
        gate.open()
        await settle()


class TestWithARateLimit:
    async def test_a_call_waiting_for_its_turn_leaves_at_its_deadline(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2, max_per_second=0.01)
        assert await executor.run(identity, 0) == 0  # takes the only turn for 100 s
        with pytest.raises(DeadlineExceeded) as info:
            await executor.with_timeout(SHORT).run(identity, 1)
        assert info.value.stage == "waiting"
        stats = executor.stats()
        assert (stats.in_flight, stats.deadline_waiting, stats.submitted) == (0, 1, 1)

    async def test_a_timed_map_item_waiting_for_its_turn_leaves_at_its_deadline(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2, max_per_second=0.01)
        assert await executor.run(identity, 0) == 0  # takes the only turn for 100 s
        ran = threading.Event()
        with pytest.raises(DeadlineExceeded) as info:
            async for _ in executor.with_timeout(SHORT).map(lambda _: ran.set(), [0]):
                pass
        assert (info.value.stage, info.value.timeout) == ("waiting", SHORT)
        stats = executor.stats()
        assert (stats.in_flight, stats.deadline_waiting, stats.submitted) == (0, 1, 1)
        assert not ran.is_set()

    async def test_an_item_started_on_its_turn_keeps_its_deadline(
        self, make_executor: ExecutorFactory
    ) -> None:
        # The first item takes the only turn and runs until the last starts:
        # while its result is out, each next item holds a slot and waits for
        # its turn (20 a second), then runs knowing what is left of its own
        # deadline.
        executor = make_executor(max_workers=3, max_per_second=20)
        last_started = threading.Event()

        def first_waits_for_last(n: int) -> float | None:
            if n == 0:
                assert last_started.wait(GATE_TIMEOUT)
            elif n == 2:
                last_started.set()
            return remaining()

        view = executor.with_timeout(30)
        left = [x async for x in view.map(first_waits_for_last, range(3))]
        assert all(value is not None and 0 < value <= 30 for value in left), left
        assert executor.stats().completed == 3

    async def test_a_timed_map_under_a_rate_limit_gives_each_item_its_deadline(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2, max_per_second=1000, burst=4)
        view = executor.with_timeout(30)
        left = [x async for x in view.map(time_left, range(6))]
        assert all(value is not None and 0 < value <= 30 for value in left)
        assert executor.stats().completed == 6
