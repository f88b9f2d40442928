"""A limit policy as ``bound=``, on real pools: what it is fed, how the gate follows."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from aiobound import AIMD, BoundedLoopExecutor, Gradient, LimitPolicy
from conftest import (
    CountingExecutor,
    ExecutorFactory,
    GateFactory,
    ManualExecutor,
    assert_idle,
    settle,
)


class Scripted(LimitPolicy):
    """Records every sample and answers the limits the test queues up."""

    def __init__(self, initial: int, max: int = 100) -> None:
        super().__init__(1, max, initial)
        self.samples: list[tuple[float, float, int, bool]] = []
        self.answers: list[int] = []

    @property
    def latency_short(self) -> float | None:
        return self.samples[-1][1] if self.samples else None

    @property
    def latency_no_load(self) -> float | None:
        return 0.5

    def on_sample(
        self, now: float, latency: float, in_flight: int, dropped: bool
    ) -> int:
        self.samples.append((now, latency, in_flight, dropped))
        if self.answers:
            self._set(self.answers.pop(0))
        return self.limit


def stamped(log: list[float], release: threading.Event, tag: int) -> int:
    """Wait for *release*, then note when the call returns."""
    release.wait(30)
    log.append(time.monotonic())
    return tag


class TestWiring:
    async def test_latency_is_measured_from_hand_off_not_from_the_wait(
        self, make_executor: ExecutorFactory
    ) -> None:
        policy = Scripted(initial=1)
        executor = make_executor(max_workers=2, bound=policy)
        first, second = threading.Event(), threading.Event()
        ends: list[float] = []
        running = await executor.submit(stamped, ends, first, 0)
        waiter = asyncio.create_task(executor.run(stamped, ends, second, 1))
        await settle()
        assert executor.stats().waiting == 1
        first.set()
        await running
        second.set()
        await waiter
        (_, _, _, _), (now, latency, _, _) = policy.samples
        # The second call was handed over only after the first returned: its
        # own latency starts then, not when it began to wait for the slot.
        assert now - latency >= ends[0]

    async def test_the_bound_follows_the_policy_and_stats_report_it(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        policy = Scripted(initial=4)
        counting = CountingExecutor(max_workers=8)
        executor = make_executor(executor=counting, bound=policy)
        assert executor.bound == 4
        policy.answers = [2]
        gate = make_gate()
        tasks = [asyncio.create_task(executor.run(gate, n)) for n in range(8)]
        await gate.started(4)
        assert executor.stats().waiting == 4
        release = make_gate()  # never blocks once opened
        release.open()
        gate.open()
        assert await asyncio.gather(*tasks) == list(range(8))
        assert executor.bound == 2
        stats = executor.stats()
        assert (stats.bound, stats.latency_no_load) == (2, 0.5)
        assert stats.latency_short == policy.samples[-1][1]
        assert counting.peak_in_pool <= 4  # never above the larger of old and new
        assert len(policy.samples) == 8
        assert max(s[2] for s in policy.samples) <= 4
        assert_idle(executor)

    async def test_a_shrink_retires_slots_and_waiters_keep_fifo_order(
        self, make_executor: ExecutorFactory
    ) -> None:
        policy = Scripted(initial=3)
        manual = ManualExecutor(cap=lambda: 3)
        executor = make_executor(executor=manual, bound=policy)
        calls = [await executor.submit(abs, n) for n in range(3)]
        waiters = [asyncio.create_task(executor.run(abs, n)) for n in (3, 4, 5)]
        await settle()
        policy.answers = [1, 1, 1, 1, 1, 1]
        manual.by_tag[0].set_result(0)
        manual.by_tag[1].set_result(1)
        await settle()
        assert manual.submit_log == [0, 1, 2]  # 2 still in flight: bound 1 full
        manual.by_tag[2].set_result(2)
        await settle()
        assert manual.submit_log == [0, 1, 2, 3]
        for tag in (3, 4):
            manual.by_tag[tag].set_result(tag)
            await settle()
        manual.by_tag[5].set_result(5)
        assert await asyncio.gather(*calls, *waiters) == [0, 1, 2, 3, 4, 5]
        assert manual.submit_log == [0, 1, 2, 3, 4, 5]
        assert manual.violations == []
        assert_idle(executor)

    async def test_timeouts_and_named_errors_are_drops_other_errors_not(
        self, make_executor: ExecutorFactory
    ) -> None:
        policy = Scripted(initial=4)
        policy.drop_on = (TimeoutError, KeyError)
        executor = make_executor(max_workers=2, bound=policy)

        def fail(exc: BaseException) -> None:
            raise exc

        for exc in (TimeoutError(), KeyError("k"), ValueError()):
            with pytest.raises(type(exc)):
                await executor.run(fail, exc)
        await executor.run(abs, -1)
        assert [s[3] for s in policy.samples] == [True, True, False, False]

    async def test_cancelled_calls_are_no_samples(
        self, make_executor: ExecutorFactory
    ) -> None:
        policy = Scripted(initial=2)
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=policy)
        call = await executor.submit(abs, 1)
        call.cancel()
        await settle()
        assert policy.samples == []
        assert_idle(executor)

    async def test_resize_is_refused_and_a_policy_serves_one_executor(
        self, make_executor: ExecutorFactory
    ) -> None:
        policy = AIMD()
        executor = make_executor(max_workers=2, bound=policy)
        with pytest.raises(RuntimeError, match="limit policy"):
            executor.resize(3)
        with pytest.raises(RuntimeError, match="its own policy"):
            make_executor(max_workers=2, bound=policy)

    async def test_max_is_capped_at_the_workers_when_known(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=3, bound=AIMD(initial=20))
        assert executor.bound == 3
        pool = concurrent.futures.ThreadPoolExecutor(5)
        wrapped = make_executor(executor=pool, bound=Gradient(initial=50, max=60))
        assert wrapped.bound == 5
        manual = make_executor(executor=ManualExecutor(), bound=AIMD(initial=50))
        assert manual.bound == 50  # size unknown: no cap, and no bound required

    async def test_a_used_policy_is_refused_by_process_too(self) -> None:
        policy = AIMD()
        policy.attach(None)
        with pytest.raises(RuntimeError, match="its own policy"):
            BoundedLoopExecutor.process(max_workers=1, bound=policy)

    async def test_a_wrong_bound_names_the_argument(self) -> None:
        with pytest.raises(TypeError, match="bound"):
            BoundedLoopExecutor(max_workers=2, bound=AIMD)  # type: ignore[arg-type]


class TestOnRealPools:
    async def test_aimd_backs_off_on_timeouts(
        self, make_executor: ExecutorFactory
    ) -> None:
        policy = AIMD(initial=8, backoff=0.5)
        executor = make_executor(max_workers=8, bound=policy)

        def timeout() -> None:
            raise TimeoutError("downstream")

        for bound in (4, 2):  # each call started after the last decrease
            with pytest.raises(TimeoutError):
                await executor.run(timeout)
            assert executor.bound == executor.stats().bound == bound
        assert_idle(executor)

    async def test_aimd_grows_back_while_the_slots_are_busy(
        self, make_executor: ExecutorFactory
    ) -> None:
        policy = AIMD(initial=4, max=8, latency_threshold=60.0, min_samples=4)
        manual = ManualExecutor()
        executor = make_executor(executor=manual, bound=policy)
        # Keep more calls than slots, so every call ends with the gate full;
        # end them one at a time until the bound reached the ceiling. How many
        # calls that takes depends on the measured noise of these (real,
        # microsecond) latencies, which sizes the windows: at most 2,000.
        tasks: list[asyncio.Task[int]] = []
        ended = 0
        while executor.bound < 8 and ended < 2000:
            while len(tasks) - ended < 16:
                tasks.append(asyncio.create_task(executor.run(abs, len(tasks))))
            await settle()
            manual.by_tag[ended].set_result(ended)
            ended += 1
            await settle()
        assert executor.bound == 8  # one more slot per window
        for tag in range(ended, len(tasks)):
            await settle()
            manual.by_tag[tag].set_result(tag)
        assert await asyncio.gather(*tasks) == list(range(len(tasks)))
        assert executor.stats().latency_short is not None
        assert_idle(executor)

    async def test_gradient_probes_on_a_process_pool(self) -> None:
        policy = Gradient(initial=4, min_samples=4, probe_samples=2, seed=3)
        async with BoundedLoopExecutor.process(max_workers=2, bound=policy) as ex:
            assert ex.bound == 2  # capped at the workers
            rounds = 0
            # The first probe measures 20 to 100 calls, more when the
            # latencies are noisier: at most 100 rounds of 4.
            while ex.stats().latency_no_load is None and rounds < 100:
                await asyncio.gather(*(ex.run(abs, n) for n in range(4)))
                rounds += 1
            stats = ex.stats()
            assert stats.latency_no_load is not None
            assert stats.latency_short is not None
            assert 1 <= stats.bound <= 2
            assert stats.submitted == stats.completed == 4 * rounds
