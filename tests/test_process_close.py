"""aclose(timeout=...) on an owned process pool, and pools that break badly.

Real worker processes; a held call waits in its worker on a multiprocessing
Event that the test sets (no sleeps).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

import process_calls
import workers
from aiobound import BoundedLoopExecutor, ClosedError
from conftest import GATE_TIMEOUT, assert_idle

# forkserver, not fork: forking a process that runs threads can deadlock.
CONTEXT = multiprocessing.get_context("forkserver")


class Held:
    """A gate for calls held in worker processes (process_calls.held)."""

    def __init__(self) -> None:
        self.gate = CONTEXT.Event()
        self.started = CONTEXT.Semaphore(0)
        self.runs: Any = CONTEXT.Value("i", 0)

    def executor(self, **kwargs: Any) -> BoundedLoopExecutor:
        return BoundedLoopExecutor.process(
            mp_context=CONTEXT,
            initializer=process_calls.install_gate,
            initargs=(self.gate, self.started, self.runs),
            **kwargs,
        )

    async def wait_started(self, count: int = 1) -> None:
        for _ in range(count):
            started = await asyncio.to_thread(self.started.acquire, True, GATE_TIMEOUT)
            assert started, "a held call did not start"


class TestTimedOutClose:
    async def test_calls_queued_in_the_workers_never_run_and_get_closed_error(
        self,
    ) -> None:
        # One worker and bound 3: the pool moves all three calls to its
        # workers' queue at once and reports them running, so none can be
        # cancelled the usual way.
        held = Held()
        executor = held.executor(max_workers=1, bound=3)
        futures = [await executor.submit(process_calls.held, n) for n in range(3)]
        await held.wait_started()
        with pytest.raises(TimeoutError, match="still running or queued"):
            await executor.aclose(timeout=0.05)
        held.gate.set()
        assert await futures[0] == 0
        for fut in futures[1:]:
            with pytest.raises(ClosedError, match="before this call started"):
                await fut
        await executor.aclose()
        assert held.runs.value == 1  # the two queued calls never ran
        stats = executor.stats()
        assert (stats.completed, stats.cancelled, stats.failed) == (1, 2, 0)
        assert_idle(executor)


class TestStrandedCalls:
    # On 3.10 and 3.11 the pool's management thread dies of InvalidStateError
    # here, which pytest reports as an unhandled thread exception.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
    async def test_calls_after_a_cancelled_one_end_when_the_worker_dies(
        self,
    ) -> None:
        # CPython 3.10 and 3.11: when a worker dies, the pool fails its calls
        # in order and stops at one cancelled while it waited (its management
        # thread dies of InvalidStateError); the calls after it never ended,
        # their slots leaked and aclose() hung. 3.12 fixed the pool; the
        # test holds everywhere.
        held = Held()
        executor = held.executor(max_workers=1, bound=5)
        worker = await executor.run(os.getpid)
        running = await executor.submit(process_calls.held, 0)
        await held.wait_started()
        # The workers' queue is max_workers + 1 = 2 deep: 1 and 2 go there,
        # 3 and 4 wait in the pool, where 3 can still be cancelled.
        queued = [await executor.submit(workers.square, n) for n in (1, 2)]
        cancelled = await executor.submit(workers.square, 3)
        after = await executor.submit(workers.square, 4)
        cancelled.cancel()
        # The loop runs callbacks in the order they were scheduled: once this
        # one has run, the cancellation has reached the pool's future.
        loop = asyncio.get_running_loop()
        callbacks_ran = loop.create_future()
        loop.call_soon(callbacks_ran.set_result, None)
        await callbacks_ran
        assert executor.stats().cancelled == 1
        os.kill(worker, signal.SIGKILL)
        for fut in (running, *queued):
            with pytest.raises(BrokenProcessPool):
                await fut
        with pytest.raises(BrokenProcessPool):
            # A guard against a hang, not a timing assumption.
            await asyncio.wait_for(after, GATE_TIMEOUT)
        await executor.aclose()
        assert_idle(executor)
        stats = executor.stats()
        assert (stats.failed, stats.cancelled) == (4, 1)
