"""max_per_second: a smooth rate limit on starting calls, on a fake clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import BoundedLoopExecutor, ClosedError
from aiobound._rate import _ROUNDING, RateLimiter
from aiobound._waiting import COMPACT_SLACK
from conftest import (
    CountingExecutor,
    ExecutorFactory,
    GateFactory,
    ManualExecutor,
    SubmitRefused,
    assert_idle,
    settle,
)
from sources import Source, double
from workers import identity

if TYPE_CHECKING:
    from collections.abc import Callable


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock the test advances by hand, with call_later timers."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[
            tuple[float, int, FakeHandle, Callable[..., Any], tuple[Any, ...]]
        ] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(
        self, delay: float, callback: Callable[..., Any], *args: Any
    ) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(
            self._timers, (self.now + delay, next(self._seq), handle, callback, args)
        )
        return handle

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers, letting woken tasks run."""
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now + 1e-9:
            _, _, handle, callback, args = heapq.heappop(self._timers)
            if not handle.cancelled:
                callback(*args)
        await settle()


def with_fake_clock(executor: BoundedLoopExecutor) -> FakeClock:
    clock = FakeClock()
    executor._path.bind()
    rate = executor._path.rate
    assert rate is not None
    rate.bind(asyncio.get_running_loop(), clock.time, clock.call_later)
    return clock


def fake_limiter(per_second: float, burst: int) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    limiter = RateLimiter(per_second=per_second, burst=burst)
    limiter.bind(asyncio.get_running_loop(), clock.time, clock.call_later)
    return limiter, clock


class TestRateLimiter:
    async def test_starts_are_spaced_evenly(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        assert not limiter.try_start()
        clock.now = 0.0999
        assert not limiter.try_start()
        clock.now = 0.1
        assert limiter.try_start()
        assert not limiter.try_start()

    async def test_burst_lets_that_many_start_at_once_then_spaces_them(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=3)
        assert [limiter.try_start() for _ in range(4)] == [True, True, True, False]
        clock.now = 0.1
        assert [limiter.try_start() for _ in range(2)] == [True, False]

    async def test_idle_time_builds_no_credit_beyond_the_burst(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=2)
        assert limiter.try_start()
        clock.now = 100.0  # a long idle spell
        assert [limiter.try_start() for _ in range(3)] == [True, True, False]

    async def test_would_start_now_answers_as_try_start_would(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=2)
        assert limiter.would_start_now()
        assert limiter.try_start()
        assert limiter.try_start()
        assert not limiter.would_start_now()
        clock.now = 0.0999
        assert not limiter.would_start_now()
        clock.now = 0.1  # exactly due
        assert limiter.would_start_now()
        assert limiter.try_start()
        task = asyncio.create_task(limiter.wait_turn())
        await settle()
        clock.now = 0.3  # due, but a caller waits: nobody overtakes it
        assert not limiter.would_start_now()
        _, _, handle, callback, args = heapq.heappop(clock._timers)
        assert not handle.cancelled
        callback(*args)  # its turn came; it takes it when its task resumes
        assert not limiter.would_start_now()
        await task
        clock.now = 10.0
        assert limiter.would_start_now()
        limiter.close()
        assert not limiter.would_start_now()

    async def test_try_start_never_overtakes_a_waiter_nor_the_woken_head(
        self,
    ) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=2)
        assert limiter.try_start()
        assert limiter.try_start()
        task = asyncio.create_task(limiter.wait_turn())
        await settle()
        clock.now = 0.3  # due, but a caller waits (its timer has not fired)
        assert not limiter.try_start()
        _, _, handle, callback, args = heapq.heappop(clock._timers)
        assert not handle.cancelled
        callback(*args)  # its turn came; it takes it when its task resumes
        assert limiter.waiting == 1
        assert not limiter.try_start()
        await task
        assert limiter.try_start()  # the burst's second start, at 0.3 too
        assert not limiter.try_start()

    async def test_try_start_refused_changes_nothing(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        for _ in range(100):
            assert not limiter.try_start()  # refusals book nothing
        clock.now = 0.1
        assert limiter.try_start()

    async def test_wait_turn_does_not_yield_when_a_start_is_allowed(self) -> None:
        limiter, _ = fake_limiter(per_second=10, burst=2)
        for _ in range(2):
            step = limiter.wait_turn().__await__()
            with pytest.raises(StopIteration):
                step.send(None)  # finished in its first step
        assert limiter.limited == 0

    async def test_waiters_are_served_in_fifo_order_one_per_interval(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        order: list[int] = []

        async def wait(n: int) -> None:
            await limiter.wait_turn()
            order.append(n)

        tasks = [asyncio.create_task(wait(n)) for n in range(4)]
        await settle()
        assert limiter.waiting == 4
        assert not limiter.try_start()  # no overtaking, even when due
        for expected in range(1, 5):
            await clock.advance(0.1)
            assert order == list(range(expected))
        await asyncio.gather(*tasks)
        assert limiter.limited == 4

    async def test_a_late_timer_starts_one_waiter_not_a_burst(self) -> None:
        # The loop stalled: the clock jumped far past several turns at once.
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        order: list[int] = []

        async def wait(n: int) -> None:
            await limiter.wait_turn()
            order.append(n)

        tasks = [asyncio.create_task(wait(n)) for n in range(5)]
        await settle()
        await clock.advance(0.7)
        assert order == [0]  # the others: one per 0.1 s from now on
        for expected in range(2, 6):
            await clock.advance(0.1)
            assert order == list(range(expected))
        await asyncio.gather(*tasks)

    async def test_a_timer_that_fires_early_admits_no_one(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        task = asyncio.create_task(limiter.wait_turn())
        await settle()
        clock.now = 0.0995  # the head's turn is at 0.1
        limiter._on_timer()  # what a timer firing early does
        await settle()
        assert not task.done()
        await clock.advance(0.0005)  # the timer set again for the rest
        assert task.done()
        await task

    async def test_cancelled_head_passes_its_chance_on_at_once(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        first = asyncio.create_task(limiter.wait_turn())
        second = asyncio.create_task(limiter.wait_turn())
        await settle()
        first.cancel()
        assert limiter.waiting == 1  # at once, before first's task resumes
        await clock.advance(0.1)
        assert second.done()
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        assert not limiter.try_start()  # second took the 0.1 s turn

    async def test_a_cancelled_lone_waiter_costs_nothing(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        doomed = asyncio.create_task(limiter.wait_turn())
        await settle()
        doomed.cancel()
        assert limiter.waiting == 0
        clock.now = 0.1
        assert limiter.try_start()  # in the same step: the turn is free
        with pytest.raises(asyncio.CancelledError):
            await doomed

    async def test_cancelled_waiters_do_not_pile_up(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        tasks = [asyncio.create_task(limiter.wait_turn()) for _ in range(200)]
        await settle()
        for task in reversed(tasks[1:]):
            task.cancel()  # the head stays; the cancelled ones are not at it
            # Memory stays in proportion to the live waiters.
            assert len(limiter._room) <= 2 * limiter.waiting + COMPACT_SLACK
        assert limiter.waiting == 1
        await clock.advance(0.1)
        await tasks[0]
        assert limiter.waiting == 0
        await asyncio.gather(*tasks[1:], return_exceptions=True)

    async def test_a_start_within_rounding_of_its_turn_is_on_time(self) -> None:
        limiter, clock = fake_limiter(per_second=1, burst=1)
        assert limiter.try_start()  # the next turn: t=1
        clock.now = 1.0 - _ROUNDING  # float noise, not a rate
        assert limiter.try_start()
        clock.now = 2.0 - 2 * _ROUNDING
        assert not limiter.try_start()

    async def test_would_start_now_counts_a_start_rounding_early_as_on_time(
        self,
    ) -> None:
        # Turns 2 * _ROUNDING apart, exact in binary: at _ROUNDING a start
        # is exactly _ROUNDING early.
        limiter, clock = fake_limiter(per_second=0.5 / _ROUNDING, burst=1)
        assert limiter.try_start()
        clock.now = _ROUNDING
        assert limiter.would_start_now()
        assert limiter.try_start()

    async def test_a_head_within_rounding_of_its_turn_is_let_in_at_once(
        self,
    ) -> None:
        # Turns 2 * _ROUNDING apart, exact in binary: at _ROUNDING the head
        # is exactly _ROUNDING early, on time as try_start would count it.
        limiter, clock = fake_limiter(per_second=0.5 / _ROUNDING, burst=1)
        assert limiter.try_start()
        task = asyncio.create_task(limiter.wait_turn())
        await settle()
        clock.now = _ROUNDING
        _, _, handle, callback, args = heapq.heappop(clock._timers)
        assert not handle.cancelled
        callback(*args)  # a timer that fires _ROUNDING early: no new timer
        await settle()
        assert task.done()
        await task
        assert clock._timers == []

    async def test_woken_then_cancelled_gives_the_turn_to_the_next(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        first = asyncio.create_task(limiter.wait_turn())
        second = asyncio.create_task(limiter.wait_turn())
        await settle()
        clock.now = 0.1
        # The timer wakes `first`; it is cancelled before its task resumes.
        clock.call_later(0, first.cancel)
        await clock.advance(0)
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, timeout=5)  # served at 0.1, no timer
        assert limiter.waiting == 0

    async def test_woken_then_cancelled_counts_out_only_itself(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        tasks = [asyncio.create_task(limiter.wait_turn()) for _ in range(3)]
        await settle()
        assert limiter.waiting == 3
        clock.now = 0.1
        clock.call_later(0, tasks[0].cancel)  # woken, then cancelled
        await clock.advance(0)
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        await tasks[1]  # served at 0.1 in its place
        assert limiter.waiting == 1
        await clock.advance(0.1)
        await tasks[2]
        assert limiter.waiting == 0

    async def test_a_wait_interrupted_by_an_exception_leaves_the_queue(self) -> None:
        # Not a cancellation of the turn's future: an exception thrown into
        # the waiting coroutine.
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        waiting = limiter.wait_turn()
        turn = waiting.send(None)  # suspended on its turn's future
        assert limiter.waiting == 1
        with pytest.raises(KeyError):
            waiting.throw(KeyError("interrupted"))
        assert turn.cancelled()
        assert limiter.waiting == 0
        clock.now = 0.1
        assert limiter.try_start()  # the turn was not taken

    async def test_a_cancelled_lone_waiter_leaves_no_timer(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        doomed = asyncio.create_task(limiter.wait_turn())
        await settle()
        handles = [entry[2] for entry in clock._timers]
        assert len(handles) == 1  # the head's timer, for its turn at 0.1
        doomed.cancel()
        assert handles[0].cancelled
        with pytest.raises(asyncio.CancelledError):
            await doomed

    async def test_a_turn_future_cancels_as_a_future_does_with_its_message(
        self,
    ) -> None:
        limiter, _ = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        task = asyncio.create_task(limiter.wait_turn())
        await settle()
        turn = limiter._room._waiters[0]
        assert turn.cancel("stop") is True
        assert limiter.waiting == 0
        assert turn.cancel() is False
        assert limiter.waiting == 0  # counted out once only
        # Python 3.10's task does not carry the message of a future it awaited.
        message = "stop" if sys.version_info >= (3, 11) else None
        with pytest.raises(asyncio.CancelledError, match=message):
            await task

    async def test_an_unbound_limiter_decides_on_the_monotonic_clock(self) -> None:
        limiter = RateLimiter(per_second=0.001, burst=1)
        assert limiter.try_start()
        assert not limiter.try_start()  # the next turn: 1000 s from now
        with pytest.raises(
            AssertionError, match=r"^RateLimiter\.bind\(\) was not called$"
        ):
            await limiter.wait_turn()  # waiting needs the loop's timers

    async def test_close_wakes_waiters_and_refuses_new_ones(self) -> None:
        limiter, clock = fake_limiter(per_second=10, burst=1)
        assert limiter.try_start()
        waiting = [asyncio.create_task(limiter.wait_turn()) for _ in range(3)]
        await settle()
        clock.now = 0.1
        # The timer wakes the head; close() runs before its task resumes.
        clock.call_later(0, limiter.close)
        await clock.advance(0)
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, ClosedError) for r in results), results
        assert limiter.waiting == 0
        assert not limiter.try_start()
        with pytest.raises(ClosedError):
            await limiter.wait_turn()


class TestExecutorRate:
    async def test_calls_start_no_faster_than_max_per_second(
        self, make_executor: ExecutorFactory
    ) -> None:
        counting = CountingExecutor(max_workers=4)
        executor = make_executor(executor=counting, bound=100, max_per_second=10)
        clock = with_fake_clock(executor)
        tasks = [asyncio.create_task(executor.run(identity, n)) for n in range(10)]
        await settle()
        assert counting.submits == 1  # the first goes at once
        for expected in range(2, 11):
            await clock.advance(0.05)
            assert counting.submits == expected - 1  # not yet its turn
            await clock.advance(0.05)
            assert counting.submits == expected
        assert await asyncio.gather(*tasks) == list(range(10))
        stats = executor.stats()
        assert stats.rate_limited == 9
        assert stats.max_per_second == 10
        assert_idle(executor)

    async def test_burst_then_steady(self, make_executor: ExecutorFactory) -> None:
        counting = CountingExecutor(max_workers=4)
        executor = make_executor(
            executor=counting, bound=100, max_per_second=100, burst=5
        )
        clock = with_fake_clock(executor)
        tasks = [asyncio.create_task(executor.run(identity, n)) for n in range(20)]
        await settle()
        assert counting.submits == 5
        # Over any window of t seconds: at most burst + t * rate starts.
        for step in range(1, 16):
            await clock.advance(0.01)
            assert counting.submits == 5 + step
        await asyncio.gather(*tasks)

    async def test_a_call_waiting_for_its_turn_holds_its_slot(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=2, max_per_second=1)
        clock = with_fake_clock(executor)
        gate = make_gate()
        first = asyncio.create_task(executor.run(gate, 0))  # runs at t=0
        await gate.started()
        second = asyncio.create_task(executor.run(identity, 1))  # its turn: t=1
        third = asyncio.create_task(executor.run(identity, 2))
        await settle()
        stats = executor.stats()
        assert (stats.in_flight, stats.waiting) == (2, 1)  # third: no slot
        await clock.advance(1)
        assert await second == 1
        await settle()  # third now holds a slot, waiting for t=2
        await clock.advance(1)
        assert await third == 2
        gate.open()
        assert await first == 0
        assert executor.stats().rate_limited == 2

    async def test_cancel_while_waiting_for_turn_frees_slot_and_gives_turn_back(
        self, make_executor: ExecutorFactory
    ) -> None:
        counting = CountingExecutor(max_workers=2)
        executor = make_executor(executor=counting, bound=10, max_per_second=1)
        clock = with_fake_clock(executor)
        assert await executor.run(identity, 0) == 0  # books t=0
        doomed = asyncio.create_task(executor.run(identity, 1))  # books t=1
        await settle()
        assert executor.stats().in_flight == 1
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert executor.stats().in_flight == 0
        follower = asyncio.create_task(executor.run(identity, 2))  # gets t=1 back
        await clock.advance(1)
        assert await follower == 2
        assert counting.submits == 2
        assert_idle(executor)

    async def test_close_wakes_calls_waiting_for_their_turn(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=5, max_per_second=1)
        with_fake_clock(executor)
        assert await executor.run(identity, 0) == 0
        waiting = asyncio.create_task(executor.run(identity, 1))
        await settle()
        await executor.aclose()
        with pytest.raises(ClosedError):
            await waiting
        assert_idle(executor)

    async def test_map_respects_the_rate(self, make_executor: ExecutorFactory) -> None:
        counting = CountingExecutor(max_workers=2)
        executor = make_executor(executor=counting, bound=4, max_per_second=10)
        clock = with_fake_clock(executor)
        consumer = asyncio.create_task(_collect(executor.map(identity, range(5))))
        await settle()
        assert counting.submits == 1
        for expected in range(2, 6):
            await clock.advance(0.1)
            assert counting.submits == expected
        assert await consumer == [0, 1, 2, 3, 4]

    @pytest.mark.parametrize("ordered", [True, False])
    async def test_a_map_starts_each_item_at_its_turn_and_yields_meanwhile(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        manual = ManualExecutor(cap=lambda: 2)
        executor = make_executor(executor=manual, bound=2, max_per_second=1)
        clock = with_fake_clock(executor)
        source = Source(5)
        got: list[int] = []

        async def consume() -> None:
            async for value in executor.map(double, source, ordered=ordered):
                got.append(value)

        consumer = asyncio.create_task(consume())
        await settle()
        assert manual.submit_log == [0]  # the turn of t=0
        for n in range(1, 5):
            manual.by_tag[n - 1].set_result(10 * (n - 1))
            await settle()
            assert got == [10 * k for k in range(n)]  # not held back by a turn
            assert manual.submit_log == list(range(n))  # the next waits for t=n
            assert source.pulled <= n + 2  # never more than bound ahead
            await clock.advance(1)
            assert manual.submit_log == list(range(n + 1))
        manual.by_tag[4].set_result(40)
        await consumer
        assert got == [0, 10, 20, 30, 40]
        assert manual.violations == []
        assert executor.stats().rate_limited == 4
        assert_idle(executor)

    async def test_an_item_refused_at_its_turn_raises_in_its_place(
        self, make_executor: ExecutorFactory
    ) -> None:
        manual = ManualExecutor()
        manual.refuse.add(1)
        executor = make_executor(executor=manual, bound=2, max_per_second=1)
        clock = with_fake_clock(executor)
        mapped = executor.map(double, range(3))
        first = asyncio.create_task(mapped.__anext__())
        await settle()
        assert manual.submit_log == [0]
        manual.by_tag[0].set_result(0)
        assert await first == 0
        second = asyncio.create_task(mapped.__anext__())
        await clock.advance(1)  # item 1's turn: the executor refuses it
        assert manual.submit_log == [0, 1]
        with pytest.raises(SubmitRefused, match="call 1 refused"):
            await second
        assert_idle(executor)

    async def test_a_map_with_no_free_slot_spends_no_turn(
        self, make_executor: ExecutorFactory
    ) -> None:
        # The map looks for a free slot before it takes a turn: a turn taken
        # with no slot to start the call in would be lost, and the call would
        # start one interval late once the slot comes back.
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=1, max_per_second=1)
        clock = with_fake_clock(executor)
        holder = await executor.submit(identity, 0)  # the slot; the turn of t=0
        await clock.advance(1)  # the turn of t=1 is free, the slot is not
        consumer = asyncio.create_task(_collect(executor.map(identity, [1])))
        await settle()
        assert manual.submits == 1
        manual.futures[0].set_result(0)  # the slot comes back at t=1
        await settle()
        assert manual.submit_log == [0, 1]  # started at once: its turn was kept
        manual.futures[1].set_result(1)
        assert await consumer == [1]
        assert await holder == 0
        assert_idle(executor)

    async def test_a_slot_handed_over_as_the_executor_closes_waits_for_no_turn(
        self, make_executor: ExecutorFactory
    ) -> None:
        # The slot reaches the waiter in the same loop turn as aclose() closes
        # the gate: the waiter must get ClosedError at once, not book a turn
        # that rate.close() (already run) will never cut short, holding its
        # slot and aclose() until the turn comes.
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=1, max_per_second=1)
        clock = with_fake_clock(executor)
        holder = await executor.submit(identity, 0)  # holds the slot; books t=0
        waiter = asyncio.create_task(executor.run(identity, 1))
        await settle()
        assert executor.stats().waiting == 1
        closing = asyncio.create_task(executor.aclose())  # runs first...
        manual.futures[0].set_result(0)  # ...then the waiter, holding the slot
        try:
            await settle()
            assert waiter.done()
            assert closing.done()
        finally:
            await clock.advance(1)  # lets a wrongly booked turn come, if any
        with pytest.raises(ClosedError):
            await waiter
        assert await holder == 0
        assert manual.submits == 1
        assert_idle(executor)


async def _collect(results: Any) -> list[int]:
    return [value async for value in results]
