"""The bridge: the private fields it reads, and the outcome it delivers.

It reads a finished plain future's fields without its lock. These are
CPython's private names; the first test fails on a Python that renames them,
before the fast path could misread a result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import BoundedLoopExecutor, _bridge

if TYPE_CHECKING:
    from collections.abc import Iterator


def test_a_finished_future_keeps_state_result_and_exception_where_we_read_them() -> (
    None
):
    ok: concurrent.futures.Future[int] = concurrent.futures.Future()
    ok.set_result(7)
    assert ok._state == _bridge._FINISHED
    assert (ok._result, ok._exception) == (7, None)
    failed: concurrent.futures.Future[int] = concurrent.futures.Future()
    error = ValueError("x")
    failed.set_exception(error)
    assert failed._state == _bridge._FINISHED
    assert failed._exception is error
    cancelled: concurrent.futures.Future[int] = concurrent.futures.Future()
    cancelled.cancel()
    assert cancelled._state != _bridge._FINISHED


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (KeyboardInterrupt("stop"), "KeyboardInterrupt: stop"),
        (StopIteration(), "StopIteration"),
        (StopAsyncIteration("x" * 200), "StopAsyncIteration: " + "x" * 200),
        (SystemExit("x" * 201), "SystemExit: " + "x" * 197 + "..."),
        (GeneratorExit("y" * 5000), "GeneratorExit: " + "y" * 197 + "..."),
    ],
)
def test_what_a_future_cannot_carry_is_wrapped_and_described(
    error: BaseException, message: str
) -> None:
    delivered = _bridge.deliverable(error, None)
    assert type(delivered) is RuntimeError
    assert str(delivered) == f"the submitted call raised {message}"
    assert delivered.__cause__ is error


def test_an_exception_that_cannot_be_printed_is_described_by_its_type() -> None:
    error = _Unprintable()
    assert _bridge.deliverable(error, None) is error  # an Exception: as it is
    # StopIteration's text is its argument's, which cannot be printed.
    wrapped = _bridge.deliverable(StopIteration(error), None)
    assert str(wrapped) == "the submitted call raised StopIteration"


def test_explain_may_reword_and_its_own_failure_keeps_the_original() -> None:
    error = ValueError("raw")
    clearer = TypeError("clearer")
    assert _bridge.deliverable(error, lambda _: clearer) is clearer

    def broken(_: BaseException) -> BaseException:
        raise LookupError("explain failed")

    assert _bridge.deliverable(error, broken) is error


class _Ends:
    """An ``on_end`` that records what ended, and whether each was settled."""

    def __init__(self) -> None:
        self.outcomes: list[int] = []

    def __call__(self, cfut: concurrent.futures.Future[Any], outcome: int) -> bool:
        self.outcomes.append(outcome)
        return False


async def test_on_settled_sees_each_future_once_already_settled_from_threads() -> None:
    """Completions from worker threads: ``on_settled`` runs after delivery."""
    loop = asyncio.get_running_loop()
    ends = _Ends()
    bridge = _bridge.Bridge(loop, ends)
    seen: list[tuple[asyncio.Future[Any], bool]] = []
    all_seen = asyncio.Event()
    calls = 200

    def on_settled(afut: asyncio.Future[Any]) -> None:
        assert ends.outcomes, "on_end runs first"
        seen.append((afut, afut.done()))
        if len(seen) == calls:
            all_seen.set()

    def work(n: int) -> int:
        if n % 7 == 0:
            raise ValueError(n)
        return n

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [
            bridge.chain(pool.submit(work, n), None, on_settled) for n in range(calls)
        ]
        await asyncio.wait_for(all_seen.wait(), 10)
    assert sorted(map(id, (afut for afut, _ in seen))) == sorted(map(id, futures))
    assert all(done for _, done in seen)
    failed = [n for n, afut in enumerate(futures) if afut.exception() is not None]
    assert failed == [n for n in range(calls) if n % 7 == 0]
    assert ends.outcomes.count(_bridge.FAILED) == len(failed)


async def test_on_settled_runs_at_once_for_a_call_that_ended_on_the_loop() -> None:
    """Already done, or cancelled on the loop: settled before chain returns."""
    loop = asyncio.get_running_loop()
    bridge = _bridge.Bridge(loop, _Ends())
    seen: list[asyncio.Future[Any]] = []
    done: concurrent.futures.Future[int] = concurrent.futures.Future()
    done.set_result(5)
    afut = bridge.chain(done, None, seen.append)
    assert seen == [afut]
    assert afut.result() == 5
    waiting: concurrent.futures.Future[int] = concurrent.futures.Future()
    other = bridge.chain(waiting, None, seen.append)
    assert seen == [afut]
    assert other.cancel()  # not started: the call is cancelled right here
    assert seen == [afut, other]
    assert waiting.cancelled()


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector off: only reference counts free objects."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.usefixtures("no_gc")
async def test_settled_calls_leave_no_cycles_for_the_collector() -> None:
    """A call that ended is freed by reference counting, not by the collector."""
    loop = asyncio.get_running_loop()
    bridge = _bridge.Bridge(loop, _Ends())
    calls = 300
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        gc.collect()
        for n in range(calls):
            afut = bridge.chain(pool.submit(abs, -n))
            assert await afut == n
        del afut
        await _drained(bridge)
        assert gc.collect() <= 10  # (each call left about 10 objects in cycles)


@pytest.mark.usefixtures("no_gc")
async def test_calls_through_the_executor_leave_no_cycles_either() -> None:
    calls = 300
    async with BoundedLoopExecutor(max_workers=4) as executor:
        await executor.run(abs, -1)
        gc.collect()
        for n in range(calls):
            assert await executor.run(abs, -n) == n
        assert [x async for x in executor.map(abs, range(-calls, 0))][-1] == 1
        unordered = executor.map(abs, range(calls), ordered=False)
        assert len([x async for x in unordered]) == calls
        assert gc.collect() <= 10


async def _drained(bridge: _bridge.Bridge) -> None:
    """Let the loop run until the bridge has no call left to settle."""
    for _ in range(1000):
        if not bridge._ended and not bridge._drain_scheduled:
            return
        await asyncio.sleep(0)
    raise AssertionError("the bridge never drained")
