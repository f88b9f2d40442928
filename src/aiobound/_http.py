"""The refusal answer shared by the web integrations: 503 with Retry-After.

``aiobound.starlette`` and ``aiobound.aiohttp`` both turn
:class:`OverloadedError` and :class:`ClosedError` into the same response;
this module holds what that response is (status, texts, body, headers) and
the check of ``retry_after``, so that the two cannot drift apart. It imports
no web framework.
"""

from __future__ import annotations

from aiobound import ClosedError, OverloadedError

__all__ = (
    "CLOSED_DETAIL",
    "OVERLOADED_DETAIL",
    "REFUSALS",
    "STATUS",
    "check_retry_after",
    "refusal_body",
    "refusal_headers",
)

STATUS = 503
"""HTTP status of a refusal: ``503 Service Unavailable``."""

OVERLOADED_DETAIL = "Service overloaded; retry later"
"""``detail`` of the body when the waiting room is full (OverloadedError)."""

CLOSED_DETAIL = "Service shutting down; retry later"
"""``detail`` of the body when the executor was closed (ClosedError)."""

REFUSALS: tuple[type[Exception], ...] = (OverloadedError, ClosedError)
"""The exceptions answered with a 503."""


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
