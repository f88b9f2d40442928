"""The two errors aiobound raises of its own accord.

Both subclass :class:`RuntimeError`, as the standard library's
``cannot schedule new futures after shutdown`` error and
:class:`concurrent.futures.BrokenExecutor` do, so code that already treats an
executor's refusal as a ``RuntimeError`` keeps working. Errors raised by the
function you submit are never wrapped: they reach you unchanged.
"""

from __future__ import annotations

__all__ = (
    "ClosedError",
    "OverloadedError",
    "closed_before_start",
    "closed_on_arrival",
    "closed_while_waiting",
    "overloaded_after_wait",
    "overloaded_at_once",
    "safe_str",
)


class OverloadedError(RuntimeError):
    """Raised by ``submit``/``run``/``map`` when a call is refused for load.

    Two limits raise it: ``max_pending``, when that many callers already wait
    for a slot (the call is refused at once, without waiting), and
    ``max_wait``, when the call waited that many seconds without getting a
    slot (it is refused then, never earlier).

    This is load shedding, not a fault: the executor is healthy but every slot
    is taken, so the call is refused instead of queueing without limit.
    Nothing was submitted and no slot is held. A service usually turns it
    into ``503 Service Unavailable``.
    """


class ClosedError(RuntimeError):
    """Raised when a call is made on, or was waiting in, a closed executor.

    "Closed" means that *your* code called :meth:`BoundedLoopExecutor.aclose`
    or left its ``async with`` block. Coroutines that were waiting for a slot
    at that moment get this error too; nothing of theirs was submitted.
    """


# The sentences of ClosedError, one place for each moment it can happen.


def closed_on_arrival() -> ClosedError:
    """A call made after the executor was closed."""
    return ClosedError("cannot submit: the executor is closed")


def closed_while_waiting() -> ClosedError:
    """A call that was waiting for a slot or a turn when the executor closed."""
    return ClosedError("the executor was closed while this call waited")


def closed_before_start() -> ClosedError:
    """A submitted call that the close dropped before it started."""
    return ClosedError("the executor was closed before this call started")


# The sentences of OverloadedError: refused at once, or after max_wait.


def overloaded_at_once(
    waiting: int, max_pending: int, bound: int, in_use: int, where: str = ""
) -> OverloadedError:
    """The refusal of a caller that found ``max_pending`` waiting already."""
    return OverloadedError(
        f"overloaded: {waiting} callers{where} already wait for a slot "
        f"(max_pending={max_pending}, bound={bound}, in_flight={in_use})"
    )


def overloaded_after_wait(
    max_wait: float | None, bound: int, in_use: int, waiting: int, where: str = ""
) -> OverloadedError:
    """The refusal of a caller that waited ``max_wait`` without a slot."""
    return OverloadedError(
        f"overloaded: waited max_wait={max_wait}s for a slot{where} "
        f"(bound={bound}, in_flight={in_use}, waiting={waiting})"
    )


def safe_str(exc: BaseException, limit: int = 240) -> str:
    """``type: message`` of *exc*, never raising and never longer than *limit*.

    For messages that quote an error a user's code raised: its ``__str__``
    may fail or be huge.
    """
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:
        return name
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{name}: {text}" if text else name
