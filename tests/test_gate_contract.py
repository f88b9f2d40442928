"""The gate contract: every gate's promises, proven once for all of them.

As trio's ``generic_lock_test`` runs one contract over eight lock-like
objects, this file runs one contract over every gate aiobound has: the
loop-only slot gate, the default and a named partition of a partitioned
gate, and an executor's view of a shared bound (every test on asyncio and on
uvloop); the synchronous view of a shared bound keeps the promises that
apply to a blocking thread (last class). A new gate joins by adding one
line to ``GATES``.

The promises:

* a free slot is taken at once, without yielding, and never by overtaking;
* waiters are served in FIFO order; a newcomer never overtakes a waiter,
  not even one handed a slot that has not resumed yet;
* ``max_pending`` refuses the next caller at once;
* a cancelled waiter stops counting at the instant it is cancelled
  (``Task.cancel``, ``asyncio.wait_for``, ``asyncio.timeout``, anyio);
* a slot handed to a waiter that left before resuming is passed on;
* ``max_wait`` never refuses early, on any loop; a waiter reached after its
  ``max_wait`` has passed is refused, not admitted late; the same for a
  call's deadline, which refuses with ``DeadlineExceeded``;
* close wakes every waiter with ``ClosedError`` and refuses newcomers;
* resize never lets more than the larger of the old and new bound in.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from aiobound import (
    ClosedError,
    DeadlineExceeded,
    OverloadedError,
    SharedBound,
    _deadlines,
    _partitions,
    _shared,
    _waiting,
)
from aiobound._deadlines import Deadline
from aiobound._partitions import PartitionedGate
from aiobound._shared import LoopView, ThreadView
from aiobound._slots import SlotGate
from conftest import settle
from sync_helpers import started, until

if TYPE_CHECKING:
    from aiobound._readings import ExecutorGate, Gate


@dataclass
class Subject:
    """A gate under test: where callers acquire, and the whole it belongs to."""

    gate: Gate
    whole: ExecutorGate


def slot_gate(bound: int, max_pending: int | None, max_wait: float | None) -> Subject:
    gate = SlotGate(bound, max_pending, max_wait)
    gate.bind(asyncio.get_running_loop())
    return Subject(gate, gate)


def default_partition(
    bound: int, max_pending: int | None, max_wait: float | None
) -> Subject:
    whole = PartitionedGate(bound, {"other": 0.5}, max_pending, max_wait)
    whole.bind(asyncio.get_running_loop())
    return Subject(whole.default, whole)


def named_partition(
    bound: int, max_pending: int | None, max_wait: float | None
) -> Subject:
    whole = PartitionedGate(bound, {"p": 0.5}, max_pending, max_wait)
    whole.bind(asyncio.get_running_loop())
    return Subject(whole.part("p"), whole)


def shared_view(bound: int, max_pending: int | None, max_wait: float | None) -> Subject:
    view = LoopView(SharedBound(bound), max_pending, max_wait)
    view.bind(asyncio.get_running_loop())
    return Subject(view, view)


GATES = [
    pytest.param(slot_gate, id="slot-gate"),
    pytest.param(default_partition, id="default-partition"),
    pytest.param(named_partition, id="named-partition"),
    pytest.param(shared_view, id="shared-bound-view"),
]

Maker = Callable[[int, int | None, float | None], Subject]


@pytest.fixture(params=GATES)
def make(request: pytest.FixtureRequest) -> Maker:
    maker: Maker = request.param
    return maker


def waiter(gate: Gate, log: list[int], n: int) -> asyncio.Task[None]:
    async def wait() -> None:
        await gate.acquire()
        log.append(n)

    return asyncio.create_task(wait())


class FakeClock:
    """``time.monotonic`` for the gates, moved by hand (or by each read)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.0

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    stand_in = types.SimpleNamespace(monotonic=fake.monotonic)
    monkeypatch.setattr(_waiting, "time", stand_in)
    monkeypatch.setattr(_shared, "time", stand_in)
    monkeypatch.setattr(_deadlines, "time", stand_in)
    monkeypatch.setattr(_partitions, "time", stand_in)
    return fake


class TestAdmission:
    async def test_a_free_slot_is_taken_at_once_without_yielding(
        self, make: Maker
    ) -> None:
        subject = make(2, None, None)
        gate = subject.gate
        for _ in range(2):
            step = gate.acquire().__await__()
            with pytest.raises(StopIteration):
                step.send(None)  # done in its first step
        assert (gate.in_use, gate.waiting) == (2, 0)
        assert gate.peak_in_use == 2  # type: ignore[attr-defined]
        assert not gate.would_admit_now()
        assert not gate.try_acquire()

    async def test_waiters_are_served_in_fifo_order(self, make: Maker) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        log: list[int] = []
        tasks = [waiter(gate, log, n) for n in range(5)]
        await settle()
        assert gate.waiting == 5
        for _ in range(5):
            gate.release()
            await settle()
        await asyncio.gather(*tasks)
        assert log == [0, 1, 2, 3, 4]
        gate.release()
        assert gate.in_use == 0

    async def test_a_newcomer_never_overtakes_a_waiter_handed_a_slot(
        self, make: Maker
    ) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        log: list[int] = []
        first = waiter(gate, log, 1)
        await settle()
        gate.release()  # handed to `first`, which has not resumed yet
        assert gate.in_use == 1
        assert not gate.would_admit_now()
        assert not gate.try_acquire()
        assert not gate.try_take()
        await first
        assert log == [1]
        gate.release()

    async def test_max_pending_refuses_the_next_caller_at_once(
        self, make: Maker
    ) -> None:
        gate = make(1, 1, None).gate
        assert gate.try_acquire()
        assert gate.can_queue()
        log: list[int] = []
        queued = waiter(gate, log, 1)
        await settle()
        assert not gate.can_queue()
        step = gate.acquire().__await__()
        with pytest.raises(OverloadedError, match="max_pending=1"):
            step.send(None)  # refused in its first step, without waiting
        assert (gate.waiting, gate.rejected) == (1, 1)  # type: ignore[attr-defined]
        gate.release()
        await queued
        gate.release()
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_a_refusal_says_what_the_caller_found(
        self, make: Maker, clock: FakeClock
    ) -> None:
        # The numbers of both refusals, as the refused caller saw them.
        gate = make(2, 2, 60.0).gate
        assert gate.try_acquire()
        assert gate.try_acquire()
        log: list[int] = []
        late = waiter(gate, log, 1)
        await settle()
        clock.now += 30.0
        in_time = waiter(gate, log, 2)
        await settle()
        with pytest.raises(OverloadedError) as at_once:
            await gate.acquire()
        assert str(at_once.value).startswith("overloaded: 2 callers")
        assert str(at_once.value).endswith(
            "already wait for a slot (max_pending=2, bound=2, in_flight=2)"
        )
        clock.now += 30.0  # `late` has waited 60 s: refused at the next grant
        gate.release()
        with pytest.raises(OverloadedError) as after_wait:
            await late
        message = str(after_wait.value)
        assert message.startswith("overloaded: waited max_wait=60.0s for a slot")
        assert message.endswith("(bound=2, in_flight=2, waiting=1)")
        await in_time
        assert log == [2]
        gate.release()
        gate.release()


async def _probe_after_the_cancel(gate: Gate) -> tuple[int, bool]:
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


class TestAdmissionQuestions:
    """``would_admit_now`` and ``can_queue`` tell what ``acquire`` would do."""

    async def test_an_open_gate_with_a_free_slot(self, make: Maker) -> None:
        gate = make(2, 0, None).gate
        assert gate.would_admit_now()
        assert gate.can_queue()
        assert gate.try_acquire()
        assert gate.would_admit_now()  # one slot left
        assert gate.in_use == 1  # the checks took nothing
        gate.release()

    async def test_a_full_gate(self, make: Maker) -> None:
        gate = make(1, 1, None).gate
        assert gate.try_acquire()
        assert not gate.would_admit_now()
        assert gate.can_queue()  # room to wait
        waiter_task = asyncio.create_task(gate.acquire())
        await settle()
        assert not gate.would_admit_now()
        assert not gate.can_queue()  # max_pending reached
        with pytest.raises(OverloadedError):
            await gate.acquire()
        gate.release()  # handed to the waiter
        assert not gate.would_admit_now()
        await waiter_task
        gate.release()
        assert gate.would_admit_now()

    async def test_no_waiting_room_never_waits(self, make: Maker) -> None:
        gate = make(1, 0, None).gate
        await gate.acquire()
        assert not gate.can_queue()
        with pytest.raises(OverloadedError):
            await gate.acquire()
        gate.release()

    async def test_a_shrunk_gate_admits_no_one(self, make: Maker) -> None:
        subject = make(2, None, None)
        assert subject.gate.try_acquire()
        subject.whole.resize(1)
        assert not subject.gate.would_admit_now()
        assert subject.gate.can_queue()
        subject.gate.release()

    async def test_a_closed_gate(self, make: Maker) -> None:
        subject = make(1, None, None)
        subject.whole.close()
        assert not subject.gate.would_admit_now()
        assert not subject.gate.can_queue()
        with pytest.raises(ClosedError):
            await subject.gate.acquire()

    @pytest.mark.parametrize("max_pending", [None, 0, 1, 2])
    @pytest.mark.parametrize("bound", [1, 2])
    async def test_the_questions_agree_with_acquire(
        self, make: Maker, bound: int, max_pending: int | None
    ) -> None:
        subject = make(bound, max_pending, None)
        gate = subject.gate
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
        subject.whole.close()
        await asyncio.gather(*tasks, return_exceptions=True)


class TestCancellation:
    async def test_task_cancel_stops_the_count_at_once(self, make: Maker) -> None:
        gate = make(1, 1, None).gate
        assert gate.try_acquire()
        doomed = asyncio.create_task(gate.acquire())
        await settle()
        assert (gate.waiting, gate.can_queue()) == (1, False)
        doomed.cancel()
        # In this same step: no longer counted, and a newcomer may queue.
        assert (gate.waiting, gate.can_queue()) == (0, True)
        asyncio.get_running_loop().call_soon(gate.release)
        await gate.acquire()  # queues, is not refused, gets the slot
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert (gate.in_use, gate.waiting, gate.rejected) == (1, 0, 0)  # type: ignore[attr-defined]
        gate.release()
        assert gate.in_use == 0

    @pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: 3.11+")
    async def test_asyncio_timeout_stops_the_count_at_once(self, make: Maker) -> None:
        gate = make(1, 1, None).gate
        assert gate.try_acquire()
        scopes: list[Any] = []

        async def wait_with_timeout() -> None:
            async with asyncio.timeout(None) as scope:  # type: ignore[attr-defined,unused-ignore]
                scopes.append(scope)
                await gate.acquire()

        doomed = asyncio.create_task(wait_with_timeout())
        await settle()
        assert gate.waiting == 1
        scopes[0].reschedule(asyncio.get_running_loop().time())
        assert await _probe_after_the_cancel(gate) == (0, True)
        with pytest.raises(TimeoutError):
            await doomed
        gate.release()
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_asyncio_wait_for_stops_the_count_at_once(self, make: Maker) -> None:
        gate = make(1, 1, None).gate
        assert gate.try_acquire()
        outer = asyncio.create_task(asyncio.wait_for(gate.acquire(), timeout=60))
        await settle()
        assert gate.waiting == 1
        outer.cancel()  # wait_for cancels the inner acquisition
        assert await _probe_after_the_cancel(gate) == (0, True)
        with pytest.raises(asyncio.CancelledError):
            await outer
        gate.release()
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_an_anyio_cancel_scope_stops_the_count_at_once(
        self, make: Maker
    ) -> None:
        gate = make(1, 1, None).gate
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

    async def test_many_cancelled_then_newcomers_keep_fifo_and_counts(
        self, make: Maker
    ) -> None:
        gate = make(1, 3, None).gate
        assert gate.try_acquire()
        order: list[int] = []

        async def wait(n: int) -> None:
            await gate.acquire()
            order.append(n)
            gate.release()

        tasks = [asyncio.create_task(wait(n)) for n in range(3)]
        await settle()
        tasks[0].cancel()
        tasks[1].cancel()
        assert gate.waiting == 1
        late = [asyncio.create_task(wait(n)) for n in (3, 4)]
        await settle()
        assert (gate.waiting, gate.rejected) == (3, 0)  # type: ignore[attr-defined]
        gate.release()
        await asyncio.gather(*tasks, *late, return_exceptions=True)
        assert order == [2, 3, 4]
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_a_cancelled_waiter_holds_nothing_and_the_next_is_served(
        self, make: Maker
    ) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        log: list[int] = []
        first, second = waiter(gate, log, 1), waiter(gate, log, 2)
        await settle()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.release()
        await second
        assert (log, gate.in_use, gate.waiting) == ([2], 1, 0)
        gate.release()

    async def test_a_slot_handed_to_a_waiter_that_left_is_passed_on(
        self, make: Maker
    ) -> None:
        gate = make(1, None, 60.0).gate  # its max_wait timer is disarmed too
        assert gate.try_acquire()
        log: list[int] = []
        first, second = waiter(gate, log, 1), waiter(gate, log, 2)
        await settle()
        gate.release()  # the slot goes to `first`...
        first.cancel()  # ...which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await first
        await second  # so it was passed on
        assert (log, gate.in_use, gate.waiting) == ([2], 1, 0)
        assert gate.timed_out == 0  # type: ignore[attr-defined]
        gate.release()
        assert gate.in_use == 0

    async def test_a_newcomer_queued_behind_a_cancelled_waiter_is_not_stranded(
        self, make: Maker
    ) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        doomed = asyncio.create_task(gate.acquire())
        await settle()
        newcomer = asyncio.create_task(gate.acquire())  # its first step runs...
        doomed.cancel()  # ...before doomed's clean-up step
        gate.release()  # skips the cancelled waiter
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await newcomer
        assert (gate.in_use, gate.waiting) == (1, 0)
        gate.release()

    async def test_a_slot_handed_to_the_last_waiter_that_left_is_freed(
        self, make: Maker
    ) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        task = asyncio.create_task(gate.acquire())
        await settle()
        gate.release()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (gate.in_use, gate.waiting) == (0, 0)
        assert gate.try_acquire()
        gate.release()

    async def test_an_exception_thrown_into_a_waiter_leaves_it_holding_nothing(
        self, make: Maker
    ) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        coro = gate.acquire()
        step = coro.__await__()
        step.send(None)  # now waiting
        assert gate.waiting == 1
        with pytest.raises(LookupError):
            step.throw(LookupError("interrupted"))
        assert gate.waiting == 0
        gate.release()
        assert gate.in_use == 0


# Below, at and between uvloop's whole-millisecond timer ticks.
SHORT_WAITS = [0.0002, 0.0004, 0.0009, 0.001, 0.0015, 0.002, 0.003]


class TestMaxWait:
    async def test_max_wait_never_refuses_early(self, make: Maker) -> None:
        early: list[tuple[float, float]] = []
        for max_wait in SHORT_WAITS:
            gate = make(1, None, max_wait).gate
            assert gate.try_acquire()
            for _ in range(8):
                began = time.monotonic()
                with pytest.raises(OverloadedError, match="max_wait"):
                    await gate.acquire()
                waited = time.monotonic() - began
                if waited < max_wait:
                    early.append((max_wait, waited))
            assert gate.timed_out == 8  # type: ignore[attr-defined]
            assert gate.waiting == 0
            gate.release()
        assert not early, f"refused before max_wait (max_wait, waited): {early}"

    async def test_a_waiter_reached_after_its_max_wait_is_refused_not_admitted(
        self, make: Maker, clock: FakeClock
    ) -> None:
        gate = make(1, None, 60.0).gate
        assert gate.try_acquire()
        log: list[int] = []
        late = waiter(gate, log, 1)
        await settle()
        clock.now += 30.0
        in_time = waiter(gate, log, 2)
        await settle()
        clock.now += 30.0  # `late` has waited 60 s, `in_time` 30 s
        gate.release()  # the loop never ran `late`'s timer: refuse it now
        with pytest.raises(OverloadedError, match="max_wait"):
            await late
        await in_time
        assert log == [2]
        assert gate.timed_out == 1  # type: ignore[attr-defined]
        assert gate.wait_recent == 30.0  # the one admitted waited 30 s
        gate.release()
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_the_wait_recorded_is_the_wait_checked(
        self, make: Maker, clock: FakeClock
    ) -> None:
        # Every read of the clock moves it on by 6 s: a grant that read the
        # clock again to record the wait would record more than max_wait.
        gate = make(1, None, 10.0).gate
        assert gate.try_acquire()
        task = asyncio.create_task(gate.acquire())
        await settle()
        clock.step = 6.0
        gate.release()
        clock.step = 0.0
        await task
        waits = gate.waits  # type: ignore[attr-defined]
        assert 0.0 < waits.maximum <= 10.0
        gate.release()

    async def test_a_waiter_just_under_its_max_wait_is_admitted(
        self, make: Maker, clock: FakeClock
    ) -> None:
        gate = make(1, None, 60.0).gate
        assert gate.try_acquire()
        log: list[int] = []
        task = waiter(gate, log, 1)
        await settle()
        clock.now += 59.999
        gate.release()
        await task
        assert (log, gate.timed_out) == ([1], 0)  # type: ignore[attr-defined]
        gate.release()


class TestDeadline:
    """A waiter with a deadline leaves at it, never early, never admitted late."""

    async def test_a_waiter_is_refused_at_its_deadline_not_counted_as_max_wait(
        self, make: Maker
    ) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        deadline = Deadline(0.002)
        with pytest.raises(DeadlineExceeded) as info:
            await gate.acquire(deadline)
        assert time.monotonic() >= deadline.due  # never early
        assert (info.value.stage, info.value.timeout) == ("waiting", 0.002)
        assert (gate.waiting, gate.timed_out) == (0, 0)  # type: ignore[attr-defined]
        gate.release()
        assert gate.in_use == 0

    async def test_the_earlier_of_deadline_and_max_wait_refuses(
        self, make: Maker, clock: FakeClock
    ) -> None:
        gate = make(1, None, 60.0).gate
        assert gate.try_acquire()
        early = asyncio.create_task(gate.acquire(Deadline(30.0, clock.now)))
        late = asyncio.create_task(gate.acquire(Deadline(90.0, clock.now)))
        await settle()
        clock.now += 61.0  # past the first's deadline and both max_waits
        gate.release()  # reached late: each is refused by what passed first
        with pytest.raises(DeadlineExceeded):
            await early
        with pytest.raises(OverloadedError, match="max_wait"):
            await late
        assert (gate.in_use, gate.waiting) == (0, 0)
        assert gate.timed_out == 1  # type: ignore[attr-defined]

    async def test_a_waiter_reached_after_its_deadline_is_refused_not_admitted(
        self, make: Maker, clock: FakeClock
    ) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        log: list[int] = []
        doomed = asyncio.create_task(gate.acquire(Deadline(10.0, clock.now)))
        in_time = waiter(gate, log, 2)
        await settle()
        clock.now += 10.0
        gate.release()  # its timer has not run: refused here instead
        with pytest.raises(DeadlineExceeded):
            await doomed
        await in_time
        assert log == [2]
        gate.release()
        assert (gate.in_use, gate.waiting) == (0, 0)

    async def test_a_deadline_far_off_lets_the_waiter_in(self, make: Maker) -> None:
        gate = make(1, None, None).gate
        assert gate.try_acquire()
        task = asyncio.create_task(gate.acquire(Deadline(3600.0)))
        await settle()
        gate.release()
        await task
        assert (gate.in_use, gate.waiting) == (1, 0)
        gate.release()


class TestClose:
    async def test_close_wakes_every_waiter_and_refuses_newcomers(
        self, make: Maker
    ) -> None:
        subject = make(1, None, 60.0)
        gate = subject.gate
        assert gate.try_acquire()
        tasks = [asyncio.create_task(gate.acquire()) for _ in range(3)]
        await settle()
        subject.whole.close()
        assert gate.closed
        for task in tasks:
            with pytest.raises(ClosedError):
                await task
        assert gate.waiting == 0
        with pytest.raises(ClosedError):
            await gate.acquire()
        with pytest.raises(ClosedError):
            gate.try_acquire()
        assert not gate.try_take()
        assert not gate.can_queue()
        assert not gate.would_admit_now()
        gate.release()
        await subject.whole.wait_idle()
        assert gate.in_use == 0

    async def test_wait_idle_returns_when_the_last_slot_is_released(
        self, make: Maker
    ) -> None:
        subject = make(2, None, None)
        gate = subject.gate
        assert gate.try_acquire()
        assert gate.try_acquire()
        subject.whole.close()
        idle = asyncio.create_task(subject.whole.wait_idle())
        gate.release()
        await settle()
        assert not idle.done()
        gate.release()
        await idle


class TestResize:
    async def test_growing_admits_waiters_at_once_in_fifo_order(
        self, make: Maker
    ) -> None:
        subject = make(1, None, None)
        gate = subject.gate
        assert gate.try_acquire()
        log: list[int] = []
        tasks = [waiter(gate, log, n) for n in range(3)]
        await settle()
        subject.whole.resize(3)
        await asyncio.gather(*tasks[:2])
        assert (log, gate.in_use, gate.waiting) == ([0, 1], 3, 1)
        for _ in range(3):
            gate.release()
            await settle()
        await tasks[2]
        gate.release()
        assert gate.in_use == 0

    async def test_shrinking_takes_nothing_away_and_admits_no_one_until_below(
        self, make: Maker
    ) -> None:
        subject = make(3, None, None)
        gate = subject.gate
        for _ in range(3):
            assert gate.try_acquire()
        log: list[int] = []
        task = waiter(gate, log, 1)
        await settle()
        subject.whole.resize(1)
        peak = gate.in_use
        gate.release()  # 2 held: still above the new bound of 1
        gate.release()  # 1 held: still not below it
        await settle()
        assert (log, gate.in_use) == ([], 1)
        gate.release()  # 0 held: the waiter may have the one slot
        await task
        assert (log, gate.in_use, peak) == ([1], 1, 3)
        gate.release()


class TestSyncView:
    """The shared bound's view for threads: the promises a blocked thread has."""

    async def test_threads_are_served_in_fifo_order_and_close_wakes_them(
        self,
    ) -> None:
        shared = SharedBound(1)
        view = ThreadView(shared, None, None)
        assert view.try_acquire()
        order: list[int] = []
        lock = threading.Lock()

        def wait(n: int) -> int:
            view.acquire_blocking()
            with lock:
                order.append(n)
            return n

        first = started(lambda: wait(1))
        until(lambda: shared.waiting == 1, "the first thread to queue")
        second = started(lambda: wait(2))
        until(lambda: shared.waiting == 2, "the second thread to queue")
        third = started(lambda: wait(3))
        until(lambda: shared.waiting == 3, "the third thread to queue")
        view.release()
        assert first.finish() == 1
        view.release()
        assert second.finish() == 2
        view.close()
        with pytest.raises(ClosedError):
            third.finish()
        assert order == [1, 2]
        view.release()
        assert (shared.in_flight, shared.waiting) == (0, 0)

    async def test_a_thread_reached_after_its_max_wait_is_refused(
        self, clock: FakeClock
    ) -> None:
        shared = SharedBound(1)
        view = ThreadView(shared, None, 3600.0)
        assert view.try_acquire()
        refused = started(view.acquire_blocking)
        until(lambda: shared.waiting == 1, "the thread to queue")
        clock.now += 3600.0
        view.release()  # reached after its max_wait: refused, not admitted
        with pytest.raises(OverloadedError, match="max_wait"):
            refused.finish()
        assert (shared.in_flight, shared.waiting, view.timed_out) == (0, 0, 1)

    async def test_max_wait_never_refuses_a_thread_early(self) -> None:
        view = ThreadView(SharedBound(1), None, 0.0015)
        assert view.try_acquire()
        early = []
        for _ in range(10):
            began = time.monotonic()
            with pytest.raises(OverloadedError):
                view.acquire_blocking()
            waited = time.monotonic() - began
            if waited < 0.0015:
                early.append(waited)
        assert not early
        view.release()
