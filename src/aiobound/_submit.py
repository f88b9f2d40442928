"""How a call is handed to the underlying executor, chosen once per executor.

Three ways, picked at construction so that no call re-decides:

* a thread pool runs each call in a copy of the caller's :mod:`contextvars`
  context, as :func:`asyncio.to_thread` does;
* a process pool cannot take a context (it does not pickle), and a call it
  cannot pickle fails with a bare pickling error: the call is handed over
  as it is, and kept so that such an error can be explained;
* any other executor gets the call as it is.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from ._process import explain_pickling_error

__all__ = ("Explain", "Explainer", "Handover", "handover_for")

T = TypeVar("T")

# handover(executor, fn, args, kwargs) -> the executor's future of the call.
Handover: TypeAlias = Callable[
    [concurrent.futures.Executor, Callable[..., Any], tuple[Any, ...], dict[str, Any]],
    concurrent.futures.Future[Any],
]
# explain(exc) -> a clearer error for the caller of one call.
Explain: TypeAlias = Callable[[BaseException], BaseException]
# explainer(fn, args, kwargs) -> the explain function for that call.
Explainer: TypeAlias = Callable[
    [Callable[..., Any], tuple[Any, ...], dict[str, Any]], Explain
]


def _plain(
    executor: concurrent.futures.Executor,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> concurrent.futures.Future[T]:
    return executor.submit(fn, *args, **kwargs)


def _in_copied_context(
    executor: concurrent.futures.Executor,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> concurrent.futures.Future[T]:
    run: Callable[..., T] = contextvars.copy_context().run
    return executor.submit(run, fn, *args, **kwargs)


def _pickling_explainer(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[BaseException], BaseException]:
    return functools.partial(explain_pickling_error, fn=fn, args=args, kwargs=kwargs)


def handover_for(
    *, copy_context: bool, to_processes: bool
) -> tuple[Handover, Explainer | None]:
    """Return ``(handover, explainer)`` for an executor of this kind.

    ``handover(executor, fn, args, kwargs)`` submits the call and returns the
    executor's future. ``explainer(fn, args, kwargs)``, when not ``None``,
    returns the ``explain`` function for that call's errors.
    """
    if copy_context:
        return _in_copied_context, None
    if to_processes:
        return _plain, _pickling_explainer
    return _plain, None
