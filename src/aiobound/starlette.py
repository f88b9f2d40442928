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
  exact fallback;
* :func:`bound_sync_endpoints`, called once the routes are declared, runs an
  existing app's sync ``def`` endpoints through the executor instead of
  anyio's thread pool, unchanged otherwise (:func:`bounded_route_class` does
  it for one router's routes).

Shutdown order: uvicorn first stops listening, then waits for the requests in
flight, and only then runs the lifespan's exit, which closes the executor.
Requests that were accepted therefore finish; a request that still reaches
the executor after it closed (say, once uvicorn's
``timeout_graceful_shutdown`` ran out) gets a 503.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

# FastAPI reads the dependencies' annotations at runtime to inject the
# request, so HTTPConnection must be importable from this module's globals.
from starlette.requests import HTTPConnection  # noqa: TC002
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Host, Mount, Route, Router

from aiobound import BoundedLoopExecutor

from ._http import (
    ANSWERED,
    CLOSED_DETAIL,
    DEADLINE_DETAIL,
    DEADLINE_STATUS,
    OVERLOADED_DETAIL,
    STATUS,
    EdgeCheck,
    answer,
    check_retry_after,
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
    from fastapi.routing import APIRoute
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

    from aiobound import Partition

    # What a twin awaits: (binding, endpoint, args, kwargs) -> the result.
    _Call = Callable[
        ["_Binding", Callable[..., Any], tuple[Any, ...], dict[str, Any]],
        Coroutine[Any, Any, Any],
    ]

__all__ = (
    "REFUSAL_RESPONSES",
    "STATE_KEY",
    "EdgeSheddingMiddleware",
    "add_exception_handlers",
    "bound_sync_endpoints",
    "bounded_route_class",
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
    },
    DEADLINE_STATUS: {
        "description": (
            "The service's time limit for this request passed (a call's "
            "deadline: call_timeout= or with_timeout()). Not a refusal for "
            "load; the call may have run."
        ),
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "detail": {"type": "string", "enum": [DEADLINE_DETAIL]}
                    },
                    "required": ["detail"],
                }
            }
        },
    },
}
"""The 503 and 504 of :func:`add_exception_handlers`, for FastAPI's schema.

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
    """Answer refusals with a 503, and a missed deadline with a 504.

    :class:`OverloadedError` and :class:`ClosedError` get ``503 Service
    Unavailable`` with ``Retry-After: <retry_after>`` and a JSON body
    ``{"detail": ...}`` (FastAPI's shape for errors). The refused call was
    not submitted, but calls that the same request made before it may have
    run (and their effects stay): retrying is safe only for a handler that
    is idempotent. :class:`~aiobound.DeadlineExceeded` (a call's time limit
    passed: ``call_timeout=`` or ``with_timeout()``) gets ``504 Gateway
    Timeout`` with the same kind of body and no ``Retry-After``: not a
    refusal for load, so the refusal counters do not count it (the
    ``deadline_*`` fields do).

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
        status, body, answer_headers = answer(exc, headers)
        return JSONResponse(body, status, headers=answer_headers)

    for target in _apps_mounted_in(app):
        for cls in ANSWERED:
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
        if isinstance(exc, ANSWERED):
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


# -- Sync endpoints through the executor (#28) ---------------------------------
#
# FastAPI and Starlette run a sync ``def`` endpoint with ``run_in_threadpool``:
# anyio's worker threads, 40 per loop, and a queue without limit in front of
# them. Neither offers a way to hand that call to another executor. So each
# sync endpoint is replaced by an async "twin" that awaits
# ``executor.run(endpoint, ...)``; FastAPI runs the twin on the loop as it runs
# any ``async def`` endpoint, and builds everything else (dependencies,
# validation, response model, OpenAPI operation) from it exactly as from the
# endpoint: it reads the parameters with ``inspect.signature``, which follows
# the twin's ``__wrapped__`` to the endpoint, and resolves string annotations
# in the function's globals, which are the endpoint's (FastAPI before 0.123.5
# reads the twin's own ``__globals__``, later ones those of the function
# ``__wrapped__`` leads to). A FastAPI route learns the executor of the
# request through a context variable its handler sets (``get_route_handler``,
# the hook FastAPI documents for custom route classes); a Starlette endpoint
# gets the request itself.

# What a twin carries: the key and partition it runs in (see _Binding).
_BINDING = "_aiobound_binding"
# The FastAPI versions this section was tested with (see the tests).
_FASTAPI_TESTED = "0.100.1, 0.136.1, 0.141.1 and 0.165.0"

_NOT_IN_A_REQUEST = object()
_request_state: contextvars.ContextVar[object] = contextvars.ContextVar(
    "aiobound_request_state", default=_NOT_IN_A_REQUEST
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Binding:
    """Where a bounded endpoint runs: the executor under *key*, a partition."""

    key: str
    partition: str | None

    def runner(self, state: object) -> BoundedLoopExecutor | Partition:
        """The executor (or its partition) in a request's lifespan *state*."""
        executor = state.get(self.key) if isinstance(state, Mapping) else None
        if not isinstance(executor, BoundedLoopExecutor):
            raise RuntimeError(_missing(self.key))
        # Deadlines (#26) plug in here: executor.with_timeout(seconds).
        if self.partition is None:
            return executor
        return executor.partition(self.partition)


def _binding(key: object, partition: object) -> _Binding:
    if partition is not None and (not isinstance(partition, str) or not partition):
        raise TypeError(f"partition must be a non-empty str or None, got {partition!r}")
    return _Binding(_check_key(key), partition)


def _is_sync_function(endpoint: object) -> bool:
    """Whether *endpoint* is a plain ``def`` (function or method).

    Coroutine functions already run on the loop; generator functions stream
    (FastAPI and Starlette iterate them in worker threads, item by item);
    partials and callable objects are left alone.
    """
    if not (inspect.isfunction(endpoint) or inspect.ismethod(endpoint)):
        return False
    return not any(
        inspect.iscoroutinefunction(fn)
        or inspect.isgeneratorfunction(fn)
        or inspect.isasyncgenfunction(fn)
        for fn in (endpoint, inspect.unwrap(endpoint))
    )


def _is_bounded(endpoint: object) -> bool:
    return isinstance(getattr(endpoint, _BINDING, None), _Binding)


def _twin(
    endpoint: Callable[..., Any], binding: _Binding, call: _Call
) -> Callable[..., Any]:
    """An async function that looks like *endpoint* and awaits *call*.

    Same name, qualified name, module, docstring, annotations and globals,
    and ``__wrapped__`` set to *endpoint*: every reading FastAPI makes of an
    endpoint gives the same answer for the twin, except that it is a
    coroutine function.
    """

    async def twin(*args: Any, **kwargs: Any) -> Any:
        # Closure variables only: this body runs with the endpoint's globals.
        return await call(binding, endpoint, args, kwargs)

    made = types.FunctionType(
        twin.__code__,
        endpoint.__globals__,
        twin.__name__,
        None,
        twin.__closure__,
    )
    functools.update_wrapper(made, endpoint)
    setattr(made, _BINDING, binding)
    return made


async def _call_for_route(
    binding: _Binding,
    endpoint: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a FastAPI endpoint in the executor of the request being served."""
    state = _request_state.get()
    if state is _NOT_IN_A_REQUEST:
        raise RuntimeError(
            f"{endpoint.__qualname__} was bounded by aiobound for a route and "
            "runs in the executor of the request the route serves: it was "
            "called outside a route made by bound_sync_endpoints or "
            "bounded_route_class"
        )
    return await binding.runner(state).run(endpoint, *args, **kwargs)


async def _call_with_request(
    binding: _Binding,
    endpoint: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a Starlette endpoint (``endpoint(request)``) in its app's executor."""
    (request,) = args
    return await binding.runner(request.scope.get("state")).run(endpoint, request)


_route_classes: dict[tuple[type, _Binding], type] = {}


def _route_class(base: type, binding: _Binding) -> type:
    """The route class that bounds *base*'s sync endpoints per *binding*.

    A subclass of *base* with no slot of its own, so that an existing route
    of class *base* can take it (:func:`bound_sync_endpoints`); made once
    per base and binding.
    """
    base = getattr(base, "_aiobound_base", base)
    made = _route_classes.get((base, binding))
    if made is not None:
        return made

    class BoundedRoute(base):  # type: ignore[misc]
        __slots__ = ()
        __doc__ = f"{base.__name__}, its sync endpoints run by aiobound's executor."
        _aiobound_base = base  # also marks the classes made here

        def __init__(
            self, path: str, endpoint: Callable[..., Any], **kwargs: Any
        ) -> None:
            if _is_sync_function(endpoint) and not _is_bounded(endpoint):
                endpoint = _twin(endpoint, binding, _call_for_route)
            super().__init__(path, endpoint, **kwargs)

        def get_route_handler(
            self,
        ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            """FastAPI's handler, run with the request's lifespan state at hand."""
            handler: Callable[[Request], Coroutine[Any, Any, Response]]
            handler = super().get_route_handler()

            async def with_state(request: Request) -> Response:
                token = _request_state.set(request.scope.get("state"))
                try:
                    return await handler(request)
                finally:
                    _request_state.reset(token)

            return with_state

    BoundedRoute.__name__ = BoundedRoute.__qualname__ = f"Bounded{base.__name__}"
    _route_classes[base, binding] = BoundedRoute
    return BoundedRoute


def bounded_route_class(
    *,
    key: str = STATE_KEY,
    partition: str | None = None,
    base: type[APIRoute] | None = None,
) -> type[APIRoute]:
    """Return a FastAPI route class that runs sync endpoints in the executor.

    For one router's routes, as they are declared::

        reports = APIRouter(route_class=bounded_route_class(partition="reports"))

    Each sync ``def`` path operation declared on that router then runs as
    :func:`bound_sync_endpoints` makes it run; the other routes are
    *base*'s. Calling this again with the same arguments returns the same
    class.

    Args:
        key: The lifespan-state key of the executor (default
            :data:`STATE_KEY`).
        partition: Run the endpoints in this partition of the executor
            (:meth:`~aiobound.BoundedLoopExecutor.partition`); ``None`` (the
            default): on the executor itself.
        base: The route class to extend (default FastAPI's ``APIRoute``),
            for a router that already has a route class of its own.

    Raises:
        TypeError: *key* is not a non-empty str, *partition* is neither
            ``None`` nor a non-empty str, or *base* is not a subclass of
            ``APIRoute``.
        ImportError: FastAPI is not installed.
    """
    from fastapi.routing import APIRoute

    binding = _binding(key, partition)
    if base is None:
        base = APIRoute
    candidate: object = base  # checked at run time, whatever the annotation
    if not (isinstance(candidate, type) and issubclass(candidate, APIRoute)):
        raise TypeError(f"base must be a subclass of fastapi's APIRoute, got {base!r}")
    made: type[APIRoute] = _route_class(base, binding)
    return made


def _own_init(cls: type, top: type) -> type | None:
    """The class between *cls* and *top* that defines its own ``__init__``."""
    for klass in cls.__mro__:
        if klass is top:
            return None
        if "__init__" in vars(klass) and "_aiobound_base" not in vars(klass):
            return klass
    return None  # pragma: no cover - top is always in the MRO


def _route_arguments(route: object, api_route: type) -> dict[str, Any]:
    """The keyword arguments that re-create *route* as FastAPI made it.

    FastAPI's ``APIRoute`` keeps each of its constructor's keyword arguments
    under the same name (its ``include_router`` re-created routes from them
    until 0.137); a version that stops doing so is refused here.
    """
    arguments: dict[str, Any] = {}
    for parameter in inspect.signature(api_route).parameters.values():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        try:
            arguments[parameter.name] = getattr(route, parameter.name)
        except AttributeError:
            raise RuntimeError(
                _unsupported_fastapi(
                    f"a route does not keep its {parameter.name!r} argument, so "
                    "bound_sync_endpoints cannot re-create it"
                )
            ) from None
    return arguments


def _unsupported_fastapi(what: str) -> str:
    import fastapi

    return (
        f"FastAPI {fastapi.__version__}: {what}; bound_sync_endpoints is "
        f"tested with FastAPI {_FASTAPI_TESTED}"
    )


def _describe(route: object) -> str:
    methods = sorted(getattr(route, "methods", None) or ())
    return f"{' '.join(methods)} {getattr(route, 'path', route)!r}".strip()


def _rebuild_api_route(
    route: APIRoute, binding: _Binding, api_route: type
) -> Callable[[], None]:
    """Check that *route* can be re-created; return what re-creates it."""
    own = _own_init(type(route), api_route)
    if own is not None:
        raise TypeError(
            f"cannot bound {_describe(route)}: its route class {own.__qualname__} "
            "has an __init__ of its own, which bound_sync_endpoints cannot call "
            "again with the arguments the route was made with; declare its "
            f"router with route_class=bounded_route_class(base={own.__name__})"
        )
    arguments = _route_arguments(route, api_route)
    cls: Any = _route_class(type(route), binding)

    def rebuild() -> None:
        # The route object stays (FastAPI from 0.137 on keeps included routes
        # whole and refers to them); its class gains the handler that sets the
        # request's state, and FastAPI's own constructor builds it again
        # around the twin.
        route.__class__ = cls
        cls.__init__(route, route.path, route.endpoint, **arguments)

    return rebuild


def _is_plain_request_response(app: object) -> bool:
    """Whether a Starlette route's ASGI app is ``request_response(endpoint)``."""
    return (
        getattr(app, "__module__", None) == "starlette.routing"
        and getattr(app, "__qualname__", None) == "request_response.<locals>.app"
    )


def _rebuild_route(route: Route, binding: _Binding) -> Callable[[], None]:
    """The same for a Starlette route whose endpoint is ``def f(request)``."""
    own = _own_init(type(route), Route)
    if own is not None or not _is_plain_request_response(route.app):
        raise TypeError(
            f"cannot bound {_describe(route)}: its endpoint is wrapped in route "
            "middleware (Route(middleware=..., max_body_size=...)) or its "
            "route class builds it its own way, which bound_sync_endpoints "
            "cannot rebuild; make that endpoint async and await "
            "executor.run(...) in it"
        )
    methods, name, in_schema = route.methods, route.name, route.include_in_schema

    def rebuild() -> None:
        twin = _twin(route.endpoint, binding, _call_with_request)
        Route.__init__(
            route,
            route.path,
            twin,
            methods=None if methods is None else sorted(methods),
            name=name,
            include_in_schema=in_schema,
        )

    return rebuild


def _routes_in(root: Starlette | Router) -> list[Any]:
    """Every route under *root*, through mounted apps, hosts, included routers.

    FastAPI from 0.137 on keeps an included router whole, behind a node of
    its own (``_IncludedRouter``, with ``original_router``), where earlier
    versions copied its routes into the including router.
    """
    found: list[Any] = []
    seen: set[int] = set()

    def visit(node: object) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for route in getattr(node, "routes", None) or ():
            included = getattr(route, "original_router", None)
            if isinstance(route, (Mount, Host)):
                visit(route)
            elif isinstance(included, Router):
                visit(included)
            elif id(route) not in seen:
                seen.add(id(route))
                found.append(route)

    visit(root)
    return found


def _left_in_threads(root: Starlette | Router, routing: types.ModuleType) -> list[str]:
    """The sync endpoints that FastAPI would still run in anyio's threads.

    Read through ``fastapi.routing.iter_route_contexts`` (FastAPI 0.137.2
    on), which lists what the app serves, included routers' routes as
    included; before it, the router's list is what is served, and every
    route of it was reached.
    """
    iter_route_contexts = getattr(routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        return []
    left: list[str] = []
    seen: set[int] = set()

    def visit(routes: Iterable[Any]) -> None:
        for context in iter_route_contexts(list(routes)):
            route = context.original_route
            if isinstance(route, (Mount, Host)):
                if id(route) not in seen:
                    seen.add(id(route))
                    visit(route.routes)
                continue
            if isinstance(route, routing.APIRoute):
                called = context.dependant.call
            else:
                called = getattr(context, "endpoint", None)
            if _is_sync_function(called) and not _is_bounded(called):
                left.append(_describe(context))

    visit(root.routes)
    return left


def bound_sync_endpoints(
    app: Starlette | Router,
    *,
    key: str = STATE_KEY,
    partition: str | None = None,
) -> int:
    """Run the app's sync ``def`` endpoints through its executor.

    Call it once the routes are declared (routers included, sub-apps
    mounted), before the app serves a request or builds its OpenAPI
    schema::

        app = FastAPI(lifespan=executor_lifespan(
            functools.partial(BoundedLoopExecutor, max_workers=8, max_pending=64)
        ))
        add_exception_handlers(app)
        ...  # the routes, as they are
        bound_sync_endpoints(app)

    Every sync endpoint found then runs with ``await executor.run(endpoint,
    ...)`` on the executor the lifespan stored under *key*, instead of in
    anyio's thread pool: at most ``bound`` at once, waiting FIFO for a slot,
    refused with :class:`~aiobound.OverloadedError` past ``max_pending``
    waiting or ``max_wait`` seconds (the 503 of :func:`add_exception_handlers`;
    :class:`EdgeSheddingMiddleware` refuses before routing as for any
    endpoint), counted in ``stats()`` and its metrics, alongside the calls of
    ``async`` endpoints on the same executor. Found are the sync endpoints of
    FastAPI path operations and Starlette routes (``def endpoint(request)``),
    in the app's routers, its included routers and its mounted Starlette and
    FastAPI apps.

    What FastAPI builds stays as it was: the endpoint's signature, path,
    query, body and header parameters and their validation, dependencies,
    response model, status code and the OpenAPI schema (identical before and
    after). What changes is what changes for an ``async def`` endpoint:
    FastAPI validates and serializes the return value on the event loop,
    not in a worker thread.

    Left where FastAPI and Starlette run them (anyio's thread pool, neither
    bounded nor counted): sync dependencies (``def`` functions in
    ``Depends``, with or without ``yield``), which run before the endpoint
    takes its slot, so a refused request has run them;
    sync ``BackgroundTasks``, which run after the response is sent, when a
    refusal could no longer reach the client; the items of a sync iterator
    streamed by a ``StreamingResponse``, after the endpoint that returned it
    has freed its slot; endpoints that are generator functions (they
    stream); partials and callable objects used as endpoints, websocket
    routes and Starlette's class-based ``HTTPEndpoint``.

    Args:
        app: A FastAPI or Starlette app, or a router (``APIRouter`` or
            Starlette's ``Router``): for a router in a partition of its own,
            call it on the router first, then on the app for the rest.
        key: The lifespan-state key of the executor (default
            :data:`STATE_KEY`).
        partition: Run the endpoints in this partition of the executor
            (:meth:`~aiobound.BoundedLoopExecutor.partition`); ``None`` (the
            default): on the executor itself. A name the executor does not
            have fails each request with the executor's ``KeyError``.

    Returns:
        How many endpoints it bounded now. An endpoint already bounded (by an
        earlier call or :func:`bounded_route_class`) keeps its key and
        partition and is not counted.

    Raises:
        TypeError: *app* is neither an app nor a router; *key* is not a
            non-empty str or *partition* neither ``None`` nor a non-empty
            str; or a route cannot be re-created (a route class with an
            ``__init__`` of its own, a Starlette route with route
            middleware). Nothing is changed then.
        RuntimeError: the FastAPI installed keeps routes in a way this
            function does not know, or has already built what it serves
            from a route (after a request, or ``app.openapi()``), so that a
            sync endpoint would still run in anyio's threads; it names them.

    On FastAPI before 0.137, ``include_router`` copies the router's routes
    into the app: bound a router before including it, or the app after.
    Each request finds the executor in its lifespan state, as
    :func:`get_executor` does, and fails with the same
    :class:`RuntimeError` when there is none. Tested with FastAPI
    0.100.1, 0.136.1, 0.141.1 and 0.165.0.

    Cancellation: a request cancelled while its endpoint waits for a slot
    (its client gone, under a server or middleware that cancels) submits
    nothing; one cancelled while the endpoint runs leaves it running, on its
    slot, until it returns, as anyio's thread pool leaves a started call.
    """
    binding = _binding(key, partition)
    if not isinstance(app, (Starlette, Router)):
        raise TypeError(
            f"app must be a Starlette or FastAPI app, or a router, got {app!r}"
        )
    routing: types.ModuleType | None
    try:
        from fastapi import routing
    except ImportError:  # pragma: no cover - the test group installs FastAPI
        routing = None
    rebuilds: list[Callable[[], None]] = []
    for route in _routes_in(app):
        endpoint = getattr(route, "endpoint", None)
        if not _is_sync_function(endpoint) or _is_bounded(endpoint):
            continue
        if routing is not None and isinstance(route, routing.APIRoute):
            rebuilds.append(_rebuild_api_route(route, binding, routing.APIRoute))
        elif isinstance(route, Route):
            rebuilds.append(_rebuild_route(route, binding))
    for rebuild in rebuilds:
        rebuild()
    if routing is not None:
        left = _left_in_threads(app, routing)
        if left:
            raise RuntimeError(
                _unsupported_fastapi(
                    f"these sync endpoints would still run in anyio's thread pool: "
                    f"{', '.join(left)}. FastAPI builds what it serves for an "
                    "included router's routes once, at the first request or "
                    "app.openapi(): call bound_sync_endpoints before either"
                )
            )
    return len(rebuilds)
