"""The refusal answer shared by the web integrations: 503 with Retry-After.

``aiobound.starlette`` and ``aiobound.aiohttp`` both turn
:class:`OverloadedError` and :class:`ClosedError` into the same response;
this module holds what that response is (status, texts, body, headers) and
the check of ``retry_after``, so that the two cannot drift apart; and the
edge check (:class:`EdgeCheck`): which paths it covers, whether the executor
refuses a request (counted as shed at the edge), and the prebuilt answer
with a ``Retry-After`` derived from the recent wait for a slot. It imports
no web framework.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from aiobound import (
    BoundedLoopExecutor,
    ClosedError,
    DeadlineExceeded,
    OverloadedError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = (
    "ANSWERED",
    "CLOSED_DETAIL",
    "DEADLINE_DETAIL",
    "DEADLINE_STATUS",
    "OVERLOADED_DETAIL",
    "REFUSALS",
    "STATUS",
    "EdgeCheck",
    "answer",
    "check_retry_after",
    "refusal_body",
    "refusal_headers",
    "retry_after_for",
    "route_path",
)

R = TypeVar("R")

STATUS = 503
"""HTTP status of a refusal: ``503 Service Unavailable``."""

OVERLOADED_DETAIL = "Service overloaded; retry later"
"""``detail`` of the body when the waiting room is full (OverloadedError)."""

CLOSED_DETAIL = "Service shutting down; retry later"
"""``detail`` of the body when the executor was closed (ClosedError)."""

REFUSALS: tuple[type[Exception], ...] = (OverloadedError, ClosedError)
"""The exceptions answered with a 503."""

DEADLINE_STATUS = 504
"""HTTP status of a call that missed its deadline: ``504 Gateway Timeout``."""

DEADLINE_DETAIL = "The service's time limit for this request passed"
"""``detail`` of the body when a call missed its deadline (DeadlineExceeded)."""

ANSWERED: tuple[type[Exception], ...] = (*REFUSALS, DeadlineExceeded)
"""The exceptions the web integrations answer: refusals and missed deadlines."""


def answer(
    exc: BaseException, refusal_headers: dict[str, str]
) -> tuple[int, dict[str, str], dict[str, str]]:
    """``(status, JSON body, headers)`` of the answer to one of :data:`ANSWERED`.

    A refusal is a 503 with *refusal_headers* (``Retry-After``); a missed
    deadline a 504 with none: the request was not refused for load, the
    service gave up on its own time limit (the call may have run, or run
    on: see :class:`~aiobound.DeadlineExceeded`).

    Raises:
        TypeError: *exc* is not one of :data:`ANSWERED`.
    """
    if isinstance(exc, DeadlineExceeded):
        return DEADLINE_STATUS, {"detail": DEADLINE_DETAIL}, {}
    return STATUS, refusal_body(exc), refusal_headers


def check_retry_after(retry_after: object) -> int:
    """Return *retry_after* if it is an int >= 0; else raise naming it.

    Raises:
        TypeError: ``retry_after`` is not an int (a bool is refused).
        ValueError: ``retry_after`` is negative.
    """
    if isinstance(retry_after, bool) or not isinstance(retry_after, int):
        raise TypeError(f"retry_after must be an int >= 0, got {retry_after!r}")
    if retry_after < 0:
        raise ValueError(f"retry_after must be an int >= 0, got {retry_after!r}")
    return retry_after


def refusal_headers(retry_after: int) -> dict[str, str]:
    """Return the headers of a refusal (``Retry-After``)."""
    return {"Retry-After": str(retry_after)}


def refusal_body(exc: BaseException) -> dict[str, str]:
    """Return the JSON body for the refusal *exc*: ``{"detail": ...}``.

    Raises:
        TypeError: *exc* is not one of :data:`REFUSALS`.
    """
    if isinstance(exc, OverloadedError):
        return {"detail": OVERLOADED_DETAIL}
    if isinstance(exc, ClosedError):
        return {"detail": CLOSED_DETAIL}
    raise TypeError(f"not a refusal: {exc!r}")


def retry_after_for(wait: float, lowest: int, highest: int) -> int:
    """*wait* seconds rounded up to a whole second, within [lowest, highest]."""
    if wait <= lowest:
        return lowest
    if wait >= highest:
        return highest
    return math.ceil(wait)


def route_path(path: str, root_path: str) -> str:
    """*path* as a router matches it: without the *root_path* it starts with.

    ``scope["path"]`` holds the whole path, ``root_path`` included: uvicorn
    puts a proxy's prefix (``--root-path``) back in front of it, and a
    ``Mount`` passes the whole path to its sub-app with the mount point in
    ``root_path``. Starlette's router strips ``root_path`` when the path
    starts with it and goes on with "/" (or ends there), and keeps the path
    whole otherwise; so does this function. aiohttp's sub-apps are matched
    the same way, with the sub-app's prefix as *root_path*.
    """
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    if not rest or rest[0] == "/":
        return rest
    return path


def check_paths(paths: object) -> tuple[str, ...]:
    """Return the path prefixes *paths* as a tuple; else raise naming it.

    Raises:
        TypeError: ``paths`` is a str, or not an iterable of str.
        ValueError: ``paths`` is empty, or a prefix does not start with "/".
    """
    if isinstance(paths, (str, bytes)) or not isinstance(paths, Iterable):
        raise TypeError(
            "paths must be an iterable of path prefixes such as ('/work',), "
            f"got {paths!r}"
        )
    prefixes = tuple(paths)
    if not prefixes:
        raise ValueError("paths must name at least one path prefix, got none")
    for prefix in prefixes:
        if not isinstance(prefix, str):
            raise TypeError(f"paths must hold str prefixes, got {prefix!r}")
        if not prefix.startswith("/"):
            raise ValueError(f"paths: a prefix must start with '/', got {prefix!r}")
    return prefixes


def check_retry_after_bounds(lowest: object, highest: object) -> tuple[int, int]:
    """Check ``min_retry_after`` and ``max_retry_after``; return them.

    Raises:
        TypeError: either is not an int (a bool is refused).
        ValueError: either is negative, or the minimum exceeds the maximum.
    """
    for name, value in (("min_retry_after", lowest), ("max_retry_after", highest)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int >= 0, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    assert isinstance(lowest, int)
    assert isinstance(highest, int)
    if lowest > highest:
        raise ValueError(f"min_retry_after={lowest} exceeds max_retry_after={highest}")
    return lowest, highest


class EdgeCheck(Generic[R]):
    """The edge check of one middleware: paths covered, verdict, answers.

    Args:
        paths: Path prefixes covered: a prefix ``/work`` covers ``/work``
            and ``/work/...``, not ``/workers``; ``/`` covers every path.
        min_retry_after: Lowest ``Retry-After``, in seconds.
        max_retry_after: Highest ``Retry-After``, in seconds.
        build: Makes a framework's answer from the JSON body and the
            ``Retry-After`` seconds; called once per distinct answer, which is
            then kept and reused.
    """

    __slots__ = ("_answers", "_build", "_exact", "_highest", "_lowest", "_under")

    def __init__(
        self,
        paths: object,
        min_retry_after: object,
        max_retry_after: object,
        build: Callable[[bytes, int], R],
    ) -> None:
        prefixes = check_paths(paths)
        self._lowest, self._highest = check_retry_after_bounds(
            min_retry_after, max_retry_after
        )
        stripped = {p.rstrip("/") for p in prefixes}
        # "/" (stripped to "") covers everything: every path starts with "/",
        # and "" is the route path of a request for the root path itself.
        self._exact = frozenset(stripped)
        self._under = tuple(sorted(p + "/" for p in stripped))
        self._build = build
        self._answers: dict[tuple[bool, int], R] = {}

    @property
    def retry_after_bounds(self) -> tuple[int, int]:
        """``(min_retry_after, max_retry_after)``."""
        return self._lowest, self._highest

    def covers(self, path: str) -> bool:
        """Whether the check applies to a request for *path*.

        *path* is the route path, as the router matches it (see
        :func:`route_path`).
        """
        return path in self._exact or path.startswith(self._under)

    def refusal(self, executor: BoundedLoopExecutor) -> R | None:
        """The prebuilt 503 if *executor* cannot admit a call now, else None.

        O(1): :meth:`~aiobound.BoundedLoopExecutor.shed_at_edge`, which
        counts a refusal in ``stats().shed_at_edge`` and tells the
        executor's observer, and a dictionary lookup for the answer (built
        on first use for each ``Retry-After`` value).
        """
        if not executor.shed_at_edge():
            return None
        closed = executor.closed
        seconds = retry_after_for(
            executor.queue_wait_recent, self._lowest, self._highest
        )
        answer = self._answers.get((closed, seconds))
        if answer is None:
            detail = CLOSED_DETAIL if closed else OVERLOADED_DETAIL
            body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
            answer = self._answers[closed, seconds] = self._build(body, seconds)
        return answer
