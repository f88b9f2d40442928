"""Bad input fails at construction or at the call, naming the argument."""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import inspect
import weakref
from typing import Any

import pytest

from aiobound import BoundedLoopExecutor
from aiobound._checks import is_async_function
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


class _NamedRepr(concurrent.futures.Executor):
    def __repr__(self) -> str:
        return "<a pool>"


class _NotAnExecutorNamed(NotAnExecutor):
    def __repr__(self) -> str:
        return "<not an executor>"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"max_workers": "4"},
            "max_workers must be an int >= 1, got str '4'",
            id="workers-str",
        ),
        pytest.param(
            {"executor": _NotAnExecutorNamed(), "bound": 2},
            "executor must be a concurrent.futures.Executor, got "
            "_NotAnExecutorNamed <not an executor>",
            id="executor-wrong-type",
        ),
        pytest.param(
            {"executor": _NamedRepr()},
            "bound is required when wrapping _NamedRepr: its worker count cannot "
            "be read (a good bound is twice the number of calls it can run at "
            "once)",
            id="executor-without-bound",
        ),
    ],
)
def test_constructor_errors_say_what_was_wrong_in_full(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError) as raised:
        BoundedLoopExecutor(**kwargs)
    assert str(raised.value) == message


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


async def test_every_new_function_is_checked_after_a_good_one(
    make_executor: ExecutorFactory,
) -> None:
    """A function accepted once is not checked again; any other one is."""
    executor = make_executor(max_workers=1)

    async def coroutine_function() -> None: ...

    assert await executor.run(abs, -1) == 1
    for refused in (None, coroutine_function, 3):
        for _ in range(2):  # refused again: a refusal is not remembered
            with pytest.raises(TypeError, match="fn must"):
                _ = await executor.submit(refused)  # type: ignore[arg-type]
        assert await executor.run(abs, -2) == 2
    assert executor.stats().submitted == 4  # the refused ones never count
    assert_idle(executor)


async def test_a_submitted_callable_is_not_kept_alive_after_its_call(
    make_executor: ExecutorFactory,
) -> None:
    """Bound methods, closures and callable objects go when the call is done."""
    executor = make_executor(max_workers=1)

    class Holder:
        def method(self) -> int:
            return 1

        def __call__(self) -> int:
            return 2

    holder = Holder()
    data = [3]

    def closure() -> int:
        return data[0]

    refs: list[weakref.ref[Any]] = [weakref.ref(holder), weakref.ref(closure)]
    assert await executor.run(holder.method) == 1
    assert await executor.run(holder) == 2
    assert await executor.run(closure) == 3
    del holder, closure
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


@pytest.mark.parametrize("items", [3, None, object()], ids=["int", "none", "object"])
async def test_map_of_a_non_iterable_raises_at_the_call(
    make_executor: ExecutorFactory, items: Any
) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError, match="items must be an iterable"):
        executor.map(abs, items)


class _Opaque:
    def __init__(self, text: str | None) -> None:
        self.text = text

    def __repr__(self) -> str:
        if self.text is None:
            raise RuntimeError("no repr")
        return self.text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("x" * 80, "x" * 80),
        ("y" * 81, "y" * 77 + "..."),
        ("z" * 1000, "z" * 77 + "..."),
        (None, "<_Opaque object>"),
    ],
)
async def test_map_of_a_non_iterable_names_it_briefly(
    make_executor: ExecutorFactory, text: str | None, shown: str
) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError) as raised:
        executor.map(abs, _Opaque(text))  # type: ignore[arg-type]
    assert str(raised.value) == (
        f"items must be an iterable or an async iterable, got _Opaque {shown}"
    )


async def test_map_ordered_must_be_a_bool(make_executor: ExecutorFactory) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError, match="ordered must be a bool"):
        executor.map(abs, [1], ordered=1)  # type: ignore[arg-type]


NUMBER_OR_NONE_CASES = [
    pytest.param(0, ValueError, id="zero"),
    pytest.param(-1.5, ValueError, id="negative"),
    pytest.param(float("nan"), ValueError, id="nan"),
    pytest.param(float("inf"), ValueError, id="inf"),
    pytest.param("1", TypeError, id="str"),
    pytest.param(True, TypeError, id="bool"),
    pytest.param([1], TypeError, id="list"),
]


@pytest.mark.parametrize("name", ["max_wait", "max_per_second"])
@pytest.mark.parametrize(("value", "error"), NUMBER_OR_NONE_CASES)
def test_seconds_and_rates_must_be_finite_positive_numbers(
    name: str, value: object, error: type[Exception]
) -> None:
    kwargs: dict[str, Any] = {name: value}
    with pytest.raises(error, match=name):
        BoundedLoopExecutor(max_workers=1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"burst": 0}, ValueError, "burst", id="burst-zero"),
        pytest.param({"burst": -2}, ValueError, "burst", id="burst-negative"),
        pytest.param({"burst": 1.5}, TypeError, "burst", id="burst-float"),
        pytest.param({"burst": True}, TypeError, "burst", id="burst-bool"),
        pytest.param({"burst": 2}, TypeError, "burst", id="burst-alone"),
        pytest.param({"max_workers": "4"}, TypeError, "max_workers", id="workers-str"),
        pytest.param({"max_workers": -1}, ValueError, "max_workers", id="workers-neg"),
        pytest.param({"max_pending": 1.0}, TypeError, "max_pending", id="pending-f"),
        pytest.param(
            {"copy_context": "yes"}, TypeError, "copy_context", id="copy-context-str"
        ),
        pytest.param(
            {"copy_context": 0}, TypeError, "copy_context", id="copy-context-zero"
        ),
        pytest.param(
            {"executor": concurrent.futures.ThreadPoolExecutor, "bound": 2},
            TypeError,
            "executor must be a concurrent.futures.Executor",
            id="executor-class-not-instance",
        ),
        pytest.param(
            {"executor": POOL, "bound": 0}, ValueError, "bound", id="wrapped-bound-0"
        ),
    ],
)
def test_more_bad_constructor_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        BoundedLoopExecutor(**kwargs)


@pytest.mark.parametrize(
    ("bound", "error"),
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(2.0, TypeError, id="float"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param("3", TypeError, id="str"),
        pytest.param(None, TypeError, id="none"),
    ],
)
async def test_resize_rejects_bad_bounds_and_keeps_the_old_one(
    make_executor: ExecutorFactory, bound: object, error: type[Exception]
) -> None:
    executor = make_executor(max_workers=1, bound=3)
    with pytest.raises(error, match="bound"):
        executor.resize(bound)  # type: ignore[arg-type]
    assert executor.bound == 3


@pytest.mark.parametrize(("timeout", "error"), NUMBER_OR_NONE_CASES)
async def test_aclose_timeout_must_be_a_finite_positive_number(
    timeout: object, error: type[Exception]
) -> None:
    executor = BoundedLoopExecutor(max_workers=1)
    with pytest.raises(error, match="timeout"):
        await executor.aclose(timeout=timeout)  # type: ignore[arg-type]
    assert await executor.run(abs, -1) == 1  # a refused aclose closes nothing
    await executor.aclose()
    assert executor.closed


@pytest.mark.parametrize("ordered", [None, "yes", 0], ids=["none", "str", "int"])
async def test_map_ordered_rejects_non_bools(
    make_executor: ExecutorFactory, ordered: object
) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError, match="ordered"):
        executor.map(abs, [1], ordered=ordered)  # type: ignore[arg-type]
    assert executor.stats().submitted == 0


async def test_fn_is_positional_only(make_executor: ExecutorFactory) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError):
        _ = await executor.submit(fn=abs)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await executor.run(fn=abs)  # type: ignore[call-arg]
    assert_idle(executor)
    assert executor.stats().submitted == 0


async def test_bad_arguments_for_fn_fail_in_the_call_and_free_the_slot(
    make_executor: ExecutorFactory,
) -> None:
    # Arguments are fn's business: they are not checked at submit, and the
    # TypeError fn raises comes out of the call like any error of fn's.
    executor = make_executor(max_workers=1, bound=1)
    with pytest.raises(TypeError):
        await executor.run(abs, 1, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await executor.run(abs, x=1)  # type: ignore[arg-type]
    assert_idle(executor)
    assert executor.stats().failed == 2


async def _async_fn(x: int) -> int:
    return x


async def _async_gen(x: int) -> Any:
    yield x


class _Service:
    async def fetch(self, x: int) -> int:
        return x


async def _async_fn_cls(cls: type[Any], x: int) -> int:
    return x


class _AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x


class _AsyncGenService:
    async def stream(self, x: int) -> Any:
        yield x


class _SyncCallable:
    def __call__(self, x: int) -> int:
        return x


def _sync_fn(x: int) -> int:
    return x


def _sync_gen(x: int) -> Any:
    yield x


def _marked_async() -> Any:
    """A sync function marked as a coroutine function (Python 3.12+)."""
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is None:
        skip = pytest.mark.skip(reason="inspect.markcoroutinefunction: 3.12+")
        return pytest.param(None, marks=skip, id="markcoroutinefunction")
    return pytest.param(mark(lambda x: x), id="markcoroutinefunction")


ASYNC_SHAPES = [
    pytest.param(_async_fn, id="async-def"),
    pytest.param(_async_gen, id="async-generator"),
    pytest.param(_Service().fetch, id="async-method"),
    pytest.param(functools.partial(_async_fn, 1), id="partial"),
    pytest.param(
        functools.partial(functools.partial(_async_fn), 1), id="nested-partial"
    ),
    pytest.param(functools.partial(_Service().fetch, 1), id="partial-of-method"),
    pytest.param(staticmethod(_async_fn), id="staticmethod-object"),
    pytest.param(_AsyncCallable(), id="async-call-object"),
    pytest.param(functools.partial(_AsyncCallable(), 1), id="partial-of-object"),
    pytest.param(_AsyncGenService().stream, id="async-generator-method"),
    _marked_async(),
]


@pytest.mark.parametrize("fn", ASYNC_SHAPES)
async def test_async_function_is_refused_at_the_call_with_a_hint(
    make_executor: ExecutorFactory, fn: Any
) -> None:
    executor = make_executor(max_workers=1)
    with pytest.raises(TypeError, match="await it directly"):
        _ = await executor.submit(fn, 1)
    with pytest.raises(TypeError, match="await it directly"):
        await executor.run(fn, 1)
    with pytest.raises(TypeError, match="await it directly"):
        _ = executor.map(fn, [1])
    assert_idle(executor)
    assert executor.stats().submitted == 0


@pytest.mark.parametrize(
    "fn",
    [
        *ASYNC_SHAPES,
        pytest.param(classmethod(_async_fn_cls), id="classmethod-object"),
    ],
)
def test_is_async_function_sees_through_wrappers(fn: Any) -> None:
    assert is_async_function(fn)


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(_sync_fn, id="function"),
        pytest.param(lambda x: x, id="lambda"),
        pytest.param(abs, id="builtin"),
        pytest.param(str.upper, id="method-descriptor"),
        pytest.param("".join, id="builtin-method"),
        pytest.param(_SyncCallable(), id="callable-object"),
        pytest.param(_SyncCallable, id="class"),
        pytest.param(_AsyncCallable, id="class-with-async-call"),
        pytest.param(_sync_gen, id="generator-function"),
        pytest.param(functools.partial(_sync_fn, 1), id="partial"),
        pytest.param(functools.partial(_SyncCallable(), 1), id="partial-of-object"),
        pytest.param(staticmethod(_sync_fn), id="staticmethod-object"),
        pytest.param(functools.wraps(_async_fn)(_sync_fn), id="wraps-an-async"),
    ],
)
def test_is_async_function_leaves_sync_callables_alone(fn: Any) -> None:
    assert not is_async_function(fn)
