"""Bad input fails at construction or at the call, naming the argument."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

from aiobound import BoundedLoopExecutor
from conftest import ExecutorFactory, assert_idle

POOL = concurrent.futures.ThreadPoolExecutor(1)


class NotAnExecutor:
    def submit(self, fn: Any, *args: Any) -> None:
        pass


class CustomExecutor(concurrent.futures.Executor):
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(
            {"bound": 0},
            ValueError,
            "bound must be an int >= 1, got 0",
            id="bound-zero",
        ),
        pytest.param({"bound": -3}, ValueError, "bound", id="bound-negative"),
        pytest.param(
            {"bound": 2.0}, TypeError, "bound must be an int", id="bound-float"
        ),
        pytest.param({"bound": "4"}, TypeError, "bound", id="bound-str"),
        pytest.param({"bound": True}, TypeError, "bound", id="bound-bool"),
        pytest.param({"max_workers": 0}, ValueError, "max_workers", id="workers-zero"),
        pytest.param(
            {"max_workers": 1.5}, TypeError, "max_workers", id="workers-float"
        ),
        pytest.param(
            {"max_workers": False}, TypeError, "max_workers", id="workers-bool"
        ),
        pytest.param(
            {"max_pending": -1}, ValueError, "max_pending", id="pending-negative"
        ),
        pytest.param({"max_pending": "10"}, TypeError, "max_pending", id="pending-str"),
        pytest.param(
            {"max_pending": True}, TypeError, "max_pending", id="pending-bool"
        ),
        pytest.param(
            {"copy_context": 1}, TypeError, "copy_context", id="copy-context-int"
        ),
        pytest.param(
            {"executor": POOL, "max_workers": 2},
            TypeError,
            "either executor= .* or max_workers=",
            id="executor-and-workers",
        ),
        pytest.param(
            {"executor": NotAnExecutor(), "bound": 2},
            TypeError,
            "executor must be a concurrent.futures.Executor",
            id="executor-wrong-type",
        ),
        pytest.param(
            {"executor": CustomExecutor()},
            TypeError,
            "bound is required when wrapping CustomExecutor",
            id="executor-without-bound",
        ),
    ],
)
def test_bad_constructor_arguments_raise_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        BoundedLoopExecutor(**kwargs)


def test_constructor_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        BoundedLoopExecutor(4)  # type: ignore[misc,unused-ignore]


@pytest.mark.parametrize("fn", [None, 3, "print"], ids=["none", "int", "str"])
async def test_non_callable_fn_raises_at_the_call_and_takes_no_slot(
    make_executor: ExecutorFactory, fn: Any
) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError, match="fn must be callable"):
        _ = await executor.submit(fn)
    with pytest.raises(TypeError, match="fn must be callable"):
        await executor.run(fn)
    with pytest.raises(TypeError, match="fn must be callable"):
        executor.map(fn, [1])
    assert_idle(executor)
    assert executor.stats().submitted == 0


@pytest.mark.parametrize("items", [3, None, object()], ids=["int", "none", "object"])
async def test_map_of_a_non_iterable_raises_at_the_call(
    make_executor: ExecutorFactory, items: Any
) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError, match="items must be an iterable"):
        executor.map(abs, items)


async def test_map_ordered_must_be_a_bool(make_executor: ExecutorFactory) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError, match="ordered must be a bool"):
        executor.map(abs, [1], ordered=1)  # type: ignore[arg-type]
