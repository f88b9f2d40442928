"""map(..., chunksize=N): N items per call, results one by one, bound in chunks."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator

import pytest

import workers
from aiobound import BoundedLoopExecutor, MapIterator
from aiobound._chunks import (
    MAX_AUTO_CHUNKSIZE,
    TARGET_SECONDS,
    ChunkCall,
    ChunkSizer,
    chunked,
)
from conftest import CountingExecutor, ExecutorFactory, GateFactory, assert_idle
from sources import Boom, Source, agen, double, fail_on_three


class TestResults:
    @pytest.mark.parametrize("ordered", [True, False])
    @pytest.mark.parametrize("chunksize", [2, 7, 100])
    async def test_thread_pool_results_come_one_by_one(
        self, make_executor: ExecutorFactory, ordered: bool, chunksize: int
    ) -> None:
        pool = CountingExecutor(3)
        executor = make_executor(executor=pool, bound=4)
        results = [
            r
            async for r in executor.map(
                workers.square, range(50), ordered=ordered, chunksize=chunksize
            )
        ]
        expected = [x * x for x in range(50)]
        assert (results if ordered else sorted(results)) == expected
        assert pool.submits == math.ceil(50 / chunksize)
        assert pool.peak_in_pool <= 4
        assert_idle(executor)

    @pytest.mark.parametrize("ordered", [True, False])
    async def test_async_source(
        self, make_executor: ExecutorFactory, ordered: bool
    ) -> None:
        executor = make_executor(max_workers=2)
        it = executor.map(workers.square, agen(23), ordered=ordered, chunksize=5)
        results = [r async for r in it]
        assert sorted(results) == [x * x for x in range(23)]
        assert_idle(executor)

    async def test_process_pool_chunks(self) -> None:
        async with BoundedLoopExecutor.process(max_workers=2) as executor:
            results = [
                r async for r in executor.map(workers.square, range(300), chunksize=16)
            ]
            assert results == [x * x for x in range(300)]
            stats = executor.stats()
            assert stats.submitted == stats.completed == math.ceil(300 / 16)
            assert_idle(executor)

    async def test_process_pool_default_is_automatic_and_grows_for_tiny_calls(
        self,
    ) -> None:
        async with BoundedLoopExecutor.process(max_workers=2) as executor:
            it = executor.map(workers.square, range(3000))
            assert isinstance(it, MapIterator)
            assert it.chunksize == 1
            results = [r async for r in it]
            assert results == [x * x for x in range(3000)]
            assert 1 < it.chunksize <= MAX_AUTO_CHUNKSIZE
            assert executor.stats().submitted < 3000

    async def test_thread_pool_default_and_chunksize_1_are_per_item(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)
        for it in (
            executor.map(workers.square, range(3)),
            executor.map(workers.square, range(3), chunksize=1),
        ):
            assert type(it) is MapIterator
            assert it.chunksize == 1
            assert [r async for r in it] == [0, 1, 4]


def test_a_chunk_call_shows_its_function() -> None:
    assert repr(ChunkCall(double)) == f"<ChunkCall of {double!r}>"


def test_a_chunk_call_returns_the_results_and_the_seconds_they_took() -> None:
    before = time.perf_counter()
    results, seconds = ChunkCall(double)([1, 2, 3])
    elapsed = time.perf_counter() - before
    assert results == [2, 4, 6]
    assert 0.0 <= seconds <= elapsed


class TestAutomaticChunkSize:
    """Aim at TARGET_SECONDS per chunk; at most double; 1 to MAX_AUTO_CHUNKSIZE."""

    def test_starts_at_one_and_at_most_doubles_up_to_the_cap(self) -> None:
        sizer = ChunkSizer(None)
        sizes = [sizer.size]
        for _ in range(10):
            sizer.measured(sizer.size, 0.0)  # instant calls: as big as allowed
            sizes.append(sizer.size)
        assert sizes == [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]
        assert MAX_AUTO_CHUNKSIZE == 256
        sizer.measured(256, 1e-9)  # very fast, but not instant: still capped
        assert sizer.size == 256

    def test_aims_at_the_target_time_per_chunk(self) -> None:
        sizer = ChunkSizer(None)
        sizer.size = 64
        per_item = TARGET_SECONDS / 5  # five items fill the target
        sizer.measured(64, 64 * per_item)
        assert sizer.size == 5
        sizer.measured(5, 5 * TARGET_SECONDS / 8)  # eight would: at most double
        assert sizer.size == 8

    def test_slow_items_go_one_by_one(self) -> None:
        sizer = ChunkSizer(None)
        sizer.size = 16
        sizer.measured(16, 16 * 2 * TARGET_SECONDS)
        assert sizer.size == 1

    def test_an_empty_chunk_and_a_fixed_size_change_nothing(self) -> None:
        sizer = ChunkSizer(None)
        sizer.measured(0, 1.0)
        assert sizer.size == 1
        fixed = ChunkSizer(8)
        fixed.measured(8, 0.0)
        fixed.measured(8, 100.0)
        assert fixed.size == 8


class _Restarting:
    """An async source that, once ended, would start over if asked again."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.i = 0
        self.pulls_after_end = 0

    def __aiter__(self) -> _Restarting:
        return self

    async def __anext__(self) -> int:
        if self.i == self.n:
            self.i = 0
            self.pulls_after_end += 1
            raise StopAsyncIteration
        self.i += 1
        return self.i - 1


async def test_async_chunks_are_full_until_the_end_and_do_not_pull_past_it() -> None:
    source = _Restarting(5)
    chunks = chunked(source, ChunkSizer(2))
    got = []
    async for chunk in chunks:
        got.append(chunk)
        if len(got) > 3:
            break  # it went on past the end
    assert got == [[0, 1], [2, 3], [4]]
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)
    assert source.pulls_after_end == 1


class _RestartingSync:
    """A sync source that, once ended, would start over if asked again."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.i = 0
        self.pulls_after_end = 0

    def __iter__(self) -> _RestartingSync:
        return self

    def __next__(self) -> int:
        if self.i == self.n:
            self.i = 0
            self.pulls_after_end += 1
            raise StopIteration
        self.i += 1
        return self.i - 1


@pytest.mark.parametrize("n", [5, 4])
def test_sync_chunks_do_not_pull_past_the_end(n: int) -> None:
    source = _RestartingSync(n)
    chunks = chunked(source, ChunkSizer(2))
    assert isinstance(chunks, Iterator)
    got = []
    for chunk in chunks:
        got.append(chunk)
        if len(got) > 3:
            break  # it went on past the end
    assert got == [list(range(i, min(i + 2, n))) for i in range(0, n, 2)]
    with pytest.raises(StopIteration):
        next(chunks)
    assert source.pulls_after_end == 1


class TestWindow:
    async def test_bound_counts_chunks_and_the_window_is_bound_chunks(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=2, bound=2)
        source = Source(None)
        it = executor.map(gate, source, chunksize=3)
        first = asyncio.ensure_future(it.__anext__())
        await gate.started(2)  # the first item of each of 2 chunks
        assert source.pulled == 6  # 2 chunks of 3, no more
        assert executor.stats().in_flight == 2
        gate.open()
        assert await first == 0
        assert source.pulled == 6  # chunk 0 is not fully yielded yet
        assert [await it.__anext__() for _ in range(2)] == [1, 2]
        assert source.pulled == 6
        assert await it.__anext__() == 3  # chunk 0 done: chunk 2 is pulled
        assert source.pulled == 9
        await it.aclose()


class TestErrors:
    async def test_an_error_from_fn_fails_its_whole_chunk(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2)
        seen: list[int] = []
        with pytest.raises(Boom, match="item 3"):
            async for r in executor.map(fail_on_three, range(10), chunksize=2):
                seen.append(r)
        assert seen == [0, 1]  # chunk [2, 3] fails as a whole
        await executor.aclose()
        assert_idle(executor)

    @pytest.mark.parametrize("asynchronous", [False, True])
    async def test_a_source_error_mid_chunk_comes_after_the_items_before_it(
        self, make_executor: ExecutorFactory, asynchronous: bool
    ) -> None:
        executor = make_executor(max_workers=2)
        items = agen(10, fail_after=5) if asynchronous else Source(10, fail_after=5)
        seen: list[int] = []
        with pytest.raises(Boom, match="source"):
            async for r in executor.map(workers.square, items, chunksize=3):
                seen.append(r)
        assert seen == [0, 1, 4, 9, 16]
        assert_idle(executor)

    async def test_unpicklable_item_is_named(self) -> None:
        async with BoundedLoopExecutor.process(max_workers=1) as executor:
            # The second chunk holds the culprit: named by its map position.
            items: list[object] = [1, 2, 3, 4, threading.Lock(), 6]
            with pytest.raises(
                TypeError, match=r"map's item at position 4 of its input \(<unlocked"
            ):
                async for _ in executor.map(workers.pid, items, chunksize=3):
                    pass

    @pytest.mark.parametrize(
        ("chunksize", "error"),
        [(0, ValueError), (-1, ValueError), (True, TypeError), ("2", TypeError)],
    )
    def test_bad_chunksize_is_named(self, chunksize: object, error: type) -> None:
        executor = BoundedLoopExecutor(max_workers=1)
        try:
            with pytest.raises(error, match="chunksize"):
                executor.map(workers.square, [1], chunksize=chunksize)  # type: ignore[arg-type]
        finally:
            executor.executor.shutdown()


class TestCleanUp:
    async def test_break_cancels_chunks_not_started(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        pool = CountingExecutor(1)
        executor = make_executor(executor=pool, bound=3)
        source = Source(None)
        async with executor.map(gate, source, chunksize=2) as it:
            first = asyncio.ensure_future(it.__anext__())
            await gate.started(1)
            assert executor.stats().in_flight == 3
            gate.open()
            assert await first == 0
        # Leaving the block cancelled what had not started; nothing is lost.
        await executor.aclose()
        assert_idle(executor)
        assert source.pulled == 6
        assert pool.submits == 3

    async def test_aclose_closes_a_generator_source(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        closed = False

        def gen() -> Iterator[int]:
            nonlocal closed
            try:
                yield from range(100)
            finally:
                closed = True

        it = executor.map(workers.square, gen(), chunksize=4)
        assert await it.__anext__() == 0
        await it.aclose()
        await it.aclose()  # idempotent
        assert closed
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()
