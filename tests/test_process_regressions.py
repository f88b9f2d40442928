"""Two fixes of the call path's split, held by tests (real process pools)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
from concurrent.futures.process import BrokenProcessPool

import pytest

import process_calls
import workers
from aiobound import BoundedLoopExecutor
from conftest import assert_idle

# forkserver, not fork: forking a process that runs threads can deadlock.
CONTEXT = multiprocessing.get_context("forkserver")


async def test_the_first_call_on_a_replaced_pool_is_explained() -> None:
    async with BoundedLoopExecutor.process(
        max_workers=1, mp_context=CONTEXT
    ) as executor:
        with pytest.raises(BrokenProcessPool):
            await executor.run(workers.die, 3)
        # This submission meets the broken pool, replaces it and goes to the
        # new one: its pickling error is explained like any other.
        with pytest.raises(
            TypeError, match=r"cannot send argument 1 \(<unlocked _thread.lock"
        ):
            await executor.run(workers.pid, threading.Lock())
        assert executor.stats().pool_restarts == 1
        assert await executor.run(process_calls.add, 1, y=2) == 3
    assert_idle(executor)


def test_copy_context_is_refused_for_a_wrapped_process_pool_at_construction() -> None:
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=CONTEXT)
    try:
        with pytest.raises(ValueError, match=r"copy_context=True cannot be used"):
            BoundedLoopExecutor(executor=pool, copy_context=True)
    finally:
        pool.shutdown()
