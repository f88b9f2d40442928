"""BoundedLoopExecutor.process(): an owned pool, clear errors, broken pools."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import pickle
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

import process_calls
import workers
from aiobound import BoundedLoopExecutor
from conftest import ExecutorFactory, assert_idle


class TestOwnedPool:
    async def test_process_owns_a_pool_with_twice_its_workers_as_bound(self) -> None:
        async with BoundedLoopExecutor.process(max_workers=2) as executor:
            pool = executor.executor
            assert isinstance(pool, concurrent.futures.ProcessPoolExecutor)
            assert executor.bound == 4
            assert await executor.run(workers.square, 7) == 49
            assert await executor.run(workers.pid) != os.getpid()
            assert await executor.run(process_calls.add, 1, y=2) == 3
            assert_idle(executor)
        with pytest.raises(RuntimeError, match="shutdown"):
            pool.submit(workers.square, 1)  # aclose shut the owned pool down

    async def test_process_never_forks(self) -> None:
        executor = BoundedLoopExecutor.process(max_workers=1)
        try:
            context = executor.executor._mp_context  # type: ignore[attr-defined]
            expected = (
                "forkserver"
                if "forkserver" in multiprocessing.get_all_start_methods()
                else "spawn"
            )
            assert context.get_start_method() == expected
        finally:
            await executor.aclose()

    async def test_a_given_spawn_context_is_used(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        async with BoundedLoopExecutor.process(
            max_workers=1, bound=3, mp_context=spawn
        ) as executor:
            assert executor.bound == 3
            assert executor.executor._mp_context is spawn  # type: ignore[attr-defined]
            assert await executor.run(workers.square, 3) == 9

    @pytest.mark.skipif(
        "fork" not in multiprocessing.get_all_start_methods(), reason="no fork here"
    )
    def test_a_fork_context_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"mp_context.*fork"):
            BoundedLoopExecutor.process(mp_context=multiprocessing.get_context("fork"))

    @pytest.mark.parametrize(
        ("kwargs", "error", "name"),
        [
            ({"max_workers": 0}, ValueError, "max_workers"),
            ({"max_workers": True}, TypeError, "max_workers"),
            ({"bound": 0}, ValueError, "bound"),
            ({"mp_context": "spawn"}, TypeError, "mp_context"),
            ({"initializer": 3}, TypeError, "initializer"),
            ({"initargs": [1]}, TypeError, "initargs"),
            ({"initargs": (1,)}, TypeError, "initargs has no effect without"),
            ({"burst": 2}, TypeError, "burst"),
        ],
    )
    def test_bad_arguments_are_named(
        self, kwargs: dict[str, Any], error: type[Exception], name: str
    ) -> None:
        with pytest.raises(error, match=name):
            BoundedLoopExecutor.process(**kwargs)


class TestUnpicklableCalls:
    async def test_unpicklable_callable_is_named_and_frees_its_slot(self) -> None:
        async with BoundedLoopExecutor.process(max_workers=1, bound=1) as executor:
            for _ in range(2):  # the second would hang if the slot leaked
                with pytest.raises(
                    (pickle.PicklingError, AttributeError),
                    match=r"cannot send the function \(<function .*lambda.*\) to a "
                    r"worker process: it cannot be pickled",
                ) as info:
                    await executor.run(lambda: 1)
                assert info.value.__cause__ is not None  # the pool's own error
            assert await executor.run(workers.square, 2) == 4
            assert_idle(executor)
            assert executor.stats().failed == 2

    @pytest.mark.parametrize(
        ("args", "kwargs", "where"),
        [
            ((threading.Lock(),), {}, "argument 1"),
            ((1,), {"y": threading.Lock()}, "keyword argument 'y'"),
        ],
    )
    async def test_unpicklable_argument_is_named_and_frees_its_slot(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
    ) -> None:
        async with BoundedLoopExecutor.process(max_workers=1, bound=1) as executor:
            with pytest.raises(
                TypeError, match=rf"cannot send {where} \(<unlocked _thread.lock"
            ) as info:
                await executor.run(process_calls.add, *args, **kwargs)
            assert isinstance(info.value.__cause__, TypeError)
            assert "cannot pickle" in str(info.value)
            assert_idle(executor)
            assert await executor.run(process_calls.add, 1, y=1) == 2

    async def test_a_type_error_from_fn_itself_is_not_rewritten(
        self,
        make_executor: ExecutorFactory,
    ) -> None:
        pool = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        )
        executor = make_executor(executor=pool)
        with pytest.raises(TypeError, match=r"^fn itself rejects 5$"):
            await executor.run(process_calls.wrong_type, 5)
        assert_idle(executor)


class TestBrokenPool:
    async def test_owned_pool_is_replaced_after_a_worker_dies(self) -> None:
        async with BoundedLoopExecutor.process(max_workers=1, bound=2) as executor:
            first = executor.executor
            assert await executor.run(workers.square, 2) == 4
            with pytest.raises(BrokenProcessPool):
                await executor.run(workers.die, 3)
            assert executor.stats().pool_restarts == 0  # replaced when next used
            for _ in range(3):
                assert await executor.run(workers.square, 3) == 9
            assert executor.executor is not first
            stats = executor.stats()
            assert stats.pool_restarts == 1
            assert stats.failed == 1
            assert_idle(executor)

    async def test_a_dying_worker_fails_the_calls_it_had_promptly(self) -> None:
        # One worker, started (and seen by the pool) before it dies: with
        # workers spawned on demand, CPython 3.11 may miss a worker that
        # dies while it is being spawned, until another call ends.
        with multiprocessing.get_context("spawn").Manager() as manager:
            kill = manager.Event()
            async with BoundedLoopExecutor.process(max_workers=1, bound=3) as executor:
                assert await executor.run(workers.square, 1) == 1
                dying = await executor.submit(process_calls.die_when, kill)
                queued = [await executor.submit(workers.square, x) for x in (2, 3)]
                kill.set()  # the worker dies with one call running, two queued
                results = await asyncio.gather(dying, *queued, return_exceptions=True)
                assert all(isinstance(r, BrokenProcessPool) for r in results), results
                assert executor.stats().pool_restarts == 0
                # map goes on with a new pool.
                squares = [r async for r in executor.map(workers.square, range(5))]
                assert squares == [0, 1, 4, 9, 16]
                assert executor.stats().pool_restarts == 1
            assert_idle(executor)

    async def test_map_fails_with_the_broken_pool_and_then_works_again(
        self,
    ) -> None:
        async with BoundedLoopExecutor.process(max_workers=1) as executor:
            with pytest.raises(BrokenProcessPool):
                async for _ in executor.map(
                    process_calls.die_on, [1, 2, -1, 3], chunksize=1
                ):
                    pass
            again = [r async for r in executor.map(process_calls.die_on, [4, 5])]
            assert again == [4, 5]
        # Calls that were running when map stopped keep their slots until
        # the pool fails them; aclose waited for them.
        assert_idle(executor)

    async def test_wrapped_broken_pool_is_left_as_is_with_a_clear_error(
        self, make_executor: ExecutorFactory
    ) -> None:
        pool = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        )
        executor = make_executor(executor=pool, bound=2)
        with pytest.raises(BrokenProcessPool):
            await executor.run(workers.die, 3)
        for _ in range(2):  # the slot is freed each time
            with pytest.raises(
                BrokenProcessPool,
                match=r"the wrapped ProcessPoolExecutor is broken.*executor= as "
                r"it is.*BoundedLoopExecutor\.process",
            ) as info:
                await executor.run(workers.square, 2)
            assert isinstance(info.value.__cause__, BrokenProcessPool)
        assert executor.executor is pool
        assert executor.stats().pool_restarts == 0
        assert_idle(executor)
