"""Starlette and FastAPI: one executor per app, and 503 when it is full.

Install with ``pip install 'aiobound[fastapi]'`` (plain Starlette works too;
nothing here imports FastAPI). Three pieces:

* :func:`executor_lifespan` creates the app's :class:`BoundedLoopExecutor`
  when the server starts and closes it when the server stops, and puts it in
  the lifespan state (:func:`executor_state` does the same inside a lifespan
  of your own); both take ``key=`` to store it under another name, so one
  app can own several executors;
* :func:`get_executor` hands it to an endpoint; in FastAPI it is a
  dependency: ``Annotated[BoundedLoopExecutor, Depends(get_executor)]``
  (:func:`executor_dependency` makes one for another key). Both are
  coroutine functions, so FastAPI calls them on the event loop, not in a
  worker thread;
* :func:`add_exception_handlers` turns :class:`OverloadedError` (the waiting
  room is full) and :class:`ClosedError` (the app is shutting down) into
  ``503 Service Unavailable`` with a ``Retry-After`` header, wherever in the
  app they are raised;
* :class:`EdgeSheddingMiddleware`, a pure ASGI middleware, answers the same
  503 before routing, body reading and dependencies, for the paths that use
  the executor, when the executor cannot admit a request now: a refusal that
  costs almost nothing under a flood. The exception handlers stay as the
  exact fallback.

Shutdown order: uvicorn first stops listening, then waits for the requests in
flight, and only then runs the lifespan's exit, which closes the executor.
Requests that were accepted therefore finish; a request that still reaches
the executor after it closed (say, once uvicorn's
``timeout_graceful_shutdown`` ran out) gets a 503.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

# FastAPI reads the dependencies' annotations at runtime to inject the
# request, so HTTPConnection must be importable from this module's globals.
from starlette.requests import HTTPConnection  # noqa: TC002
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Host, Mount

from aiobound import BoundedLoopExecutor

from ._http import (
    CLOSED_DETAIL,
    OVERLOADED_DETAIL,
    REFUSALS,
    STATUS,
    EdgeCheck,
    check_retry_after,
    refusal_body,
    refusal_headers,
    route_path,
)

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterator,
        Awaitable,
        Callable,
        Coroutine,
        Iterable,
        MutableMapping,
    )
    from contextlib import AbstractAsyncContextManager

    import starlette.types
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

__all__ = (
    "REFUSAL_RESPONSES",
    "STATE_KEY",
    "EdgeSheddingMiddleware",
    "add_exception_handlers",
    "executor_dependency",
    "executor_lifespan",
    "executor_state",
    "get_executor",
)

STATE_KEY = "aiobound_executor"
"""The default lifespan-state key under which the app's executor is stored."""

REFUSAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    STATUS: {
        "description": (
            "Refused: the waiting room is full or the service is shutting "
            "down. The refused call was not made; retry after Retry-After "
            "seconds if the request is idempotent."
        ),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 0},
            }
        },
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "detail": {
                            "type": "string",
                            "enum": [OVERLOADED_DETAIL, CLOSED_DETAIL],
                        }
                    },
                    "required": ["detail"],
                }
            }
        },
    }
}
"""The 503 of :func:`add_exception_handlers`, for FastAPI's OpenAPI schema.

Declare it where calls can be refused, for the whole app
(``FastAPI(responses=REFUSAL_RESPONSES)``) or per route
(``@app.get(..., responses=REFUSAL_RESPONSES)``), so that clients and schema
checkers know the answer. Copy it before changing it.
"""


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"key must be a non-empty str, got {key!r}")
    return key


@contextlib.asynccontextmanager
async def executor_state(
    executor: BoundedLoopExecutor, *, key: str = STATE_KEY
) -> AsyncIterator[dict[str, BoundedLoopExecutor]]:
    """Own *executor* for the body of the block; yield its lifespan state.

    Use it inside a lifespan of your own and merge the state it yields into
    yours, so that :func:`get_executor` (or :func:`executor_dependency`
    for another *key*) finds the executor::

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
            executor = BoundedLoopExecutor(max_workers=8, max_pending=64)
            async with executor_state(executor) as state:
                yield {**state, "db": db}

    Args:
        executor: The executor to own.
        key: The state key to store it under (default :data:`STATE_KEY`).

    On exit the executor is closed (:meth:`BoundedLoopExecutor.aclose`): new
    calls get :class:`ClosedError`, calls in flight are awaited and an owned
    pool is shut down.

    Raises:
        TypeError: *key* is not a non-empty str (raised on entering).

    Cancellation: cancelling the exit leaves the executor closed, with its
    calls in flight still running.
    """
    key = _check_key(key)
    async with executor:
        yield {key: executor}


def executor_lifespan(
    factory: Callable[[], BoundedLoopExecutor], *, key: str = STATE_KEY
) -> Callable[[object], AbstractAsyncContextManager[dict[str, BoundedLoopExecutor]]]:
    """Return a lifespan that owns one executor per run of the app.

    Args:
        factory: Called at each startup to make the executor, e.g.
            ``functools.partial(BoundedLoopExecutor, max_workers=8,
            max_pending=64)``. A fresh executor per startup binds to the
            server's event loop, and an app can be started again (in tests)
            after the previous executor was closed.
        key: The state key to store it under (default :data:`STATE_KEY`);
            endpoints get it with ``Depends(executor_dependency(key))``.

    Pass the result as ``FastAPI(lifespan=...)`` or ``Starlette(lifespan=...)``.

    Raises:
        TypeError: *key* is not a non-empty str.
    """
    key = _check_key(key)

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[dict[str, BoundedLoopExecutor]]:
        async with executor_state(factory(), key=key) as state:
            yield state

    return lifespan


def _lookup(conn: HTTPConnection, key: str) -> BoundedLoopExecutor:
    executor = getattr(conn.state, key, None)
    if not isinstance(executor, BoundedLoopExecutor):
        raise RuntimeError(_missing(key))
    return executor


def _missing(key: str) -> str:
    return (
        f"no BoundedLoopExecutor in the lifespan state under {key!r}: "
        f"create the app with lifespan=executor_lifespan(..., key={key!r}), "
        f"or yield the state of executor_state(..., key={key!r}) from your "
        "own lifespan"
    )


async def get_executor(conn: HTTPConnection) -> BoundedLoopExecutor:
    """Return the executor of the app serving *conn* (a request or websocket).

    A FastAPI dependency as it stands: ``Depends(get_executor)``. It is a
    coroutine function, so FastAPI runs it on the event loop; a plain
    ``def`` dependency would cost a trip through anyio's worker threads on
    every request. Outside FastAPI, ``await get_executor(request)``.

    Raises:
        RuntimeError: the app's lifespan did not provide an executor under
            :data:`STATE_KEY` (use :func:`executor_lifespan` or
            :func:`executor_state`).
    """
    return _lookup(conn, STATE_KEY)


def executor_dependency(
    key: str,
) -> Callable[[HTTPConnection], Coroutine[Any, Any, BoundedLoopExecutor]]:
    """Return a dependency that hands over the executor stored under *key*.

    For an app that owns several executors (one per backend, say)::

        files_lifespan = executor_lifespan(make_files_executor, key="files")
        Files = Annotated[BoundedLoopExecutor, Depends(executor_dependency("files"))]

    The dependency is a coroutine function, like :func:`get_executor`, and
    raises the same :class:`RuntimeError` when nothing is stored under *key*.

    Raises:
        TypeError: *key* is not a non-empty str.
    """
    key = _check_key(key)

    async def dependency(conn: HTTPConnection) -> BoundedLoopExecutor:
        return _lookup(conn, key)

    dependency.__name__ = dependency.__qualname__ = f"executor_dependency({key!r})"
    return dependency


def add_exception_handlers(app: Starlette, *, retry_after: int = 1) -> None:
    """Answer :class:`OverloadedError` and :class:`ClosedError` with a 503.

    The response is ``503 Service Unavailable`` with ``Retry-After:
    <retry_after>`` and a JSON body ``{"detail": ...}`` (FastAPI's shape for
    errors). The refused call was not submitted, but calls that the same
    request made before it may have run (and their effects stay): retrying
    is safe only for a handler that is idempotent.

    Where it applies:

    * raised in an endpoint or a dependency: answered by Starlette's
      exception handlers (registered here for both classes);
    * raised in a middleware (``app.add_middleware``, ``@app.middleware``),
      before or after this call: answered by the app's 500 handler, which
      this call installs (a 500 or ``Exception`` handler registered before
      is kept for every other error; the default plain 500 otherwise; one
      registered after this call replaces it, so register yours first).
      Starlette re-raises such an exception after answering, so the server
      logs it; with ``debug=True`` Starlette shows its traceback page
      instead;
    * raised in a Starlette or FastAPI app mounted (``app.mount``) before
      this call, at any depth: the same handlers are registered on it. For a
      sub-app mounted later, call this function on it too.

    Args:
        app: A ``Starlette`` or ``FastAPI`` application.
        retry_after: Seconds a client should wait before retrying (>= 0).

    Raises:
        ValueError: ``retry_after`` is negative.
        TypeError: ``retry_after`` is not an int.
    """
    headers = refusal_headers(check_retry_after(retry_after))

    async def refused(request: Request, exc: Exception) -> Response:
        return JSONResponse(refusal_body(exc), STATUS, headers=headers)

    for target in _apps_mounted_in(app):
        for cls in REFUSALS:
            target.add_exception_handler(cls, refused)
        _install_server_error_handler(target, refused)


def _apps_mounted_in(app: Starlette) -> list[Starlette]:
    """*app* and the Starlette apps mounted in it, at any depth.

    Follows ``Mount`` and ``Host`` routes, through routers too.
    """
    found: list[Starlette] = []
    seen: set[int] = set()
    pending: list[Any] = [app]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, Starlette):
            found.append(current)
        routes = getattr(current, "routes", None)
        if isinstance(routes, list):
            pending.extend(r.app for r in routes if isinstance(r, (Mount, Host)))
    return found


def _install_server_error_handler(
    app: Starlette, refused: Callable[[Request, Exception], Awaitable[Response]]
) -> None:
    """Make the app's outermost (500) handler answer refusals with a 503."""
    previous = app.exception_handlers.get(500) or app.exception_handlers.get(Exception)
    if getattr(previous, "_aiobound_refusals", False):
        # Already ours: replace it, keeping what it chained to.
        previous = getattr(previous, "_aiobound_previous", None)

    async def server_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, REFUSALS):
            return await refused(request, exc)
        if previous is None:
            return PlainTextResponse("Internal Server Error", status_code=500)
        response = previous(request, exc)
        if inspect.isawaitable(response):
            response = await response
        return response  # type: ignore[no-any-return]

    server_error._aiobound_refusals = True  # type: ignore[attr-defined]
    server_error._aiobound_previous = previous  # type: ignore[attr-defined]
    app.exception_handlers.pop(Exception, None)
    app.add_exception_handler(500, server_error)


_Message = dict[str, Any]


def _edge_answer(body: bytes, retry_after: int) -> tuple[_Message, _Message]:
    """The two ASGI messages of a refusal, built once and reused."""
    start: _Message = {
        "type": "http.response.start",
        "status": STATUS,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class EdgeSheddingMiddleware:
    """Refuse a request before routing when the executor cannot admit it.

    A pure ASGI middleware. For an HTTP request whose path falls under
    *paths*, it reads the app's executor from the lifespan state and, if
    :meth:`~aiobound.BoundedLoopExecutor.shed_at_edge` refuses it (a call
    arriving now would be refused at once: the waiting room is full, with
    ``max_pending`` callers waiting, or the executor is closed), answers
    ``503 Service Unavailable`` at once, without routing, reading the
    body or resolving dependencies, and without calling the app. The answer
    is the one of :func:`add_exception_handlers` (JSON ``{"detail": ...}``),
    prebuilt, with ``Retry-After`` derived from the executor's
    :attr:`~aiobound.BoundedLoopExecutor.queue_wait_recent`: rounded up to
    whole seconds, within ``[min_retry_after, max_retry_after]``.

    It is a pre-filter, not a second count: it takes no slot, and it never
    refuses a request the executor would admit at once (or let wait). A
    request it lets through can still be refused by the executor (the state
    may change before the endpoint submits, and ``max_wait`` still applies),
    so keep :func:`add_exception_handlers` as the exact fallback. Requests
    for other paths, websockets and lifespan events pass untouched. Each
    edge refusal is counted in ``stats().shed_at_edge`` (Prometheus
    ``aiobound_shed_at_edge_total``; OpenTelemetry's refusal counter with
    the reason ``edge``), not in ``rejected``: with ``rejected`` and
    ``timed_out``, the refusals in the endpoints, it adds up to the 503s
    the app sent for load.

    Add it with ``app.add_middleware(EdgeSheddingMiddleware, paths=[...])``
    (the last middleware added is the outermost, so add it last to refuse
    before the others run).

    Args:
        app: The ASGI app to wrap (passed by ``add_middleware``).
        paths: Path prefixes of the routes that use the executor, matched
            as the router matches routes: against ``scope["path"]`` without
            ``scope["root_path"]``, so the prefixes are the ones the routes
            are declared with, behind a proxy's prefix (uvicorn's
            ``--root-path``) and in a sub-app (``app.mount``) alike.
            ``/work`` covers ``/work`` and ``/work/...``, not ``/workers``;
            ``/`` covers every path.
        key: The lifespan-state key of the executor (default
            :data:`STATE_KEY`).
        min_retry_after: Lowest ``Retry-After``, in seconds (default 1).
        max_retry_after: Highest ``Retry-After``, in seconds (default 30).

    Raises:
        TypeError: ``paths`` is a str or holds a non-str, ``key`` is not a
            non-empty str, or a ``Retry-After`` bound is not an int.
        ValueError: ``paths`` is empty or a prefix does not start with
            ``/``, or the ``Retry-After`` bounds are negative or crossed.
        RuntimeError: at a request under *paths*, when the lifespan state
            holds no executor under *key* (the request then fails as the
            dependency would).
    """

    __slots__ = ("_check", "_key", "app")

    def __init__(
        self,
        app: starlette.types.ASGIApp,
        *,
        paths: Iterable[str],
        key: str = STATE_KEY,
        min_retry_after: int = 1,
        max_retry_after: int = 30,
    ) -> None:
        self.app = app
        self._key = _check_key(key)
        self._check: EdgeCheck[tuple[_Message, _Message]] = EdgeCheck(
            paths, min_retry_after, max_retry_after, _edge_answer
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a covered HTTP request the executor cannot admit; else pass."""
        if scope["type"] == "http" and self._check.covers(
            route_path(scope["path"], scope.get("root_path", ""))
        ):
            state: MutableMapping[str, Any] | None = scope.get("state")
            executor = None if state is None else state.get(self._key)
            if not isinstance(executor, BoundedLoopExecutor):
                raise RuntimeError(_missing(self._key))
            answer = self._check.refusal(executor)
            if answer is not None:
                start, body = answer
                # Copies: a middleware outside this one may edit the messages
                # it forwards (add a header, compress the body).
                await send({**start, "headers": start["headers"].copy()})
                await send(body.copy())
                return
        await self.app(scope, receive, send)
