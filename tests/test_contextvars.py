"""Calls on thread pools see the caller's contextvars; process pools cannot."""

from __future__ import annotations

import concurrent.futures
import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import ExecutorFactory

request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "request_id", default="unset"
)


def read_request_id() -> str:
    return request_id.get()


def set_request_id(value: str) -> str:
    request_id.set(value)
    return request_id.get()


class TestContextVars:
    async def test_thread_pool_calls_run_in_a_copy_of_the_callers_context(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        request_id.set("abc")
        assert await executor.run(read_request_id) == "abc"

    async def test_changes_made_in_the_call_do_not_leak_back(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        request_id.set("caller")
        assert await executor.run(set_request_id, "worker") == "worker"
        assert request_id.get() == "caller"

    async def test_wrapped_thread_pool_gets_the_context_too(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(executor=concurrent.futures.ThreadPoolExecutor(1))
        request_id.set("wrapped")
        assert await executor.run(read_request_id) == "wrapped"

    async def test_copy_context_false_runs_in_the_workers_context(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1, copy_context=False)
        request_id.set("caller")
        assert await executor.run(read_request_id) == "unset"

    async def test_map_items_run_in_the_context_of_the_anext_that_pulled_them(
        self, make_executor: ExecutorFactory
    ) -> None:
        # bound=1: each __anext__ pulls exactly the item whose result it
        # then returns, so each item sees the consumer's context at the
        # __anext__ that pulled it.
        executor = make_executor(max_workers=1, bound=1)
        seen: list[str] = []
        async with executor.map(lambda _: request_id.get(), range(3)) as results:
            for step in range(3):
                request_id.set(f"step {step}")
                seen.append(await results.__anext__())
        assert seen == ["step 0", "step 1", "step 2"]
