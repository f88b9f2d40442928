"""Process pools: the pool aiobound owns, and errors that say what went wrong.

* :class:`OwnedProcessPool` is the pool made by
  :meth:`BoundedLoopExecutor.process`: its factory, its replacement when it
  breaks (with a count of restarts) and its shutdown.
* :func:`process_context` and :func:`check_context` pick or check the start
  method: ``forkserver`` where it exists, ``spawn`` elsewhere, never plain
  ``fork`` (the event loop's process runs threads, and forking a process that
  runs threads can deadlock the child).
* :func:`explain_pickling_error` turns the bare ``PicklingError`` or
  ``TypeError`` that a process pool reports for an unpicklable call into one
  that names the object and says why; :func:`explain_broken_pool` says what to
  do about a broken pool that aiobound does not own. Both run only after a
  call failed, so they cost nothing on the way in.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Iterator
    from multiprocessing.context import BaseContext

__all__ = (
    "OwnedProcessPool",
    "check_context",
    "explain_broken_pool",
    "explain_pickling_error",
    "process_context",
    "reworded",
)

# What a pool reports when it cannot pickle a call: pickle.PicklingError
# (functions that cannot be found by name, e.g. lambdas), TypeError ("cannot
# pickle '_thread.lock' object") and AttributeError ("Can't pickle local
# object" on 3.10 and 3.11).
_PICKLING_ERRORS = (pickle.PicklingError, TypeError, AttributeError)


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
            f"get_context(...)), got {type(value).__name__} {value!r}"
        )
    if value.get_start_method() == "fork":
        raise ValueError(
            f"{name} must not use the 'fork' start method: the event loop's "
            "process runs threads, and forking it can deadlock the workers; "
            "use 'forkserver' or 'spawn'"
        )
    return value


class _Discard(io.RawIOBase):
    """A sink for pickles: checking an object need not keep its bytes."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        return len(memoryview(data))  # type: ignore[arg-type]


def _pickling_failure(obj: object) -> BaseException | None:
    """Return the error pickling *obj* raises, or ``None`` if it pickles."""
    try:
        pickle.Pickler(_Discard()).dump(obj)
    except Exception as exc:
        return exc
    return None


def _parts(label: str, obj: object) -> Iterator[tuple[str, object]]:
    """Yield the parts of *obj* worth naming, with their labels.

    A partial's function and bound arguments; the items of a list or tuple
    (such as a chunk of ``map``).
    """
    if isinstance(obj, functools.partial):
        yield f"{label}'s wrapped function", obj.func
        for i, arg in enumerate(obj.args):
            yield f"{label}'s bound argument {i + 1}", arg
        for key, value in obj.keywords.items():
            yield f"{label}'s bound keyword argument {key!r}", value
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield f"{label}, item {i}", item


def _culprit(label: str, obj: object) -> tuple[str, object, BaseException] | None:
    """Find the innermost part of *obj* that does not pickle, if any."""
    error = _pickling_failure(obj)
    if error is None:
        return None
    for part_label, part in _parts(label, obj):
        found = _culprit(part_label, part)
        if found is not None:
            return found
    return label, obj, error


def explain_pickling_error(
    exc: BaseException,
    fn: object,
    args: tuple[object, ...],
    kwargs: dict[str, object],
) -> BaseException:
    """Return a clearer error for a call a process pool could not pickle.

    *exc* is what the pool reported for ``fn(*args, **kwargs)``. If it is a
    pickling error and one of ``fn``, the arguments or the keyword arguments
    does not pickle, the result is an error of the same type whose message
    names that object and says why, with *exc* as its ``__cause__``.
    Otherwise (``fn`` itself raised a ``TypeError``, say) *exc* is returned
    unchanged. Called only on the error path.
    """
    if not isinstance(exc, _PICKLING_ERRORS):
        return exc
    candidates = [
        ("the function", fn),
        *((f"argument {i + 1}", arg) for i, arg in enumerate(args)),
        *((f"keyword argument {key!r}", value) for key, value in kwargs.items()),
    ]
    for label, obj in candidates:
        found = _culprit(label, obj)
        if found is None:
            continue
        where, culprit, error = found
        message = (
            f"cannot send {where} ({culprit!r}) to a worker process: it cannot "
            f"be pickled ({type(error).__name__}: {error}). A process pool "
            "pickles the function and its arguments: use a function defined at "
            "the top level of an importable module (not a lambda or a local "
            "function) and picklable arguments, or a thread pool"
        )
        return reworded(exc, message)
    return exc


def reworded(exc: BaseException, message: str) -> BaseException:
    """An error of *exc*'s type saying *message*, caused by *exc*.

    Returns *exc* itself if its type cannot be built from a message alone.
    """
    try:
        clear = type(exc)(message)
    except Exception:
        return exc
    clear.__cause__ = exc
    return clear


def explain_broken_pool(
    exc: BaseException, pool: concurrent.futures.Executor
) -> BaseException:
    """A clearer error for a submission to a broken pool that is not ours."""
    message = (
        f"the wrapped {type(pool).__name__} is broken ({exc}); aiobound "
        "leaves a pool passed as executor= as it is: make a new pool and a new "
        "BoundedLoopExecutor, or use BoundedLoopExecutor.process(), whose own "
        "pool is replaced when it breaks"
    )
    return reworded(exc, message)


class OwnedProcessPool:
    """A :class:`ProcessPoolExecutor` that aiobound made, replaced when it breaks.

    Args:
        workers: Worker processes.
        context: The multiprocessing context (see :func:`process_context`).
        initializer: Called with ``*initargs`` in each worker at start.
        initargs: Arguments for ``initializer``.
    """

    __slots__ = (
        "_context",
        "_initargs",
        "_initializer",
        "_workers",
        "executor",
        "restarts",
    )

    def __init__(
        self,
        workers: int,
        context: BaseContext,
        initializer: Callable[..., object] | None,
        initargs: tuple[object, ...],
    ) -> None:
        self._workers = workers
        self._context = context
        self._initializer = initializer
        self._initargs = initargs
        self.restarts = 0
        self.executor: concurrent.futures.Executor = self._new_pool()

    @property
    def workers(self) -> int:
        """Worker processes of each pool."""
        return self._workers

    def _new_pool(self) -> concurrent.futures.Executor:
        return ProcessPoolExecutor(
            self._workers,
            self._context,
            self._initializer,
            self._initargs,  # type: ignore[arg-type]
        )

    def replace(self) -> concurrent.futures.Executor:
        """Swap the broken pool for a new one; return the new one.

        The broken pool's workers are already gone, so it is shut down without
        waiting.
        """
        broken = self.executor
        self.executor = self._new_pool()
        self.restarts += 1
        broken.shutdown(wait=False)
        return self.executor
