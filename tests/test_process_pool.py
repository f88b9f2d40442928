"""Real process pools: results, errors, a dying worker, unpicklable calls."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

import pytest

import workers
from conftest import ExecutorFactory, assert_idle

if TYPE_CHECKING:
    from collections.abc import Iterator

# forkserver, not fork: forking a process that runs threads can deadlock.
CONTEXT = multiprocessing.get_context("forkserver")


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=CONTEXT) as pool:
        yield pool


class TestProcessPool:
    async def test_results_come_back_and_the_bound_is_read_from_the_pool(
        self,
        make_executor: ExecutorFactory,
        pool: concurrent.futures.ProcessPoolExecutor,
    ) -> None:
        executor = make_executor(executor=pool, shut_down_pool=False)
        assert executor.bound == 4
        assert await executor.run(workers.square, 7) == 49
        assert await executor.run(workers.pid) != os.getpid()
        assert_idle(executor)

    async def test_map_over_a_process_pool(
        self,
        make_executor: ExecutorFactory,
        pool: concurrent.futures.ProcessPoolExecutor,
    ) -> None:
        executor = make_executor(executor=pool, shut_down_pool=False)
        squares = [r async for r in executor.map(workers.square, range(40))]
        assert squares == [x * x for x in range(40)]
        assert_idle(executor)

    async def test_exception_in_a_worker_process_comes_out_unchanged(
        self,
        make_executor: ExecutorFactory,
        pool: concurrent.futures.ProcessPoolExecutor,
    ) -> None:
        executor = make_executor(executor=pool, bound=1, shut_down_pool=False)
        with pytest.raises(workers.WorkerError, match="in the child"):
            await executor.run(workers.fail, "in the child")
        assert await executor.run(workers.square, 3) == 9
        assert_idle(executor)

    async def test_contextvars_are_not_sent_to_processes(
        self,
        make_executor: ExecutorFactory,
        pool: concurrent.futures.ProcessPoolExecutor,
    ) -> None:
        executor = make_executor(executor=pool, shut_down_pool=False)
        workers.tag.set("parent")
        assert await executor.run(workers.read_tag) == "unset"

    async def test_unpicklable_callable_fails_at_the_caller_and_frees_its_slot(
        self,
        make_executor: ExecutorFactory,
        pool: concurrent.futures.ProcessPoolExecutor,
    ) -> None:
        executor = make_executor(executor=pool, bound=1, shut_down_pool=False)
        for _ in range(2):  # the second would hang if the slot leaked
            with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
                await executor.run(lambda: 1)
        assert await executor.run(workers.square, 2) == 4
        assert_idle(executor)

    async def test_unpicklable_argument_fails_at_the_caller_and_frees_its_slot(
        self,
        make_executor: ExecutorFactory,
        pool: concurrent.futures.ProcessPoolExecutor,
    ) -> None:
        executor = make_executor(executor=pool, bound=1, shut_down_pool=False)
        with pytest.raises(TypeError, match="pickle"):
            await executor.run(workers.pid, threading.Lock())
        assert_idle(executor)
        assert executor.stats().failed == 1


class TestBrokenPool:
    async def test_a_dying_worker_fails_calls_promptly_and_leaks_no_slot(
        self, make_executor: ExecutorFactory
    ) -> None:
        pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=CONTEXT)
        executor = make_executor(executor=pool, bound=2)
        assert await executor.run(workers.square, 2) == 4
        with pytest.raises(BrokenProcessPool):
            await executor.run(workers.die, 3)
        # The pool is broken for good: its submit raises, and the slot is
        # freed each time (a leak would hang the third call at bound=2).
        for _ in range(3):
            with pytest.raises(BrokenProcessPool):
                await executor.run(workers.square, 2)
        assert_idle(executor)
