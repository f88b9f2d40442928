"""add_observer: the hooks each call goes through, and what they may break."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import BoundedLoopExecutor, CallObserver, OverloadedError
from conftest import assert_idle, settle

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ExecutorFactory, GateFactory


class Recording(CallObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.tokens = 0

    def arrived(self) -> object:
        self.tokens += 1
        self.events.append(("arrived", self.tokens))
        return self.tokens

    def refused(self, token: object, reason: str, error: BaseException) -> None:
        self.events.append(("refused", token, reason, type(error).__name__))

    def handing_over(
        self,
        token: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        self.events.append(("handing_over", token, args))
        return fn, args, kwargs

    def ended(self, token: object, outcome: str, error: BaseException | None) -> None:
        self.events.append(("ended", token, outcome, type(error).__name__))


async def test_a_call_arrives_is_handed_over_and_ends(
    make_executor: ExecutorFactory,
) -> None:
    executor = make_executor(max_workers=1)
    assert await executor.run(abs, -1) == 1  # bound before the observer
    observer = Recording()
    executor.add_observer(observer)
    assert await executor.run(abs, -2) == 2
    with pytest.raises(ZeroDivisionError):
        await executor.run(divmod, 1, 0)
    assert observer.events == [
        ("arrived", 1),
        ("handing_over", 1, (-2,)),
        ("ended", 1, "completed", "NoneType"),
        ("arrived", 2),
        ("handing_over", 2, (1, 0)),
        ("ended", 2, "failed", "ZeroDivisionError"),
    ]


async def test_calls_handed_over_before_are_not_reported(
    make_executor: ExecutorFactory, make_gate: GateFactory
) -> None:
    gate = make_gate()
    executor = make_executor(max_workers=1)
    running = await executor.submit(gate, 1)
    observer = Recording()
    executor.add_observer(observer)
    gate.open()
    assert await running == 1
    assert observer.events == []


async def test_a_cancelled_waiter_is_reported_as_cancelled(
    make_executor: ExecutorFactory, make_gate: GateFactory
) -> None:
    gate = make_gate()
    executor = make_executor(max_workers=1, bound=1)
    observer = Recording()
    executor.add_observer(observer)
    running = await executor.submit(gate, 1)
    waiter = asyncio.create_task(executor.run(gate, 2))
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.open()
    assert await running == 1
    assert ("refused", 2, "cancelled", "CancelledError") in observer.events


async def test_a_raising_handing_over_frees_the_slot(
    make_executor: ExecutorFactory,
) -> None:
    class Broken(Recording):
        def handing_over(self, *args: Any) -> Any:
            raise LookupError("observer bug")

    executor = make_executor(max_workers=1, bound=1)
    observer = Broken()
    executor.add_observer(observer)
    with pytest.raises(LookupError, match="observer bug"):
        await executor.run(abs, -1)
    assert observer.events[-1] == ("ended", 1, "failed", "LookupError")
    assert executor.stats().failed == 1
    assert_idle(executor)


async def test_a_raising_ended_goes_to_the_loops_handler(
    make_executor: ExecutorFactory,
) -> None:
    class Broken(Recording):
        def ended(self, *args: Any) -> None:
            raise LookupError("observer bug")

    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        executor = make_executor(max_workers=1)
        executor.add_observer(Broken())
        assert await executor.run(abs, -3) == 3
        assert_idle(executor)
    finally:
        loop.set_exception_handler(None)
    [context] = reported
    assert isinstance(context["exception"], LookupError)


async def test_only_one_observer_and_only_an_observer(
    make_executor: ExecutorFactory,
) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError, match="CallObserver"):
        executor.add_observer(object())  # type: ignore[arg-type]
    executor.add_observer(CallObserver())
    with pytest.raises(RuntimeError, match="already has an observer"):
        executor.add_observer(CallObserver())
    assert await executor.run(abs, -4) == 4  # the default hooks do nothing


async def test_calls_dropped_unstarted_by_aclose_end_cancelled() -> None:
    import process_calls
    from test_process_close import Held

    # As in test_process_close: one worker, bound 3, the two queued calls
    # are dropped by aclose(timeout=...) and never run.
    held = Held()
    executor = held.executor(max_workers=1, bound=3)
    observer = Recording()
    executor.add_observer(observer)
    futures = [await executor.submit(process_calls.held, n) for n in range(3)]
    await held.wait_started()
    with pytest.raises(TimeoutError, match="still running or queued"):
        await executor.aclose(timeout=0.05)
    held.gate.set()
    await asyncio.gather(*futures, return_exceptions=True)
    await executor.aclose()
    ended = sorted(e[1:3] for e in observer.events if e[0] == "ended")
    assert ended == [(1, "completed"), (2, "cancelled"), (3, "cancelled")]
    assert executor.stats().cancelled == 2


class InPartitions(Recording):
    """Records the partition each call arrived in."""

    def arrived_in(self, partition: str) -> object:
        token = self.arrived()
        self.events.append(("in", token, partition))
        return token


def partitions_of(observer: Recording) -> dict[object, str]:
    return {e[1]: e[2] for e in observer.events if e[0] == "in"}


def outcomes(observer: Recording) -> dict[object, str]:
    return {e[1]: e[2] for e in observer.events if e[0] in ("ended", "refused")}


class TestPartitions:
    async def test_every_call_of_every_partition_is_reported_with_its_name(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=2, bound=2, partitions={"a": 0.5})
        observer = InPartitions()
        executor.add_observer(observer)
        a = executor.partition("a")
        assert await a.run(abs, -1) == 1  # token 1
        assert [x async for x in a.map(abs, [-2, -3])] == [2, 3]  # 2, 3
        assert await executor.run(abs, -4) == 4  # 4
        assert [x async for x in executor.map(abs, [-5])] == [5]  # 5
        # A map item that waits for its slot: both slots held by the gate.
        held = [await a.submit(gate, n) for n in (6, 7)]  # 6, 7
        waiting = asyncio.create_task(anext(a.map(abs, [-8])))
        await settle()
        assert executor.stats().partitions["a"].waiting == 1
        gate.open()
        assert await asyncio.gather(*held, waiting) == [6, 7, 8]  # 8
        assert partitions_of(observer) == {
            1: "a",
            2: "a",
            3: "a",
            4: "default",
            5: "default",
            6: "a",
            7: "a",
            8: "a",
        }
        assert set(outcomes(observer).values()) == {"completed"}
        assert len(outcomes(observer)) == 8
        stats = executor.stats()
        assert (stats.partitions["a"].completed, stats.completed) == (6, 8)
        assert_idle(executor)

    async def test_refusals_in_a_partition_are_reported_and_counted_there(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        executor = make_executor(
            max_workers=1, bound=1, max_pending=1, partitions={"a": 0.5, "b": 0.5}
        )
        observer = InPartitions()
        executor.add_observer(observer)
        a, b = executor.partition("a"), executor.partition("b")
        running = await a.submit(gate, 1)  # token 1
        waiting = asyncio.create_task(b.run(gate, 2))  # 2
        await settle()
        with pytest.raises(OverloadedError, match="'b'"):
            await b.run(abs, -3)  # 3: b's waiting room is full
        cancelled = asyncio.create_task(a.run(abs, -4))  # 4: a's room is not
        await settle()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        gate.open()
        assert (await running, await waiting) == (1, 2)
        assert partitions_of(observer) == {1: "a", 2: "b", 3: "b", 4: "a"}
        assert outcomes(observer) == {
            1: "completed",
            2: "completed",
            3: "max_pending",
            4: "cancelled",
        }
        parts = executor.stats().partitions
        assert (parts["a"].rejected, parts["b"].rejected) == (0, 1)
        assert (parts["a"].completed, parts["b"].completed) == (1, 1)
        assert_idle(executor)

    async def test_an_observer_of_arrived_alone_sees_partitioned_calls(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(
            max_workers=2, partitions={"a": 0.5}, max_per_second=1000.0, burst=1
        )
        observer = Recording()
        executor.add_observer(observer)
        a = executor.partition("a")
        assert await a.run(abs, -1) == 1
        assert [x async for x in a.map(abs, [-2, -3, -4])] == [2, 3, 4]
        ended = [e[1:3] for e in observer.events if e[0] == "ended"]
        assert sorted(ended) == [(n, "completed") for n in (1, 2, 3, 4)]
        assert executor.stats().partitions["a"].completed == 4
        assert_idle(executor)

    async def test_a_call_waiting_when_the_observer_came_keeps_its_partition(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=1, bound=1, partitions={"a": 0.5})
        a = executor.partition("a")
        running = await a.submit(gate, 1)
        waiting = asyncio.create_task(a.run(abs, -2))
        await settle()
        assert executor.stats().partitions["a"].waiting == 1
        observer = InPartitions()
        executor.add_observer(observer)
        gate.open()
        assert (await running, await waiting) == (1, 2)
        # Reported from its hand-over on (it arrived unobserved), in "a".
        assert partitions_of(observer) == {1: "a"}
        assert outcomes(observer) == {1: "completed"}
        assert_idle(executor)

    async def test_a_failing_hand_over_in_a_partition_frees_its_slot(
        self, make_executor: ExecutorFactory
    ) -> None:
        class Broken(InPartitions):
            def handing_over(self, *args: Any) -> Any:
                raise LookupError("observer bug")

        executor = make_executor(max_workers=1, bound=1, partitions={"a": 0.5})
        observer = Broken()
        executor.add_observer(observer)
        with pytest.raises(LookupError, match="observer bug"):
            await executor.partition("a").run(abs, -1)
        assert observer.events[-1] == ("ended", 1, "failed", "LookupError")
        assert executor.stats().partitions["a"].failed == 1
        assert executor.stats().partitions["a"].in_flight == 0
        assert_idle(executor)

    async def test_a_call_retried_on_a_replaced_pool_is_one_call_in_its_partition(
        self,
    ) -> None:
        """One call, one outcome: the retry on a new pool is not a second call.

        (Issue 23, item 16: the observer heard a failed call and a second
        one, while stats() counted one.)
        """
        from concurrent.futures.process import BrokenProcessPool

        import workers

        executor = BoundedLoopExecutor.process(max_workers=1, partitions={"a": 0.5})
        observer = InPartitions()
        executor.add_observer(observer)
        a = executor.partition("a")
        try:
            with pytest.raises(BrokenProcessPool):
                await a.run(workers.die, 3)  # token 1
            # The pool is broken: the hand-over fails, and the call goes to a
            # new pool, still in partition "a", still one call (token 2).
            assert await a.run(workers.square, 2) == 4
        finally:
            await executor.aclose()
        stats = executor.stats()
        assert stats.pool_restarts == 1
        assert (stats.submitted, stats.failed, stats.completed) == (2, 1, 1)
        assert partitions_of(observer) == {1: "a", 2: "a"}
        assert outcomes(observer) == {1: "failed", 2: "completed"}
