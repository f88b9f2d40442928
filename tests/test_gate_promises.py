"""The slot gate's promises about time and cancellation, on every loop.

* ``max_wait`` never refuses a caller before it has waited ``max_wait`` of
  :func:`time.monotonic` time (uvloop's timers round to whole milliseconds
  and may fire early).
* A waiter that is cancelled stops counting at that instant: a caller
  arriving in the same loop iteration is not refused by ``max_pending`` on
  its account, and ``waiting`` no longer includes it, whatever cancelled it
  (``Task.cancel``, ``asyncio.timeout``, ``asyncio.wait_for``, an anyio
  cancel scope).
* ``would_admit_now`` and ``can_queue`` tell what :meth:`SlotGate.acquire`
  would do for a caller arriving now, without taking a slot.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import anyio
import pytest

from aiobound import ClosedError, OverloadedError
from aiobound._slots import SlotGate
from conftest import ExecutorFactory, GateFactory, assert_idle, settle


def make_slot_gate(
    bound: int, max_pending: int | None = None, max_wait: float | None = None
) -> SlotGate:
    gate = SlotGate(bound, max_pending, max_wait)
    gate.bind(asyncio.get_running_loop())
    return gate


def noop(x: int) -> int:
    return x


# Below, at and between uvloop's whole-millisecond timer ticks.
SHORT_WAITS = [0.0002, 0.0004, 0.0009, 0.001, 0.0015, 0.002, 0.0025, 0.003]


class TestMaxWaitNeverRefusesEarly:
    async def test_every_refusal_comes_after_max_wait(self) -> None:
        early: list[tuple[float, float]] = []
        for max_wait in SHORT_WAITS:
            gate = make_slot_gate(1, max_wait=max_wait)
            assert gate.try_acquire()
            for _ in range(15):
                began = time.monotonic()
                with pytest.raises(OverloadedError, match="max_wait"):
                    await gate.acquire()
                waited = time.monotonic() - began
                if waited < max_wait:
                    early.append((max_wait, waited))
            assert gate.timed_out == 15
            assert gate.waiting == 0
            gate.release()
            assert gate.in_use == 0
        assert not early, f"refused before max_wait (max_wait, waited): {early}"

    async def test_concurrent_waiters_each_wait_their_full_max_wait(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_wait=0.0004)
        blocker = make_gate()
        running = await executor.submit(blocker, 0)
        await blocker.started()

        async def refused_after() -> float:
            began = time.monotonic()
            with pytest.raises(OverloadedError):
                await executor.run(noop, 1)
            return time.monotonic() - began

        for _ in range(5):
            waits = await asyncio.gather(*(refused_after() for _ in range(20)))
            assert min(waits) >= 0.0004, sorted(waits)[:3]
        assert executor.stats().timed_out == 100
        blocker.open()
        assert await running == 0
        assert_idle(executor)


class TestCancelledWaiterCountsNoMore:
    async def test_a_caller_arriving_in_the_same_step_is_not_refused(self) -> None:
        gate = make_slot_gate(1, max_pending=1)
        assert gate.try_acquire()
        doomed = asyncio.create_task(gate.acquire())
        await settle()
        assert gate.waiting == 1
        assert not gate.can_queue()
        doomed.cancel()
        # Same step, no await since the cancel: the waiter no longer counts.
        assert gate.waiting == 0
        assert gate.can_queue()
        asyncio.get_running_loop().call_soon(gate.release)
        await gate.acquire()  # queues (old: OverloadedError), gets the slot
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert (gate.in_use, gate.waiting, gate.rejected) == (1, 0, 0)
        gate.release()
        assert gate.in_use == 0

    async def test_executor_stats_and_submit_in_the_same_step(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_pending=1)
        blocker = make_gate()
        running = await executor.submit(blocker, 0)
        await blocker.started()
        doomed = asyncio.create_task(executor.run(noop, 1))
        await settle()
        assert executor.stats().waiting == 1
        doomed.cancel()
        assert executor.stats().waiting == 0
        assert executor._path.gate.waiting == 0
        asyncio.get_running_loop().call_soon(blocker.open)
        assert await executor.run(noop, 2) == 2  # old: OverloadedError
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await running == 0
        assert executor.stats().rejected == 0
        assert_idle(executor)

    async def test_many_cancelled_then_one_newcomer_keeps_fifo_and_counts(
        self,
    ) -> None:
        gate = make_slot_gate(1, max_pending=3)
        assert gate.try_acquire()
        order: list[int] = []

        async def waiter(n: int) -> None:
            await gate.acquire()
            order.append(n)
            gate.release()

        tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
        await settle()
        tasks[0].cancel()
        tasks[1].cancel()
        assert gate.waiting == 1
        late = [asyncio.create_task(waiter(n)) for n in (3, 4)]
        await settle()
        assert (gate.waiting, gate.rejected) == (3, 0)
        gate.release()
        await asyncio.gather(*tasks, *late, return_exceptions=True)
        assert order == [2, 3, 4]
        assert (gate.in_use, gate.waiting) == (0, 0)

    @pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: 3.11+")
    async def test_asyncio_timeout(self) -> None:
        gate = make_slot_gate(1, max_pending=1)
        assert gate.try_acquire()
        scopes: list[Any] = []

        async def wait_with_timeout() -> None:
            async with asyncio.timeout(None) as scope:  # type: ignore[attr-defined,unused-ignore]
                scopes.append(scope)
                await gate.acquire()

        doomed = asyncio.create_task(wait_with_timeout())
        await settle()
        assert gate.waiting == 1
        loop = asyncio.get_running_loop()
        scopes[0].reschedule(loop.time())  # expires in the next iteration
        seen = await _probe_after_the_cancel(gate)
        assert seen == (0, True)
        with pytest.raises(TimeoutError):
            await doomed
        gate.release()
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_asyncio_wait_for(self) -> None:
        gate = make_slot_gate(1, max_pending=1)
        assert gate.try_acquire()
        outer = asyncio.create_task(asyncio.wait_for(gate.acquire(), timeout=60))
        await settle()
        assert gate.waiting == 1
        outer.cancel()  # wait_for cancels the inner acquisition
        seen = await _probe_after_the_cancel(gate)
        assert seen == (0, True)
        with pytest.raises(asyncio.CancelledError):
            await outer
        gate.release()
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_anyio_cancel_scope(self) -> None:
        gate = make_slot_gate(1, max_pending=1)
        assert gate.try_acquire()
        scopes: list[anyio.CancelScope] = []

        async def wait_in_scope() -> None:
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                await gate.acquire()

        doomed = asyncio.create_task(wait_in_scope())
        await settle()
        assert gate.waiting == 1
        scopes[0].cancel()  # delivers Task.cancel() at once
        assert (gate.waiting, gate.can_queue()) == (0, True)
        await doomed
        assert scopes[0].cancelled_caught
        gate.release()
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_handover_then_cancel_still_passes_the_slot_on(self) -> None:
        gate = make_slot_gate(1, max_pending=1)
        assert gate.try_acquire()
        first = asyncio.create_task(gate.acquire())
        await settle()
        gate.release()  # handed to `first`, which has not resumed yet
        first.cancel()  # too late to cancel the future: its task unwinds
        assert gate.in_use == 1
        with pytest.raises(asyncio.CancelledError):
            await first
        assert (gate.in_use, gate.waiting) == (0, 0)  # the slot came back


async def _probe_after_the_cancel(gate: SlotGate) -> tuple[int, bool]:
    """Read the gate in a callback queued now: it runs after the callback
    already queued that delivers the cancellation, and before the cancelled
    task's own step, which that delivery queues behind it."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[tuple[int, bool]] = loop.create_future()

    def probe() -> None:
        try:
            seen.set_result((gate.waiting, gate.can_queue()))
        except Exception as error:  # the test must not hang on a bug
            seen.set_exception(error)

    loop.call_soon(probe)
    return await seen


class TestAdmissionPrechecks:
    async def test_open_gate_with_a_free_slot(self) -> None:
        gate = make_slot_gate(2, max_pending=0)
        assert gate.would_admit_now()
        assert gate.can_queue()
        assert gate.try_acquire()
        assert gate.would_admit_now()  # one slot left
        assert gate.in_use == 1  # the checks took nothing

    async def test_full_gate(self) -> None:
        gate = make_slot_gate(1, max_pending=1)
        assert gate.try_acquire()
        assert not gate.would_admit_now()
        assert gate.can_queue()  # room to wait
        waiter = asyncio.create_task(gate.acquire())
        await settle()
        assert not gate.would_admit_now()
        assert not gate.can_queue()  # max_pending reached
        with pytest.raises(OverloadedError):
            await gate.acquire()
        gate.release()  # handed to the waiter
        assert not gate.would_admit_now()
        await waiter
        gate.release()
        assert gate.would_admit_now()

    async def test_no_waiting_room(self) -> None:
        gate = make_slot_gate(1, max_pending=0)
        assert gate.try_acquire()
        assert not gate.can_queue()
        with pytest.raises(OverloadedError):
            await gate.acquire()

    async def test_shrunk_gate_admits_no_one(self) -> None:
        gate = make_slot_gate(2)
        assert gate.try_acquire()
        gate.resize(1)
        assert not gate.would_admit_now()
        assert gate.can_queue()

    async def test_closed_gate(self) -> None:
        gate = make_slot_gate(1)
        gate.close()
        assert not gate.would_admit_now()
        assert not gate.can_queue()
        with pytest.raises(ClosedError):
            await gate.acquire()

    @pytest.mark.parametrize("max_pending", [None, 0, 1, 2])
    @pytest.mark.parametrize("bound", [1, 2])
    async def test_the_checks_agree_with_acquire(
        self, bound: int, max_pending: int | None
    ) -> None:
        gate = make_slot_gate(bound, max_pending=max_pending)
        tasks: list[asyncio.Task[None]] = []
        for _ in range(bound + 3):
            admit, queue = gate.would_admit_now(), gate.can_queue()
            in_use, waiting = gate.in_use, gate.waiting
            task = asyncio.create_task(gate.acquire())
            tasks.append(task)
            await settle()
            if admit:
                assert task.done()
                assert task.exception() is None
                assert gate.in_use == in_use + 1
            elif queue:
                assert not task.done()
                assert gate.waiting == waiting + 1
            else:
                assert isinstance(task.exception(), OverloadedError)
        gate.close()
        await asyncio.gather(*tasks, return_exceptions=True)
