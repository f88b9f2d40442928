"""Process pools: the pool aiobound owns, and errors that say what went wrong.

* :class:`OwnedProcessPool` is the pool made by
  :meth:`BoundedLoopExecutor.process`: its factory, its replacement when it
  breaks (with a count of restarts, and a limit on how fast), its
  initializer check, and the flag that drops calls not yet started when
  ``aclose(timeout=...)`` gives up on them (:func:`run_unless_dropped` runs
  every call in the worker and reads that flag first). With
  ``kill_on_timeout=True`` each pool it makes is a
  :class:`~aiobound._stopping.StoppingPool` (pebble's), whose running calls
  can be stopped, instead of a ``ProcessPoolExecutor``.
* :func:`process_context` and :func:`check_context` pick or check the start
  method: ``forkserver`` where it exists, ``spawn`` elsewhere, never plain
  ``fork`` (the event loop's process runs threads, and forking a process that
  runs threads can deadlock the child).
* :func:`explain_call_error` turns the bare error a process pool reports for
  a call it could not pickle (or whose result it could not pickle back) into
  one that names the object and says why; :func:`explain_broken_pool` says
  what to do about a broken pool that aiobound does not own. Both run only
  after a call failed, so they cost nothing on the way in.
* :func:`watch_broken` makes sure every call of a broken pool ends, also on
  CPython 3.10 and 3.11, where the pool's own clean-up can stop half-way.
* :func:`check_main_is_guarded` refuses to start workers from a script's
  top level outside ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import functools
import multiprocessing
import os
import sys
import threading
import time
import tokenize
import weakref
from concurrent.futures import InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, cast

from ._checks import check_callable, check_max_workers
from ._errors import closed_before_start
from ._pickling import (
    PICKLING_ERRORS,
    check_initializer,
    explain_pickling_error,
    explain_result,
    origin,
    reworded,
    safe_repr,
    safe_str,
)
from ._stopping import StoppingPool, import_pebble

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable
    from multiprocessing.context import BaseContext
    from types import FrameType

__all__ = (
    "RESTART_LIMIT",
    "RESTART_WINDOW",
    "DroppedCall",
    "OwnedProcessPool",
    "check_context",
    "check_main_is_guarded",
    "explain_broken_pool",
    "explain_call_error",
    "failed_call_was_dropped",
    "owned_process_pool",
    "process_context",
    "reworded",
    "run_unless_dropped",
    "safe_repr",
    "watch_broken",
)

# An owned pool is replaced at most RESTART_LIMIT times within
# RESTART_WINDOW seconds; beyond that, calls fail until the window has passed.
RESTART_LIMIT = 3
RESTART_WINDOW = 60.0

# -- in the worker process ----------------------------------------------------

# Set in each worker of an owned pool by _start_worker: a shared byte, non-zero
# once aclose(timeout=...) gave up on the calls not yet started.
_drop_flag: Any = None


class DroppedCall(Exception):
    """Raised in a worker instead of running a call that was dropped.

    :func:`run_unless_dropped` raises it for a call that had not started when
    ``aclose(timeout=...)`` gave up; the executor counts the call as
    cancelled and its caller gets :class:`ClosedError`.
    """


def run_unless_dropped(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in the worker, unless calls were dropped."""
    flag = _drop_flag
    if flag is not None and flag.value:
        raise DroppedCall
    return fn(*args, **kwargs)


def _start_worker(
    drop_flag: Any,
    init_error: Any,
    initializer: Callable[..., object] | None,
    initargs: tuple[object, ...],
) -> None:
    """The initializer of an owned pool's workers: keep the flag, run the user's.

    If the user's initializer raises, its error is written to *init_error*
    (shared with the parent, which names it when it explains the broken
    pool) and raised, which ends the worker and breaks the pool.
    """
    global _drop_flag
    _drop_flag = drop_flag
    if initializer is None:
        return
    try:
        initializer(*initargs)
    except BaseException as exc:
        # Unlocked: workers that fail at once write the same words.
        init_error.value = safe_str(exc).encode("utf-8", "replace")[
            : len(init_error) - 1
        ]
        raise


def process_context() -> BaseContext:
    """Return the start method for pools aiobound creates."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def check_context(name: str, value: object) -> BaseContext:
    """Return *value* if it is a multiprocessing context that does not fork.

    Raises:
        TypeError: *value* is not a multiprocessing context.
        ValueError: its start method is ``fork``.
    """
    if not isinstance(value, multiprocessing.context.BaseContext):
        raise TypeError(
            f"{name} must be a multiprocessing context (multiprocessing."
            f"get_context(...)), got {type(value).__name__} {safe_repr(value)}"
        )
    if value.get_start_method() == "fork":
        raise ValueError(
            f"{name} must not use the 'fork' start method: the event loop's "
            "process runs threads, and forking it can deadlock the workers; "
            "use 'forkserver' or 'spawn'"
        )
    return value


# -- explanations --------------------------------------------------------------


def explain_call_error(
    exc: BaseException,
    fn: object,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    pool: OwnedProcessPool | None = None,
) -> BaseException:
    """Return the error to give the caller of a call that failed with *exc*.

    * :class:`DroppedCall` (the call was dropped before it started, by
      ``aclose(timeout=...)``) becomes :class:`ClosedError`.
    * A pickling error raised while the pool pickled the call names the
      function or argument that does not pickle and says why. Only then (or
      when the pool's traceback does not tell where the error was raised)
      are the function and arguments pickled again, one by one, to find it:
      a ``TypeError`` or ``AttributeError`` raised by ``fn`` itself in the
      worker is never searched.
    * A pickling error raised while the worker pickled the result back says
      so.
    * For *pool* (an owned pool), a :class:`BrokenProcessPool` says why the
      pool broke when its workers' initializer failed.

    Everything else is returned unchanged. A reworded error has the same type
    as *exc*, which is its ``__cause__``. Called only on the error path.
    """
    if isinstance(exc, DroppedCall):
        error = closed_before_start()
        error.__cause__ = exc
        return error
    if pool is not None and pool.kills:
        return _explain_stopping_pool_error(exc, fn, args, kwargs, pool)
    if isinstance(exc, BrokenProcessPool):
        return exc if pool is None else pool.explain_broken(exc)
    if not isinstance(exc, PICKLING_ERRORS):
        return exc
    where = origin(exc)
    if where == "result":
        return explain_result(exc, fn)
    if where == "worker":
        return exc
    return explain_pickling_error(exc, fn, args, kwargs)


def _explain_stopping_pool_error(
    exc: BaseException,
    fn: object,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    pool: OwnedProcessPool,
) -> BaseException:
    """:func:`explain_call_error` for a pool made with ``kill_on_timeout=True``.

    pebble reports a call's errors otherwise than ``ProcessPoolExecutor``: an
    error raised in the worker has a ``RemoteTraceback`` (its text in
    ``.traceback``) as its cause; an error pickling the result back comes
    from the worker bare (no traceback at all); an error pickling the call
    was raised here (it has a traceback); a worker that died fails its own
    call, and only that one, with ``pebble.ProcessExpired``, which becomes a
    ``BrokenProcessPool`` as on the other pools.
    """
    if isinstance(exc, BrokenProcessPool):
        return pool.explain_broken(exc)
    if isinstance(exc, import_pebble().ProcessExpired):
        code = getattr(exc, "exitcode", None)
        error = BrokenProcessPool(
            f"the worker process running this call died (exit code {code}); "
            "the pool started another, and its other calls go on"
        )
        error.__cause__ = exc
        return error
    if not isinstance(exc, PICKLING_ERRORS):
        return exc
    if isinstance(getattr(exc.__cause__, "traceback", None), str):
        return exc  # raised by fn itself, in the worker
    if exc.__traceback__ is None:
        return explain_result(exc, fn)  # pickled back from the worker
    return explain_pickling_error(exc, fn, args, kwargs)


def explain_broken_pool(
    exc: BaseException, pool: concurrent.futures.Executor
) -> BaseException:
    """A clearer error for a submission to a broken pool that is not ours.

    Also makes sure every call of that pool ends (:func:`watch_broken`).
    """
    watch_broken(pool)
    message = (
        f"the wrapped {type(pool).__name__} is broken ({safe_str(exc)}); "
        "aiobound leaves a pool passed as executor= as it is: make a new pool "
        "and a new BoundedLoopExecutor, or use BoundedLoopExecutor.process(), "
        "whose own pool is replaced when it breaks"
    )
    return reworded(exc, message)


# -- broken pools --------------------------------------------------------------

_watched: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()
_watched_lock = threading.Lock()


def watch_broken(pool: object) -> None:
    """If *pool* is a broken ``ProcessPoolExecutor``, make sure its calls end.

    A broken pool's management thread fails every call it still has with
    ``BrokenProcessPool``. On CPython 3.10 and 3.11 it stops half-way if one
    of them was cancelled while it waited (``InvalidStateError``), and the
    calls after that one never end. A daemon thread, started once per pool,
    waits for the management thread to end, then fails the calls it left
    (none on 3.12 and later) and stops the workers it left running. Needs
    the pool's private attributes; without them (another Python), it does
    nothing.
    """
    if not isinstance(pool, ProcessPoolExecutor) or not getattr(pool, "_broken", False):
        return
    manager = getattr(pool, "_executor_manager_thread", None)
    items = getattr(pool, "_pending_work_items", None)
    processes = getattr(pool, "_processes", None)
    if not isinstance(manager, threading.Thread) or not isinstance(items, dict):
        return
    with _watched_lock:
        if pool in _watched:
            return
        _watched.add(pool)
    threading.Thread(
        target=_fail_stranded_calls,
        args=(manager, items, processes if isinstance(processes, dict) else {}),
        name="aiobound-broken-pool",
        daemon=True,
    ).start()


def _fail_stranded_calls(
    manager: threading.Thread,
    items: dict[int, Any],
    processes: dict[int, Any],
) -> None:
    """Once *manager* has ended, fail the calls it left; stop the workers."""
    manager.join()
    while True:
        try:
            stranded = [item.future for item in list(items.values())]
            workers = list(processes.values())
            break
        except RuntimeError:  # changed size while copied: copy again
            continue
    if not stranded:
        return
    for future in stranded:
        if future.done():
            continue
        error = BrokenProcessPool(
            "a worker process died, and the pool stopped before it failed this "
            "call (a CPython bug before 3.12: a cancelled call in its queue "
            "stops its clean-up); aiobound failed it"
        )
        with contextlib.suppress(InvalidStateError):  # ended meanwhile
            future.set_exception(error)
    for process in workers:
        if process.is_alive():
            process.terminate()
        process.join()


def failed_call_was_dropped(
    cfut: concurrent.futures.Future[Any], pool: concurrent.futures.Executor
) -> bool:
    """For a failed call of a process pool: was it dropped before it started?

    A call that failed with ``BrokenProcessPool`` also has *pool* (the
    executor's current pool) watched, so that its other calls end too
    (:func:`watch_broken`).
    """
    exc = cfut.exception()
    if isinstance(exc, DroppedCall):
        return True
    if isinstance(exc, BrokenProcessPool):
        watch_broken(pool)
    return False


# -- scripts without a main guard ----------------------------------------------


def check_main_is_guarded(context: object) -> None:
    """Refuse to start workers from a script's top level, outside the guard.

    With ``forkserver`` and ``spawn``, every worker imports the main script
    again (as ``__mp_main__``). Code at its top level that is not under ``if
    __name__ == "__main__":`` then runs again in the worker, starts a pool
    there, and breaks the parent's pool with a page of tracebacks. This finds
    the main script's top-level statement on the calling thread's stack, if
    any, and raises if it is not inside an ``if`` that tests ``__name__``.
    When this cannot be told (no script file, another thread, a file that
    does not parse), nothing is raised; nor for ``python -m package``, whose
    ``__main__`` module the workers do not import.

    Raises:
        RuntimeError: the call comes from such an unguarded statement.
    """
    start_method = getattr(context, "get_start_method", None)
    if start_method is None or start_method() not in ("forkserver", "spawn"):
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not isinstance(path, str):
        return
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if isinstance(name, str) and (name == "__main__" or name.endswith(".__main__")):
        return  # python -m package: workers do not import its __main__ again
    main_globals = vars(main)
    frame: FrameType | None = sys._getframe(1)
    top = None
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            top = frame
        frame = frame.f_back
    if top is None or _line_is_guarded(path, top.f_lineno):
        return
    raise RuntimeError(
        f"the worker processes of this pool would run your script again: "
        f'{path}, line {top.f_lineno}, is not under if __name__ == "__main__":. '
        "A process pool that starts workers with 'forkserver' or 'spawn' "
        "imports the main script in each worker; code at its top level runs "
        "there too and breaks the pool. Put the code that runs your program "
        'under the guard, e.g.\n\n    if __name__ == "__main__":\n'
        "        asyncio.run(main())\n"
    )


@functools.lru_cache(maxsize=8)
def _line_is_guarded(path: str, line: int) -> bool:
    """Whether *line* of *path* lies in an ``if`` that tests ``__name__``.

    ``True`` when the file cannot be read or parsed (nothing can be told).
    """
    try:
        with tokenize.open(path) as file:
            tree = ast.parse(file.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return True
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and node.lineno <= line <= (node.end_lineno or node.lineno)
            and any(
                isinstance(name, ast.Name) and name.id == "__name__"
                for name in ast.walk(node.test)
            )
        ):
            return True
    return False


# -- the owned pool ------------------------------------------------------------


def owned_process_pool(
    max_workers: object,
    mp_context: object,
    initializer: object,
    initargs: object,
    kill_on_timeout: object = False,
) -> OwnedProcessPool:
    """Check the pool arguments of :meth:`BoundedLoopExecutor.process`; make it.

    Raises:
        TypeError: an argument has the wrong type, ``initargs`` is given
            without ``initializer``, or either cannot be pickled.
        ValueError: ``max_workers`` is below 1, or ``mp_context`` forks.
        ImportError: ``kill_on_timeout`` is true and pebble is missing.
    """
    if not isinstance(kill_on_timeout, bool):
        raise TypeError(
            "kill_on_timeout must be a bool, got "
            f"{type(kill_on_timeout).__name__} {safe_repr(kill_on_timeout)}"
        )
    workers = check_max_workers(max_workers)
    if workers is None:
        workers = os.cpu_count() or 1
    context = (
        process_context()
        if mp_context is None
        else check_context("mp_context", mp_context)
    )
    if initializer is not None:
        check_callable("initializer", initializer)
    if not isinstance(initargs, tuple):
        raise TypeError(
            "initargs must be a tuple, got "
            f"{type(initargs).__name__} {safe_repr(initargs)}"
        )
    if initargs and initializer is None:
        raise TypeError("initargs has no effect without initializer")
    if kill_on_timeout:
        import_pebble()  # before any process starts
    return OwnedProcessPool(
        workers,
        context,
        cast("Callable[..., object] | None", initializer),
        initargs,
        kills=kill_on_timeout,
    )


class OwnedProcessPool:
    """A process pool that aiobound made, replaced when it breaks.

    A :class:`ProcessPoolExecutor`, or with *kills* a
    :class:`~aiobound._stopping.StoppingPool` (pebble's), whose running
    calls are stopped when cancelled. Its workers start with
    :func:`_start_worker`, which keeps a flag shared by every pool it makes:
    once :meth:`drop_calls_not_started` sets it, a call that has not started
    is not run (:func:`run_unless_dropped`).

    Args:
        workers: Worker processes.
        context: The multiprocessing context (see :func:`process_context`).
        initializer: Called with ``*initargs`` in each worker at start.
        initargs: Arguments for ``initializer``.
        kills: Make pools that stop a running call when it is cancelled.

    Raises:
        TypeError: ``initializer`` or ``initargs`` cannot be pickled.
        ImportError: *kills*, and pebble is missing.
    """

    __slots__ = (
        "_context",
        "_drop_flag",
        "_init_error",
        "_initargs",
        "_initializer",
        "_replaced_at",
        "_workers",
        "executor",
        "kills",
        "restarts",
    )

    def __init__(
        self,
        workers: int,
        context: BaseContext,
        initializer: Callable[..., object] | None,
        initargs: tuple[object, ...],
        *,
        kills: bool = False,
    ) -> None:
        check_initializer(context, initializer, initargs)
        self.kills = kills
        self._workers = workers
        self._context = context
        self._initializer = initializer
        self._initargs = initargs
        self._drop_flag: Any = context.RawValue("b", 0)
        self._init_error: Any = context.RawArray("c", 512)
        self._replaced_at: collections.deque[float] = collections.deque(
            maxlen=RESTART_LIMIT
        )
        self.restarts = 0
        self.executor: concurrent.futures.Executor = self._new_pool()

    @property
    def workers(self) -> int:
        """Worker processes of each pool."""
        return self._workers

    @property
    def context(self) -> BaseContext:
        """The multiprocessing context of each pool."""
        return self._context

    def _new_pool(self) -> concurrent.futures.Executor:
        self._init_error.value = b""
        initargs = (
            self._drop_flag,
            self._init_error,
            self._initializer,
            self._initargs,
        )
        if self.kills:
            return StoppingPool(self._workers, self._context, _start_worker, initargs)
        return ProcessPoolExecutor(
            self._workers, self._context, _start_worker, initargs
        )

    def drop_calls_not_started(self) -> None:
        """From now on, workers skip every call that has not started.

        Such a call fails with :class:`DroppedCall` when a worker takes it.
        """
        self._drop_flag.value = 1

    def _why_broken(self) -> str:
        text = bytes(self._init_error.value).decode("utf-8", "replace")
        if text:
            return f"the workers' initializer raised {text}"
        return "a worker process died"

    def explain_broken(self, exc: BrokenProcessPool) -> BaseException:
        """Say why the pool broke, when its workers' initializer failed."""
        text = bytes(self._init_error.value).decode("utf-8", "replace")
        if not text:
            return exc
        return reworded(
            exc,
            f"the process pool broke: the workers' initializer "
            f"({safe_repr(self._initializer)}) raised {text}",
        )

    def replace(self) -> concurrent.futures.Executor:
        """Swap the broken pool for a new one; return the new one.

        The broken pool's workers are already gone, so it is shut down without
        waiting (and watched, so that all its calls end).

        Raises:
            BrokenProcessPool: the pool was already replaced
                :data:`RESTART_LIMIT` times within :data:`RESTART_WINDOW`
                seconds; the message says why it broke last.
        """
        now = time.monotonic()
        if (
            len(self._replaced_at) == RESTART_LIMIT
            and now - self._replaced_at[0] < RESTART_WINDOW
        ):
            wait = RESTART_WINDOW - (now - self._replaced_at[0])
            raise BrokenProcessPool(
                f"the process pool keeps breaking ({self._why_broken()}): it "
                f"was replaced {RESTART_LIMIT} times within {RESTART_WINDOW:g} "
                f"s, and is not replaced again for {wait:.0f} s; calls fail "
                "meanwhile. If the workers' initializer fails, fix it"
            )
        broken = self.executor
        watch_broken(broken)
        self.executor = self._new_pool()
        self.restarts += 1
        self._replaced_at.append(now)
        broken.shutdown(wait=False)
        return self.executor
