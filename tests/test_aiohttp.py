"""aiohttp over real HTTP: AppRunner/TCPSite on 127.0.0.1, aiohttp's client.

The server runs on the test's own event loop, so a handler can tell the
test, with no clock involved, that a request has reached the executor.
Worker threads block on gates (``conftest.Gate``) until the test opens them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import math
import threading
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp_app import create_app, share_argument

from aiobound import BoundedLoopExecutor, ClosedError, OverloadedError
from aiobound.aiohttp import (
    EXECUTOR_KEY,
    executor_context,
    get_executor,
    setup,
    shedding_middleware,
)
from batch_helpers import Gates, first_started, until, waiting
from conftest import Arrivals
from test_fastapi import example_server, get_status

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from aiohttp.typedefs import Handler, Middleware

    from conftest import Gate, GateFactory

# A guard against a hang in a broken test, never a timing assumption.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)
OVERLOADED = {"detail": "Service overloaded; retry later"}


class Server:
    """A running app: its base URL, and a way to shut it down gracefully."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url
        self._cleanup: asyncio.Task[None] | None = None

    @property
    def shutting_down(self) -> asyncio.Event:
        """Set once the server stopped listening and shutdown began."""
        return self.runner.app[SHUTTING_DOWN]

    def stop(self) -> asyncio.Task[None]:
        """Start the graceful shutdown (idempotent); return its task."""
        if self._cleanup is None:
            self._cleanup = asyncio.create_task(self.runner.cleanup())
        return self._cleanup


SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[Server]:
    """Serve *app* on an ephemeral port of 127.0.0.1; stop it on exit."""
    app[SHUTTING_DOWN] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        # aiohttp runs on_shutdown after the sites stopped listening.
        app[SHUTTING_DOWN].set()

    app.on_shutdown.append(on_shutdown)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server = Server(runner, f"http://{host}:{port}")
    try:
        yield server
    finally:
        await server.stop()


def gated_app(
    gate: Gate[int],
    arrivals: Arrivals,
    *,
    max_workers: int,
    bound: int,
    max_pending: int,
) -> web.Application:
    """An app whose ``/gate/{value}`` runs ``gate(value)`` in the executor.

    The handler counts its arrival and then calls ``executor.run`` without
    yielding in between, so once ``arrivals.reached(n)`` returns, ``n``
    requests hold a slot or wait for one (or were refused).
    """

    async def handler(request: web.Request) -> web.Response:
        arrivals.arrive()
        value = await get_executor(request).run(gate, int(request.match_info["value"]))
        return web.json_response({"value": value})

    app = web.Application()
    setup(
        app,
        functools.partial(
            BoundedLoopExecutor,
            max_workers=max_workers,
            bound=bound,
            max_pending=max_pending,
        ),
        retry_after=7,
    )
    app.router.add_get("/gate/{value}", handler)
    return app


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=CLIENT_TIMEOUT)


async def get_json(
    http: aiohttp.ClientSession, url: str
) -> tuple[int, dict[str, object], str | None]:
    """GET *url*; return the status, the JSON body and the Retry-After header."""
    async with http.get(url) as response:
        body: dict[str, object] = await response.json()
        return response.status, body, response.headers.get("Retry-After")


class TestExampleApp:
    @pytest.mark.parametrize(
        ("args", "env", "stack"),
        [
            ((), {}, "HTTP parser C, event loop uvloop"),
            (
                ("--loop", "asyncio"),
                {"AIOHTTP_NO_EXTENSIONS": "1"},
                "HTTP parser Python, event loop asyncio",
            ),
        ],
        ids=["installed", "pure-python"],
    )
    def test_it_serves_on_the_c_parser_and_uvloop_when_installed(
        self, args: tuple[str, ...], env: dict[str, str], stack: str
    ) -> None:
        pytest.importorskip("uvloop")
        with example_server(
            "aiohttp_app.py", "--quiet", *args, env=env, ready="Running on"
        ) as (url, lines):
            assert lines[0].strip() == stack
            assert get_status(f"{url}/work?ms=0") == 200

    async def test_an_adaptive_bound_tunes_itself_and_is_exported(self) -> None:
        app = create_app(workers=3, bound="adaptive", max_pending=8)
        async with serve(app) as server, session() as http:
            for _ in range(12):
                status, _, _ = await get_json(http, f"{server.url}/work?ms=0")
                assert status == 200
            _, stats, _ = await get_json(http, f"{server.url}/stats")
            bound = stats["bound"]
            assert isinstance(bound, int)
            assert 1 <= bound <= 3  # Gradient, capped at the workers
            assert stats["latency_short"] is not None  # a window of 10 calls
            async with http.get(f"{server.url}/metrics") as response:
                metrics = await response.text()
            assert 'aiobound_latency_short_seconds{executor="default"}' in metrics

    async def test_results_files_stats_and_metrics_are_right(
        self, tmp_path: Path
    ) -> None:
        data = b"aiobound\n" * 1000
        (tmp_path / "data.txt").write_bytes(data)
        app = create_app(workers=2, max_pending=4, data_dir=tmp_path)
        async with serve(app) as server, session() as http:
            url = server.url
            assert await get_json(http, f"{url}/work?ms=0") == (
                200,
                {"slept_ms": 0.0},
                None,
            )
            status, body, _ = await get_json(http, f"{url}/file/data.txt")
            assert status == 200
            assert body == {
                "name": "data.txt",
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            for bad in ("/file/missing.txt", "/file/..%2Fdata.txt"):
                async with http.get(f"{url}{bad}") as response:
                    assert response.status == 404
            async with http.get(f"{url}/work?ms=-1") as response:
                assert response.status == 400

            status, stats, _ = await get_json(http, f"{url}/stats")
            assert status == 200
            assert stats["bound"] == 4
            assert stats["max_pending"] == 4
            assert stats["submitted"] == 3  # the missing file failed in a worker
            assert stats["completed"] == 2
            assert stats["failed"] == 1
            assert stats["in_flight"] == 0
            assert stats["closed"] is False
            assert stats["max_wait"] == 0.25  # the example's MAX_WAIT
            assert stats["timed_out"] == stats["rate_limited"] == 0
            wait_avg, wait_max = stats["queue_wait_avg"], stats["queue_wait_max"]
            assert isinstance(wait_avg, float)
            assert isinstance(wait_max, float)
            assert 0 <= wait_avg <= wait_max

            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
            assert 'aiobound_completed_total{executor="default"} 2.0' in metrics
            assert 'aiobound_bound{executor="default"} 4.0' in metrics
            assert 'aiobound_max_wait_seconds{executor="default"} 0.25' in metrics
            assert 'aiobound_timed_out_total{executor="default"} 0.0' in metrics


def stats_of(http: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[Any]]:
    """A reader of the app's ``/stats``."""

    async def read() -> Any:
        return (await get_json(http, f"{url}/stats"))[1]

    return read


@pytest.fixture
async def gates(make_gate: GateFactory) -> Gates:
    """Blocking work for the app's ``work=``: gates, one per ``ms``."""
    return Gates(make_gate, 1, 2, 3, 4)


class TestBatchPartition:
    """The example's /batch runs in its own partition of the executor."""

    async def test_an_interactive_request_takes_the_first_slot_freed(
        self, gates: Gates, make_gate: GateFactory
    ) -> None:
        # Bound 4: the batch is guaranteed 1 slot, the interactive calls 3.
        app = create_app(workers=4, bound=4, max_pending=8, max_wait=None, work=gates)
        async with serve(app) as server, session() as http:
            url, stats_now = server.url, stats_of(http, server.url)
            try:
                one = asyncio.create_task(get_json(http, f"{url}/batch?n=1&ms=1"))
                await gates[1].started(1)
                three = asyncio.create_task(get_json(http, f"{url}/batch?n=3&ms=2"))
                await gates[2].started(3)  # batches hold every slot, 3 borrowed
                older = asyncio.create_task(get_json(http, f"{url}/batch?n=1&ms=3"))
                await until(stats_now, "a batch waiting", waiting(1))
                interactive = asyncio.create_task(get_json(http, f"{url}/work?ms=4"))
                stats = await until(
                    stats_now, "a request waiting", waiting(2, interactive)
                )
                assert not interactive.done()
                assert stats["in_flight"] == 4

                gates[1].open()  # one slot freed: to the interactive request
                assert await first_started(gates[3], gates[4]) is gates[4]
                assert gates[3].calls == []
                parts = (await stats_now())["partitions"]
                batch, default = parts["batch"], parts["default"]
                assert (batch["guaranteed"], default["guaranteed"]) == (1, 3)
                assert (batch["in_flight"], default["in_flight"]) == (3, 1)
                assert (batch["waiting"], default["waiting"]) == (1, 0)
            finally:
                make_gate.open_all()
            responses = await asyncio.gather(one, three, older, interactive)
            assert [r[:2] for r in responses] == [
                (200, {"n": 1, "slept_ms": 1.0}),
                (200, {"n": 3, "slept_ms": 6.0}),
                (200, {"n": 1, "slept_ms": 3.0}),
                (200, {"slept_ms": 4.0}),
            ]
            stats = await stats_now()
            parts = stats["partitions"]
            assert (parts["batch"]["completed"], parts["default"]["completed"]) == (
                5,
                1,
            )
            assert (stats["in_flight"], stats["waiting"]) == (0, 0)

    async def test_a_flood_of_batches_is_refused_while_interactive_is_served(
        self, gates: Gates, make_gate: GateFactory
    ) -> None:
        app = create_app(workers=4, bound=4, max_pending=2, max_wait=None, work=gates)
        async with serve(app) as server, session() as http:
            url, stats_now = server.url, stats_of(http, server.url)
            try:
                held = [asyncio.create_task(get_json(http, f"{url}/batch?n=1&ms=1"))]
                await gates[1].started(1)
                held.append(
                    asyncio.create_task(get_json(http, f"{url}/batch?n=3&ms=2"))
                )
                await gates[2].started(3)
                queued = [
                    asyncio.create_task(get_json(http, f"{url}/batch?n=1&ms=3"))
                    for _ in range(2)
                ]
                await until(stats_now, "a full batch waiting room", waiting(2))

                flood = await asyncio.gather(
                    *(get_json(http, f"{url}/batch?n=5&ms=3") for _ in range(10))
                )
                assert flood == [(503, OVERLOADED, "1")] * 10
                # The interactive waiting room is the default partition's.
                interactive = [
                    asyncio.create_task(get_json(http, f"{url}/work?ms=4"))
                    for _ in range(2)
                ]
                stats = await until(
                    stats_now, "interactive waiting", waiting(4, *interactive)
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
                assert [r[0] for r in served] == [200, 200]
            finally:
                make_gate.open_all()
            batches = await asyncio.gather(*held, *queued)
            assert [r[0] for r in batches] == [200] * 4
            assert len(gates[3].calls) == 2  # nothing refused reached a worker

    async def test_batch_size_is_checked(self) -> None:
        app = create_app(workers=1)
        async with serve(app) as server, session() as http:
            for query in ("n=0", "n=1001", "n=x", "n=2&ms=-1"):
                async with http.get(f"{server.url}/batch?{query}") as response:
                    assert response.status == 400
                    assert ("ms" if "ms" in query else "n must be") in (
                        await response.text()
                    )
            ok = await get_json(http, f"{server.url}/batch?n=1000&ms=0")
            assert ok == (200, {"n": 1000, "slept_ms": 0.0}, None)

    async def test_an_adaptive_bound_with_partitions(self) -> None:
        app = create_app(workers=3, bound="adaptive", max_pending=8)
        async with serve(app) as server, session() as http:
            url = server.url
            for _ in range(6):
                assert (await get_json(http, f"{url}/work?ms=0"))[0] == 200
                batch = await get_json(http, f"{url}/batch?n=5&ms=0")
                assert batch == (200, {"n": 5, "slept_ms": 0.0}, None)
            _, stats, _ = await get_json(http, f"{url}/stats")
            bound = stats["bound"]
            assert isinstance(bound, int)
            assert 1 <= bound <= 3  # Gradient, capped at the workers
            assert stats["latency_short"] is not None
            parts: Any = stats["partitions"]
            assert (parts["batch"]["completed"], parts["default"]["completed"]) == (
                30,
                6,
            )
            assert parts["batch"]["guaranteed"] == 1  # ceil(0.25 x 3), at least 1
            assert parts["default"]["guaranteed"] == math.ceil(0.75 * bound)
            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
            assert (
                'aiobound_partition_completed_total{executor="default",'
                'partition="batch"} 30.0'
            ) in metrics

    def test_the_batch_share_option(self) -> None:
        assert share_argument("0.4") == 0.4
        for text in ("0", "1", "-0.5", "half"):
            with pytest.raises(argparse.ArgumentTypeError, match=r"\(0, 1\)"):
                share_argument(text)


class TestShedding:
    async def test_requests_beyond_bound_plus_max_pending_get_503_with_retry_after(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        arrivals = Arrivals()
        app = gated_app(gate, arrivals, max_workers=2, bound=2, max_pending=3)
        async with serve(app) as server, session() as http:
            url = server.url
            accepted = [
                asyncio.create_task(get_json(http, f"{url}/gate/{n}"))
                for n in range(2 + 3)
            ]
            await arrivals.reached(5)
            await gate.started(2)
            executor = app[EXECUTOR_KEY]
            stats = executor.stats()
            assert (stats.in_flight, stats.waiting) == (2, 3)

            refused = await asyncio.gather(
                *(get_json(http, f"{url}/gate/{n}") for n in range(4))
            )
            assert (
                refused
                == [(503, {"detail": "Service overloaded; retry later"}, "7")] * 4
            )
            assert executor.stats().rejected == 4
            assert len(gate.calls) == 2  # nothing refused ever reached a worker

            gate.open()
            responses = await asyncio.gather(*accepted)
            assert responses == [(200, {"value": n}, None) for n in range(5)]

            stats = executor.stats()
            assert stats.completed == 5
            assert stats.rejected == 4
            assert stats.peak_in_flight == 2
            assert (stats.in_flight, stats.waiting) == (0, 0)

    async def test_stats_endpoint_follows_the_load(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        arrivals = Arrivals()
        app = gated_app(gate, arrivals, max_workers=1, bound=1, max_pending=1)

        async def stats(request: web.Request) -> web.Response:
            s = get_executor(request).stats()
            return web.json_response(
                {
                    "in_flight": s.in_flight,
                    "waiting": s.waiting,
                    "completed": s.completed,
                    "rejected": s.rejected,
                }
            )

        app.router.add_get("/stats", stats)
        async with serve(app) as server, session() as http:
            url = server.url

            async def counters() -> dict[str, object]:
                status, body, _ = await get_json(http, f"{url}/stats")
                assert status == 200
                return body

            zero = {"in_flight": 0, "waiting": 0, "completed": 0, "rejected": 0}
            assert await counters() == zero
            accepted = [
                asyncio.create_task(get_json(http, f"{url}/gate/{n}")) for n in (1, 2)
            ]
            await arrivals.reached(2)
            status, _, _ = await get_json(http, f"{url}/gate/9")
            assert status == 503
            assert await counters() == {
                **zero,
                "in_flight": 1,
                "waiting": 1,
                "rejected": 1,
            }
            gate.open()
            assert [r[0] for r in await asyncio.gather(*accepted)] == [200, 200]
            assert await counters() == {**zero, "completed": 2, "rejected": 1}


class TestShutdown:
    async def test_shutdown_finishes_requests_in_flight_then_refuses_new_ones(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        arrivals = Arrivals()
        app = gated_app(gate, arrivals, max_workers=2, bound=2, max_pending=4)
        async with serve(app) as server:
            url = server.url
            executor = app[EXECUTOR_KEY]
            async with session() as http:
                in_flight = [
                    asyncio.create_task(get_json(http, f"{url}/gate/{n}"))
                    for n in range(3)
                ]
                await arrivals.reached(3)
                await gate.started(2)

                stopping = server.stop()
                await server.shutting_down.wait()
                async with session() as late:
                    with pytest.raises(aiohttp.ClientError):
                        await get_json(late, f"{url}/gate/99")
                assert not any(task.done() for task in in_flight)
                assert not executor.closed  # closed only after the drain

                gate.open()
                responses = await asyncio.gather(*in_flight)
                assert responses == [(200, {"value": n}, None) for n in range(3)]
            await stopping
            stats = executor.stats()
            assert stats.closed
            assert (stats.completed, stats.rejected, stats.in_flight) == (3, 0, 0)
            async with session() as late:
                with pytest.raises(aiohttp.ClientConnectionError):
                    await get_json(late, f"{url}/gate/100")

    async def test_waiting_requests_get_503_when_the_executor_closes(
        self, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        arrivals = Arrivals()
        app = gated_app(gate, arrivals, max_workers=1, bound=1, max_pending=4)
        async with serve(app) as server, session() as http:
            url = server.url
            executor = app[EXECUTOR_KEY]
            running = asyncio.create_task(get_json(http, f"{url}/gate/1"))
            await gate.started(1)
            waiting = [
                asyncio.create_task(get_json(http, f"{url}/gate/{n}")) for n in (2, 3)
            ]
            await arrivals.reached(3)

            closing = asyncio.create_task(executor.aclose())
            shut = (503, {"detail": "Service shutting down; retry later"}, "7")
            assert await asyncio.gather(*waiting) == [shut, shut]
            assert await get_json(http, f"{url}/gate/4") == shut
            assert not closing.done()  # still waiting for the running call

            gate.open()
            assert await running == (200, {"value": 1}, None)
            await closing
            assert executor.stats().completed == 1


class TestIntegration:
    async def test_get_executor_without_setup_says_what_to_do(self) -> None:
        async def handler(request: web.Request) -> web.Response:
            with pytest.raises(RuntimeError, match="setup"):
                get_executor(request)
            return web.Response(text="checked")

        app = web.Application()
        app.router.add_get("/", handler)
        async with (
            serve(app) as server,
            session() as http,
            http.get(server.url) as response,
        ):
            assert await response.text() == "checked"

    async def test_sub_app_handlers_find_the_parent_apps_executor(self) -> None:
        async def handler(request: web.Request) -> web.Response:
            value = await get_executor(request).run(int, "42")
            return web.json_response({"value": value})

        sub = web.Application()
        sub.router.add_get("/answer", handler)
        app = web.Application()
        setup(app, functools.partial(BoundedLoopExecutor, max_workers=1))
        app.add_subapp("/sub", sub)
        async with serve(app) as server, session() as http:
            assert await get_json(http, f"{server.url}/sub/answer") == (
                200,
                {"value": 42},
                None,
            )

    async def test_another_key_gives_a_second_executor(self) -> None:
        files_key = web.AppKey("files", BoundedLoopExecutor)
        app = web.Application()
        setup(app, functools.partial(BoundedLoopExecutor, max_workers=1))
        app.cleanup_ctx.append(
            executor_context(
                functools.partial(BoundedLoopExecutor, max_workers=1), key=files_key
            )
        )
        async with serve(app):
            assert app[EXECUTOR_KEY] is not app[files_key]
        assert app[EXECUTOR_KEY].closed
        assert app[files_key].closed

    @pytest.mark.parametrize(
        ("retry_after", "error"),
        [(-1, ValueError), (1.5, TypeError), (True, TypeError)],
    )
    def test_retry_after_is_checked(
        self, retry_after: object, error: type[Exception]
    ) -> None:
        with pytest.raises(error, match="retry_after"):
            shedding_middleware(retry_after=retry_after)  # type: ignore[arg-type]

    async def test_setup_with_a_custom_key(self) -> None:
        db_key = web.AppKey("db", BoundedLoopExecutor)

        async def handler(request: web.Request) -> web.Response:
            executor = get_executor(request, key=db_key)
            return web.json_response({"bound": executor.bound})

        app = web.Application()
        setup(app, functools.partial(BoundedLoopExecutor, max_workers=3), key=db_key)
        app.router.add_get("/", handler)
        async with serve(app) as server, session() as http:
            assert await get_json(http, server.url) == (200, {"bound": 6}, None)
        assert EXECUTOR_KEY not in app
        assert app[db_key].closed

    def test_setup_refuses_a_key_that_is_not_an_app_key(self) -> None:
        with pytest.raises(TypeError, match="key"):
            setup(
                web.Application(),
                functools.partial(BoundedLoopExecutor, max_workers=1),
                key="db",  # type: ignore[arg-type]
            )


REFUSAL_CASES = [
    (OverloadedError, "Service overloaded; retry later"),
    (ClosedError, "Service shutting down; retry later"),
]


def refusing_middleware(path: str, error: type[Exception]) -> Middleware:
    """A middleware that raises *error* for *path* (and passes the rest)."""

    @web.middleware
    async def refusing(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == path:
            raise error("refused for the test")
        return await handler(request)

    return refusing


@pytest.mark.parametrize(("error", "detail"), REFUSAL_CASES)
class TestRefusalsEverywhere:
    """A refusal raised in a handler or any middleware is the documented 503."""

    async def test_handlers_middlewares_and_sub_apps(
        self, error: type[Exception], detail: str
    ) -> None:
        async def refuse(request: web.Request) -> web.Response:
            raise error("refused for the test")

        async def ok(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        sub = web.Application(middlewares=[refusing_middleware("/sub/mw", error)])
        sub.router.add_get("/refuse", refuse)
        sub.router.add_get("/mw", ok)

        app = web.Application(middlewares=[refusing_middleware("/mw-before", error)])
        setup(
            app,
            functools.partial(BoundedLoopExecutor, max_workers=1),
            retry_after=5,
        )
        app.middlewares.append(refusing_middleware("/mw-after", error))
        app.router.add_get("/refuse", refuse)
        for path in ("/mw-before", "/mw-after", "/ok"):
            app.router.add_get(path, ok)
        app.add_subapp("/sub", sub)

        refused = (503, {"detail": detail}, "5")
        async with serve(app) as server, session() as http:
            for path in (
                "/refuse",
                "/mw-before",
                "/mw-after",
                "/sub/refuse",
                "/sub/mw",
            ):
                assert await get_json(http, f"{server.url}{path}") == refused, path
            assert await get_json(http, f"{server.url}/ok") == (200, {"ok": True}, None)


class TestDeadlines:
    async def test_a_late_request_is_answered_504_at_its_deadline(self) -> None:
        release = threading.Event()

        def held(seconds: float) -> float:
            release.wait(30)  # a guard against a hang only
            return seconds

        app = create_app(workers=1, max_pending=4, work=held, call_timeout=0.1)
        try:
            async with serve(app) as server, session() as http:
                async with http.get(f"{server.url}/work?ms=1") as late:
                    assert late.status == 504
                    assert "Retry-After" not in late.headers
                    body = await late.json()
                assert body == {
                    "detail": "The service's time limit for this request passed"
                }
                async with http.get(f"{server.url}/stats") as response:
                    stats = await response.json()
                assert not release.is_set()  # answered while the call runs
                assert (stats["in_flight"], stats["abandoned"]) == (1, 1)
                assert stats["deadline_running"] == 1
                release.set()
        finally:
            release.set()
