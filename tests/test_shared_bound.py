"""SharedBound: one bound for several executors, threads and event loops.

Async tests run on asyncio and on uvloop (conftest); the other loops they
start in threads are of the same kind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import (
    BoundedExecutor,
    BoundedLoopExecutor,
    ClosedError,
    OverloadedError,
    SharedBound,
)
from conftest import (
    GATE_TIMEOUT,
    ExecutorFactory,
    GateFactory,
    assert_idle,
    new_uvloop,
    settle,
)
from sync_helpers import Latch, started, until

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    made = concurrent.futures.ThreadPoolExecutor(16)
    yield made
    made.shutdown(wait=True)


@pytest.fixture
def latch() -> Iterator[Latch]:
    made = Latch()
    yield made
    made.open()


def shared_idle(shared: SharedBound) -> None:
    stats = shared.stats()
    assert (stats.in_flight, stats.waiting) == (0, 0), stats
    assert stats.peak_in_flight <= stats.bound, stats


def same_kind_of_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for loops of the kind the running test uses."""
    running = asyncio.get_running_loop()
    if new_uvloop is not None and type(running).__module__.startswith("uvloop"):
        return new_uvloop
    return asyncio.new_event_loop


class LoopThread:
    """An event loop of its own, running in a thread, for coroutines to run on."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop = factory()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


async def test_executors_on_one_loop_share_the_bound(
    make_executor: ExecutorFactory, make_gate: GateFactory
) -> None:
    shared = SharedBound(2)
    first = make_executor(max_workers=4, bound=shared)
    second = make_executor(max_workers=4, bound=shared)
    gate = make_gate()
    tasks = [
        asyncio.create_task(ex.run(gate, i)) for i, ex in enumerate([first, second] * 2)
    ]
    await gate.started(2)
    await settle()
    assert len(gate.calls) == 2
    assert shared.stats().waiting == 2
    assert first.stats().bound == second.stats().bound == 2
    assert first.stats().in_flight + second.stats().in_flight == 2
    gate.open()
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3]
    assert gate.peak_running == 2
    assert shared.stats().admitted == 4
    assert shared.stats().executors == 2
    waits = [first.stats().queue_wait, second.stats().queue_wait]
    assert sum(w.count for w in waits) == 4
    assert sum(w.counts[0] for w in waits) == 2  # two got a slot at once: 0 s
    # The recent wait follows the waits that ended in a slot, per executor.
    for ex in (first, second):
        assert 0.0 < ex.queue_wait_recent <= ex.stats().queue_wait_max
    assert_idle(first)
    assert_idle(second)
    shared_idle(shared)


async def test_waiters_of_several_executors_are_served_in_one_fifo_order(
    make_executor: ExecutorFactory, make_gate: GateFactory
) -> None:
    shared = SharedBound(1)
    first = make_executor(max_workers=2, bound=shared)
    second = make_executor(max_workers=2, bound=shared)
    gate = make_gate()
    holder = asyncio.create_task(first.run(gate, "holder"))
    await gate.started()
    order: list[str] = []
    waiters = []
    for name, ex in [("a", second), ("b", first), ("c", second), ("d", first)]:
        waiters.append(asyncio.create_task(ex.run(order.append, name)))
        await settle()
    gate.open()
    await asyncio.gather(holder, *waiters)
    assert order == ["a", "b", "c", "d"]
    shared_idle(shared)


async def test_a_thread_and_a_coroutine_wait_in_one_fifo_order(
    make_executor: ExecutorFactory, pool: concurrent.futures.Executor, latch: Latch
) -> None:
    shared = SharedBound(1)
    sync = BoundedExecutor(executor=pool, bound=shared)
    loop_ex = make_executor(executor=pool, bound=shared, shut_down_pool=False)
    sync.submit(latch, "holder")
    order: list[str] = []
    thread = started(lambda: sync.submit(order.append, "thread").result())
    until(lambda: shared.waiting == 1, "the thread to queue")
    coro = asyncio.create_task(loop_ex.run(order.append, "coroutine"))
    await settle()
    assert shared.waiting == 2
    latch.open()
    await coro
    thread.finish()
    assert order == ["thread", "coroutine"]
    sync.shutdown()
    shared_idle(shared)


async def test_max_pending_and_max_wait_are_per_executor(
    make_executor: ExecutorFactory, make_gate: GateFactory
) -> None:
    shared = SharedBound(1)
    strict = make_executor(max_workers=2, bound=shared, max_pending=0)
    patient = make_executor(max_workers=2, bound=shared)
    hasty = make_executor(max_workers=2, bound=shared, max_wait=0.01)
    gate = make_gate()
    holder = asyncio.create_task(patient.run(gate, 0))
    await gate.started()
    queued = asyncio.create_task(patient.run(abs, -1))
    await settle()
    with pytest.raises(OverloadedError, match="max_pending=0"):
        await strict.run(abs, 2)
    with pytest.raises(OverloadedError, match="max_wait"):
        await hasty.run(abs, 3)
    assert (strict.stats().rejected, hasty.stats().timed_out) == (1, 1)
    assert shared.stats().rejected == shared.stats().timed_out == 1
    assert not queued.done()
    gate.open()
    assert await queued == 1
    await holder
    shared_idle(shared)


async def test_closing_one_executor_refuses_only_its_own_waiters(
    make_executor: ExecutorFactory, make_gate: GateFactory
) -> None:
    shared = SharedBound(1)
    closing = make_executor(max_workers=2, bound=shared)
    staying = make_executor(max_workers=2, bound=shared)
    gate = make_gate()
    holder = asyncio.create_task(staying.run(gate, 0))
    await gate.started()
    doomed = asyncio.create_task(closing.run(abs, -1))
    kept = asyncio.create_task(staying.run(abs, -2))
    await settle()
    await closing.aclose()
    with pytest.raises(ClosedError):
        await doomed
    assert shared.waiting == 1
    gate.open()
    assert await kept == 2
    await holder
    assert_idle(closing)
    shared_idle(shared)


@pytest.mark.parametrize("cancel_first", [True, False])
async def test_a_coroutine_cancelled_as_a_thread_hands_it_a_slot_passes_it_on(
    make_executor: ExecutorFactory,
    pool: concurrent.futures.Executor,
    latch: Latch,
    cancel_first: bool,
) -> None:
    shared = SharedBound(1)
    sync = BoundedExecutor(executor=pool, bound=shared)
    loop_ex = make_executor(executor=pool, bound=shared, shut_down_pool=False)
    sync.submit(latch, "holder")  # released by a worker thread
    waiter = asyncio.create_task(loop_ex.run(abs, -1))
    await settle()
    behind = started(lambda: sync.submit(abs, -2).result())
    until(lambda: shared.waiting == 2, "the thread to queue behind")
    # One loop step: the slot is handed to the coroutine (from the worker
    # thread) and the coroutine is cancelled, in either order, before it
    # can resume.
    if cancel_first:
        # Cancelled while it waits: it leaves the queue at that instant, so
        # the slot goes straight to the thread behind it.
        waiter.cancel()
        assert (loop_ex.stats().waiting, shared.waiting) == (0, 1)
    latch.open()
    if not cancel_first:
        until(lambda: sync.stats().in_flight == 0, "the holder's release")
        assert loop_ex.stats().in_flight == 1  # handed over, not yet resumed
        waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert behind.finish() == 2
    sync.shutdown()
    assert_idle(loop_ex)
    shared_idle(shared)


async def test_a_coroutine_on_another_loop_is_woken_on_its_own_loop(
    make_executor: ExecutorFactory, make_gate: GateFactory
) -> None:
    shared = SharedBound(1)
    here = make_executor(max_workers=2, bound=shared)
    gate = make_gate()
    holder = asyncio.create_task(here.run(gate, 0))
    await gate.started()
    other = LoopThread(same_kind_of_loop())
    try:
        woken_on: list[int] = []

        async def on_other_loop() -> int:
            async with BoundedLoopExecutor(max_workers=2, bound=shared) as ex:
                result = await ex.run(abs, -5)
                woken_on.append(threading.get_ident())
                return result

        result = other.run(on_other_loop())
        until(lambda: shared.waiting == 1, "the other loop's coroutine to queue")
        gate.open()
        await holder
        assert await asyncio.wrap_future(result) == 5
        assert woken_on == [other._thread.ident]
    finally:
        other.stop()
    shared_idle(shared)


async def test_resize_of_the_shared_bound_admits_waiters_everywhere(
    make_executor: ExecutorFactory, pool: concurrent.futures.Executor, latch: Latch
) -> None:
    shared = SharedBound(1)
    sync = BoundedExecutor(executor=pool, bound=shared)
    loop_ex = make_executor(executor=pool, bound=shared, shut_down_pool=False)
    sync.submit(latch, 0)
    thread = started(lambda: sync.submit(latch, 1))
    until(lambda: shared.waiting == 1, "the thread to queue")
    coro = asyncio.create_task(loop_ex.submit(latch, 2))
    await settle()
    loop_ex.resize(3)  # resizes the shared bound
    assert shared.bound == sync.bound == 3
    thread.finish()
    _ = await coro
    assert shared.stats().in_flight == 3
    shared.resize(1)
    latch.open()
    sync.shutdown()
    await loop_ex.aclose()
    stats = shared.stats()
    assert (stats.in_flight, stats.waiting, stats.peak_in_flight) == (0, 0, 3)


def test_shared_bound_validation_and_repr() -> None:
    with pytest.raises(ValueError, match="bound"):
        SharedBound(0)
    with pytest.raises(TypeError, match="bound"):
        SharedBound(1.5)  # type: ignore[arg-type]
    shared = SharedBound(3)
    with pytest.raises(ValueError, match="bound"):
        shared.resize(0)
    assert "bound=3" in repr(shared)
    ex = BoundedExecutor(max_workers=1, bound=shared)
    assert ex.shared_bound is shared
    assert BoundedExecutor(max_workers=1).shared_bound is None
    ex.shutdown()


async def test_process_pools_of_a_thread_and_a_loop_share_a_bound() -> None:
    shared = SharedBound(3)
    sync = BoundedExecutor.process(max_workers=2, bound=shared)
    try:
        async with BoundedLoopExecutor.process(max_workers=2, bound=shared) as ex:
            thread = started(lambda: sum(sync.map(abs, range(-300, 0))))
            total = 0
            async for value in ex.map(abs, range(-300, 0)):
                total += value
            assert await ex.run(pow, 2, 5) == 32
            assert thread.finish() == total == sum(range(1, 301))
            assert ex.stats().bound == 3
    finally:
        sync.shutdown()
    shared_idle(shared)
    assert shared.stats().executors == 2


@pytest.mark.parametrize(
    "factory",
    [asyncio.new_event_loop, *([new_uvloop] if new_uvloop is not None else [])],
)
def test_a_waiter_whose_loop_was_closed_is_skipped(
    factory: Callable[[], asyncio.AbstractEventLoop],
    pool: concurrent.futures.Executor,
    latch: Latch,
) -> None:
    shared = SharedBound(1)
    sync = BoundedExecutor(executor=pool, bound=shared)
    sync.submit(latch, 0)
    other = LoopThread(factory)

    async def wait_there() -> int:
        ex = BoundedLoopExecutor(executor=pool, bound=shared)
        return await ex.run(abs, -1)

    other.run(wait_there())
    until(lambda: shared.waiting == 1, "the other loop's coroutine to queue")
    other.stop()  # closed while its coroutine still waits: nobody to wake
    behind = started(lambda: sync.submit(abs, -2).result())
    until(lambda: shared.waiting == 2, "the thread to queue behind it")
    latch.open()
    assert behind.finish() == 2
    sync.shutdown()
    shared_idle(shared)


class TestRoundThree:
    """The shared bound's view keeps the waiting room's promises (issue 23)."""

    async def test_a_cancelled_waiter_stops_counting_at_once(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        """Item 1: stats().waiting and max_pending see the cancel at once."""
        shared = SharedBound(1)
        executor = make_executor(max_workers=2, bound=shared, max_pending=1)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        doomed = asyncio.create_task(executor.run(abs, -1))
        await settle()
        assert (executor.stats().waiting, shared.waiting) == (1, 1)
        doomed.cancel()
        assert (executor.stats().waiting, shared.waiting) == (0, 0)
        assert executor.can_admit()
        newcomer = asyncio.create_task(executor.run(abs, -2))  # not refused
        await settle()
        assert executor.stats().rejected == 0
        gate.open()
        assert await newcomer == 2
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await running == 0
        assert_idle(executor)
        shared_idle(shared)

    @pytest.mark.parametrize("max_wait", [0.0002, 0.0004, 0.0009, 0.0015])
    async def test_max_wait_never_refuses_early(
        self, make_executor: ExecutorFactory, make_gate: GateFactory, max_wait: float
    ) -> None:
        """Item 2: never refused before max_wait, on uvloop too."""
        shared = SharedBound(1)
        executor = make_executor(max_workers=2, bound=shared, max_wait=max_wait)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        early = []
        for _ in range(20):
            began = time.monotonic()
            with pytest.raises(OverloadedError, match="max_wait"):
                await executor.run(abs, -1)
            waited = time.monotonic() - began
            if waited < max_wait:
                early.append(waited)
        assert not early, f"refused before max_wait={max_wait}: {early}"
        assert executor.stats().timed_out == 20
        gate.open()
        await running
        shared_idle(shared)

    def test_a_slot_freed_on_the_thread_of_a_closed_loop_is_passed_on(self) -> None:
        """Item 3: a waiter on a closed loop holds nothing; the slot goes on."""
        shared = SharedBound(1)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        latch = Latch()
        occupant = pool.submit(latch, "occupant")  # keeps the worker busy
        sync = BoundedExecutor(executor=pool, bound=shared)
        queued = sync.submit(abs, -1)  # holds the slot, queued in the pool
        loop = asyncio.new_event_loop()
        loop_ex = BoundedLoopExecutor(executor=pool, bound=shared)
        try:
            task = loop.create_task(loop_ex.run(abs, -2))
            loop.run_until_complete(settle())
            assert shared.waiting == 1  # the coroutine waits for the slot
            loop.close()  # with the coroutine still waiting
            assert queued.cancel()  # frees the slot on the closed loop's thread
            assert (shared.in_flight, shared.waiting) == (0, 0)
            assert sync.submit(abs, -3) is not None  # no wait: the slot is free
        finally:
            latch.open()
            occupant.result()
            sync.shutdown()
            pool.shutdown()
        assert task.done() is False  # never resumed: its loop is gone
        shared_idle(shared)

    def test_a_loop_closed_with_a_call_running_gives_its_slot_back(self) -> None:
        """Item 4: the slot comes back when the call ends in the worker."""
        shared = SharedBound(1)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        latch = Latch()

        async def main() -> None:
            executor = BoundedLoopExecutor(executor=pool, bound=shared)
            running = await executor.submit(latch, "running")
            latch.wait_started(1)
            assert not running.done()
            # Returns with the call running: asyncio.run closes the loop.

        try:
            asyncio.run(main())
            assert shared.in_flight == 1
            latch.open()
            until(lambda: shared.in_flight == 0, "the slot to come back")
            other = BoundedExecutor(executor=pool, bound=shared, max_pending=0)
            assert other.submit(abs, -1).result() == 1  # not refused
        finally:
            latch.open()
            pool.shutdown()
        shared_idle(shared)

    async def test_after_aclose_every_call_that_ended_is_counted(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        """A slot that came back in the worker before its end reached the loop
        does not let aclose() return early: the end is counted first."""
        shared = SharedBound(1)
        pool = concurrent.futures.ThreadPoolExecutor(1)  # not owned: no
        executor = make_executor(executor=pool, bound=shared)  # shutdown to await
        gate = make_gate()
        caller = asyncio.create_task(executor.run(gate, 7))
        await gate.started()
        caller.cancel()  # nobody waits for its result: the call runs on
        with pytest.raises(asyncio.CancelledError):
            await caller
        gate.open()
        # The loop does not turn here: the end waits for it, the slot not.
        until(lambda: shared.stats().in_flight == 0, "the slot to come back")
        await executor.aclose()
        stats = executor.stats()
        pool.shutdown()
        assert (stats.submitted, stats.completed) == (1, 1)
        assert stats.submitted == stats.completed + stats.failed + stats.cancelled

    async def test_two_acloses_waiting_for_an_end_both_return(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        shared = SharedBound(1)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        executor = make_executor(executor=pool, bound=shared)
        gate = make_gate()
        caller = asyncio.create_task(executor.run(gate, 7))
        await gate.started()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        # Both closes start after the slot is back and before the end is heard.
        closes = [asyncio.ensure_future(executor.aclose()) for _ in range(2)]
        gate.open()
        until(lambda: shared.stats().in_flight == 0, "the slot to come back")
        await asyncio.wait_for(asyncio.gather(*closes), GATE_TIMEOUT)
        pool.shutdown()
        assert executor.stats().completed == 1
