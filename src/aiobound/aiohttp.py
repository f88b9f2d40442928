"""aiohttp: one executor per app, and 503 when it is full.

Install with ``pip install 'aiobound[aiohttp]'``. The short way is
:func:`setup`::

    app = web.Application()
    setup(app, functools.partial(BoundedLoopExecutor, max_workers=8, max_pending=64))

    async def handler(request: web.Request) -> web.Response:
        value = await get_executor(request).run(blocking_query, request.query["q"])
        ...

It is made of two parts you can also use alone: :func:`executor_context`, an
``app.cleanup_ctx`` entry that stores the executor under :data:`EXECUTOR_KEY`
(or another ``key=``) and closes it on cleanup, and
:func:`shedding_middleware`, which turns :class:`OverloadedError` and
:class:`ClosedError` into ``503 Service Unavailable`` with ``Retry-After``.
A third, :func:`edge_shedding_middleware` (``setup(..., edge_paths=...)``),
answers that 503 before the handler runs and before the body is read, for
the paths that use the executor, when the executor cannot admit a request
now: a refusal that costs almost nothing under a flood.

Middleware order: aiohttp runs ``app.middlewares`` first to last, the first
one outermost, and a parent app's middlewares around those of its sub-apps.
:func:`setup` puts the shedding middleware *first*, so it also answers a
refusal raised in any middleware of the app or of its sub-apps (an
authentication middleware that looks a token up through the executor, say).
Insert your own at position 0 after calling :func:`setup` only if it must run
outside the shedding, and then its own refusals are not answered.

Shutdown order: ``AppRunner.cleanup()`` (and ``web.run_app`` on SIGINT or
SIGTERM) stops listening, runs ``on_shutdown``, waits up to its
``shutdown_timeout`` for the handlers in flight, and only then runs the
cleanup contexts, which close the executor. Accepted requests therefore
finish. Do not close the executor in ``on_shutdown``: that runs *before* the
handlers in flight are done, and they would get 503s.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from aiohttp import web

from aiobound import BoundedLoopExecutor

from ._http import (
    ANSWERED,
    STATUS,
    EdgeCheck,
    answer,
    check_retry_after,
    refusal_headers,
    route_path,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

    from aiohttp.typedefs import Handler, Middleware

__all__ = (
    "EXECUTOR_KEY",
    "edge_shedding_middleware",
    "executor_context",
    "get_executor",
    "setup",
    "shedding_middleware",
)

EXECUTOR_KEY = web.AppKey("aiobound_executor", BoundedLoopExecutor)
"""The application key under which the app's executor is stored."""


def executor_context(
    factory: Callable[[], BoundedLoopExecutor],
    *,
    key: web.AppKey[BoundedLoopExecutor] = EXECUTOR_KEY,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Return an ``app.cleanup_ctx`` entry that owns one executor per run.

    At startup it calls *factory* and stores the executor as ``app[key]``; at
    cleanup it closes it (:meth:`BoundedLoopExecutor.aclose`): new calls get
    :class:`ClosedError`, calls in flight are awaited and an owned pool is
    shut down.

    Args:
        factory: Makes the executor, e.g. ``functools.partial(
            BoundedLoopExecutor, max_workers=8, max_pending=64)``. Called at
            each startup, so the executor binds to the server's event loop.
        key: Where to store it; another key lets one app own several
            executors (one per backend, say).
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with factory() as executor:
            app[key] = executor
            yield

    return context


def get_executor(
    request: web.Request, *, key: web.AppKey[BoundedLoopExecutor] = EXECUTOR_KEY
) -> BoundedLoopExecutor:
    """Return the executor stored under *key* by this app or a parent app.

    Raises:
        RuntimeError: no executor was stored (use :func:`setup` or
            :func:`executor_context`).
    """
    try:
        return request.config_dict[key]
    except KeyError:
        raise RuntimeError(_missing(key)) from None


def _missing(key: web.AppKey[BoundedLoopExecutor]) -> str:
    return (
        f"no BoundedLoopExecutor stored under {key!r}: call "
        "aiobound.aiohttp.setup(app, ...) or add executor_context(...) to "
        "app.cleanup_ctx"
    )


def _check_app_key(key: object) -> web.AppKey[BoundedLoopExecutor]:
    if not isinstance(key, web.AppKey):
        raise TypeError(f"key must be an aiohttp.web.AppKey, got {key!r}")
    return key


def _edge_answer(body: bytes, retry_after: int) -> tuple[bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json", "Retry-After": str(retry_after)}
    return body, headers


def edge_shedding_middleware(
    *,
    paths: Iterable[str],
    key: web.AppKey[BoundedLoopExecutor] = EXECUTOR_KEY,
    min_retry_after: int = 1,
    max_retry_after: int = 30,
) -> Middleware:
    """Return a middleware that refuses early when the executor is full.

    For a request whose path falls under *paths*, it reads the executor and,
    if :meth:`~aiobound.BoundedLoopExecutor.shed_at_edge` refuses it (a call
    arriving now would be refused at once: the waiting room is full, with
    ``max_pending`` callers waiting, or the executor is closed), answers
    ``503 Service Unavailable`` at once, without calling the handler
    or the middlewares inside it; the request body is never read. The
    answer is the one of :func:`shedding_middleware` (JSON
    ``{"detail": ...}``), with ``Retry-After`` derived from the executor's
    :attr:`~aiobound.BoundedLoopExecutor.queue_wait_recent`: rounded up to
    whole seconds, within ``[min_retry_after, max_retry_after]``.

    It is a pre-filter, not a second count: it takes no slot, and it never
    refuses a request the executor would admit at once (or let wait). A
    request it lets through can still be refused by the executor (the state
    may change before the handler submits, and ``max_wait`` still applies),
    so keep :func:`shedding_middleware` as the exact fallback. Requests for
    other paths pass untouched. Each edge refusal is counted in
    ``stats().shed_at_edge`` (Prometheus ``aiobound_shed_at_edge_total``;
    OpenTelemetry's refusal counter with the reason ``edge``), not in
    ``rejected``: with ``rejected`` and ``timed_out``, the refusals in the
    handlers, it adds up to the 503s the app sent for load.

    Put it first in ``app.middlewares`` (outermost), as ``setup(...,
    edge_paths=...)`` does, so that no other middleware runs for a refused
    request.

    Args:
        paths: Path prefixes of the routes that use the executor, as the
            routes of the app whose middleware it is are declared: in a
            sub-app (``add_subapp``), ``/work`` covers the sub-app's
            ``/work``, served under its prefix. ``/work`` covers ``/work``
            and ``/work/...``, not ``/workers``; ``/`` covers every path.
        key: Where the executor is stored (default :data:`EXECUTOR_KEY`).
        min_retry_after: Lowest ``Retry-After``, in seconds (default 1).
        max_retry_after: Highest ``Retry-After``, in seconds (default 30).

    Raises:
        TypeError: ``paths`` is a str or holds a non-str, ``key`` is not a
            ``web.AppKey``, or a ``Retry-After`` bound is not an int.
        ValueError: ``paths`` is empty or a prefix does not start with
            ``/``, or the ``Retry-After`` bounds are negative or crossed.
        RuntimeError: at a request under *paths*, when no executor is stored
            under *key* (the request then fails as :func:`get_executor`
            would).
    """
    key = _check_app_key(key)
    check: EdgeCheck[tuple[bytes, dict[str, str]]] = EdgeCheck(
        paths, min_retry_after, max_retry_after, _edge_answer
    )
    covers = check.covers
    refusal = check.refusal
    # The prefix each app using this middleware is served under ("" for the
    # main app), found once per app: the routes are frozen once it runs.
    prefixes: dict[web.Application, str] = {}

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        app = request.app  # the app whose middlewares run now
        prefix = prefixes.get(app)
        if prefix is None:
            prefix = prefixes[app] = _prefix_of(app, request.match_info.apps)
        if covers(route_path(request.path, prefix)):
            # The app's own mapping first (one dict lookup); the chain of
            # parent apps only for a sub-app's request.
            executor = request.app.get(key)
            if executor is None:
                try:
                    executor = request.config_dict[key]
                except KeyError:
                    raise RuntimeError(_missing(key)) from None
            answer = refusal(executor)
            if answer is not None:
                body, headers = answer
                return web.Response(status=STATUS, body=body, headers=headers)
        return await handler(request)

    return edge


def _prefix_of(app: web.Application, apps: Sequence[web.Application]) -> str:
    """The path prefix *app* is served under, in the chain *apps* (main first).

    A sub-app's routes carry its whole prefix once it is added
    (``add_subapp``), its parents' prefixes included, and so does the
    resource that mounts it in its parent's router. A sub-app matched by
    domain (``add_domain``) has none.
    """
    for parent, child in itertools.pairwise(apps):
        if child is app:
            for resource in parent.router.resources():
                info = resource.get_info()
                if isinstance(resource, web.PrefixedSubAppResource) and (
                    info.get("app") is app
                ):
                    return info.get("prefix", "")
    return ""


def shedding_middleware(*, retry_after: int = 1) -> Middleware:
    """Return a middleware that answers overload and shutdown with a 503.

    :class:`OverloadedError` (the waiting room is full) and
    :class:`ClosedError` (the executor was closed: the app is shutting down)
    raised by a handler, or by a middleware that runs inside this one, become
    ``503 Service Unavailable`` with ``Retry-After: <retry_after>`` and a
    JSON body ``{"detail": ...}``. The refused call was not submitted, but
    calls that the same request made before it may have run (and their
    effects stay): retrying is safe only for a handler that is idempotent.
    :class:`~aiobound.DeadlineExceeded` (a call's time limit passed) becomes
    ``504 Gateway Timeout`` with the same kind of body, no ``Retry-After``.

    Put it first in ``app.middlewares`` (outermost), as :func:`setup` does,
    so that it covers every other middleware.

    Args:
        retry_after: Seconds a client should wait before retrying (>= 0).

    Raises:
        TypeError: ``retry_after`` is not an int.
        ValueError: ``retry_after`` is negative.
    """
    headers = refusal_headers(check_retry_after(retry_after))

    @web.middleware
    async def shed(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ANSWERED as exc:
            status, body, answer_headers = answer(exc, headers)
        return web.json_response(body, status=status, headers=answer_headers)

    return shed


def setup(
    app: web.Application,
    factory: Callable[[], BoundedLoopExecutor],
    *,
    retry_after: int = 1,
    key: web.AppKey[BoundedLoopExecutor] = EXECUTOR_KEY,
    edge_paths: Iterable[str] | None = None,
) -> None:
    """Give *app* its own executor and answer overload with a 503.

    Appends :func:`executor_context` (with *key*) to ``app.cleanup_ctx`` and
    inserts :func:`shedding_middleware` *first* in ``app.middlewares``, so
    that it is the outermost and also answers refusals raised in the app's
    other middlewares (see the module's note on order). With *edge_paths*,
    it also inserts :func:`edge_shedding_middleware` (default ``Retry-After``
    bounds) before it, the outermost of all. Call it before the app starts;
    call it once per app (a second executor is one more
    :func:`executor_context` entry with another key).

    Args:
        app: The application.
        factory: Makes the executor at each startup.
        retry_after: Seconds a client should wait before retrying (>= 0).
        key: Where to store the executor (default :data:`EXECUTOR_KEY`);
            handlers get it with ``get_executor(request, key=key)``.
        edge_paths: Path prefixes of the routes that use the executor, for
            the edge check (``None``, the default: no edge check).

    Raises:
        TypeError: ``retry_after`` is not an int, *key* is not a
            ``web.AppKey``, or *edge_paths* is a str or holds a non-str.
        ValueError: ``retry_after`` is negative, or *edge_paths* is empty or
            holds a prefix that does not start with ``/``.
    """
    key = _check_app_key(key)
    shedding = shedding_middleware(retry_after=retry_after)
    edge = None
    if edge_paths is not None:
        edge = edge_shedding_middleware(paths=edge_paths, key=key)
    app.middlewares.insert(0, shedding)
    if edge is not None:
        app.middlewares.insert(0, edge)
    app.cleanup_ctx.append(executor_context(factory, key=key))
