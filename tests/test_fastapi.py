"""FastAPI over real HTTP: uvicorn on 127.0.0.1, requests through httpx.

The server runs as a task on the test's own event loop, so an endpoint can
tell the test, with no clock involved, that a request has reached the
executor. Worker threads block on gates (``conftest.Gate``) until the test
opens them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from fastapi_app import bound_argument, create_app, share_argument
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Router

from aiobound import BoundedLoopExecutor, ClosedError, OverloadedError
from aiobound.starlette import (
    STATE_KEY,
    add_exception_handlers,
    executor_dependency,
    executor_lifespan,
    executor_state,
    get_executor,
)
from batch_helpers import Gates, first_started, until, waiting
from conftest import Arrivals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from starlette.types import ASGIApp, Receive, Scope, Send

    from conftest import Gate, GateFactory

# A guard against a hang in a broken test, never a timing assumption.
CLIENT_TIMEOUT = 30.0

Executor = Annotated[BoundedLoopExecutor, Depends(get_executor)]
# Aliases for executors stored under other keys (module level: FastAPI
# resolves the string annotations in the module's globals).
Files = Annotated[BoundedLoopExecutor, Depends(executor_dependency("files"))]
Db = Annotated[BoundedLoopExecutor, Depends(executor_dependency("db"))]


# Longer than httpx's keepalive_expiry (5 s), so the client is always the one
# to drop an idle connection. With uvicorn's default (also 5 s) the server
# may close a connection at the instant the client sends a request on it, and
# that request fails with "Server disconnected without sending a response".
SERVER_KEEP_ALIVE = 60


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
async def serve(
    app: ASGIApp, *, root_path: str = ""
) -> AsyncIterator[tuple[Server, str]]:
    """Serve *app* on an ephemeral port of 127.0.0.1; stop it on exit.

    The listening socket is made here, so clients can connect at once (the
    kernel queues them until uvicorn accepts): no polling for readiness.
    *root_path* is uvicorn's ``--root-path``: the prefix a proxy in front
    strips, which uvicorn puts back into ``scope["path"]``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        root_path=root_path,
        timeout_keep_alive=SERVER_KEEP_ALIVE,
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


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextlib.contextmanager
def example_server(
    script: str, *args: str, ready: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """Run ``examples/<script>`` on a free port of 127.0.0.1 as its docstring
    says; once it printed a line with *ready*, yield its URL and the lines it
    printed; stop it with SIGINT on exit (a hang is pytest-timeout's)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, str(EXAMPLES / script), "--port", str(port), *args]
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,
    ) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if ready in line:
                    break
            else:
                raise AssertionError(f"{script} stopped: {''.join(lines)}")
            yield f"http://127.0.0.1:{port}", lines
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=CLIENT_TIMEOUT)


def get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=CLIENT_TIMEOUT) as response:
        status: int = response.status
        return status


class TestExampleApp:
    @pytest.mark.parametrize(
        ("args", "stack"),
        [
            ((), "HTTP parser httptools, event loop uvloop"),
            (
                ("--http", "h11", "--loop", "asyncio"),
                "HTTP parser h11, event loop asyncio",
            ),
        ],
        ids=["installed", "pure-python"],
    )
    def test_it_serves_on_the_c_parser_and_uvloop_when_installed(
        self, args: tuple[str, ...], stack: str
    ) -> None:
        pytest.importorskip("httptools")
        pytest.importorskip("uvloop")
        with example_server(
            "fastapi_app.py", "--quiet", *args, ready="Uvicorn running on"
        ) as (url, lines):
            assert lines[0].strip() == stack
            assert get_status(f"{url}/work?ms=0") == 200

    async def test_an_adaptive_bound_tunes_itself_and_is_exported(self) -> None:
        app = create_app(workers=3, bound="adaptive", max_pending=8)
        async with serve(app) as (_, url), client(url) as http:
            for _ in range(12):
                assert (await http.get("/work", params={"ms": 0})).status_code == 200
            stats = (await http.get("/stats")).json()
            assert 1 <= stats["bound"] <= 3  # Gradient, capped at the workers
            assert stats["latency_short"] is not None  # a window of 10 calls
            metrics = (await http.get("/metrics")).text
            assert 'aiobound_latency_short_seconds{executor="default"}' in metrics

    def test_the_bound_option_takes_a_number_or_adaptive(self) -> None:
        assert bound_argument("adaptive") == "adaptive"
        assert bound_argument("12") == 12
        with pytest.raises(argparse.ArgumentTypeError, match="adaptive"):
            bound_argument("fast")

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

    async def test_traces_nest_request_call_and_worker_spans(self) -> None:
        sdk = pytest.importorskip("opentelemetry.sdk.trace")
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        spans = InMemorySpanExporter()
        provider = sdk.TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        app = create_app(workers=1, tracer_provider=provider)
        async with serve(app) as (_, url), client(url) as http:
            assert (await http.get("/work", params={"ms": 0})).status_code == 200
        by_name = {s.name: s for s in spans.get_finished_spans()}
        request = by_name["GET /work"]
        call = by_name["aiobound.call"]
        work = by_name["blocking work"]
        trace_ids = {s.context.trace_id for s in (request, call, work)}
        assert len(trace_ids) == 1
        assert call.parent is not None
        assert work.parent is not None
        assert call.parent.span_id == request.context.span_id
        assert work.parent.span_id == call.context.span_id
        provider.shutdown()


def stats_of(http: httpx.AsyncClient) -> Callable[[], Awaitable[Any]]:
    """A reader of the app's ``/stats``."""

    async def read() -> Any:
        return (await http.get("/stats")).json()

    return read


class TestBatchPartition:
    """The example's /batch runs in its own partition of the executor."""

    async def test_an_interactive_request_takes_the_first_slot_freed(
        self, make_gate: GateFactory
    ) -> None:
        gates = Gates(make_gate, 1, 2, 3, 4)
        # Bound 4: the batch is guaranteed 1 slot, the interactive calls 3.
        app = create_app(workers=4, bound=4, max_pending=8, max_wait=None, work=gates)
        async with serve(app) as (_, url), client(url) as http:
            try:
                one = asyncio.create_task(http.get("/batch?n=1&ms=1"))
                await gates[1].started(1)
                three = asyncio.create_task(http.get("/batch?n=3&ms=2"))
                await gates[2].started(3)  # batches hold every slot, 3 borrowed
                older = asyncio.create_task(http.get("/batch?n=1&ms=3"))
                await until(stats_of(http), "a batch waiting", waiting(1))
                interactive = asyncio.create_task(http.get("/work?ms=4"))
                stats = await until(
                    stats_of(http), "a request waiting", waiting(2, interactive)
                )
                assert not interactive.done()
                assert stats["in_flight"] == 4

                gates[1].open()  # one slot freed: to the interactive request
                assert await first_started(gates[3], gates[4]) is gates[4]
                assert gates[3].calls == []
                parts = (await http.get("/stats")).json()["partitions"]
                batch, default = parts["batch"], parts["default"]
                assert (batch["guaranteed"], default["guaranteed"]) == (1, 3)
                assert (batch["in_flight"], default["in_flight"]) == (3, 1)
                assert (batch["waiting"], default["waiting"]) == (1, 0)
            finally:
                make_gate.open_all()
            responses = await asyncio.gather(one, three, older, interactive)
            assert [r.status_code for r in responses] == [200] * 4
            assert [r.json() for r in responses] == [
                {"n": 1, "slept_ms": 1.0},
                {"n": 3, "slept_ms": 6.0},
                {"n": 1, "slept_ms": 3.0},
                {"slept_ms": 4.0},
            ]
            stats = (await http.get("/stats")).json()
            parts = stats["partitions"]
            assert (parts["batch"]["completed"], parts["default"]["completed"]) == (
                5,
                1,
            )
            assert (stats["in_flight"], stats["waiting"]) == (0, 0)

    async def test_a_flood_of_batches_is_refused_while_interactive_is_served(
        self, make_gate: GateFactory
    ) -> None:
        gates = Gates(make_gate, 1, 2, 3, 4)
        app = create_app(workers=4, bound=4, max_pending=2, max_wait=None, work=gates)
        async with serve(app) as (_, url), client(url) as http:
            try:
                held = [asyncio.create_task(http.get("/batch?n=1&ms=1"))]
                await gates[1].started(1)
                held.append(asyncio.create_task(http.get("/batch?n=3&ms=2")))
                await gates[2].started(3)
                queued = [
                    asyncio.create_task(http.get("/batch?n=1&ms=3")) for _ in range(2)
                ]
                await until(stats_of(http), "a full batch waiting room", waiting(2))

                flood = await asyncio.gather(
                    *(http.get("/batch?n=5&ms=3") for _ in range(10))
                )
                for response in flood:
                    assert response.status_code == 503
                    assert response.headers["Retry-After"] == "1"
                    assert response.json() == {
                        "detail": "Service overloaded; retry later"
                    }
                # The interactive waiting room is the default partition's.
                interactive = [
                    asyncio.create_task(http.get("/work?ms=4")) for _ in range(2)
                ]
                stats = await until(
                    stats_of(http), "interactive waiting", waiting(4, *interactive)
                )
                assert not any(task.done() for task in interactive)  # not refused
                parts = stats["partitions"]
                assert (parts["batch"]["rejected"], parts["default"]["rejected"]) == (
                    10,
                    0,
                )
                gates[1].open()  # a slot freed: to an interactive request
                assert await first_started(gates[3], gates[4]) is gates[4]
                gates[4].open()
                served = await asyncio.gather(*interactive)
                assert [r.status_code for r in served] == [200, 200]
            finally:
                make_gate.open_all()
            batches = await asyncio.gather(*held, *queued)
            assert [r.status_code for r in batches] == [200] * 4
            assert len(gates[3].calls) == 2  # nothing refused reached a worker

    async def test_batch_size_is_checked(self) -> None:
        app = create_app(workers=1, work=float)
        async with serve(app) as (_, url), client(url) as http:
            for query in ("n=0", "n=1001", "n=x", "n=2&ms=-1"):
                assert (await http.get(f"/batch?{query}")).status_code == 422
            ok = await http.get("/batch?n=1000&ms=0")
            assert ok.json() == {"n": 1000, "slept_ms": 0.0}

    async def test_an_adaptive_bound_with_partitions(self) -> None:
        app = create_app(workers=3, bound="adaptive", max_pending=8, work=float)
        async with serve(app) as (_, url), client(url) as http:
            for _ in range(6):
                assert (await http.get("/work?ms=0")).status_code == 200
                batch = await http.get("/batch?n=5&ms=0")
                assert batch.json() == {"n": 5, "slept_ms": 0.0}
            stats = (await http.get("/stats")).json()
            assert 1 <= stats["bound"] <= 3  # Gradient, capped at the workers
            assert stats["latency_short"] is not None
            parts = stats["partitions"]
            assert (parts["batch"]["completed"], parts["default"]["completed"]) == (
                30,
                6,
            )
            assert parts["batch"]["guaranteed"] == 1  # ceil(0.25 x 3), at least 1
            assert parts["default"]["guaranteed"] == math.ceil(0.75 * stats["bound"])
            metrics = (await http.get("/metrics")).text
            assert (
                'aiobound_partition_completed_total{executor="default",'
                'partition="batch"} 30.0'
            ) in metrics

    def test_the_batch_share_option(self) -> None:
        assert share_argument("0.4") == 0.4
        for text in ("0", "1", "-0.5", "half"):
            with pytest.raises(argparse.ArgumentTypeError, match=r"\(0, 1\)"):
                share_argument(text)

    async def test_traces_name_the_partition(self) -> None:
        sdk = pytest.importorskip("opentelemetry.sdk.trace")
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        spans = InMemorySpanExporter()
        provider = sdk.TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        app = create_app(workers=1, tracer_provider=provider)
        async with serve(app) as (_, url), client(url) as http:
            assert (await http.get("/batch?n=2&ms=0")).status_code == 200
            assert (await http.get("/work?ms=0")).status_code == 200
        calls = [s for s in spans.get_finished_spans() if s.name == "aiobound.call"]
        partitions = sorted(
            str((s.attributes or {}).get("aiobound.executor.partition")) for s in calls
        )
        assert partitions == ["batch", "batch", "default"]
        provider.shutdown()


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

    async def test_get_executor_without_the_lifespan_says_what_to_do(self) -> None:
        conn = HTTPConnection({"type": "http", "state": {}})
        with pytest.raises(RuntimeError, match="executor_lifespan"):
            await get_executor(conn)
        with pytest.raises(RuntimeError, match="'files'"):
            await executor_dependency("files")(conn)

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


def anyio_worker_threads() -> set[threading.Thread]:
    """The live threads of anyio's worker pool (``to_thread.run_sync``)."""
    return {t for t in threading.enumerate() if t.name == "AnyIO worker thread"}


class TestDependency:
    async def test_get_executor_starts_no_worker_thread(self) -> None:
        # A plain-def dependency makes FastAPI borrow an anyio worker thread
        # for every request; a coroutine function runs on the loop.
        app = FastAPI(
            lifespan=executor_lifespan(
                functools.partial(BoundedLoopExecutor, max_workers=1)
            )
        )

        @app.get("/bound")
        async def bound(executor: Executor) -> dict[str, int]:
            return {"bound": executor.bound}

        before = anyio_worker_threads()
        async with serve(app) as (_, url), client(url) as http:
            responses = await asyncio.gather(*(http.get("/bound") for _ in range(50)))
            assert [r.json() for r in responses] == [{"bound": 2}] * 50
            assert anyio_worker_threads() - before == set()

    async def test_a_custom_key_and_its_dependency(self) -> None:
        made: dict[str, BoundedLoopExecutor] = {}

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
            made["default"] = BoundedLoopExecutor(max_workers=1)
            made["files"] = BoundedLoopExecutor(max_workers=2)
            async with (
                executor_state(made["default"]) as default,
                executor_state(made["files"], key="files") as files,
            ):
                yield {**default, **files}

        app = FastAPI(lifespan=lifespan)

        @app.get("/ids")
        async def ids(default: Executor, files: Files) -> dict[str, int]:
            return {"default": id(default), "files": id(files)}

        async with serve(app) as (_, url), client(url) as http:
            assert (await http.get("/ids")).json() == {
                "default": id(made["default"]),
                "files": id(made["files"]),
            }
        assert made["default"].closed
        assert made["files"].closed

    async def test_executor_lifespan_with_a_key(self) -> None:
        app = FastAPI(
            lifespan=executor_lifespan(
                functools.partial(BoundedLoopExecutor, max_workers=3), key="db"
            )
        )

        @app.get("/db")
        async def db(executor: Db) -> dict[str, int]:
            return {"bound": executor.bound}

        @app.get("/default")
        async def default(executor: Executor) -> dict[str, int]:
            return {"bound": executor.bound}  # pragma: no cover - never reached

        async with serve(app) as (_, url), client(url) as http:
            assert (await http.get("/db")).json() == {"bound": 6}
            # Nothing under STATE_KEY: get_executor says so (a 500).
            assert (await http.get("/default")).status_code == 500

    @pytest.mark.parametrize("key", ["", 3, None])
    def test_a_bad_key_is_refused(self, key: object) -> None:
        factory = functools.partial(BoundedLoopExecutor, max_workers=1)
        with pytest.raises(TypeError, match="key"):
            executor_lifespan(factory, key=key)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="key"):
            executor_dependency(key)  # type: ignore[arg-type]
        assert STATE_KEY == "aiobound_executor"


REFUSAL_CASES = [
    (OverloadedError, "Service overloaded; retry later"),
    (ClosedError, "Service shutting down; retry later"),
]


def refuse(error: type[Exception]) -> Exception:
    return error("refused for the test")


async def assert_refused(
    http: httpx.AsyncClient, path: str, detail: str, retry_after: str = "5"
) -> None:
    response = await http.get(path)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == retry_after
    assert response.json() == {"detail": detail}


class RefusingASGIMiddleware:
    """A pure ASGI middleware that raises a refusal for ``/asgi-mw``."""

    def __init__(self, app: ASGIApp, error: type[Exception]) -> None:
        self.app = app
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/asgi-mw":
            raise refuse(self.error)
        await self.app(scope, receive, send)


@pytest.mark.parametrize(("error", "detail"), REFUSAL_CASES)
class TestRefusalsEverywhere:
    """A refusal raised anywhere in the app is the documented 503."""

    async def test_endpoint_dependency_middlewares_and_sub_apps(
        self, error: type[Exception], detail: str
    ) -> None:
        app = FastAPI()

        async def refusing_dependency() -> None:
            raise refuse(error)

        @app.get("/endpoint")
        async def endpoint() -> None:
            raise refuse(error)

        @app.get("/dependency", dependencies=[Depends(refusing_dependency)])
        async def with_dependency() -> None:
            pass  # pragma: no cover - the dependency refuses first

        @app.get("/ok")
        async def ok() -> dict[str, bool]:
            return {"ok": True}

        async def before_dispatch(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path == "/mw-before":
                raise refuse(error)
            return await call_next(request)

        app.add_middleware(BaseHTTPMiddleware, dispatch=before_dispatch)

        sub = FastAPI()

        @sub.get("/refuse")
        async def sub_endpoint() -> None:
            raise refuse(error)

        deeper = FastAPI()

        @deeper.get("/refuse")
        async def deeper_endpoint() -> None:
            raise refuse(error)

        sub.mount("/deeper", deeper)
        app.mount("/sub", sub)

        routed = FastAPI()

        @routed.get("/refuse")
        async def routed_endpoint() -> None:
            raise refuse(error)

        app.mount("/router", Router(routes=[Mount("/app", routed)]))

        async def raw_asgi(scope: Scope, receive: Receive, send: Send) -> None:
            raise refuse(error)

        app.mount("/raw", raw_asgi)

        add_exception_handlers(app, retry_after=5)

        # Middlewares added after the call are covered too.
        @app.middleware("http")
        async def after_dispatch(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path == "/mw-after":
                raise refuse(error)
            return await call_next(request)

        app.add_middleware(RefusingASGIMiddleware, error=error)

        async with serve(app) as (_, url), client(url) as http:
            for path in (
                "/endpoint",
                "/dependency",
                "/mw-before",
                "/mw-after",
                "/asgi-mw",
                "/sub/refuse",
                "/sub/deeper/refuse",
                "/router/app/refuse",
                "/raw/x",
            ):
                await assert_refused(http, path, detail)
            assert (await http.get("/ok")).json() == {"ok": True}

    async def test_other_errors_keep_their_500_handler(
        self, error: type[Exception], detail: str
    ) -> None:
        app = FastAPI()

        async def custom_500(request: Request, exc: Exception) -> Response:
            return JSONResponse({"custom": repr(exc)}, 500)

        app.add_exception_handler(Exception, custom_500)

        @app.middleware("http")
        async def refusing(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path == "/refuse":
                raise refuse(error)
            if request.url.path == "/boom":
                raise LookupError("boom")
            return await call_next(request)

        add_exception_handlers(app, retry_after=5)
        add_exception_handlers(app, retry_after=5)  # twice: still chained once
        async with serve(app) as (_, url), client(url) as http:
            await assert_refused(http, "/refuse", detail)
            boom = await http.get("/boom")
            assert boom.status_code == 500
            assert boom.json() == {"custom": "LookupError('boom')"}

    async def test_other_errors_still_get_the_plain_500(
        self, error: type[Exception], detail: str
    ) -> None:
        app = FastAPI()

        @app.middleware("http")
        async def refusing(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path == "/refuse":
                raise refuse(error)
            raise LookupError("boom")

        add_exception_handlers(app, retry_after=5)
        async with serve(app) as (_, url), client(url) as http:
            await assert_refused(http, "/refuse", detail)
            boom = await http.get("/boom")
            assert boom.status_code == 500
            assert boom.text == "Internal Server Error"


class TestDeadlines:
    async def test_a_late_request_is_answered_504_at_its_deadline(self) -> None:
        """The example with a call_timeout: a 504 while the call still runs.

        The call keeps its slot until it really ends (stats say so), then
        the slot is back; the request got its answer at the deadline.
        """
        release = threading.Event()

        def held(seconds: float) -> float:
            release.wait(30)  # a guard against a hang only
            return seconds

        app = create_app(workers=1, max_pending=4, work=held, call_timeout=0.1)
        try:
            async with serve(app) as (_, url), client(url) as http:
                late = await http.get("/work", params={"ms": 1})
                assert late.status_code == 504
                assert "Retry-After" not in late.headers
                assert late.json() == {
                    "detail": "The service's time limit for this request passed"
                }
                stats = (await http.get("/stats")).json()
                assert not release.is_set()  # answered while the call runs
                assert (stats["in_flight"], stats["abandoned"]) == (1, 1)
                assert stats["deadline_running"] == 1
                assert stats["rejected"] + stats["timed_out"] == 0  # not a 503
                release.set()
        finally:
            release.set()
