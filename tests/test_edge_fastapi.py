"""The edge check in FastAPI over real HTTP (uvicorn on 127.0.0.1, httpx).

``EdgeSheddingMiddleware`` refuses before anything inside it runs when the
executor cannot admit a request, and only then; unmarked paths never see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from asyncio import FIRST_COMPLETED
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi_app import create_app
from starlette.requests import Request  # noqa: TC002 - FastAPI reads it

from aiobound import BoundedLoopExecutor
from aiobound.starlette import (
    EdgeSheddingMiddleware,
    add_exception_handlers,
    executor_lifespan,
    get_executor,
)
from conftest import Arrivals
from test_fastapi import client, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping

    import httpx
    from starlette.types import ASGIApp, Receive, Scope, Send

    from conftest import Gate, GateFactory

Executor = Annotated[BoundedLoopExecutor, Depends(get_executor)]
OVERLOADED = {"detail": "Service overloaded; retry later"}
CLOSED = {"detail": "Service shutting down; retry later"}


class Inner:
    """A pure ASGI middleware inside the edge check: counts what reaches it."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


class EdgeApp:
    """``/gate/{v}`` and ``/post`` use the executor and are marked;
    ``/other/{v}`` uses it unmarked; ``/plain`` does not use it."""

    def __init__(
        self,
        gate: Gate[int],
        *,
        bound: int,
        max_pending: int,
        min_retry_after: int = 1,
        max_retry_after: int = 30,
    ) -> None:
        self.gate = gate  # what the endpoints run; a test may swap it
        self.arrivals = Arrivals()
        self.resolved = 0  # times the marked routes' dependency ran
        self.seen: list[str] = []  # paths that reached the inner middleware
        self.executors: list[BoundedLoopExecutor] = []
        self._factory = functools.partial(
            BoundedLoopExecutor, max_workers=bound, bound=bound, max_pending=max_pending
        )
        app = self.app = FastAPI(lifespan=executor_lifespan(self._make_executor))
        add_exception_handlers(app, retry_after=7)
        arrivals = self.arrivals

        app.state.edge = self

        @app.get("/gate/{value}")
        async def gated(executor: Counted, value: int) -> dict[str, int]:
            arrivals.arrive()
            return {"value": await executor.run(self.gate, value)}

        @app.post("/post")
        async def post(executor: Counted, body: dict[str, int]) -> dict[str, int]:
            arrivals.arrive()  # pragma: no cover - only reached when admitted
            return {
                "value": await executor.run(self.gate, body["value"])
            }  # pragma: no cover

        @app.get("/other/{value}")
        async def other(executor: Executor, value: int) -> dict[str, int]:
            arrivals.arrive()
            return {"value": await executor.run(self.gate, value)}

        @app.get("/plain")
        async def plain() -> dict[str, bool]:
            return {"plain": True}

        app.add_middleware(Inner, seen=self.seen)
        app.add_middleware(
            EdgeSheddingMiddleware,
            paths=["/gate", "/post"],
            min_retry_after=min_retry_after,
            max_retry_after=max_retry_after,
        )

    def _make_executor(self) -> BoundedLoopExecutor:
        self.executors.append(self._factory())
        return self.executors[-1]

    @property
    def executor(self) -> BoundedLoopExecutor:
        return self.executors[-1]


async def counted(request: Request, executor: Executor) -> BoundedLoopExecutor:
    """The marked routes' dependency: counts how often it is resolved."""
    request.app.state.edge.resolved += 1
    return executor


Counted = Annotated[BoundedLoopExecutor, Depends(counted)]


@contextlib.asynccontextmanager
async def serving(
    app: FastAPI, gates: GateFactory, *, root_path: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    """Serve *app*; open every gate before the server waits for its requests
    (so that a failing test fails instead of hanging in the shutdown)."""
    async with serve(app, root_path=root_path) as (_, url), client(url) as http:
        try:
            yield http
        finally:
            gates.open_all()


class TestEdgeSheddingMiddleware:
    async def test_it_never_refuses_what_the_executor_would_admit(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        edge = EdgeApp(gate, bound=2, max_pending=2)
        async with serving(edge.app, make_gate) as http:
            await http.get("/plain")  # the lifespan has made the executor
            tasks: list[asyncio.Task[httpx.Response]] = []
            verdicts: list[tuple[bool, bool, bool]] = []
            for n in range(6):
                executor = edge.executor
                now, admit = executor.would_admit_now(), executor.can_admit()
                before = edge.arrivals.count
                task = asyncio.create_task(http.get(f"/gate/{n}"))
                # Either the endpoint is reached, or the answer comes first.
                reached = asyncio.create_task(edge.arrivals.reached(before + 1))
                await asyncio.wait({task, reached}, return_when=FIRST_COMPLETED)
                got_in = edge.arrivals.count > before
                if got_in:
                    tasks.append(task)
                else:
                    reached.cancel()
                    assert (await task).json() == OVERLOADED
                verdicts.append((now, admit, got_in))
            # Two slots, two places to wait, then refusals at the edge: each
            # request the executor would take (at once or to wait) got in.
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
            gate.open()
            responses = await asyncio.gather(*tasks)
            assert [r.json()["value"] for r in responses] == [0, 1, 2, 3]
            # Room again: admitted at once.
            assert (await http.get("/gate/9")).json() == {"value": 9}

    async def test_a_refusal_runs_nothing_inside_and_reads_no_body(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        edge = EdgeApp(gate, bound=1, max_pending=0, min_retry_after=3)
        async with serving(edge.app, make_gate) as http:
            running = asyncio.create_task(http.get("/gate/1"))
            await gate.started(1)
            assert (edge.seen, edge.resolved) == (["/gate/1"], 1)

            got = await http.get("/gate/2")
            posted = await http.post("/post", json={"value": 3})
            for response in (got, posted):
                assert response.status_code == 503
                assert response.headers["Retry-After"] == "3"
                assert response.headers["Content-Type"] == "application/json"
                assert response.json() == OVERLOADED
            # Neither reached the middleware inside, routing, the dependency
            # or the executor (which would have counted a rejection).
            assert (edge.seen, edge.resolved) == (["/gate/1"], 1)
            assert edge.executor.stats().rejected == 0
            assert edge.executor.stats().shed_at_edge == 2
            assert edge.arrivals.count == 1

            gate.open()
            assert (await running).json() == {"value": 1}

    async def test_unmarked_paths_are_untouched(self, make_gate: GateFactory) -> None:
        gate = make_gate()
        edge = EdgeApp(gate, bound=1, max_pending=0)
        async with serving(edge.app, make_gate) as http:
            running = asyncio.create_task(http.get("/gate/1"))
            await gate.started(1)
            assert (await http.get("/gate/2")).status_code == 503  # at the edge
            # An unmarked route that uses the executor reaches its handler and
            # is refused there, by the exception handlers (Retry-After: 7).
            other = await http.get("/other/3")
            assert other.status_code == 503
            assert other.headers["Retry-After"] == "7"
            assert other.json() == OVERLOADED
            assert edge.executor.stats().rejected == 1
            assert "/other/3" in edge.seen
            # One that does not use it is served.
            assert (await http.get("/plain")).json() == {"plain": True}
            gate.open()
            await running

    async def test_retry_after_follows_the_recent_wait(
        self, make_gate: GateFactory
    ) -> None:
        edge = EdgeApp(make_gate(), bound=1, max_pending=1, min_retry_after=0)
        async with serving(edge.app, make_gate) as http:

            async def refused_retry_after() -> str:
                gate = edge.gate = make_gate()
                running = asyncio.create_task(http.get("/gate/1"))
                await gate.started(1)
                waiting = asyncio.create_task(http.get("/gate/2"))
                await edge.arrivals.reached(edge.arrivals.count + 1)
                refused = await http.get("/gate/3")
                assert refused.status_code == 503
                gate.open()
                await asyncio.gather(running, waiting)
                return refused.headers["Retry-After"]

            # No call has waited yet: the recent wait is 0 s.
            assert await refused_retry_after() == "0"
            # One waited (a fraction of a second): rounded up to 1 s.
            # One call waited: its wait, rounded up to whole seconds (1 s
            # unless this machine is very slow).
            recent = edge.executor.queue_wait_recent
            assert recent > 0.0
            assert await refused_retry_after() == str(min(30, math.ceil(recent)))

    async def test_a_closed_executor_is_refused_at_the_edge(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        edge = EdgeApp(gate, bound=1, max_pending=4)
        async with serving(edge.app, make_gate) as http:
            await http.get("/plain")  # the lifespan has made the executor
            await edge.executor.aclose()
            response = await http.get("/gate/1")
            assert response.status_code == 503
            assert response.json() == CLOSED
            assert edge.seen == ["/plain"]

    async def test_without_an_executor_it_says_what_to_do(self) -> None:
        app = FastAPI()
        scope = {"type": "http", "path": "/x", "state": {}}

        async def receive() -> MutableMapping[str, Any]:
            raise AssertionError("not reached")  # pragma: no cover

        async def send(message: MutableMapping[str, Any]) -> None:
            raise AssertionError("not reached")  # pragma: no cover

        middleware = EdgeSheddingMiddleware(app, paths=["/x"], key="files")
        with pytest.raises(RuntimeError, match="'files'"):
            await middleware(scope, receive, send)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"paths": "/work"}, TypeError, "paths"),
            ({"paths": []}, ValueError, "paths"),
            ({"paths": ["/w"], "key": ""}, TypeError, "key"),
            ({"paths": ["/w"], "min_retry_after": -1}, ValueError, "min_retry_after"),
            ({"paths": ["/w"], "max_retry_after": "9"}, TypeError, "max_retry_after"),
        ],
    )
    def test_bad_arguments_are_named(
        self, kwargs: dict[str, object], error: type[Exception], match: str
    ) -> None:
        with pytest.raises(error, match=match):
            EdgeSheddingMiddleware(FastAPI(), **kwargs)  # type: ignore[arg-type]


class TestPathsAreMatchedAsTheRouterMatchesThem:
    """The prefixes are the routes' paths: behind a proxy (uvicorn's
    ``root_path``, which uvicorn puts back into ``scope["path"]``) and in a
    mounted sub-app, the check strips what the router strips."""

    async def test_behind_a_proxy_prefix(self, make_gate: GateFactory) -> None:
        gate = make_gate()
        edge = EdgeApp(gate, bound=1, max_pending=0)
        async with serving(edge.app, make_gate, root_path="/api") as http:
            running = asyncio.create_task(http.get("/gate/1"))
            await gate.started(1)
            assert edge.seen == ["/api/gate/1"]  # what uvicorn puts in the scope
            refused = await http.get("/gate/2")
            # Refused at the edge (its Retry-After), not by the executor in
            # the endpoint (the exception handlers' Retry-After: 7).
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert (edge.seen, edge.arrivals.count) == (["/api/gate/1"], 1)
            assert edge.executor.stats().rejected == 0
            gate.open()
            assert (await running).json() == {"value": 1}

    @pytest.mark.parametrize("root_path", ["", "/api"])
    async def test_in_a_mounted_sub_app(
        self, make_gate: GateFactory, root_path: str
    ) -> None:
        gate = make_gate()
        arrivals = Arrivals()
        executors: list[BoundedLoopExecutor] = []

        def make_executor() -> BoundedLoopExecutor:
            executors.append(BoundedLoopExecutor(max_workers=1, bound=1, max_pending=0))
            return executors[-1]

        sub = FastAPI()

        @sub.get("/gate/{value}")
        async def gated(executor: Executor, value: int) -> dict[str, int]:
            arrivals.arrive()
            return {"value": await executor.run(gate, value)}

        sub.add_middleware(EdgeSheddingMiddleware, paths=["/gate"])
        app = FastAPI(lifespan=executor_lifespan(make_executor))
        app.mount("/sub", sub)
        add_exception_handlers(app, retry_after=7)
        async with serving(app, make_gate, root_path=root_path) as http:
            running = asyncio.create_task(http.get("/sub/gate/1"))
            await gate.started(1)
            refused = await http.get("/sub/gate/2")
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert refused.json() == OVERLOADED
            assert arrivals.count == 1
            assert executors[-1].stats().rejected == 0
            gate.open()
            assert (await running).json() == {"value": 1}


class TestExampleApp:
    async def test_the_example_refuses_at_the_edge_when_full(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        app = create_app(workers=1, bound=1, max_pending=0, work=gate)
        async with serving(app, make_gate) as http:
            running = asyncio.create_task(http.get("/work", params={"ms": 0}))
            await gate.started(1)
            refused = await http.get("/work", params={"ms": 0})
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            stats = (await http.get("/stats")).json()  # not covered: served
            assert (stats["rejected"], stats["in_flight"]) == (0, 1)
            assert stats["shed_at_edge"] == 1
            gate.open()
            assert (await running).json() == {"slept_ms": 0.0}

        gate = make_gate()
        app = create_app(workers=1, bound=1, max_pending=0, work=gate, edge=False)
        async with serving(app, make_gate) as http:
            running = asyncio.create_task(http.get("/work", params={"ms": 0}))
            await gate.started(1)
            refused = await http.get("/work", params={"ms": 0})
            assert refused.status_code == 503
            stats = (await http.get("/stats")).json()
            assert stats["rejected"] == 1  # refused in the handler instead
            gate.open()
            await running
