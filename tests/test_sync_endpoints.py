"""bound_sync_endpoints: an existing app's sync endpoints through the executor.

Over real HTTP (uvicorn on 127.0.0.1, as in test_fastapi). The app of these
tests is written the usual way, with ``def`` endpoints and a ``def``
dependency that opens a session; its blocking work is a gate the test
opens, and the endpoint bodies running at once are counted inside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading

# FastAPI evaluates the endpoints' annotations in this module's globals.
from collections.abc import Iterator  # noqa: TC003
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Query
from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request  # noqa: TC002 - FastAPI reads it
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

from aiobound import BoundedLoopExecutor, ExecutorStats
from aiobound.starlette import (
    EdgeSheddingMiddleware,
    add_exception_handlers,
    bound_sync_endpoints,
    bounded_route_class,
    executor_lifespan,
    get_executor,
)
from batch_helpers import until, waiting
from test_fastapi import client, serve, stats_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import httpx
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Receive, Scope, Send

    from conftest import Gate, GateFactory

OVERLOADED = {"detail": "Service overloaded; retry later"}
POOL = "bounded"  # the name prefix of the executor's worker threads
# Whether this FastAPI lists what it serves (0.137.2 on), so that
# bound_sync_endpoints can check that no sync endpoint was left behind.
LISTS_ROUTE_CONTEXTS = hasattr(fastapi_routing, "iter_route_contexts")


# -- the app, written the usual way ---------------------------------------------


class Bodies:
    """Counts the endpoint bodies running at once, from inside them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.threads: set[str] = set()

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


class Database:
    """A blocking driver: each query waits on ``work`` (a gate in the tests)."""

    def __init__(self, work: Callable[[int], int]) -> None:
        self.work = work
        self.bodies = Bodies()
        self.opened = 0
        self.closed = 0
        self.session_threads: set[str] = set()


class Session:
    def __init__(self, db: Database) -> None:
        self.db = db

    def query(self, item_id: int) -> int:
        return self.db.work(item_id)


def open_session(request: Request) -> Iterator[Session]:
    """The usual sync dependency: a session per request, closed after it."""
    db: Database = request.app.state.db
    db.opened += 1
    db.session_threads.add(threading.current_thread().name)
    try:
        yield Session(db)
    finally:
        db.closed += 1


DbSession = Annotated[Session, Depends(open_session)]


class Item(BaseModel):
    id: int
    name: str
    tags: list[str] = []


class NewItem(BaseModel):
    name: str
    tags: list[str] = []


def make_executor(
    made: list[BoundedLoopExecutor], **kwargs: Any
) -> BoundedLoopExecutor:
    """An executor on a pool whose threads are named, kept in *made*."""
    pool = ThreadPoolExecutor(kwargs.pop("max_workers"), thread_name_prefix=POOL)
    executor = BoundedLoopExecutor(executor=pool, **kwargs)
    made.append(executor)
    return executor


class Inventory:
    """A service with sync endpoints, a router and a sync dependency.

    ``bounded=False`` builds the same app without the one line.
    """

    def __init__(
        self,
        work: Callable[[int], int] = int,
        *,
        bounded: bool = True,
        workers: int = 2,
        max_pending: int | None = None,
        max_wait: float | None = None,
        partitions: dict[str, float] | None = None,
        items_partition: str | None = None,
    ) -> None:
        self.executors: list[BoundedLoopExecutor] = []
        factory = functools.partial(
            make_executor,
            self.executors,
            max_workers=workers,
            bound=workers,
            max_pending=max_pending,
            max_wait=max_wait,
            partitions=partitions,
        )
        app = self.app = FastAPI(title="inventory", lifespan=executor_lifespan(factory))
        add_exception_handlers(app, retry_after=7)
        self.db = app.state.db = Database(work)
        items = APIRouter(prefix="/items", tags=["items"])

        @items.get("/{item_id}", response_model=Item)
        def read_item(
            item_id: int,
            session: DbSession,
            q: Annotated[str | None, Query(max_length=10)] = None,
        ) -> dict[str, Any]:
            """Read one item.

            The text after the form feed is not in the schema.
            \f
            :param item_id: hidden
            """
            with session.db.bodies.inside():
                session.query(item_id)
            if item_id == 404:
                raise HTTPException(404, "no such item")
            # A field the response model drops.
            return {"id": item_id, "name": q or "thing", "secret": "dropped"}

        @items.post("", status_code=201, responses={409: {"description": "Exists"}})
        def create_item(item: NewItem, session: DbSession) -> Item:
            with session.db.bodies.inside():
                item_id = session.query(len(item.name))
            return Item(id=item_id, **item.model_dump())

        @app.get("/health", deprecated=True, summary="Alive?")
        def health() -> dict[str, str]:
            return {"thread": threading.current_thread().name}

        @app.get("/stats")
        async def stats(
            executor: Annotated[BoundedLoopExecutor, Depends(get_executor)],
        ) -> dict[str, int]:
            s = executor.stats()
            return {"in_flight": s.in_flight, "waiting": s.waiting}

        if items_partition is not None:
            # Before include_router, which copied the routes before FastAPI
            # 0.137: bounding the router after would miss the copies.
            assert bound_sync_endpoints(items, partition=items_partition) == 2
        app.include_router(items)
        self.items = items
        if bounded:
            self.bounded = bound_sync_endpoints(app)

    @property
    def executor(self) -> BoundedLoopExecutor:
        return self.executors[-1]


async def first_done(
    tasks: list[asyncio.Task[httpx.Response]], count: int
) -> list[httpx.Response]:
    """The first *count* responses to arrive, in their order of arrival."""
    pending = set(tasks)
    done: list[httpx.Response] = []
    while len(done) < count:
        finished, pending = await asyncio.wait(
            pending, return_when=asyncio.FIRST_COMPLETED
        )
        done.extend(task.result() for task in finished)
    return done


def route_at(routes: Iterable[BaseRoute], path: str) -> Any:
    """The route declared for *path*."""
    return next(r for r in routes if getattr(r, "path", None) == path)


def refusals(stats: ExecutorStats) -> int:
    return stats.rejected + stats.timed_out + stats.shed_at_edge


# -- the proof ----------------------------------------------------------------


class TestOverload:
    async def test_five_times_overload_gets_200_or_503_never_more_than_bound(
        self, make_gate: GateFactory
    ) -> None:
        gate: Gate[int] = make_gate()
        service = Inventory(gate, workers=2, max_pending=2)
        assert service.bounded == 3  # read_item, create_item, health
        schema = Inventory(bounded=False).app.openapi()
        assert service.app.openapi() == schema

        async with serve(service.app) as (_, url), client(url) as http:
            # Twenty requests at once: five times the 2 slots + 2 places to wait.
            tasks = [asyncio.create_task(http.get(f"/items/{n}")) for n in range(20)]
            refused = await first_done(tasks, 16)  # the gate holds the others
            await gate.started(2)
            stats = service.executor.stats()
            assert (stats.in_flight, stats.waiting, stats.rejected) == (2, 2, 16)
            gate.open()
            responses = await asyncio.gather(*tasks)

        assert {r.status_code for r in responses} == {200, 503}
        served = [r for r in responses if r.status_code == 200]
        assert len(served) == 4
        for response in refused:
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "7"
            assert response.json() == OVERLOADED
        assert {r.json()["id"] for r in served} == set(gate.calls)
        db = service.db
        assert db.bodies.peak == 2  # never more than bound, counted inside
        assert all(name.startswith(POOL) for name in db.bodies.threads)
        stats = service.executor.stats()
        assert refusals(stats) == 16 == len(refused)
        assert (stats.submitted, stats.completed) == (4, 4)
        # The dependency ran for every request, refused ones too, and every
        # session it opened was closed.
        assert db.opened == db.closed == 20

    async def test_max_wait_refusals_are_503_and_counted(
        self, make_gate: GateFactory
    ) -> None:
        gate: Gate[int] = make_gate()
        service = Inventory(gate, workers=1, max_pending=3, max_wait=0.05)
        async with serve(service.app) as (_, url), client(url) as http:
            first = asyncio.create_task(http.get("/items/1"))
            await gate.started(1)
            # Three wait (and give up after max_wait), two find the room full.
            others = [asyncio.create_task(http.get(f"/items/{n}")) for n in range(5)]
            late = await asyncio.gather(*others)
            gate.open()
            assert (await first).status_code == 200
        assert [r.status_code for r in late] == [503] * 5
        assert all(r.headers["Retry-After"] == "7" for r in late)
        stats = service.executor.stats()
        assert (stats.timed_out, stats.rejected) == (3, 2)
        assert refusals(stats) == 5

    async def test_with_the_edge_check(self, make_gate: GateFactory) -> None:
        gate: Gate[int] = make_gate()
        service = Inventory(gate, workers=2, max_pending=2)
        # Its Retry-After (2) tells its refusals from the handlers' (7).
        service.app.add_middleware(
            EdgeSheddingMiddleware,
            paths=["/items"],
            min_retry_after=2,
            max_retry_after=2,
        )
        async with serve(service.app) as (_, url), client(url) as http:
            held = [asyncio.create_task(http.get(f"/items/{n}")) for n in range(4)]
            await gate.started(2)
            await until(stats_of(http), "two waiting", waiting(2))
            flood = await asyncio.gather(*(http.get("/items/9") for _ in range(16)))
            gate.open()
            served = await asyncio.gather(*held)
        assert [r.status_code for r in served] == [200] * 4
        assert [r.status_code for r in flood] == [503] * 16
        assert {r.headers["Retry-After"] for r in flood} == {"2"}  # all at the edge
        assert service.db.bodies.peak == 2
        assert service.db.opened == 4  # refused before routing: no session
        stats = service.executor.stats()
        assert stats.rejected + stats.timed_out == 0
        assert stats.shed_at_edge == 16  # the edge check counts its refusals


# -- what FastAPI builds stays as it was -----------------------------------------


class TestFastAPIUnchanged:
    async def test_validation_response_model_errors_and_status_codes(self) -> None:
        service = Inventory()
        async with serve(service.app) as (_, url), client(url) as http:
            read = await http.get("/items/3", params={"q": "lamp"})
            assert read.json() == {"id": 3, "name": "lamp", "tags": []}  # no secret
            assert (await http.get("/items/x")).status_code == 422
            assert (
                await http.get("/items/3", params={"q": "x" * 11})
            ).status_code == 422
            missing = await http.get("/items/404")
            assert (missing.status_code, missing.json()) == (
                404,
                {"detail": "no such item"},
            )
            made = await http.post("/items", json={"name": "desk", "tags": ["a"]})
            assert (made.status_code, made.json()) == (
                201,
                {"id": 4, "name": "desk", "tags": ["a"]},
            )
            assert (await http.post("/items", json={"tags": []})).status_code == 422
        stats = service.executor.stats()
        # The 404 raised in the worker counts as a failed call; the 422s
        # were refused by validation before any call.
        assert (stats.submitted, stats.completed, stats.failed) == (3, 2, 1)
        assert service.db.bodies.threads <= {f"{POOL}_0", f"{POOL}_1"}

    def test_the_schema_is_the_same_with_forward_references(self) -> None:
        # This module's annotations are strings (from __future__), resolved
        # in its globals (Item, DbSession), where FastAPI looks for them.
        bounded, usual = Inventory(), Inventory(bounded=False)
        assert bounded.app.openapi() == usual.app.openapi()
        paths = bounded.app.openapi()["paths"]
        assert paths["/items/{item_id}"]["get"]["description"] == (
            "Read one item.\n\nThe text after the form feed is not in the schema."
        )
        assert paths["/health"]["get"]["deprecated"] is True

    def test_the_routes_keep_their_endpoints_names_and_classes(self) -> None:
        service = Inventory()
        by_name = {r.name: r for r in service.app.routes if isinstance(r, APIRoute)}
        # FastAPI from 0.137 serves included routes from the router itself
        # (before, from copies in the app, which the router's are not).
        for route in service.items.routes:
            if isinstance(route, APIRoute):
                by_name.setdefault(route.name, route)
        route = by_name["read_item"]
        assert type(route).__name__ == "BoundedAPIRoute"
        assert isinstance(route, APIRoute)
        assert route.endpoint.__name__ == "read_item"
        assert inspect.unwrap(route.endpoint).__qualname__.endswith("read_item")
        assert route.dependant.call is route.endpoint
        assert by_name["stats"].endpoint.__name__ == "stats"
        assert type(by_name["stats"]) is APIRoute  # async: untouched

    async def test_dependency_overrides_still_apply(self) -> None:
        service = Inventory()

        def fake_session(request: Request) -> Iterator[Session]:
            yield Session(Database(lambda n: n * 100))

        service.app.dependency_overrides[open_session] = fake_session
        async with serve(service.app) as (_, url), client(url) as http:
            made = await http.post("/items", json={"name": "desk"})
        assert made.json()["id"] == 400
        assert service.db.opened == 0

    async def test_context_variables_reach_the_endpoint(self) -> None:
        app = FastAPI(lifespan=executor_lifespan(BoundedLoopExecutor))
        tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant")

        @app.middleware("http")
        async def set_tenant(request: Request, call_next: Any) -> Any:
            tenant.set(request.headers["x-tenant"])
            return await call_next(request)

        @app.get("/tenant")
        def read_tenant() -> str:
            return tenant.get()

        assert bound_sync_endpoints(app) == 1
        async with serve(app) as (_, url), client(url) as http:
            response = await http.get("/tenant", headers={"x-tenant": "acme"})
        assert response.json() == "acme"


# -- what stays in anyio's thread pool ---------------------------------------------


class TestLeftToAnyio:
    async def test_sync_dependencies_run_in_anyio_threads_before_the_slot(
        self,
    ) -> None:
        service = Inventory()
        async with serve(service.app) as (_, url), client(url) as http:
            assert (await http.get("/items/1")).status_code == 200
        assert service.db.session_threads
        assert not any(n.startswith(POOL) for n in service.db.session_threads)
        assert service.executor.stats().submitted == 1  # the endpoint alone

    async def test_background_tasks_run_after_the_response_outside_the_bound(
        self,
    ) -> None:
        made: list[BoundedLoopExecutor] = []
        app = FastAPI(
            lifespan=executor_lifespan(
                functools.partial(make_executor, made, max_workers=1)
            )
        )
        ran: list[str] = []
        finished = asyncio.Event()
        loop = asyncio.get_running_loop()

        def note(where: str) -> None:
            ran.append(f"{where}:{threading.current_thread().name}")
            loop.call_soon_threadsafe(finished.set)

        @app.get("/later")
        def later(tasks: BackgroundTasks) -> str:
            ran.append(f"endpoint:{threading.current_thread().name}")
            tasks.add_task(note, "task")
            return "ok"

        bound_sync_endpoints(app)
        async with serve(app) as (_, url), client(url) as http:
            assert (await http.get("/later")).json() == "ok"
            await finished.wait()
        assert ran[0] == f"endpoint:{POOL}_0"
        assert ran[1].startswith("task:")
        assert POOL not in ran[1]
        assert made[-1].stats().submitted == 1

    async def test_a_streamed_sync_iterator_is_read_outside_the_bound(self) -> None:
        made: list[BoundedLoopExecutor] = []
        app = FastAPI(
            lifespan=executor_lifespan(
                functools.partial(make_executor, made, max_workers=1)
            )
        )
        threads: list[str] = []

        def chunks() -> Iterator[bytes]:
            for n in range(3):
                threads.append(threading.current_thread().name)
                yield b"%d;" % n

        @app.get("/stream")
        def stream() -> StreamingResponse:
            threads.append(threading.current_thread().name)
            return StreamingResponse(chunks(), media_type="text/plain")

        @app.get("/generated", response_class=StreamingResponse, response_model=None)
        def generated() -> Iterator[bytes]:
            yield b"not bounded"  # pragma: no cover - never requested

        assert bound_sync_endpoints(app) == 1  # not the generator function
        assert route_at(app.routes, "/generated").endpoint is generated
        async with serve(app) as (_, url), client(url) as http:
            assert (await http.get("/stream")).text == "0;1;2;"
        assert threads[0] == f"{POOL}_0"
        assert not any(POOL in name for name in threads[1:])
        assert made[-1].stats().completed == 1


# -- one executor, partitions, routers ---------------------------------------------


class TestPartitionsAndRouters:
    async def test_a_router_in_its_own_partition(self, make_gate: GateFactory) -> None:
        gate: Gate[int] = make_gate()
        service = Inventory(
            gate,
            workers=2,
            max_pending=4,
            partitions={"items": 0.5},
            items_partition="items",
        )
        assert service.bounded == 1  # health; the items keep their partition
        async with serve(service.app) as (_, url), client(url) as http:
            held = [asyncio.create_task(http.get(f"/items/{n}")) for n in range(3)]
            await until(stats_of(http), "one waiting", waiting(1))
            parts = service.executor.stats().partitions
            assert parts is not None
            # The items share is 1 of 2 slots, and it borrows the idle other.
            assert (parts["items"].in_flight, parts["items"].waiting) == (2, 1)
            # health runs in the default partition, whose guaranteed slot
            # goes to it before the items waiting for one.
            gate.open()
            health = await http.get("/health")
            assert health.status_code == 200
            assert [r.status_code for r in await asyncio.gather(*held)] == [200] * 3
        parts = service.executor.stats().partitions
        assert parts is not None
        assert (parts["items"].completed, parts["default"].completed) == (3, 1)

    async def test_a_route_class_per_router(self) -> None:
        made: list[BoundedLoopExecutor] = []
        app = FastAPI(
            lifespan=executor_lifespan(
                functools.partial(
                    make_executor, made, max_workers=1, partitions={"reports": 0.5}
                )
            )
        )
        route_class = bounded_route_class(partition="reports")
        assert bounded_route_class(partition="reports") is route_class
        reports = APIRouter(prefix="/reports", route_class=route_class)

        @reports.get("/{n}")
        def report(n: int) -> dict[str, Any]:
            return {"n": n, "thread": threading.current_thread().name}

        @app.get("/plain")
        def plain() -> str:
            return threading.current_thread().name

        app.include_router(reports)
        async with serve(app) as (_, url), client(url) as http:
            assert (await http.get("/reports/5")).json() == {
                "n": 5,
                "thread": f"{POOL}_0",
            }
            plain_thread = (await http.get("/plain")).json()
        assert not plain_thread.startswith(POOL)  # not bounded: anyio's
        parts = made[-1].stats().partitions
        assert parts is not None
        assert (parts["reports"].completed, parts["default"].completed) == (1, 0)

    async def test_a_router_included_twice_is_bounded_under_both_prefixes(
        self,
    ) -> None:
        made: list[BoundedLoopExecutor] = []
        app = FastAPI(
            lifespan=executor_lifespan(
                functools.partial(make_executor, made, max_workers=1)
            )
        )
        router = APIRouter()

        @router.get("/where")
        def where() -> str:
            return threading.current_thread().name

        app.include_router(router, prefix="/a")
        app.include_router(router, prefix="/b")
        # One route kept whole (FastAPI 0.137 on) or two copies (before).
        assert bound_sync_endpoints(app) in (1, 2)
        async with serve(app) as (_, url), client(url) as http:
            for prefix in ("/a", "/b"):
                assert (await http.get(f"{prefix}/where")).json() == f"{POOL}_0"
        assert made[-1].stats().completed == 2

    async def test_sync_and_async_endpoints_share_the_bound(
        self, make_gate: GateFactory
    ) -> None:
        gate: Gate[int] = make_gate()
        service = Inventory(gate, bounded=False, workers=1, max_pending=4)

        @service.app.get("/async/{n}")
        async def async_read(
            n: int, executor: Annotated[BoundedLoopExecutor, Depends(get_executor)]
        ) -> int:
            return await executor.run(gate, n)

        bound_sync_endpoints(service.app)
        async with serve(service.app) as (_, url), client(url) as http:
            sync_call = asyncio.create_task(http.get("/items/1"))
            await gate.started(1)
            async_call = asyncio.create_task(http.get("/async/2"))
            stats = await until(stats_of(http), "the async call waiting", waiting(1))
            assert stats["in_flight"] == 1
            gate.open()
            assert (await sync_call).status_code == 200
            assert (await async_call).json() == 2
        assert service.executor.stats().peak_in_flight == 1


# -- Starlette ---------------------------------------------------------------------


def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse(threading.current_thread().name)


class Passthrough:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)  # pragma: no cover - never served


class TestStarlette:
    async def test_starlette_routes_and_mounted_apps(self) -> None:
        made: list[BoundedLoopExecutor] = []
        factory = functools.partial(make_executor, made, max_workers=1)
        inner = Starlette(routes=[Route("/deep", homepage)])
        app = Starlette(
            routes=[
                Route("/", homepage),
                Mount("/sub", routes=[Route("/page", homepage, methods=["GET"])]),
                Mount("/app", app=inner),
            ],
            lifespan=executor_lifespan(factory),
        )
        assert bound_sync_endpoints(app) == 3
        async with serve(app) as (_, url), client(url) as http:
            for path in ("/", "/sub/page", "/app/deep"):
                assert (await http.get(path)).text == f"{POOL}_0"
            assert (await http.post("/sub/page")).status_code == 405
        assert made[-1].stats().completed == 3

    def test_route_middleware_cannot_be_rebuilt_and_nothing_changes(self) -> None:
        if "middleware" not in Route.__init__.__code__.co_varnames:
            pytest.skip("this Starlette has no route middleware")
        plain = Route("/plain", homepage)
        wrapped = Route("/wrapped", homepage, middleware=[Middleware(Passthrough)])
        app = Starlette(routes=[plain, wrapped])
        with pytest.raises(TypeError, match=r"'/wrapped'.*middleware"):
            bound_sync_endpoints(app)
        assert plain.endpoint is homepage  # checked first, changed none


# -- errors --------------------------------------------------------------------------


class ManualRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)


class TestErrors:
    @pytest.mark.parametrize(
        ("app", "kwargs", "error", "match"),
        [
            (object(), {}, TypeError, "app must be"),
            (FastAPI(), {"key": ""}, TypeError, "key"),
            (FastAPI(), {"partition": ""}, TypeError, "partition"),
            (FastAPI(), {"partition": 3}, TypeError, "partition"),
        ],
    )
    def test_bad_arguments_are_named(
        self, app: Any, kwargs: dict[str, Any], error: type[Exception], match: str
    ) -> None:
        with pytest.raises(error, match=match):
            bound_sync_endpoints(app, **kwargs)

    def test_bad_route_class_arguments_are_named(self) -> None:
        with pytest.raises(TypeError, match="base"):
            bounded_route_class(base=Route)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="key"):
            bounded_route_class(key="")

    def test_a_route_class_with_its_own_init_is_refused_whole(self) -> None:
        app = FastAPI()
        router = APIRouter(route_class=ManualRoute)

        @app.get("/first")
        def first() -> None:
            """Declared first: checked, not changed."""

        @router.get("/manual")
        def manual() -> None:
            """Its route class has an __init__ of its own."""

        app.include_router(router)
        with pytest.raises(TypeError, match=r"ManualRoute.*base=ManualRoute"):
            bound_sync_endpoints(app)
        assert route_at(app.routes, "/first").endpoint is first
        # The advice works.
        router = APIRouter(route_class=bounded_route_class(base=ManualRoute))
        router.get("/manual")(manual)
        assert isinstance(router.routes[0], ManualRoute)
        assert inspect.unwrap(route_at(router.routes, "/manual").endpoint) is manual

    @pytest.mark.skipif(
        not LISTS_ROUTE_CONTEXTS, reason="FastAPI before 0.137.2 copies no route"
    )
    def test_after_the_schema_was_built_it_says_so(self) -> None:
        service = Inventory(bounded=False)
        service.app.openapi()  # FastAPI builds the included routes now
        with pytest.raises(RuntimeError, match=r"'/items/\{item_id}'.*openapi"):
            bound_sync_endpoints(service.app)

    async def test_without_an_executor_each_request_says_what_to_do(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        app = FastAPI()

        @app.get("/x")
        def x() -> None:
            """Never runs: no executor in the lifespan state."""

        bound_sync_endpoints(app, key="files")
        async with serve(app) as (_, url), client(url) as http:
            assert (await http.get("/x")).status_code == 500
        errors = [r.exc_info[1] for r in caplog.records if r.exc_info]
        assert any(
            isinstance(e, RuntimeError) and "under 'files'" in str(e) for e in errors
        )

    async def test_a_bounded_endpoint_called_outside_a_route_says_so(self) -> None:
        service = Inventory()
        route = route_at(service.app.routes, "/health")
        with pytest.raises(RuntimeError, match="outside a route"):
            await route.endpoint()

    def test_a_second_call_bounds_nothing_more(self) -> None:
        service = Inventory()
        assert service.bounded == 3
        assert bound_sync_endpoints(service.app, partition="other") == 0
