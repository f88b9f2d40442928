"""The slot gate alone, on the loop, without threads."""

from __future__ import annotations

import asyncio

import pytest

from aiobound import ClosedError, OverloadedError
from aiobound._slots import SlotGate
from aiobound._waiting import COMPACT_SLACK


def make_gate(bound: int, max_pending: int | None = None) -> SlotGate:
    gate = SlotGate(bound, max_pending)
    gate.bind(asyncio.get_running_loop())
    return gate


async def settle() -> None:
    """Let every ready callback and task step run (a few loop iterations)."""
    for _ in range(5):
        await asyncio.sleep(0)


class TestAcquireRelease:
    async def test_free_slot_is_taken_without_waiting(self) -> None:
        gate = make_gate(2)
        assert gate.try_acquire()
        assert gate.try_acquire()
        assert not gate.try_acquire()
        assert gate.in_use == 2
        assert gate.peak_in_use == 2

    async def test_waiters_are_served_in_fifo_order(self) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        order: list[int] = []

        async def waiter(n: int) -> None:
            await gate.acquire()
            order.append(n)

        tasks = [asyncio.create_task(waiter(n)) for n in range(5)]
        await settle()
        assert gate.waiting == 5
        for _ in range(5):
            gate.release()
            await settle()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
        assert gate.in_use == 1
        gate.release()
        assert gate.in_use == 0

    async def test_release_hands_the_slot_over_so_newcomers_cannot_overtake(
        self,
    ) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        task = asyncio.create_task(gate.acquire())
        await settle()
        gate.release()  # handed to the waiter, which has not resumed yet
        assert gate.in_use == 1
        assert not gate.try_acquire()  # a newcomer finds no free slot
        await task
        assert gate.in_use == 1


class TestCancellation:
    async def test_cancelled_waiter_leaves_the_queue_and_holds_nothing(self) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        task = asyncio.create_task(gate.acquire())
        await settle()
        assert gate.waiting == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.waiting == 0
        gate.release()
        assert gate.in_use == 0

    async def test_waiter_cancelled_after_handover_passes_the_slot_on(self) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        first = asyncio.create_task(gate.acquire())
        second = asyncio.create_task(gate.acquire())
        await settle()
        gate.release()  # the slot goes to `first`...
        first.cancel()  # ...which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await first
        await second  # so the slot went on to `second`
        assert gate.in_use == 1
        assert gate.waiting == 0

    async def test_waiter_with_max_wait_cancelled_after_handover_passes_it_on(
        self,
    ) -> None:
        gate = SlotGate(1, None, max_wait=60.0)
        gate.bind(asyncio.get_running_loop())
        assert gate.try_acquire()
        first = asyncio.create_task(gate.acquire())
        second = asyncio.create_task(gate.acquire())
        await settle()
        gate.release()  # the slot goes to `first`, whose timer is disarmed...
        first.cancel()  # ...which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        assert (gate.in_use, gate.waiting, gate.timed_out) == (1, 0, 0)

    async def test_waiter_future_cancel_answers_as_a_future_does(self) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        task = asyncio.create_task(gate.acquire())
        await settle()
        waiter = gate._room._waiters[0]
        assert waiter.cancel() is True
        assert gate.waiting == 0
        assert waiter.cancel() is False
        assert gate.waiting == 0  # counted out once only
        with pytest.raises(asyncio.CancelledError):
            await task

    async def test_handover_to_cancelled_waiter_with_nobody_behind_frees_slot(
        self,
    ) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        task = asyncio.create_task(gate.acquire())
        await settle()
        gate.release()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.in_use == 0
        assert gate.try_acquire()

    async def test_newcomer_queued_behind_a_cancelled_waiter_is_not_stranded(
        self,
    ) -> None:
        # A waiter is cancelled; before its task resumes, the slot is released
        # (skipping it) and a newcomer queues because the count still includes
        # the cancelled one. The newcomer must still get the free slot.
        gate = make_gate(1)
        assert gate.try_acquire()
        doomed = asyncio.create_task(gate.acquire())
        await settle()
        newcomer = asyncio.create_task(gate.acquire())  # its first step runs...
        doomed.cancel()  # ...before doomed's clean-up step
        gate.release()  # skips the cancelled waiter: the slot is free
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await asyncio.wait_for(newcomer, timeout=5)
        assert gate.in_use == 1
        assert gate.waiting == 0

    async def test_a_wait_interrupted_by_an_exception_leaves_the_count(
        self,
    ) -> None:
        # Not a cancellation of the waiter's future: an exception thrown into
        # the waiting coroutine (as a framework's own timeout may do).
        gate = SlotGate(1, None, max_wait=60.0)
        gate.bind(asyncio.get_running_loop())
        assert gate.try_acquire()
        acquiring = gate.acquire()
        waiter = acquiring.send(None)  # suspended on its waiter future
        assert gate.waiting == 1
        with pytest.raises(KeyError):
            acquiring.throw(KeyError("interrupted"))
        assert waiter.cancelled()
        assert (gate.waiting, gate.in_use) == (0, 1)
        gate.release()
        assert gate.in_use == 0
        assert gate.try_acquire()

    async def test_cancelled_waiters_do_not_pile_up(self) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        tasks = [asyncio.create_task(gate.acquire()) for _ in range(200)]
        await settle()
        for task in reversed(tasks[1:]):
            task.cancel()  # the head stays; the cancelled ones are not at it
            await settle()
            # Memory stays in proportion to the live waiters.
            assert len(gate._room) <= 2 * gate.waiting + COMPACT_SLACK
        assert gate.waiting == 1
        gate.release()
        await tasks[0]
        assert (gate.in_use, gate.waiting) == (1, 0)

    async def test_many_cancelled_waiters_are_compacted_and_counts_stay_exact(
        self,
    ) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        tasks = [asyncio.create_task(gate.acquire()) for _ in range(200)]
        await settle()
        for task in tasks[:-1]:
            task.cancel()
        await asyncio.gather(*tasks[:-1], return_exceptions=True)
        assert gate.waiting == 1
        gate.release()
        await tasks[-1]
        assert gate.in_use == 1
        assert gate.waiting == 0


class TestLimitsAndClose:
    async def test_max_pending_rejects_the_next_waiter_at_once(self) -> None:
        gate = make_gate(1, max_pending=2)
        assert gate.try_acquire()
        waiters = [asyncio.create_task(gate.acquire()) for _ in range(2)]
        await settle()
        with pytest.raises(OverloadedError, match="max_pending=2"):
            await gate.acquire()
        assert gate.rejected == 1
        assert gate.waiting == 2
        gate.close()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, ClosedError) for r in results)

    async def test_max_pending_zero_never_waits(self) -> None:
        gate = make_gate(1, max_pending=0)
        await gate.acquire()
        with pytest.raises(OverloadedError):
            await gate.acquire()

    async def test_close_wakes_waiters_and_refuses_newcomers(self) -> None:
        gate = make_gate(1)
        assert gate.try_acquire()
        waiter = asyncio.create_task(gate.acquire())
        await settle()
        gate.close()
        with pytest.raises(ClosedError):
            await waiter
        with pytest.raises(ClosedError):
            gate.try_acquire()
        assert gate.waiting == 0
        gate.release()
        assert gate.in_use == 0

    async def test_a_max_wait_timer_that_fires_early_refuses_no_one(self) -> None:
        gate = SlotGate(1, None, max_wait=60.0)
        gate.bind(asyncio.get_running_loop())
        assert gate.try_acquire()
        task = asyncio.create_task(gate.acquire())
        await settle()
        waiter = gate._room._waiters[0]
        armed = waiter.timer
        assert armed is not None
        armed.cancel()
        gate._room._timer_fired(waiter)  # what a timer firing early does
        await settle()
        assert not task.done()
        assert (gate.waiting, gate.timed_out) == (1, 0)
        assert waiter.timer is not None  # set again for the rest of the wait
        assert waiter.timer is not armed
        gate.release()
        await task  # granted: the timer is cancelled with the grant
        assert (gate.in_use, gate.waiting, gate.timed_out) == (1, 0, 0)

    async def test_wait_idle_returns_when_the_last_slot_is_released(self) -> None:
        gate = make_gate(2)
        assert gate.try_acquire()
        assert gate.try_acquire()
        idle = asyncio.create_task(gate.wait_idle())
        gate.release()
        await settle()
        assert not idle.done()
        gate.release()
        await asyncio.wait_for(idle, timeout=5)
