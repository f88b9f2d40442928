"""add_observer: the hooks each call goes through, and what they may break."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import CallObserver
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
