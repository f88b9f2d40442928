"""map keeps its word under hostile schedules.

Each test names the promise of ``MapIterator``'s docstring it protects:
nothing ends an iteration silently, ready results are never held back
behind the source, a slot or a rate turn, a slot is taken for a call and not
for waiting on a producer, and leaving early cancels what has not started
whatever the order and however the loop is left.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import ClosedError
from conftest import CountingExecutor, ExecutorFactory, GateFactory, assert_idle, settle
from sources import double

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# A guard against a hang in a broken build only: a passing test never waits
# anywhere near this long.
HANG_GUARD = 20.0


def stop_async_on_two(x: int) -> int:
    if x == 2:
        raise StopAsyncIteration
    return x


class TestNothingEndsAnIterationSilently:
    @pytest.mark.parametrize("ordered", [True, False])
    @pytest.mark.parametrize("chunksize", [1, 3])
    async def test_fn_raising_stop_async_iteration_arrives_as_an_error(
        self, make_executor: ExecutorFactory, ordered: bool, chunksize: int
    ) -> None:
        executor = make_executor(max_workers=2)
        mapped = executor.map(
            stop_async_on_two, range(6), ordered=ordered, chunksize=chunksize
        )
        with pytest.raises(RuntimeError, match="StopAsyncIteration") as info:
            async for _ in mapped:
                pass
        assert isinstance(info.value.__cause__, StopAsyncIteration)
        await executor.aclose()
        assert_idle(executor)

    async def test_submit_of_fn_raising_stop_async_iteration_wraps_it(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        with pytest.raises(RuntimeError) as info:
            await executor.run(stop_async_on_two, 2)
        assert isinstance(info.value.__cause__, StopAsyncIteration)


class TestReadyResultsAreNotHeldBack:
    @pytest.mark.parametrize("ordered", [True, False])
    async def test_a_source_fed_by_its_own_results_does_not_deadlock(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        # A crawler: the next item exists only once the consumer has seen
        # the previous result, so the map must deliver while the source waits.
        executor = make_executor(max_workers=2)
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(1)

        async def crawler() -> AsyncIterator[int]:
            for _ in range(5):
                yield await queue.get()

        async def crawl() -> list[int]:
            seen: list[int] = []
            async with executor.map(double, crawler(), ordered=ordered) as mapped:
                async for value in mapped:
                    seen.append(value)
                    queue.put_nowait(value)
            return seen

        assert await asyncio.wait_for(crawl(), HANG_GUARD) == [2, 4, 8, 16, 32]
        assert_idle(executor)

    async def test_unordered_yields_a_finished_call_while_the_source_is_awaited(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=2, bound=4)
        slow = make_gate()
        more = asyncio.Event()

        def work(x: int) -> int:
            return slow(x) if x == 0 else x

        async def source() -> AsyncIterator[int]:
            yield 0
            yield 1
            await more.wait()
            yield 2

        async with executor.map(work, source(), ordered=False) as mapped:
            # Item 1 finishes while item 0 runs and the source waits.
            assert await asyncio.wait_for(mapped.__anext__(), HANG_GUARD) == 1
            more.set()
            slow.open()
            assert sorted([value async for value in mapped]) == [0, 2]
        assert_idle(executor)

    async def test_with_a_rate_limit_a_ready_result_does_not_wait_for_later_turns(
        self, make_executor: ExecutorFactory
    ) -> None:
        # One start every 2 s: the first result is ready long before the
        # second turn; it must be yielded before that turn comes.
        executor = make_executor(max_workers=2, bound=4, max_per_second=0.5)
        async with executor.map(double, range(10)) as mapped:
            assert await asyncio.wait_for(mapped.__anext__(), HANG_GUARD) == 0
            assert executor.stats().submitted == 1
        await executor.aclose()
        assert_idle(executor)


class TestASlotIsForACallNotForAProducer:
    async def test_no_slot_is_held_while_the_source_is_awaited(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        more = asyncio.Event()

        async def source() -> AsyncIterator[int]:
            yield 1
            await more.wait()
            yield 2

        mapped = executor.map(double, source())
        assert await mapped.__anext__() == 2
        pending = asyncio.ensure_future(mapped.__anext__())
        await settle()  # the map now awaits its source
        assert executor.stats().in_flight == 0
        # Another caller is not blocked by the waiting map...
        assert await asyncio.wait_for(executor.run(double, 10), HANG_GUARD) == 20
        # ...and closing does not wait for the source.
        await asyncio.wait_for(executor.aclose(), HANG_GUARD)
        more.set()
        # The item pulled after the close is refused, not submitted.
        with pytest.raises(ClosedError):
            await asyncio.wait_for(pending, HANG_GUARD)
        assert executor.stats().submitted == 2  # item 1 and run(10)
        assert_idle(executor)


class TestLeavingEarlyCancelsWhatHasNotStarted:
    """Whatever the order, a bare ``break`` or an exception out of the loop
    body (no ``async with``) cancels the calls still queued in the pool: the
    iterator must not be kept alive by anything it registered."""

    async def _leave(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        *,
        ordered: bool,
        chunksize: int,
        how: str,
    ) -> None:
        # One worker, bound 3: the first call (or chunk) ends at once, the
        # second blocks on the gate, the third waits in the pool's queue.
        counting = CountingExecutor(max_workers=1)
        executor = make_executor(executor=counting, bound=3)
        gate = make_gate()
        fast = chunksize  # the first chunk's items end at once

        def work(x: int) -> int:
            return x if x < fast else gate(x)

        async def consume() -> None:
            async for value in executor.map(
                work, range(100), ordered=ordered, chunksize=chunksize
            ):
                assert value == 0
                await gate.started()
                await settle()
                assert counting.in_pool == 2  # one running, one queued
                if how == "break":
                    break
                raise KeyError("the consumer failed")

        if how == "break":
            await consume()
        else:
            with pytest.raises(KeyError):
                await consume()
        gc.collect()  # CPython already did it; other interpreters need this
        await settle()  # the cancellations reach the pool via callbacks
        stats = executor.stats()
        assert (stats.in_flight, stats.cancelled) == (1, 1)
        gate.open()
        await executor.aclose()
        # Only the second call (or chunk) ran its gated items; the queued
        # third never ran.
        assert gate.calls == list(range(fast, 2 * fast))
        assert_idle(executor)

    @pytest.mark.parametrize("ordered", [True, False])
    @pytest.mark.parametrize("how", ["break", "raise"])
    async def test_per_item(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        ordered: bool,
        how: str,
    ) -> None:
        await self._leave(
            make_executor, make_gate, ordered=ordered, chunksize=1, how=how
        )

    @pytest.mark.parametrize("ordered", [True, False])
    @pytest.mark.parametrize("how", ["break", "raise"])
    async def test_chunked(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        ordered: bool,
        how: str,
    ) -> None:
        await self._leave(
            make_executor, make_gate, ordered=ordered, chunksize=2, how=how
        )


class HandRun(concurrent.futures.Executor):
    """Runs each call only when the test says so, on the test's thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[concurrent.futures.Future[Any], Any, Any]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.calls.append((future, fn, args))
        return future

    def run(self, index: int) -> None:
        future, fn, args = self.calls[index]
        if future.set_running_or_notify_cancel():
            future.set_result(fn(*args))


class TestTheMapsBookkeeping:
    """A slot (and a turn) is taken only for an item (issue 23, items 12-15)."""

    @pytest.mark.parametrize("ordered", [True, False])
    async def test_a_map_over_a_sync_source_counts_no_phantom_slot(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        """Item 12: two items, two grants; the empty pull takes none."""
        executor = make_executor(max_workers=4, bound=8)
        results = [x async for x in executor.map(abs, [-1, -2], ordered=ordered)]
        assert sorted(results) == [1, 2]
        stats = executor.stats()
        assert stats.peak_in_flight <= 2
        assert stats.queue_wait.count == stats.submitted == 2
        assert_idle(executor)

    async def test_an_empty_pull_spends_no_rate_turn(
        self, make_executor: ExecutorFactory
    ) -> None:
        """Item 13: after a one-item map, the burst's second turn is left."""
        executor = make_executor(max_workers=2, max_per_second=1, burst=2)
        assert [x async for x in executor.map(abs, [-1])] == [1]
        assert executor.would_admit_now()  # one turn of the burst is left
        assert await executor.run(abs, -2) == 2
        assert executor.stats().rate_limited == 0  # it waited for no turn

    async def test_a_chunked_map_of_an_async_source_stays_within_its_window(
        self, make_executor: ExecutorFactory
    ) -> None:
        """Item 14: at most bound chunks pulled and not fully yielded.

        The first chunk's call ends while the second chunk is being pulled;
        its results go to the consumer's buffer, and the chunk still counts
        until its last item is out: no third chunk is pulled meanwhile.
        """
        hand = HandRun()
        executor = make_executor(executor=hand, bound=2)
        pulled = 0

        async def counted() -> AsyncIterator[int]:
            nonlocal pulled
            for n in range(100):
                if n == 15:
                    hand.run(0)  # the first chunk's call ends, on the loop
                pulled += 1
                yield n
                await asyncio.sleep(0)  # a source that takes its time

        async with executor.map(abs, counted(), chunksize=10) as results:
            assert await anext(results) == 0
            for _ in range(40):  # let a background pull go as far as it may
                await settle()
            assert pulled <= 20, f"{pulled} items pulled, 1 handed out"

    async def test_a_huge_chunksize_is_refused_at_the_call_naming_it(
        self, make_executor: ExecutorFactory
    ) -> None:
        """Item 15: not islice's error at the first pull."""
        executor = make_executor(max_workers=1)
        with pytest.raises(ValueError, match="chunksize must be at most"):
            executor.map(abs, [1], chunksize=2**63)
