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
    "DeadlineExceeded",
    "OverloadedError",
    "closed_before_start",
    "closed_on_arrival",
    "closed_while_waiting",
    "deadline_exceeded",
    "overloaded_after_wait",
    "overloaded_at_once",
    "safe_str",
)


class OverloadedError(RuntimeError):
    """Raised by ``submit``/``run``/``map`` when a call is refused for load.

    Two limits raise it: ``max_pending``, when that many callers already wait
    for a slot (the call is refused at once, without waiting), and
    ``max_wait``, when the call waited that many seconds without getting a
    slot (it is refused then, never earlier; a caller whose ``max_wait`` has
    passed is refused rather than admitted late).

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


class DeadlineExceeded(TimeoutError):
    """Raised in the caller when its call's deadline passes.

    A deadline is set per call, from the moment it is made (``submit``,
    ``run``, or a ``map`` item's pull), by ``call_timeout=`` or a view from
    ``with_timeout()``; it covers the wait for a slot and the run. Where the
    call was when its deadline passed is its :attr:`stage`:

    * ``"waiting"``: it had no slot yet; it left the waiting room, was never
      handed over and never runs.
    * ``"queued"``: it was in the pool's queue, not started; it was
      cancelled and never runs.
    * ``"running"``: it had started. A thread cannot be stopped: the caller
      is released, but the call goes on and holds its slot until it ends
      (``stats().abandoned``). A process pool made with
      ``kill_on_timeout=True`` stops the worker instead.

    A :class:`TimeoutError`, so ``except TimeoutError`` catches it (as it
    catches :func:`asyncio.timeout`'s). Not a refusal for load: the web
    integrations answer it with ``504 Gateway Timeout``.

    Attributes:
        stage: ``"waiting"``, ``"queued"`` or ``"running"``.
        timeout: The call's time limit, in seconds.
    """

    stage: str
    timeout: float

    def __init__(self, message: str, stage: str, timeout: float) -> None:
        super().__init__(message)
        self.stage = stage
        self.timeout = timeout

    def __reduce__(self) -> tuple[type[DeadlineExceeded], tuple[str, str, float]]:
        return type(self), (str(self), self.stage, self.timeout)


_STAGES = {
    "waiting": "waiting for a slot (it never ran)",
    "queued": "queued in the pool (it was cancelled and never ran)",
    "running": "running (it goes on in its worker, holding its slot, until it ends)",
    "stopped": "running (its worker was stopped and replaced)",
}


def deadline_exceeded(stage: str, timeout: float) -> DeadlineExceeded:
    """The error of a call whose deadline passed at *stage*.

    *stage* ``"stopped"`` is a running call whose worker was stopped; its
    error's :attr:`~DeadlineExceeded.stage` is ``"running"``.
    """
    error = DeadlineExceeded("", stage, timeout)
    restage(error, stage)
    return error


def restage(error: DeadlineExceeded, stage: str) -> None:
    """Set *error*'s stage (and message) to *stage*, before anyone reads it.

    For a call found running only after its error was set: its cancel
    failed, so it had started.
    """
    error.args = (
        f"deadline exceeded: {error.timeout:g} s passed while the call was "
        f"{_STAGES[stage]}",
    )
    error.stage = "running" if stage == "stopped" else stage


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
