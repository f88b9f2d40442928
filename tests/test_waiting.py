"""The waiting room alone (aiobound._waiting): what it keeps for every gate.

The promises every gate gets from it are proven over all gates in
``test_gate_contract.py``; here are the room's own mechanics, with a keeper
that records what it is told: gone waiters are compacted, a waiter future
cancels as a future does, a ``max_wait`` timer that fires early refuses no
one, and a coroutine collected on a closed loop still counts itself out.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from aiobound import OverloadedError
from aiobound._waiting import COMPACT_SLACK, Waiter, WaitingRoom
from conftest import settle


class Keeper:
    """Records what the room tells its gate; refuses overdue waiters."""

    def __init__(self) -> None:
        self.left: list[Waiter] = []
        self.admitted_but_left_: list[Waiter] = []
        self.refused: list[Waiter] = []

    def refusal(self, waiter: Waiter, deadline: bool) -> BaseException | None:
        self.refused.append(waiter)
        return OverloadedError("waited max_wait")

    def waiter_left(self, waiter: Waiter) -> None:
        self.left.append(waiter)

    def admitted_but_left(self, waiter: Waiter) -> None:
        self.admitted_but_left_.append(waiter)


def make_room(max_wait: float | None = None) -> tuple[WaitingRoom, Keeper]:
    keeper = Keeper()
    room = WaitingRoom(keeper, max_wait, None)
    room.bind(asyncio.get_running_loop())
    return room, keeper


def waiting(room: WaitingRoom) -> asyncio.Task[None]:
    return asyncio.create_task(room.wait(room.join()))


class TestCompaction:
    async def test_cancelled_waiters_do_not_pile_up(self) -> None:
        room, keeper = make_room()
        tasks = [waiting(room) for _ in range(200)]
        await settle()
        for task in reversed(tasks[1:]):
            task.cancel()  # the head stays; the cancelled ones are not at it
            await settle()
            # Memory stays in proportion to the live waiters.
            assert len(room) <= 2 * room.waiting + COMPACT_SLACK
        assert room.waiting == 1
        assert len(keeper.left) == 199
        assert room.admit_first() is not None
        await tasks[0]
        assert room.waiting == 0

    async def test_many_cancelled_at_once_leave_the_count_exact(self) -> None:
        room, _ = make_room()
        tasks = [waiting(room) for _ in range(200)]
        await settle()
        for task in tasks[:-1]:
            task.cancel()
        await asyncio.gather(*tasks[:-1], return_exceptions=True)
        assert room.waiting == 1
        assert room.first() is not None
        room.admit_first()
        await tasks[-1]
        assert (room.waiting, room.first()) == (0, None)


class TestTheWaiterFuture:
    async def test_its_cancel_answers_as_a_future_does(self) -> None:
        room, keeper = make_room()
        task = waiting(room)
        await settle()
        waiter = room.first()
        assert waiter is not None
        assert waiter.cancel() is True
        assert room.waiting == 0
        assert waiter.cancel() is False
        assert room.waiting == 0  # counted out once only
        assert keeper.left == [waiter]
        with pytest.raises(asyncio.CancelledError):
            await task

    async def test_let_in_then_cancelled_tells_the_keeper(self) -> None:
        room, keeper = make_room()
        task = waiting(room)
        await settle()
        waiter = room.admit_first()
        task.cancel()  # before the task resumes
        with pytest.raises(asyncio.CancelledError):
            await task
        assert keeper.admitted_but_left_ == [waiter]
        assert keeper.left == []


class TestMaxWaitTimer:
    async def test_a_timer_that_fires_early_refuses_no_one(self) -> None:
        room, keeper = make_room(max_wait=60.0)
        task = waiting(room)
        await settle()
        waiter = room.first()
        assert waiter is not None
        armed = waiter.timer
        assert armed is not None
        armed.cancel()
        room._timer_fired(waiter)  # what a timer firing early does
        await settle()
        assert not task.done()
        assert (room.waiting, keeper.refused) == (1, [])
        assert waiter.timer is not None  # set again for the rest of the wait
        assert waiter.timer is not armed
        room.admit_first()
        await task  # let in: the timer is cancelled with it
        assert waiter.timer is None

    async def test_a_keeper_that_says_no_keeps_the_waiter_waiting(self) -> None:
        room, keeper = make_room(max_wait=60.0)
        keeper.refusal = lambda waiter, deadline: None  # type: ignore[method-assign]
        task = waiting(room)
        await settle()
        waiter = room.first()
        assert waiter is not None
        assert not room.refuse(waiter)
        assert room.waiting == 1
        room.admit_first()
        await task


class TestAClosedLoop:
    def test_a_waiter_collected_on_a_closed_loop_counts_itself_out(self) -> None:
        loop = asyncio.new_event_loop()
        keeper = Keeper()
        room = WaitingRoom(keeper, None, None)
        room.bind(loop)
        coro = room.wait(room.join())
        task = loop.create_task(coro)
        loop.run_until_complete(asyncio.sleep(0))
        assert room.waiting == 1
        loop.close()  # with the coroutine still waiting
        del task
        coro.close()  # what collecting it does: GeneratorExit inside the wait
        gc.collect()
        assert room.waiting == 0
        assert len(keeper.left) == 1
