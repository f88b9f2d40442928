"""Clear errors from process pools: what does not pickle, either way, and
pools that keep breaking (real worker processes)."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

import process_calls
import workers
from aiobound import BoundedLoopExecutor
from aiobound._pickling import safe_repr
from aiobound._process import RESTART_LIMIT
from conftest import assert_idle

# forkserver, not fork: forking a process that runs threads can deadlock.
CONTEXT = multiprocessing.get_context("forkserver")


def owned(**kwargs: Any) -> BoundedLoopExecutor:
    kwargs.setdefault("max_workers", 1)
    return BoundedLoopExecutor.process(mp_context=CONTEXT, **kwargs)


class TestUnsendableArguments:
    async def test_an_argument_whose_repr_raises_is_explained(self) -> None:
        async with owned(bound=1) as executor:
            for _ in range(2):  # the second would hang if the slot leaked
                with pytest.raises(
                    TypeError,
                    match=r"cannot send argument 1 \(<Unsendable instance at 0x"
                    r"[0-9a-f]+>\) to a worker process: it cannot be pickled "
                    r"\(TypeError: Unsendable objects cannot be pickled\)",
                ):
                    await executor.run(workers.pid, process_calls.Unsendable())
            assert_idle(executor)

    async def test_a_chunk_item_whose_repr_raises_is_explained(self) -> None:
        items = [1, process_calls.Unsendable(), 3]
        async with owned() as executor:
            with pytest.raises(
                TypeError,
                match=r"cannot send map's item at position 1 of its input "
                r"\(<Unsendable instance at 0x[0-9a-f]+>\)",
            ):
                async for _ in executor.map(workers.pid, items, chunksize=3):
                    pass
            assert_idle(executor)

    async def test_a_large_culprit_is_quoted_short(self) -> None:
        big = {i: i for i in range(100_000)}
        big[-1] = threading.Lock()  # type: ignore[assignment]
        async with owned() as executor:
            with pytest.raises(TypeError, match=r"cannot send argument 1") as info:
                await executor.run(workers.pid, big)
        assert len(str(info.value)) < 600

    def test_safe_repr_never_raises_and_is_bounded(self) -> None:
        assert safe_repr(process_calls.Unsendable()).startswith("<Unsendable")
        assert len(safe_repr("x" * 10_000)) <= 120
        assert len(safe_repr(list(range(10_000)))) <= 120


class TestUnsendableResults:
    async def test_an_unpicklable_return_value_is_explained(self) -> None:
        async with owned() as executor:
            with pytest.raises(
                TypeError,
                match=r"the function \(<function return_a_lock .*\) ran in the "
                r"worker process, but what it returned \(or raised\) cannot be "
                r"pickled back to this process \(TypeError: cannot pickle",
            ) as info:
                await executor.run(process_calls.return_a_lock, 1)
            assert isinstance(info.value.__cause__, TypeError)
            assert_idle(executor)

    async def test_an_unpicklable_return_value_in_a_chunk_is_explained(self) -> None:
        async with owned() as executor:
            with pytest.raises(
                TypeError,
                match=r"map's function \(<function return_a_lock .*\), in a chunk, "
                r"ran in the worker process, but what it returned",
            ):
                async for _ in executor.map(
                    process_calls.return_a_lock, [1, 2], chunksize=2
                ):
                    pass
            assert_idle(executor)


class TestErrorsFromFn:
    async def test_a_type_error_from_fn_does_not_pickle_the_call_again(
        self,
    ) -> None:
        process_calls.Counted.pickled = 0
        async with owned() as executor:
            with pytest.raises(TypeError, match=r"^fn itself rejects"):
                await executor.run(process_calls.wrong_type, process_calls.Counted())
        # Once by the pool, to send it; never again to look for a culprit.
        assert process_calls.Counted.pickled == 1


class TestInitializer:
    @pytest.mark.parametrize(
        ("initializer", "initargs", "name"),
        [
            (lambda: None, (), r"^initializer \(<function .*lambda"),
            (process_calls.install_gate, (threading.Lock(),), r"^initargs\[0\] \("),
        ],
    )
    def test_an_initializer_that_cannot_be_pickled_is_refused_at_once(
        self, initializer: Any, initargs: tuple[object, ...], name: str
    ) -> None:
        with pytest.raises(TypeError, match=name + r".*cannot be pickled"):
            BoundedLoopExecutor.process(initializer=initializer, initargs=initargs)

    async def test_a_failing_initializer_is_named_and_restarts_are_limited(
        self,
    ) -> None:
        async with owned(initializer=process_calls.failing_initializer) as executor:
            for _ in range(RESTART_LIMIT + 1):
                with pytest.raises(
                    BrokenProcessPool,
                    match=r"the process pool broke: the workers' initializer "
                    r"\(<function failing_initializer .*\) raised ValueError: "
                    r"no database here",
                ):
                    await executor.run(workers.square, 2)
            assert executor.stats().pool_restarts == RESTART_LIMIT
            for _ in range(2):
                with pytest.raises(
                    BrokenProcessPool,
                    match=r"keeps breaking \(the workers' initializer raised "
                    r"ValueError: no database here\).*not replaced again",
                ):
                    await executor.run(workers.square, 2)
            assert executor.stats().pool_restarts == RESTART_LIMIT
            assert_idle(executor)
