"""Starlette and FastAPI: one executor per app, and 503 when it is full.

Install with ``pip install 'aiobound[fastapi]'`` (plain Starlette works too;
nothing here imports FastAPI). Three pieces:

* :func:`executor_lifespan` creates the app's :class:`BoundedLoopExecutor`
  when the server starts and closes it when the server stops, and puts it in
  the lifespan state (:func:`executor_state` does the same inside a lifespan
  of your own);
* :func:`get_executor` hands it to an endpoint; in FastAPI it is a
  dependency: ``Annotated[BoundedLoopExecutor, Depends(get_executor)]``;
* :func:`add_exception_handlers` turns :class:`OverloadedError` (the waiting
  room is full) and :class:`ClosedError` (the app is shutting down) into
  ``503 Service Unavailable`` with a ``Retry-After`` header.

Shutdown order: uvicorn first stops listening, then waits for the requests in
flight, and only then runs the lifespan's exit, which closes the executor.
Requests that were accepted therefore finish; a request that still reaches
the executor after it closed (say, once uvicorn's
``timeout_graceful_shutdown`` ran out) gets a 503.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

# FastAPI reads get_executor's annotation at runtime to inject the request,
# so HTTPConnection must be importable from this module's globals.
from starlette.requests import HTTPConnection  # noqa: TC002
from starlette.responses import JSONResponse

from aiobound import BoundedLoopExecutor, ClosedError, OverloadedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = (
    "STATE_KEY",
    "add_exception_handlers",
    "executor_lifespan",
    "executor_state",
    "get_executor",
)

STATE_KEY = "aiobound_executor"
"""The lifespan-state key under which the app's executor is stored."""


@contextlib.asynccontextmanager
async def executor_state(
    executor: BoundedLoopExecutor,
) -> AsyncIterator[dict[str, BoundedLoopExecutor]]:
    """Own *executor* for the body of the block; yield its lifespan state.

    Use it inside a lifespan of your own and merge the state it yields into
    yours, so that :func:`get_executor` finds the executor::

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
            executor = BoundedLoopExecutor(max_workers=8, max_pending=64)
            async with executor_state(executor) as state:
                yield {**state, "db": db}

    On exit the executor is closed (:meth:`BoundedLoopExecutor.aclose`): new
    calls get :class:`ClosedError`, calls in flight are awaited and an owned
    pool is shut down.

    Cancellation: cancelling the exit leaves the executor closed, with its
    calls in flight still running.
    """
    async with executor:
        yield {STATE_KEY: executor}


def executor_lifespan(
    factory: Callable[[], BoundedLoopExecutor],
) -> Callable[[object], AbstractAsyncContextManager[dict[str, BoundedLoopExecutor]]]:
    """Return a lifespan that owns one executor per run of the app.

    Args:
        factory: Called at each startup to make the executor, e.g.
            ``functools.partial(BoundedLoopExecutor, max_workers=8,
            max_pending=64)``. A fresh executor per startup binds to the
            server's event loop, and an app can be started again (in tests)
            after the previous executor was closed.

    Pass the result as ``FastAPI(lifespan=...)`` or ``Starlette(lifespan=...)``.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[dict[str, BoundedLoopExecutor]]:
        async with executor_state(factory()) as state:
            yield state

    return lifespan


def get_executor(conn: HTTPConnection) -> BoundedLoopExecutor:
    """Return the executor of the app serving *conn* (a request or websocket).

    A FastAPI dependency as it stands: ``Depends(get_executor)``.

    Raises:
        RuntimeError: the app's lifespan did not provide an executor (use
            :func:`executor_lifespan` or :func:`executor_state`).
    """
    executor = getattr(conn.state, STATE_KEY, None)
    if not isinstance(executor, BoundedLoopExecutor):
        raise RuntimeError(
            f"no BoundedLoopExecutor in the lifespan state under {STATE_KEY!r}: "
            "create the app with lifespan=executor_lifespan(...), or yield the "
            "state of executor_state(...) from your own lifespan"
        )
    return executor


def add_exception_handlers(app: Starlette, *, retry_after: int = 1) -> None:
    """Answer :class:`OverloadedError` and :class:`ClosedError` with a 503.

    The response is ``503 Service Unavailable`` with ``Retry-After:
    <retry_after>`` and a JSON body ``{"detail": ...}`` (FastAPI's shape for
    errors). Nothing was submitted for such a request, so a client may safely
    retry it.

    Args:
        app: A ``Starlette`` or ``FastAPI`` application.
        retry_after: Seconds a client should wait before retrying (>= 0).

    Raises:
        ValueError: ``retry_after`` is negative.
        TypeError: ``retry_after`` is not an int.
    """
    if isinstance(retry_after, bool) or not isinstance(retry_after, int):
        raise TypeError(f"retry_after must be an int >= 0, got {retry_after!r}")
    if retry_after < 0:
        raise ValueError(f"retry_after must be an int >= 0, got {retry_after!r}")
    headers = {"Retry-After": str(retry_after)}

    async def overloaded(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"detail": "Service overloaded; retry later"}, 503, headers=headers
        )

    async def closed(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"detail": "Service shutting down; retry later"}, 503, headers=headers
        )

    app.add_exception_handler(OverloadedError, overloaded)
    app.add_exception_handler(ClosedError, closed)
