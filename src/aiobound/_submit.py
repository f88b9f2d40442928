"""How a call is handed to the underlying executor, chosen once per executor.

Three ways, picked at construction so that no call re-decides:

* a thread pool runs each call in a copy of the caller's :mod:`contextvars`
  context, as :func:`asyncio.to_thread` does;
* a process pool cannot take a context (it does not pickle), and a call it
  cannot pickle fails with a bare pickling error: the call is handed over
  as it is, and kept so that such an error can be explained. Its first call
  checks that the main script does not start workers from its top level
  (:func:`check_main_is_guarded`). A pool aiobound owns runs each call through
  :func:`run_unless_dropped`, so that ``aclose(timeout=...)`` can drop calls
  the pool has queued but not started;
* any other executor gets the call as it is.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import os
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from ._checks import check_optional_int
from ._pickling import safe_repr
from ._process import (
    OwnedProcessPool,
    check_main_is_guarded,
    explain_call_error,
    run_unless_dropped,
)

__all__ = (
    "Explain",
    "Explainer",
    "Handover",
    "handover_for",
    "own_or_wrap",
)

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


class _ProcessHandover:
    """Submit to a process pool; check the main script at the first call.

    Calls to a pool aiobound owns go through :func:`run_unless_dropped`, so
    that a timed-out close can drop those not started.
    """

    __slots__ = ("_checked", "_context", "_owned")

    def __init__(self, context: object, owned: bool) -> None:
        self._context = context
        self._owned = owned
        self._checked = False

    def __call__(
        self,
        executor: concurrent.futures.Executor,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> concurrent.futures.Future[T]:
        if not self._checked:
            check_main_is_guarded(self._context)
            self._checked = True
        if self._owned:
            return executor.submit(run_unless_dropped, fn, *args, **kwargs)
        return executor.submit(fn, *args, **kwargs)


def _process_explainer(owned: OwnedProcessPool | None) -> Explainer:
    def explainer(
        fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Explain:
        return functools.partial(
            explain_call_error, fn=fn, args=args, kwargs=kwargs, pool=owned
        )

    return explainer


def handover_for(
    executor: concurrent.futures.Executor,
    *,
    copy_context: bool,
    to_processes: bool,
    owned: OwnedProcessPool | None = None,
) -> tuple[Handover, Explainer | None]:
    """Return ``(handover, explainer)`` for *executor*.

    ``handover(executor, fn, args, kwargs)`` submits the call and returns the
    executor's future. ``explainer(fn, args, kwargs)``, when not ``None``,
    returns the ``explain`` function for that call's errors. *owned* is the
    pool aiobound owns, if it does (its calls can be dropped).
    """
    if copy_context:
        return _in_copied_context, None
    if to_processes:
        context = owned.context if owned is not None else None
        if context is None:
            context = getattr(executor, "_mp_context", None)
        return _ProcessHandover(context, owned is not None), _process_explainer(owned)
    return _plain, None


# The stdlib pools whose worker count is read, for the default bound, from
# their ``_max_workers`` attribute (present on 3.10 to 3.13; a test checks it).
_POOLS_WITH_KNOWN_SIZE = (
    concurrent.futures.ThreadPoolExecutor,
    concurrent.futures.ProcessPoolExecutor,
)


def own_or_wrap(
    max_workers: object,
    executor: object,
    *,
    bound_given: bool,
) -> tuple[concurrent.futures.Executor, bool, int | None]:
    """Return ``(executor, owned, workers)`` for an executor's constructor.

    Without *executor*, a ``ThreadPoolExecutor`` of ``max_workers`` threads
    (default: ``min(32, os.cpu_count() + 4)``, as the stdlib's) is made and
    owned. Otherwise *executor* is wrapped; its worker count is read when it
    is a stdlib pool, else ``None``.

    Raises:
        TypeError: both are given, *executor* is not an Executor, or the
            worker count is unknown and no bound was given (*bound_given*).
        ValueError: ``max_workers`` is below 1.
    """
    if executor is None:
        workers = check_optional_int("max_workers", max_workers, 1)
        if workers is None:
            workers = min(32, (os.cpu_count() or 1) + 4)
        pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="aiobound"
        )
        return pool, True, workers
    if max_workers is not None:
        raise TypeError(
            "pass either executor= (to wrap a pool you own) or "
            "max_workers= (to have one made for you), not both"
        )
    if not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(
            "executor must be a concurrent.futures.Executor, got "
            f"{type(executor).__name__} {safe_repr(executor)}"
        )
    known = None
    if isinstance(executor, _POOLS_WITH_KNOWN_SIZE):
        known = getattr(executor, "_max_workers", None)
    if not bound_given and not isinstance(known, int):
        raise TypeError(
            f"bound is required when wrapping {type(executor).__name__}: "
            "its worker count cannot be read (a good bound is twice the "
            "number of calls it can run at once)"
        )
    return executor, False, known if isinstance(known, int) else None
