"""BoundedLoopExecutor.process(kill_on_timeout=True): a late call is stopped.

pebble's ProcessPool stops the one worker running a late call and starts
another; the other calls go on. Real worker processes; the tests wait on
multiprocessing semaphores and events (passed to each worker as it starts),
never on the clock, except for the deadlines themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import sys
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import psutil
import pytest

import process_calls
import stopping_calls
import workers
from aiobound import (
    BoundedExecutor,
    BoundedLoopExecutor,
    ClosedError,
    DeadlineExceeded,
)
from aiobound._process import RESTART_LIMIT
from conftest import assert_idle

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytest.importorskip("pebble")

LATE = 0.5  # the deadline of a call that sleeps 30 s


class Controls:
    """What the test holds of the workers: started, a gate, the last pid."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.started = context.Semaphore(0)
        self.gate = context.Event()
        self.last_pid = context.Value("i", 0)

    @property
    def initargs(self) -> tuple[Any, ...]:
        return (self.started, self.gate, self.last_pid)

    async def wait_started(self) -> int:
        """Wait until a call has started in a worker; return that worker's pid."""
        assert await asyncio.to_thread(self.started.acquire, True, 30)
        return int(self.last_pid.value)


@contextlib.asynccontextmanager
async def stopping(
    controls: Controls | None = None, **kwargs: Any
) -> AsyncIterator[BoundedLoopExecutor]:
    if controls is not None:
        kwargs.update(initializer=stopping_calls.install, initargs=controls.initargs)
    executor = BoundedLoopExecutor.process(kill_on_timeout=True, **kwargs)
    try:
        yield executor
    finally:
        if controls is not None:
            controls.gate.set()
        await executor.aclose()


class TestALateCallIsStopped:
    async def test_its_worker_is_replaced_and_the_other_call_goes_on(self) -> None:
        controls = Controls()
        async with stopping(controls, max_workers=2) as executor:
            other = await executor.submit(stopping_calls.held)
            other_pid = await controls.wait_started()
            late = asyncio.ensure_future(
                executor.with_timeout(LATE).run(stopping_calls.sleep_long, 30)
            )
            late_pid = await controls.wait_started()
            with pytest.raises(DeadlineExceeded) as info:
                await late
            assert info.value.stage == "running"
            assert info.value.timeout == LATE
            assert "stopped and replaced" in str(info.value)
            stats = executor.stats()
            assert (stats.deadline_running, stats.abandoned) == (1, 0)
            assert stats.in_flight == 1  # the slot is freed: only `other` holds one
            # The next call runs on the worker started in place of the late one
            # (the other worker is still held by `other`).
            replaced = await executor.run(stopping_calls.pid)
            assert replaced not in (late_pid, other_pid)
            assert not _alive(late_pid)
            controls.gate.set()
            assert await other == other_pid  # it ran on, undisturbed
        stats = executor.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (2, 0, 1)
        assert (stats.deadline_running, stats.abandoned) == (1, 0)
        assert stats.deadline_queued == stats.deadline_waiting == 0
        assert stats.pool_restarts == 0  # a worker replaced, not the pool
        assert_idle(executor)

    async def test_a_call_its_caller_cancels_is_stopped_too(self) -> None:
        controls = Controls()
        async with stopping(controls, max_workers=1) as executor:
            call = await executor.submit(stopping_calls.sleep_long, 30)
            late_pid = await controls.wait_started()
            call.cancel()
            assert executor.stats().in_flight == 0
            assert await executor.run(stopping_calls.pid) != late_pid
            assert not _alive(late_pid)
        assert executor.stats().cancelled == 1

    async def test_a_call_waiting_for_a_slot_leaves_at_its_deadline(self) -> None:
        controls = Controls()
        # The default bound is the worker count: nothing waits in the pool.
        async with stopping(controls, max_workers=1) as executor:
            assert executor.bound == 1
            held = await executor.submit(stopping_calls.held)
            await controls.wait_started()
            with pytest.raises(DeadlineExceeded) as info:
                await executor.with_timeout(0.05).run(stopping_calls.pid)
            assert info.value.stage == "waiting"
            controls.gate.set()
            await held
        stats = executor.stats()
        assert (stats.deadline_waiting, stats.submitted, stats.cancelled) == (1, 1, 0)

    async def test_the_function_knows_its_time_left(self) -> None:
        async with stopping(max_workers=1, call_timeout=30) as executor:
            left = await executor.run(workers.time_left)
            assert left is not None
            assert 0 < left <= 30
            assert await executor.with_timeout(None).run(workers.time_left) is None


class TestClosing:
    async def test_aclose_timeout_stops_the_calls_still_running(self) -> None:
        controls = Controls()
        executor = BoundedLoopExecutor.process(
            max_workers=1,
            kill_on_timeout=True,
            initializer=stopping_calls.install,
            initargs=controls.initargs,
        )
        call = await executor.submit(stopping_calls.sleep_long, 30)
        late_pid = await controls.wait_started()
        await executor.aclose(timeout=0.05)  # nothing runs on: no TimeoutError
        with pytest.raises(ClosedError):
            await call
        stats = executor.stats()
        assert (stats.cancelled, stats.in_flight, stats.completed) == (1, 0, 0)
        assert not _alive(late_pid)


class TestThePoolsPromisesHold:
    async def test_a_dying_worker_fails_only_its_own_call(self) -> None:
        controls = Controls()
        async with stopping(controls, max_workers=2) as executor:
            other = await executor.submit(stopping_calls.held)
            other_pid = await controls.wait_started()
            with pytest.raises(BrokenProcessPool, match="worker process running"):
                await executor.run(workers.die, 3)
            controls.gate.set()
            assert await other == other_pid
            assert await executor.run(workers.square, 3) == 9
            stats = executor.stats()
            assert (stats.failed, stats.completed, stats.pool_restarts) == (1, 2, 0)

    async def test_pickling_errors_are_explained(self) -> None:
        async with stopping(max_workers=1) as executor:
            with pytest.raises(
                TypeError, match=r"cannot send argument 1 \(<unlocked _thread.lock"
            ):
                await executor.run(process_calls.add, threading.Lock())  # type: ignore[arg-type]
            with pytest.raises(
                (TypeError, pickle.PicklingError), match="cannot be pickled back"
            ):
                await executor.run(process_calls.return_a_lock, 1)
            with pytest.raises(TypeError, match=r"^fn itself rejects 5$"):
                await executor.run(process_calls.wrong_type, 5)
            assert_idle(executor)

    async def test_a_failing_initializer_is_named_and_restarts_are_limited(
        self,
    ) -> None:
        async with stopping(
            max_workers=1, initializer=process_calls.failing_initializer
        ) as executor:
            for _ in range(RESTART_LIMIT + 1):
                with pytest.raises(
                    BrokenProcessPool,
                    match=r"the workers' initializer .*raised ValueError: "
                    r"no database here",
                ):
                    await executor.run(workers.square, 2)
            assert executor.stats().pool_restarts == RESTART_LIMIT
            assert_idle(executor)

    def test_without_pebble_the_error_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "pebble", None)  # import pebble fails
        with pytest.raises(ImportError, match=r"aiobound\[pebble\]"):
            BoundedLoopExecutor.process(max_workers=1, kill_on_timeout=True)
        plain = BoundedLoopExecutor.process(max_workers=1)  # no pebble needed
        plain.executor.shutdown()

    def test_a_bad_value_is_refused_naming_it(self) -> None:
        with pytest.raises(TypeError, match="kill_on_timeout must be a bool"):
            BoundedLoopExecutor.process(kill_on_timeout=1)  # type: ignore[arg-type]


class TestTheSynchronousExecutor:
    def test_a_late_call_is_stopped_and_its_worker_replaced(self) -> None:
        controls = Controls()
        executor = BoundedExecutor.process(
            max_workers=1,
            kill_on_timeout=True,
            initializer=stopping_calls.install,
            initargs=controls.initargs,
        )
        try:
            assert executor.bound == 1
            future = executor.with_timeout(LATE).submit(stopping_calls.sleep_long, 30)
            assert controls.started.acquire(True, 30)
            late_pid = controls.last_pid.value
            with pytest.raises(DeadlineExceeded, match="stopped") as info:
                future.result()
            assert info.value.stage == "running"
            stats = executor.stats()
            assert (stats.deadline_running, stats.abandoned) == (1, 0)
            assert executor.submit(stopping_calls.pid).result() != late_pid
            assert not _alive(late_pid)
        finally:
            executor.shutdown()
        stats = executor.stats()
        assert (stats.cancelled, stats.completed, stats.in_flight) == (1, 1, 0)


def _alive(pid: int) -> bool:
    """Whether *pid* is a live process (not gone, not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
