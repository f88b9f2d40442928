"""The edge check in aiohttp over real HTTP (AppRunner on 127.0.0.1).

``edge_shedding_middleware`` (``setup(..., edge_paths=...)``) refuses before
the handler and the inner middlewares run when the executor cannot admit a
request, and only then; unmarked paths never see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from asyncio import FIRST_COMPLETED
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from aiohttp_app import create_app

from aiobound import BoundedLoopExecutor
from aiobound.aiohttp import (
    EXECUTOR_KEY,
    edge_shedding_middleware,
    get_executor,
    setup,
)
from conftest import Arrivals
from test_aiohttp import serve, session

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiohttp.typedefs import Handler

    from conftest import Gate, GateFactory

OVERLOADED = {"detail": "Service overloaded; retry later"}
CLOSED = {"detail": "Service shutting down; retry later"}


class EdgeApp:
    """``/gate/{v}`` and ``/post`` use the executor and are marked;
    ``/other/{v}`` uses it unmarked; ``/plain`` does not use it."""

    def __init__(self, gate: Gate[int], *, bound: int, max_pending: int) -> None:
        self.gate = gate  # what the handlers run; a test may swap it
        self.arrivals = Arrivals()
        self.seen: list[str] = []  # paths that reached the inner middleware
        app = self.app = web.Application()
        setup(
            app,
            functools.partial(
                BoundedLoopExecutor,
                max_workers=bound,
                bound=bound,
                max_pending=max_pending,
            ),
            retry_after=7,
            edge_paths=["/gate", "/post"],
        )

        @web.middleware
        async def inner(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.seen.append(request.path)
            return await handler(request)

        app.middlewares.append(inner)

        async def gated(request: web.Request) -> web.Response:
            self.arrivals.arrive()
            value = int(request.match_info.get("value") or (await request.json())["v"])
            value = await get_executor(request).run(self.gate, value)
            return web.json_response({"value": value})

        async def plain(request: web.Request) -> web.Response:
            return web.json_response({"plain": True})

        app.router.add_get("/gate/{value}", gated)
        app.router.add_post("/post", gated)
        app.router.add_get("/other/{value}", gated)
        app.router.add_get("/plain", plain)

    @property
    def executor(self) -> BoundedLoopExecutor:
        return self.app[EXECUTOR_KEY]


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, gates: GateFactory
) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """Serve *app*; open every gate before the server waits for its handlers
    (so that a failing test fails instead of hanging in the shutdown)."""
    async with serve(app) as server, session() as http:
        try:
            yield http, server.url
        finally:
            gates.open_all()


async def answer(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: object
) -> tuple[int, object, str | None]:
    async with http.request(method, url, **kwargs) as response:  # type: ignore[arg-type,unused-ignore]
        return (
            response.status,
            await response.json(),
            response.headers.get("Retry-After"),
        )


class TestEdgeSheddingMiddleware:
    async def test_it_never_refuses_what_the_executor_would_admit(
        self, make_gate: GateFactory
    ) -> None:
        edge = EdgeApp(make_gate(), bound=2, max_pending=2)
        async with serving(edge.app, make_gate) as (http, url):
            tasks = []
            verdicts = []
            for n in range(6):
                executor = edge.executor
                now, admit = executor.would_admit_now(), executor.can_admit()
                before = edge.arrivals.count
                task = asyncio.create_task(answer(http, "GET", f"{url}/gate/{n}"))
                reached = asyncio.create_task(edge.arrivals.reached(before + 1))
                await asyncio.wait({task, reached}, return_when=FIRST_COMPLETED)
                got_in = edge.arrivals.count > before
                if got_in:
                    tasks.append(task)
                else:
                    reached.cancel()
                    status, body, _ = await task
                    assert (status, body) == (503, OVERLOADED)
                verdicts.append((now, admit, got_in))
            assert verdicts == [
                (True, True, True),
                (True, True, True),
                (False, True, True),
                (False, True, True),
                (False, False, False),
                (False, False, False),
            ]
            stats = edge.executor.stats()
            assert (stats.in_flight, stats.waiting, stats.rejected) == (2, 2, 0)
            assert stats.shed_at_edge == 2  # each refusal at the edge, counted
            edge.gate.open()
            results = await asyncio.gather(*tasks)
            assert [body for _, body, _ in results] == [{"value": n} for n in range(4)]
            assert (await answer(http, "GET", f"{url}/gate/9"))[:2] == (
                200,
                {"value": 9},
            )

    async def test_a_refusal_runs_nothing_inside_and_unmarked_paths_pass(
        self, make_gate: GateFactory
    ) -> None:
        edge = EdgeApp(make_gate(), bound=1, max_pending=0)
        async with serving(edge.app, make_gate) as (http, url):
            running = asyncio.create_task(answer(http, "GET", f"{url}/gate/1"))
            await edge.gate.started(1)
            assert edge.seen == ["/gate/1"]
            for method, path in (("GET", "/gate/2"), ("POST", "/post")):
                status, body, retry_after = await answer(
                    http, method, f"{url}{path}", json={"v": 3}
                )
                assert (status, body, retry_after) == (503, OVERLOADED, "1")
            assert edge.seen == ["/gate/1"]  # nothing inside ran
            assert edge.arrivals.count == 1
            assert edge.executor.stats().rejected == 0
            assert edge.executor.stats().shed_at_edge == 2
            # Unmarked: the handler runs and the executor refuses (fallback).
            assert await answer(http, "GET", f"{url}/other/4") == (
                503,
                OVERLOADED,
                "7",
            )
            assert edge.executor.stats().rejected == 1
            assert (await answer(http, "GET", f"{url}/plain"))[:2] == (
                200,
                {"plain": True},
            )
            edge.gate.open()
            assert (await running)[:2] == (200, {"value": 1})

    async def test_retry_after_follows_the_recent_wait(
        self, make_gate: GateFactory
    ) -> None:
        edge = EdgeApp(make_gate(), bound=1, max_pending=1)
        app = edge.app
        # Replace setup's edge check with one whose minimum is 0 s.
        app.middlewares[0] = edge_shedding_middleware(
            paths=["/gate"], min_retry_after=0, max_retry_after=5
        )
        async with serving(app, make_gate) as (http, url):

            async def refused_retry_after() -> str | None:
                gate = edge.gate = make_gate()
                running = asyncio.create_task(answer(http, "GET", f"{url}/gate/1"))
                await gate.started(1)
                waiting = asyncio.create_task(answer(http, "GET", f"{url}/gate/2"))
                await edge.arrivals.reached(edge.arrivals.count + 1)
                status, _, retry_after = await answer(http, "GET", f"{url}/gate/3")
                assert status == 503
                gate.open()
                await asyncio.gather(running, waiting)
                return retry_after

            assert await refused_retry_after() == "0"  # nobody waited yet
            # One call waited: its wait, rounded up to whole seconds (1 s
            # unless this machine is very slow).
            recent = edge.executor.queue_wait_recent
            assert recent > 0.0
            assert await refused_retry_after() == str(min(5, math.ceil(recent)))

    async def test_a_closed_executor_is_refused_at_the_edge(
        self, make_gate: GateFactory
    ) -> None:
        edge = EdgeApp(make_gate(), bound=1, max_pending=4)
        async with serving(edge.app, make_gate) as (http, url):
            await edge.executor.aclose()
            assert (await answer(http, "GET", f"{url}/gate/1"))[:2] == (503, CLOSED)
            assert edge.seen == []

    async def test_without_an_executor_it_is_a_500(self) -> None:
        app = web.Application()
        app.middlewares.append(edge_shedding_middleware(paths=["/x"]))

        async def handler(request: web.Request) -> web.Response:
            return web.Response()  # pragma: no cover - the middleware raises

        app.router.add_get("/x", handler)
        async with (
            serve(app) as server,
            session() as http,
            http.get(f"{server.url}/x") as response,
        ):
            assert response.status == 500

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"paths": "/work"}, TypeError, "paths"),
            ({"paths": []}, ValueError, "paths"),
            ({"paths": ["/w"], "key": "k"}, TypeError, "key"),
            (
                {"paths": ["/w"], "min_retry_after": 3, "max_retry_after": 2},
                ValueError,
                "min_retry_after",
            ),
        ],
    )
    def test_bad_arguments_are_named(
        self, kwargs: dict[str, object], error: type[Exception], match: str
    ) -> None:
        with pytest.raises(error, match=match):
            edge_shedding_middleware(**kwargs)  # type: ignore[arg-type]

    def test_setup_checks_edge_paths(self) -> None:
        factory = functools.partial(BoundedLoopExecutor, max_workers=1)
        with pytest.raises(TypeError, match="paths"):
            setup(web.Application(), factory, edge_paths="/work")


class TestSubApps:
    @pytest.mark.parametrize(
        "prefixes", [("/sub",), ("/outer", "/sub")], ids=["sub-app", "nested"]
    )
    async def test_paths_are_the_sub_apps_own(
        self, make_gate: GateFactory, prefixes: tuple[str, ...]
    ) -> None:
        """In a sub-app's middlewares, ``/gate`` covers that sub-app's
        ``/gate``, served under its prefix: as the router matches it."""
        gate = make_gate()
        arrivals = Arrivals()
        root = web.Application()
        setup(
            root,
            functools.partial(
                BoundedLoopExecutor, max_workers=1, bound=1, max_pending=0
            ),
            retry_after=7,
        )
        sub = web.Application(middlewares=[edge_shedding_middleware(paths=["/gate"])])

        async def gated(request: web.Request) -> web.Response:
            arrivals.arrive()
            value = int(request.match_info["value"])
            value = await get_executor(request).run(gate, value)
            return web.json_response({"value": value})

        sub.router.add_get("/gate/{value}", gated)
        inner = sub
        for prefix in reversed(prefixes[1:]):  # the innermost first
            outer = web.Application()
            outer.add_subapp(prefix, inner)
            inner = outer
        root.add_subapp(prefixes[0], inner)
        base = "".join(prefixes)
        async with serving(root, make_gate) as (http, url):
            running = asyncio.create_task(answer(http, "GET", f"{url}{base}/gate/1"))
            await gate.started(1)
            # Refused at the edge (its Retry-After), not by the executor in
            # the handler (the shedding middleware's Retry-After: 7).
            refused = await answer(http, "GET", f"{url}{base}/gate/2")
            assert refused == (503, OVERLOADED, "1")
            assert arrivals.count == 1
            assert root[EXECUTOR_KEY].stats().rejected == 0
            gate.open()
            assert await running == (200, {"value": 1}, None)


class TestExampleApp:
    async def test_the_example_refuses_at_the_edge_only_with_edge(
        self, make_gate: GateFactory
    ) -> None:
        for edge, rejected, shed in ((True, 0, 1), (False, 1, 0)):
            gate = make_gate()
            app = create_app(workers=1, bound=1, max_pending=0, edge=edge, work=gate)
            async with serving(app, make_gate) as (http, url):
                running = asyncio.create_task(answer(http, "GET", f"{url}/work?ms=0"))
                await gate.started(1)
                status, body, retry_after = await answer(http, "GET", f"{url}/work")
                assert (status, body, retry_after) == (503, OVERLOADED, "1")
                _, stats, _ = await answer(http, "GET", f"{url}/stats")
                assert isinstance(stats, dict)
                assert (stats["rejected"], stats["shed_at_edge"]) == (rejected, shed)
                gate.open()
                assert (await running)[:2] == (200, {"slept_ms": 0.0})
