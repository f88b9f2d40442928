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
and closes it on cleanup, and :func:`shedding_middleware`, which turns
:class:`OverloadedError` and :class:`ClosedError` into ``503 Service
Unavailable`` with ``Retry-After``.

Shutdown order: ``AppRunner.cleanup()`` (and ``web.run_app`` on SIGINT or
SIGTERM) stops listening, runs ``on_shutdown``, waits up to its
``shutdown_timeout`` for the handlers in flight, and only then runs the
cleanup contexts, which close the executor. Accepted requests therefore
finish. Do not close the executor in ``on_shutdown``: that runs *before* the
handlers in flight are done, and they would get 503s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from aiobound import BoundedLoopExecutor, ClosedError, OverloadedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aiohttp.typedefs import Handler, Middleware

__all__ = (
    "EXECUTOR_KEY",
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
        raise RuntimeError(
            f"no BoundedLoopExecutor stored under {key!r}: call "
            "aiobound.aiohttp.setup(app, ...) or add executor_context(...) to "
            "app.cleanup_ctx"
        ) from None


def shedding_middleware(*, retry_after: int = 1) -> Middleware:
    """Return a middleware that answers overload and shutdown with a 503.

    :class:`OverloadedError` (the waiting room is full) and
    :class:`ClosedError` (the executor was closed: the app is shutting down)
    raised by a handler become ``503 Service Unavailable`` with ``Retry-After:
    <retry_after>`` and a JSON body ``{"detail": ...}``. Nothing was
    submitted for such a request, so a client may safely retry it.

    Args:
        retry_after: Seconds a client should wait before retrying (>= 0).

    Raises:
        TypeError: ``retry_after`` is not an int.
        ValueError: ``retry_after`` is negative.
    """
    if isinstance(retry_after, bool) or not isinstance(retry_after, int):
        raise TypeError(f"retry_after must be an int >= 0, got {retry_after!r}")
    if retry_after < 0:
        raise ValueError(f"retry_after must be an int >= 0, got {retry_after!r}")
    headers = {"Retry-After": str(retry_after)}

    @web.middleware
    async def shed(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except OverloadedError:
            detail = "Service overloaded; retry later"
        except ClosedError:
            detail = "Service shutting down; retry later"
        return web.json_response({"detail": detail}, status=503, headers=headers)

    return shed


def setup(
    app: web.Application,
    factory: Callable[[], BoundedLoopExecutor],
    *,
    retry_after: int = 1,
) -> None:
    """Give *app* its own executor and answer overload with a 503.

    Appends :func:`executor_context` (with :data:`EXECUTOR_KEY`) to
    ``app.cleanup_ctx`` and :func:`shedding_middleware` to
    ``app.middlewares``. Call it before the app starts.
    """
    app.middlewares.append(shedding_middleware(retry_after=retry_after))
    app.cleanup_ctx.append(executor_context(factory))
