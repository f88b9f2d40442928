"""Cancellation at every await point leaves the accounting exact."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, TypeVar

import anyio
import pytest

from aiobound._slots import SlotGate
from conftest import CountingExecutor, ExecutorFactory, GateFactory, assert_idle, settle
from workers import identity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

T = TypeVar("T")


class TestWhileWaitingForASlot:
    async def test_cancelled_waiter_submits_nothing_and_holds_no_slot(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=1)
        executor = make_executor(executor=counting, bound=1)
        gate = make_gate()
        running = asyncio.create_task(executor.run(gate, "running"))
        await gate.started()
        waiter = asyncio.create_task(executor.run(gate, "never"))
        await settle()
        assert executor.stats().waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert executor.stats().waiting == 0
        assert executor.stats().in_flight == 1
        gate.open()
        assert await running == "running"
        assert counting.submits == 1
        assert gate.calls == ["running"]
        assert_idle(executor)

    @pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
    async def test_asyncio_timeout_while_waiting_submits_nothing(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        running = asyncio.create_task(executor.run(gate, 1))
        await gate.started()
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as scope:  # type: ignore[attr-defined,unused-ignore]
                # Expire at once, deterministically, while submit waits.
                loop.call_soon(scope.reschedule, loop.time() - 1)
                _ = await executor.submit(gate, 2)
        gate.open()
        await running
        assert gate.calls == [1]
        assert_idle(executor)

    async def test_wait_for_timeout_while_waiting_submits_nothing(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        running = asyncio.create_task(executor.run(gate, 1))
        await gate.started()
        with pytest.raises(asyncio.TimeoutError):
            _ = await asyncio.wait_for(executor.submit(gate, 2), timeout=0)
        gate.open()
        await running
        assert gate.calls == [1]
        assert_idle(executor)

    async def test_cancel_during_handover_passes_the_slot_on(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # The slot is handed to `first` in the same loop iteration in which
        # `first` is cancelled (before it resumes): `first` must submit
        # nothing and `second` must get the slot, so the total stays exact.
        counting = CountingExecutor(max_workers=1)
        executor = make_executor(executor=counting, bound=1)
        gate = make_gate()
        blocker = await executor.submit(gate, "blocker")
        await gate.started()
        first = asyncio.create_task(executor.submit(gate, "first"))
        second = asyncio.create_task(executor.run(gate, "second"))
        await settle()
        assert executor.stats().waiting == 2

        release = SlotGate.release

        def release_then_cancel_first(self: SlotGate) -> None:
            release(self)  # hands the slot to `first`...
            first.cancel()  # ...whose cancellation arrives at that instant
            monkeypatch.setattr(SlotGate, "release", release)

        monkeypatch.setattr(SlotGate, "release", release_then_cancel_first)
        gate.open()
        assert await blocker == "blocker"
        with pytest.raises(asyncio.CancelledError):
            _ = await first
        assert await second == "second"
        assert gate.calls == ["blocker", "second"]
        assert counting.peak_in_pool == 1
        assert_idle(executor)


class TestWhileTheCallIsInTheExecutor:
    async def test_cancelled_running_call_keeps_its_slot_until_it_ends(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        counting = CountingExecutor(max_workers=2)
        executor = make_executor(executor=counting, bound=1)
        gate = make_gate()
        running = asyncio.create_task(executor.run(gate, "running"))
        await gate.started()
        running.cancel()  # the caller stops caring at once...
        with pytest.raises(asyncio.CancelledError):
            await running
        # ...but the call still occupies a worker, so it keeps its slot.
        assert executor.stats().in_flight == 1
        follower = asyncio.create_task(executor.run(gate, "follower"))
        await settle()
        assert executor.stats().waiting == 1
        assert gate.calls == ["running"]  # the follower has not started
        gate.open()
        assert await follower == "follower"
        assert counting.peak_in_pool == 1
        assert_idle(executor)
        stats = executor.stats()
        assert (stats.completed, stats.cancelled) == (2, 0)

    async def test_cancelled_queued_call_never_runs_and_frees_its_slot(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        # One worker, bound 2: the second call sits in the pool's queue.
        executor = make_executor(max_workers=1, bound=2)
        gate = make_gate()
        running = await executor.submit(gate, "running")
        await gate.started()
        queued = await executor.submit(gate, "queued")
        assert executor.stats().in_flight == 2
        queued.cancel()
        await settle()
        assert executor.stats().in_flight == 1  # freed at once
        assert executor.stats().cancelled == 1
        gate.open()
        assert await running == "running"
        assert gate.calls == ["running"]  # "queued" never ran
        assert_idle(executor)

    async def test_repeated_cancellation_of_the_caller_keeps_counts_exact(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        running = asyncio.create_task(executor.run(gate, 0))
        await gate.started()
        waiters = [asyncio.create_task(executor.run(gate, n)) for n in range(1, 30)]
        await settle()
        for task in waiters[::2]:
            task.cancel()
            task.cancel()  # a second request changes nothing
        gate.open()
        results = await asyncio.gather(running, *waiters, return_exceptions=True)
        survivors = [r for r in results if not isinstance(r, BaseException)]
        assert survivors == [0, *range(2, 30, 2)]
        assert sorted(gate.calls) == survivors  # type: ignore[type-var]
        assert_idle(executor)


class TestRepeatedCancellation:
    async def test_a_cancel_scope_around_a_running_call_keeps_its_slot(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=1)
        gate = make_gate()
        after: list[str] = []

        async def caller() -> None:
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                try:
                    await executor.run(gate, "running")
                finally:
                    # anyio keeps cancelling the task until it leaves the
                    # scope; a shielded call still goes through.
                    with anyio.CancelScope(shield=True):
                        after.append(await executor.run(identity, "cleanup"))

        scopes: list[anyio.CancelScope] = []
        task = asyncio.ensure_future(caller())
        await gate.started()
        scopes[0].cancel()
        await settle()
        assert executor.stats().in_flight == 1  # the running call keeps it
        assert executor.stats().waiting == 1  # the shielded clean-up waits
        assert not task.done()
        gate.open()
        await task
        assert after == ["cleanup"]
        assert gate.calls == ["running"]
        assert_idle(executor)
        assert executor.stats().completed == 2

    async def test_a_cancel_scope_around_a_waiter_submits_nothing(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        running = await executor.submit(gate, "running")
        await gate.started()
        scopes = [anyio.CancelScope() for _ in range(5)]

        async def waiter(scope: anyio.CancelScope) -> None:
            with scope:
                await executor.run(gate, "never")

        tasks = [asyncio.ensure_future(waiter(scope)) for scope in scopes]
        await settle()
        assert executor.stats().waiting == 5
        for scope in scopes[::2]:
            scope.cancel()  # re-delivered until the task leaves the scope
        for task in tasks[1::2]:
            task.cancel()
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [isinstance(r, asyncio.CancelledError) for r in results] == [
            False,
            True,
            False,
            True,
            False,
        ]
        assert executor.stats().waiting == 0
        gate.open()
        assert await running == "running"
        assert gate.calls == ["running"]
        assert_idle(executor)

    async def test_task_cancelled_again_and_again_while_its_call_runs(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        gate = make_gate()
        task = asyncio.ensure_future(executor.run(gate, 1))
        await gate.started()
        for _ in range(20):
            task.cancel()
            await asyncio.sleep(0)
        assert task.cancelled()
        assert executor.stats().in_flight == 1
        follower = asyncio.ensure_future(executor.run(identity, 2))
        await settle()
        assert not follower.done()
        gate.open()
        assert await follower == 2
        assert_idle(executor)
        assert executor.stats().completed == 2

    async def test_map_in_a_cancelled_scope_cleans_up_and_closes_its_source(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=3)
        gate = make_gate()
        closed: list[bool] = []

        async def source() -> AsyncIterator[int]:
            try:
                for n in range(100):
                    yield n
            finally:
                closed.append(True)

        async def consume() -> None:
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                async with executor.map(gate, source()) as results:
                    async for _ in results:
                        pass

        scopes: list[anyio.CancelScope] = []
        task = asyncio.ensure_future(consume())
        await gate.started()
        assert executor.stats().in_flight == 3  # one running, two queued
        scopes[0].cancel()
        await task
        assert closed == [True]
        stats = executor.stats()
        assert (stats.in_flight, stats.cancelled) == (1, 2)
        gate.open()
        await executor.aclose()
        assert gate.calls == [0]
        assert_idle(executor)
