"""The test harness itself: what conftest.py guarantees to the other tests."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import sys
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from conftest import GATE_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Coroutine, Generator

T = TypeVar("T")


def runner_class() -> Any:
    """The Runner that pytest-asyncio runs each async test with."""
    if sys.version_info >= (3, 11):
        return asyncio.Runner
    return importlib.import_module("backports.asyncio.runner").Runner


def test_starting_a_test_leaves_event_loops_on_other_threads_alone() -> None:
    """A task made on another thread's loop while the runner starts a test is
    an ordinary task, in that thread's own context.

    The Dask tests need it: their client runs an event loop in a thread of its
    own. On 3.10, pytest-asyncio's runner (a backport) used to swap
    ``asyncio.tasks.Task`` and ``contextvars.copy_context`` for every thread
    while it made a test's task; conftest.py confines that to its own thread.
    """
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever)
    thread.start()
    seen: dict[str, Any] = {}

    async def probe() -> tuple[type, contextvars.Context]:
        return type(asyncio.current_task()), contextvars.copy_context()

    def new_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()

        def make_task(
            loop: asyncio.AbstractEventLoop,
            coro: Generator[Any, None, T] | Coroutine[Any, Any, T],
            /,
            **kwargs: Any,  # context=, from 3.11
        ) -> asyncio.Task[T]:
            if not seen:  # the runner's own task: Runner.run is making it now
                seen["runner_context"] = contextvars.copy_context()
                made = asyncio.run_coroutine_threadsafe(probe(), other)
                seen["task_type"], seen["context"] = made.result(GATE_TIMEOUT)
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(make_task)
        return loop

    async def test_body() -> None:
        pass

    try:
        with runner_class()(loop_factory=new_loop) as runner:
            runner.run(test_body())
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()
    assert seen["task_type"] is asyncio.Task
    assert seen["context"] is not seen["runner_context"]
