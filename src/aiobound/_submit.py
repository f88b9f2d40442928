"""How a call is handed to the underlying executor, chosen once per executor.

:class:`Submitter` is what both executors hand their calls to: the way of
handing over, picked at construction, and the one retry after a replaced
pool (when the pool aiobound owns is broken, it is replaced and the call
submitted to the new one, once; a pool passed in is never replaced, and its
error says what to do). The retry is below any observer's wrapping, so one
call is one call to an observer, however many pools it met.

Three ways of handing over, picked at construction so that no call re-decides:

* a thread pool runs each call in a copy of the caller's :mod:`contextvars`
  context, as :func:`asyncio.to_thread` does;
* a process pool cannot take a context (it does not pickle), and a call it
  cannot pickle fails with a bare pickling error: the call is handed over
  as it is, and kept so that such an error can be explained. Its first call
  checks that the main script does not start workers from its top level
  (:func:`check_main_is_guarded`). A pool aiobound owns runs each call through
  :func:`run_unless_dropped`, so that ``aclose(timeout=...)`` can drop calls
  the pool has queued but not started; one made with ``kill_on_timeout=True``
  (pebble's, :class:`~aiobound._stopping.StoppingPool`) gets each call
  through pebble's ``schedule``, and cancelling a running call stops it
  (:attr:`Submitter.stops_running`);
* any other executor gets the call as it is.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from ._checks import check_max_workers
from ._pickling import safe_repr
from ._process import (
    OwnedProcessPool,
    check_main_is_guarded,
    explain_broken_pool,
    explain_call_error,
    failed_call_was_dropped,
    run_unless_dropped,
)
from ._stats import CANCELLED, FAILED

if TYPE_CHECKING:
    from ._stopping import StoppingPool

__all__ = (
    "Explain",
    "Explainer",
    "Handover",
    "Submitter",
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

    def _check_main_once(self) -> None:
        """At the first call: refuse an unguarded main script (spawn, forkserver)."""
        if not self._checked:
            check_main_is_guarded(self._context)
            self._checked = True

    def __call__(
        self,
        executor: concurrent.futures.Executor,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> concurrent.futures.Future[T]:
        self._check_main_once()
        if self._owned:
            return executor.submit(run_unless_dropped, fn, *args, **kwargs)
        return executor.submit(fn, *args, **kwargs)


class _StoppingHandover(_ProcessHandover):
    """Schedule on pebble's pool (owned), through :func:`run_unless_dropped`."""

    __slots__ = ()

    def __call__(
        self,
        executor: concurrent.futures.Executor,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> concurrent.futures.Future[T]:
        self._check_main_once()
        pool = cast("StoppingPool", executor)
        return pool.schedule(run_unless_dropped, (fn, *args), kwargs)


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
        kind = (
            _StoppingHandover if owned is not None and owned.kills else _ProcessHandover
        )
        return kind(context, owned is not None), _process_explainer(owned)
    return _plain, None


class Submitter:
    """Hands calls to one executor, replacing the pool aiobound owns if it breaks.

    Args:
        executor: The underlying executor.
        copy_context: Run each call in a copy of the caller's context (a
            thread pool); refused for a process pool.
        owned_pool: The process pool aiobound owns, if it does: replaced
            when it breaks.

    Raises:
        ValueError: ``copy_context`` is asked of a process pool.

    Thread-safe: the synchronous executor submits from many threads; the
    lock is taken only to replace a broken pool.
    """

    __slots__ = (
        "_lock",
        "_pool",
        "executor",
        "explainer",
        "handover",
        "same_clock",
        "stops_running",
        "to_processes",
    )

    def __init__(
        self,
        executor: concurrent.futures.Executor,
        *,
        copy_context: bool,
        owned_pool: OwnedProcessPool | None = None,
    ) -> None:
        to_processes = (
            isinstance(executor, ProcessPoolExecutor) or owned_pool is not None
        )
        if copy_context and to_processes:
            raise ValueError(
                "copy_context=True cannot be used with a process pool: a "
                "contextvars.Context cannot be pickled to another process"
            )
        self.executor = executor
        self.to_processes = to_processes
        # Whether the workers read this process's time.monotonic (threads).
        self.same_clock = isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        # Whether cancelling a running call stops it (its worker is replaced).
        self.stops_running = owned_pool is not None and owned_pool.kills
        self._pool = owned_pool
        self._lock = threading.Lock()
        self.handover, self.explainer = handover_for(
            executor,
            copy_context=copy_context,
            to_processes=to_processes,
            owned=owned_pool,
        )

    def submit(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[T]:
        """Hand ``fn(*args, **kwargs)`` over; return the executor's future.

        Raises:
            Exception: what the executor's ``submit`` raised; for a broken
                pool that is not aiobound's, a :class:`BrokenExecutor` that
                says what to do; for aiobound's, what the new pool raised.
        """
        try:
            return self.handover(self.executor, fn, args, kwargs)
        except BrokenExecutor as exc:
            return self.resubmit(exc, fn, args, kwargs)

    def resubmit(
        self,
        exc: BrokenExecutor,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> concurrent.futures.Future[T]:
        """The pool is broken: replace it if it is ours (once), else explain."""
        pool = self._pool
        if pool is None:
            raise explain_broken_pool(exc, self.executor)
        with self._lock:
            if pool.executor is self.executor:  # not replaced by another thread
                self.executor = pool.replace()
            executor = self.executor
        return self.handover(executor, fn, args, kwargs)

    def outcome(self, cfut: concurrent.futures.Future[Any], outcome: int) -> int:
        """*outcome* of an ended call, a drop before it started made ``CANCELLED``.

        On a process pool, a call that failed because ``aclose(timeout=...)``
        dropped it before it started is a cancellation; a call that failed
        with ``BrokenProcessPool`` has its pool watched, so that every call
        of that pool ends (on Python 3.10 and 3.11 too).
        """
        if (
            outcome == FAILED
            and self.to_processes
            and failed_call_was_dropped(cfut, self.executor)
        ):
            return CANCELLED
        return outcome


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
        workers = check_max_workers(max_workers)
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
