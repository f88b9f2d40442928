"""FastAPI over real HTTP: uvicorn on 127.0.0.1, requests through httpx.

The server runs as a task on the test's own event loop, so an endpoint can
tell the test, with no clock involved, that a request has reached the
executor. Worker threads block on gates (``conftest.Gate``) until the test
opens them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from fastapi_app import create_app
from starlette.requests import HTTPConnection

from aiobound import BoundedLoopExecutor
from aiobound.starlette import add_exception_handlers, executor_lifespan, get_executor
from conftest import Arrivals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from conftest import Gate, GateFactory

# A guard against a hang in a broken test, never a timing assumption.
CLIENT_TIMEOUT = 30.0

Executor = Annotated[BoundedLoopExecutor, Depends(get_executor)]


class Server(uvicorn.Server):
    """uvicorn that leaves signal handlers alone and says when it shuts down."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.shutting_down = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Waiters wake only once this task yields, which super().shutdown()
        # first does after it has stopped listening.
        self.shutting_down.set()
        await super().shutdown(sockets)


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[tuple[Server, str]]:
    """Serve *app* on an ephemeral port of 127.0.0.1; stop it on exit.

    The listening socket is made here, so clients can connect at once (the
    kernel queues them until uvicorn accepts): no polling for readiness.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, log_level="warning", access_log=False
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class GatedApp:
    """An app whose ``/gate/{value}`` runs ``gate(value)`` in the executor.

    The endpoint counts its arrival and then calls ``executor.run`` without
    yielding in between, so once ``arrivals.reached(n)`` returns, ``n``
    requests hold a slot or wait for one (or were refused).
    """

    def __init__(
        self, gate: Gate[int], *, max_workers: int, bound: int, max_pending: int
    ) -> None:
        self.arrivals = Arrivals()
        self.executors: list[BoundedLoopExecutor] = []
        self._factory = functools.partial(
            BoundedLoopExecutor,
            max_workers=max_workers,
            bound=bound,
            max_pending=max_pending,
        )
        self.app = FastAPI(lifespan=executor_lifespan(self._make_executor))
        add_exception_handlers(self.app, retry_after=7)
        arrivals = self.arrivals

        @self.app.get("/gate/{value}")
        async def gated(executor: Executor, value: int) -> dict[str, int]:
            arrivals.arrive()
            return {"value": await executor.run(gate, value)}

    def _make_executor(self) -> BoundedLoopExecutor:
        executor = self._factory()
        self.executors.append(executor)
        return executor

    @property
    def executor(self) -> BoundedLoopExecutor:
        return self.executors[-1]


def client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT)


class TestExampleApp:
    async def test_results_files_stats_and_metrics_are_right(
        self, tmp_path: Path
    ) -> None:
        data = b"aiobound\n" * 1000
        (tmp_path / "data.txt").write_bytes(data)
        app = create_app(workers=2, max_pending=4, data_dir=tmp_path)
        async with serve(app) as (_, url), client(url) as http:
            work = await http.get("/work", params={"ms": 0})
            assert work.status_code == 200
            assert work.json() == {"slept_ms": 0.0}

            read = await http.get("/file/data.txt")
            assert read.status_code == 200
            assert read.json() == {
                "name": "data.txt",
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            assert (await http.get("/file/missing.txt")).status_code == 404
            assert (await http.get("/file/..%2Fdata.txt")).status_code == 404
            assert (await http.get("/work", params={"ms": -1})).status_code == 422

            stats = (await http.get("/stats")).json()
            assert stats["bound"] == 4
            assert stats["max_pending"] == 4
            assert stats["submitted"] == 3  # the missing file failed in a worker
            assert stats["completed"] == 2
            assert stats["failed"] == 1
            assert stats["in_flight"] == 0
            assert stats["closed"] is False
            assert stats["max_wait"] == 0.25  # the example's MAX_WAIT
            assert stats["timed_out"] == stats["rate_limited"] == 0
            assert stats["queue_wait_max"] >= stats["queue_wait_avg"] >= 0

            metrics = (await http.get("/metrics")).text
            assert 'aiobound_completed_total{executor="default"} 2.0' in metrics
            assert 'aiobound_bound{executor="default"} 4.0' in metrics
            assert 'aiobound_max_wait_seconds{executor="default"} 0.25' in metrics
            assert 'aiobound_timed_out_total{executor="default"} 0.0' in metrics


class TestShedding:
    async def test_requests_beyond_bound_plus_max_pending_get_503_with_retry_after(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        gated = GatedApp(gate, max_workers=2, bound=2, max_pending=3)
        async with serve(gated.app) as (_, url), client(url) as http:
            accepted = [
                asyncio.create_task(http.get(f"/gate/{n}")) for n in range(2 + 3)
            ]
            await gated.arrivals.reached(5)
            await gate.started(2)
            stats = gated.executor.stats()
            assert (stats.in_flight, stats.waiting) == (2, 3)

            refused = await asyncio.gather(*(http.get(f"/gate/{n}") for n in range(4)))
            for response in refused:
                assert response.status_code == 503
                assert response.headers["Retry-After"] == "7"
                assert response.json() == {"detail": "Service overloaded; retry later"}
            assert gated.executor.stats().rejected == 4
            assert len(gate.calls) == 2  # nothing refused ever reached a worker

            gate.open()
            responses = await asyncio.gather(*accepted)
            assert [r.status_code for r in responses] == [200] * 5
            assert [r.json()["value"] for r in responses] == list(range(5))

            stats = gated.executor.stats()
            assert stats.completed == 5
            assert stats.rejected == 4
            assert stats.peak_in_flight == 2
            assert (stats.in_flight, stats.waiting) == (0, 0)

    async def test_stats_endpoint_follows_the_load(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        gated = GatedApp(gate, max_workers=1, bound=1, max_pending=1)

        @gated.app.get("/stats")
        async def stats(executor: Executor) -> dict[str, int | bool | None]:
            s = executor.stats()
            return {
                "in_flight": s.in_flight,
                "waiting": s.waiting,
                "completed": s.completed,
                "rejected": s.rejected,
            }

        async with serve(gated.app) as (_, url), client(url) as http:
            assert (await http.get("/stats")).json() == {
                "in_flight": 0,
                "waiting": 0,
                "completed": 0,
                "rejected": 0,
            }
            accepted = [asyncio.create_task(http.get(f"/gate/{n}")) for n in range(2)]
            await gated.arrivals.reached(2)
            assert (await http.get("/gate/9")).status_code == 503
            assert (await http.get("/stats")).json() == {
                "in_flight": 1,
                "waiting": 1,
                "completed": 0,
                "rejected": 1,
            }
            gate.open()
            assert [r.status_code for r in await asyncio.gather(*accepted)] == [200] * 2
            assert (await http.get("/stats")).json() == {
                "in_flight": 0,
                "waiting": 0,
                "completed": 2,
                "rejected": 1,
            }


class TestShutdown:
    async def test_shutdown_finishes_requests_in_flight_then_refuses_new_ones(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        gated = GatedApp(gate, max_workers=2, bound=2, max_pending=4)
        async with serve(gated.app) as (server, url), client(url) as http:
            in_flight = [asyncio.create_task(http.get(f"/gate/{n}")) for n in range(3)]
            await gated.arrivals.reached(3)
            await gate.started(2)

            server.should_exit = True
            await server.shutting_down.wait()
            async with client(url) as late:
                with pytest.raises(httpx.TransportError):
                    await late.get("/gate/99")
            assert not any(task.done() for task in in_flight)
            assert not gated.executor.closed  # closed only after the drain

            gate.open()
            responses = await asyncio.gather(*in_flight)
            assert [r.status_code for r in responses] == [200] * 3
            assert [r.json()["value"] for r in responses] == [0, 1, 2]
        # serve() has waited for the server task: the lifespan has ended.
        stats = gated.executor.stats()
        assert stats.closed
        assert (stats.completed, stats.rejected, stats.in_flight) == (3, 0, 0)
        async with client(url) as late:
            with pytest.raises(httpx.ConnectError):
                await late.get("/gate/100")

    async def test_waiting_requests_get_503_when_the_executor_closes(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        gated = GatedApp(gate, max_workers=1, bound=1, max_pending=4)
        async with serve(gated.app) as (_, url), client(url) as http:
            running = asyncio.create_task(http.get("/gate/1"))
            await gate.started(1)
            waiting = [asyncio.create_task(http.get(f"/gate/{n}")) for n in (2, 3)]
            await gated.arrivals.reached(3)

            closing = asyncio.create_task(gated.executor.aclose())
            for response in await asyncio.gather(*waiting):
                assert response.status_code == 503
                assert response.headers["Retry-After"] == "7"
                assert "shutting down" in response.json()["detail"]
            late = await http.get("/gate/4")
            assert late.status_code == 503
            assert late.headers["Retry-After"] == "7"
            assert not closing.done()  # still waiting for the running call

            gate.open()
            assert (await running).json() == {"value": 1}
            await closing
            assert gated.executor.stats().completed == 1


class TestIntegration:
    def test_import_aiobound_imports_no_framework(self) -> None:
        optional = (
            "aiobound.aiohttp",
            "aiobound.prometheus",
            "aiobound.starlette",
            "aiohttp",
            "fastapi",
            "prometheus_client",
            "starlette",
        )
        code = (
            "import sys, aiobound; "
            f"print([m for m in {optional!r} if m in sys.modules])"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == "[]"

    def test_get_executor_without_the_lifespan_says_what_to_do(self) -> None:
        conn = HTTPConnection({"type": "http", "state": {}})
        with pytest.raises(RuntimeError, match="executor_lifespan"):
            get_executor(conn)

    @pytest.mark.parametrize(
        ("retry_after", "error"),
        [(-1, ValueError), (1.5, TypeError), (True, TypeError)],
    )
    def test_retry_after_is_checked(
        self, retry_after: object, error: type[Exception]
    ) -> None:
        with pytest.raises(error, match="retry_after"):
            add_exception_handlers(FastAPI(), retry_after=retry_after)  # type: ignore[arg-type]

    async def test_each_startup_gets_a_fresh_executor(self) -> None:
        factory = functools.partial(BoundedLoopExecutor, max_workers=1)
        made: list[BoundedLoopExecutor] = []

        def make() -> BoundedLoopExecutor:
            made.append(factory())
            return made[-1]

        app = FastAPI(lifespan=executor_lifespan(make))

        @app.get("/id")
        async def ident(executor: Executor) -> dict[str, int]:
            return {"id": id(executor)}

        for _ in range(2):
            async with serve(app) as (_, url), client(url) as http:
                assert (await http.get("/id")).json() == {"id": id(made[-1])}
        assert len(made) == 2
        assert all(executor.closed for executor in made)
