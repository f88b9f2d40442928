"""Errors that say what went wrong with a call sent to another process.

:func:`explain_pickling_error` and :func:`explain_result` turn the bare error
a process pool reports for a call it could not pickle (or whose result it
could not pickle back) into one that names the object and says why;
:func:`check_initializer`
refuses, at construction, an initializer that could never reach a worker.
They run only after a call failed (or once, at construction), so they cost
nothing on the way in. User objects are quoted by :func:`safe_repr`, which
never raises and never quotes much.
"""

from __future__ import annotations

import functools
import io
import pickle
import reprlib
from typing import TYPE_CHECKING, Any

from ._chunks import Chunk, ChunkCall
from ._errors import safe_str

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from multiprocessing.context import BaseContext

__all__ = (
    "PICKLING_ERRORS",
    "check_initializer",
    "explain_pickling_error",
    "explain_result",
    "origin",
    "reworded",
    "safe_repr",
    "safe_str",
)

# What a pool reports when it cannot pickle a call: pickle.PicklingError
# (functions that cannot be found by name, e.g. lambdas), TypeError ("cannot
# pickle '_thread.lock' object") and AttributeError ("Can't pickle local
# object" on 3.10 and 3.11).
PICKLING_ERRORS = (pickle.PicklingError, TypeError, AttributeError)

# Most characters of a user's object quoted in a message.
_QUOTE_LIMIT = 120

_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = _repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4


def safe_repr(obj: object, limit: int = _QUOTE_LIMIT) -> str:
    """A short repr of *obj* that never raises and never exceeds *limit*.

    Containers show their first items only; a ``__repr__`` that raises gives
    ``<TypeName object>``.
    """
    try:
        text = _repr.repr(obj)
        if not isinstance(text, str):
            raise TypeError
    except Exception:
        try:
            text = f"<{type(obj).__qualname__} object>"
        except Exception:
            text = "<object>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


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


def check_initializer(
    context: BaseContext,
    initializer: Callable[..., object] | None,
    initargs: tuple[object, ...],
) -> None:
    """Refuse an initializer or initargs that cannot reach the workers.

    They are pickled as the pool will pickle them (with the context's
    reducer). Objects that may only be passed to a process as it starts (a
    ``multiprocessing`` lock, event or queue) refuse to pickle outside that
    moment with a ``RuntimeError``: they are accepted.

    Raises:
        TypeError: ``initializer`` or an item of ``initargs`` cannot be
            pickled; the message names it and says why.
    """
    if initializer is None:
        return
    pickler = context.reducer.ForkingPickler  # type: ignore[attr-defined]
    named: list[tuple[str, object]] = [("initializer", initializer)]
    named += [(f"initargs[{i}]", arg) for i, arg in enumerate(initargs)]
    for name, obj in named:
        error = _reducer_failure(pickler, obj)
        if error is not None:
            raise TypeError(
                f"{name} ({safe_repr(obj)}) cannot be pickled to the worker "
                f"processes ({safe_str(error)}): use a function defined at the "
                "top level of an importable module and picklable arguments"
            ) from error


def _reducer_failure(pickler: Any, obj: object) -> BaseException | None:
    """The pickling error *pickler* raises for *obj*, if any.

    Any other error is no pickling error: a ``multiprocessing`` lock, event
    or queue raises ``RuntimeError`` when pickled other than as a process
    starts, which is when the pool pickles it.
    """
    try:
        pickler(_Discard()).dump(obj)
    except PICKLING_ERRORS as exc:
        return exc
    except Exception:
        return None
    return None


def _parts(label: str, obj: object) -> Iterator[tuple[str, object]]:
    """Yield the parts of *obj* worth naming, with their labels.

    A partial's function and bound arguments; the items of a list or tuple.
    """
    if isinstance(obj, functools.partial):
        yield f"{label}'s wrapped function", obj.func
        for i, arg in enumerate(obj.args):
            yield f"{label}'s bound argument {i + 1}", arg
        for key, value in obj.keywords.items():
            yield f"{label}'s bound keyword argument {safe_repr(key)}", value
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield f"{label}, item {i + 1}", item


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


def _candidates(
    fn: object, args: tuple[object, ...], kwargs: dict[str, object]
) -> list[tuple[str, object]]:
    """The function and each argument of a call, with their labels.

    A chunk of ``map`` is named item by item: its function is ``map``'s
    function, and its one argument is the list of items, each named by its
    position in ``map``'s input (counting from 0) when the chunk knows it.
    """
    if isinstance(fn, ChunkCall) and len(args) == 1 and isinstance(args[0], list):
        items = args[0]
        first = items.first if isinstance(items, Chunk) else None
        return [
            ("map's function", fn.fn),
            *(
                (
                    f"map's item {i + 1} of a chunk of {len(items)}"
                    if first is None
                    else f"map's item at position {first + i} of its input",
                    item,
                )
                for i, item in enumerate(items)
            ),
        ]
    return [
        ("the function", fn),
        *((f"argument {i + 1}", arg) for i, arg in enumerate(args)),
        *(
            (f"keyword argument {safe_repr(key)}", value)
            for key, value in kwargs.items()
        ),
    ]


def origin(exc: BaseException) -> str:
    """Where a process pool's error for a call came from.

    ``"call"``: pickling the call to send it (the call queue's feeder thread);
    ``"result"``: pickling what the call returned or raised, to send it back;
    ``"worker"``: raised in the worker's loop, by ``fn``;
    ``"unknown"``: none of these can be told from the pool's remote traceback
    (another pool, or another Python whose pool names its functions
    otherwise): the caller then searches for a culprit, to be safe.
    """
    tb = getattr(exc.__cause__, "tb", None)
    if not isinstance(tb, str):
        return "unknown"
    if "in _sendback_result" in tb:
        return "result"
    if "in _feed" in tb:
        return "call"
    if "in _process_worker" in tb:
        return "worker"
    return "unknown"


def explain_result(exc: BaseException, fn: object) -> BaseException:
    if isinstance(fn, ChunkCall):
        what = f"map's function ({safe_repr(fn.fn)}), in a chunk,"
    else:
        what = f"the function ({safe_repr(fn)})"
    return reworded(
        exc,
        f"{what} ran in the worker process, but what it returned (or raised) "
        f"cannot be pickled back to this process ({safe_str(exc)}): return "
        "picklable values (and raise picklable exceptions)",
    )


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
    names that object (a short, safe repr of it) and says why, with *exc* as
    its ``__cause__``. Otherwise *exc* is returned unchanged.
    """
    if not isinstance(exc, PICKLING_ERRORS):
        return exc
    for label, obj in _candidates(fn, args, kwargs):
        found = _culprit(label, obj)
        if found is None:
            continue
        where, culprit, error = found
        message = (
            f"cannot send {where} ({safe_repr(culprit)}) to a worker process: it "
            f"cannot be pickled ({safe_str(error)}). A process pool pickles the "
            "function and its arguments: use a function defined at the top "
            "level of an importable module (not a lambda or a local function) "
            "and picklable arguments, or a thread pool"
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
