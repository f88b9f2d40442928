"""submit/run: results, errors, the bound, max_pending, stats."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import os
import threading
import weakref
from typing import Any

import pytest

from aiobound import BoundedLoopExecutor, ExecutorStats, OverloadedError
from aiobound._process import run_unless_dropped
from aiobound._submit import _StoppingHandover
from conftest import (
    CountingExecutor,
    ExecutorFactory,
    FailingExecutor,
    GateFactory,
    assert_idle,
    settle,
)


def add(a: int, b: int = 0, *, scale: int = 1) -> int:
    return (a + b) * scale


class Boom(Exception):
    pass


def boom(message: str) -> None:
    raise Boom(message)


class TestResults:
    async def test_submit_returns_a_future_of_the_result(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)
        fut = await executor.submit(add, 2, 3, scale=10)
        assert isinstance(fut, asyncio.Future)
        assert await fut == 50
        assert_idle(executor)
        assert executor.stats().completed == 1

    async def test_run_passes_positional_and_keyword_arguments(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)
        assert await executor.run(add, 1, b=2, scale=3) == 9

    async def test_exception_from_fn_comes_out_unchanged_and_frees_its_slot(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        with pytest.raises(Boom, match="kaput") as info:
            await executor.run(boom, "kaput")
        assert type(info.value) is Boom
        assert_idle(executor)
        assert executor.stats().failed == 1
        assert await executor.run(add, 1) == 1  # the slot is free again

    async def test_stop_iteration_from_fn_arrives_as_cause_of_runtime_error(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)

        def stop() -> None:
            raise StopIteration("done")

        with pytest.raises(RuntimeError) as info:
            await executor.run(stop)
        assert isinstance(info.value.__cause__, StopIteration)
        assert_idle(executor)

    async def test_submit_error_of_the_executor_frees_the_slot_and_reaches_caller(
        self, make_executor: ExecutorFactory
    ) -> None:
        failing = FailingExecutor(RuntimeError("cannot schedule new futures"))
        executor = make_executor(executor=failing, bound=1)
        for _ in range(3):  # would hang on the second call if the slot leaked
            with pytest.raises(RuntimeError, match="cannot schedule"):
                _ = await executor.submit(add, 1)
        assert_idle(executor)
        assert executor.stats().failed == 3
        assert executor.stats().submitted == 3

    async def test_executor_shut_down_from_outside_raises_at_the_caller(
        self, make_executor: ExecutorFactory
    ) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        executor = make_executor(executor=pool)
        pool.shutdown()
        with pytest.raises(RuntimeError, match="shutdown"):
            await executor.run(add, 1)
        assert_idle(executor)


class TestBound:
    async def test_bound_never_exceeded_under_many_producers(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=3)
        executor = make_executor(executor=counting, bound=5)
        gate = make_gate()

        async def producer(n: int) -> list[int]:
            return [await executor.run(gate, n * 100 + i) for i in range(10)]

        tasks = [asyncio.create_task(producer(n)) for n in range(20)]
        await gate.started(3)  # the pool is busy and the rest waits
        stats = executor.stats()
        assert stats.in_flight == 5
        assert stats.waiting == 15
        gate.open()
        results = await asyncio.gather(*tasks)
        assert results == [[n * 100 + i for i in range(10)] for n in range(20)]
        assert counting.peak_in_pool == 5
        assert executor.stats().peak_in_flight == 5
        assert counting.submits == 200
        assert_idle(executor)

    async def test_default_bound_is_twice_the_worker_count(self) -> None:
        executor = BoundedLoopExecutor(max_workers=3)
        assert executor.bound == 6
        await executor.aclose()

    @pytest.mark.parametrize(("cpus", "workers"), [(None, 5), (2, 6), (64, 32)])
    async def test_default_pool_is_sized_as_the_stdlib_sizes_it(
        self, monkeypatch: pytest.MonkeyPatch, cpus: int | None, workers: int
    ) -> None:
        # min(32, os.cpu_count() + 4), an unknown CPU count counting as one.
        monkeypatch.setattr(os, "cpu_count", lambda: cpus)
        executor = BoundedLoopExecutor()
        try:
            assert executor.bound == 2 * workers
        finally:
            await executor.aclose()

    async def test_wrapped_stdlib_pool_size_is_read_for_the_default_bound(
        self,
    ) -> None:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert BoundedLoopExecutor(executor=pool).bound == 8
        # The private attribute this relies on exists on this Python.
        assert isinstance(pool._max_workers, int)

    async def test_waiting_callers_do_not_hold_memory_in_the_pool(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=1)
        executor = make_executor(executor=counting, bound=2)
        gate = make_gate()
        tasks = [asyncio.create_task(executor.run(gate, n)) for n in range(50)]
        await gate.started(1)
        assert counting.in_pool == 2  # not 50
        gate.open()
        assert await asyncio.gather(*tasks) == list(range(50))


class TestMaxPending:
    async def test_max_pending_rejects_at_once_and_counts(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_pending=2)
        gate = make_gate()
        running = asyncio.create_task(executor.run(gate, 0))
        await gate.started()
        waiting = [asyncio.create_task(executor.run(gate, n)) for n in (1, 2)]
        await settle()
        assert executor.stats().waiting == 2
        with pytest.raises(OverloadedError, match="max_pending=2"):
            _ = await executor.submit(gate, 3)
        stats = executor.stats()
        assert stats.rejected == 1
        assert stats.submitted == 1
        gate.open()
        assert await asyncio.gather(running, *waiting) == [0, 1, 2]
        assert_idle(executor)

    async def test_errors_are_runtime_errors(self) -> None:
        from aiobound import ClosedError

        assert issubclass(OverloadedError, RuntimeError)
        assert issubclass(ClosedError, RuntimeError)


class TestIntrospection:
    async def test_stats_and_repr_follow_the_state(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_pending=5)
        gate = make_gate()
        first = asyncio.create_task(executor.run(gate, 1))
        await gate.started()
        second = asyncio.create_task(executor.run(gate, 2))
        await settle()
        stats = executor.stats()
        assert (stats.bound, stats.in_flight, stats.waiting) == (1, 1, 1)
        assert stats.max_pending == 5
        assert repr(executor) == (
            "<BoundedLoopExecutor bound=1 in_flight=1 waiting=1 open>"
        )
        gate.open()
        await asyncio.gather(first, second)
        stats = executor.stats()
        assert (stats.submitted, stats.completed, stats.failed) == (2, 2, 0)
        assert not stats.closed
        await executor.aclose()
        assert executor.stats().closed
        assert repr(executor).endswith("closed>")

    async def test_stats_of_a_fresh_executor(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=3, max_wait=5.0)
        assert executor.stats() == ExecutorStats(
            bound=3,
            in_flight=0,
            waiting=0,
            max_pending=None,
            max_wait=5.0,
            max_per_second=None,
            peak_in_flight=0,
            submitted=0,
            completed=0,
            failed=0,
            cancelled=0,
            rejected=0,
            timed_out=0,
            rate_limited=0,
            queue_wait_avg=0.0,
            queue_wait_max=0.0,
            closed=False,
            pool_restarts=0,
        )

    async def test_the_pool_it_owns_names_its_threads(self) -> None:
        async with BoundedLoopExecutor(max_workers=1) as executor:
            name = await executor.run(lambda: threading.current_thread().name)
        assert name.startswith("aiobound_")

    async def test_properties(self, make_executor: ExecutorFactory) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(2)
        executor = make_executor(executor=pool, bound=3, max_pending=7)
        assert executor.executor is pool
        assert executor.bound == 3
        assert executor.max_pending == 7
        assert not executor.closed

    async def test_partial_and_bound_methods_are_accepted(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        assert await executor.run(functools.partial(add, 1, 2)) == 3
        assert await executor.run("a-b".split, "-") == ["a", "b"]


class Holder:
    """An object a weak reference can watch."""


class WatchedList(list):  # type: ignore[type-arg]
    """A list a weak reference can watch: its methods are builtins."""


def fail_with(arg: object) -> None:
    raise Boom(repr(arg))


class TestNothingKeptAlive:
    """What a call was given goes when the call does (issue 23, items 17-18)."""

    @pytest.mark.parametrize("how", ["run", "map"])
    async def test_a_failed_call_leaves_no_cycle_keeping_its_arguments(
        self, make_executor: ExecutorFactory, how: str
    ) -> None:
        """Item 17: freed by reference counting, as run_in_executor frees them."""
        executor = make_executor(max_workers=1)
        gc.collect()
        gc.disable()
        try:
            arg = Holder()
            ref = weakref.ref(arg)
            try:
                if how == "run":
                    await executor.run(fail_with, arg)
                else:
                    async for _ in executor.map(fail_with, [arg]):
                        pass  # pragma: no cover - the first item raises
            except Boom:
                pass
            del arg
            # The loop's step that delivered the error still holds it (the
            # handle it runs): one step later only a cycle could keep it.
            await asyncio.sleep(0)
            assert ref() is None, f"{how}(): kept alive by a reference cycle"
        finally:
            gc.enable()

    async def test_a_builtin_bound_to_an_object_does_not_keep_it_alive(
        self, make_executor: ExecutorFactory
    ) -> None:
        """Item 18: f.write, say, is not remembered as a stateless function."""
        executor = make_executor(max_workers=1)
        target = WatchedList()
        ref = weakref.ref(target)
        await executor.run(target.append, 1)
        del target
        assert ref() is None
        assert await executor.run(len, "ab") == 2  # a module's builtin is fine

    @pytest.mark.parametrize(
        "wrap", [functools.cache, functools.lru_cache(maxsize=8)], ids=["cache", "lru"]
    )
    async def test_a_cached_async_function_is_refused(
        self, make_executor: ExecutorFactory, wrap: Any
    ) -> None:
        """Item 19: lru_cache / cache of an async def returns a coroutine."""
        from aiobound import BoundedExecutor

        async def fetch(n: int) -> int:  # pragma: no cover - never called
            return n

        cached = wrap(fetch)
        executor = make_executor(max_workers=1)
        with pytest.raises(TypeError, match="async function"):
            _ = await executor.submit(cached, 1)
        with (
            BoundedExecutor(max_workers=1) as sync,
            pytest.raises(TypeError, match="async function"),
        ):
            sync.submit(cached, 1)
        assert executor.stats().submitted == 0


class _SchedulingPool(concurrent.futures.Executor):
    """Records what is scheduled on it, as pebble's ``ProcessPool.schedule``."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[object, tuple[Any, ...], dict[str, Any]]] = []

    def schedule(
        self, fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[None]:
        self.scheduled.append((fn, args, kwargs))
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_result(None)
        return future


class _ForkContext:
    """A multiprocessing context that counts the checks of the main script."""

    def __init__(self) -> None:
        self.asked = 0

    def get_start_method(self) -> str:
        self.asked += 1
        return "fork"


def test_a_pool_that_stops_calls_gets_each_through_run_unless_dropped() -> None:
    # kill_on_timeout: calls go to pebble's schedule(), wrapped so that a
    # timed-out close can drop those not started; the main script is checked
    # at the first call only.
    context = _ForkContext()
    handover = _StoppingHandover(context, True)
    pool = _SchedulingPool()
    first = handover(pool, divmod, (7, 2), {})
    handover(pool, sorted, ([2, 1],), {"reverse": True})
    assert pool.scheduled == [
        (run_unless_dropped, (divmod, 7, 2), {}),
        (run_unless_dropped, (sorted, [2, 1]), {"reverse": True}),
    ]
    assert context.asked == 1
    assert first.done()
