"""A FastAPI service over PostgreSQL through a synchronous driver, self-tuning.

On a fresh Debian (or Ubuntu) machine, as root (with sudo, write
``sudo -u postgres`` for ``runuser -u postgres --``), install and start a
server, then create a role with a password and a database::

    apt-get install -y postgresql
    service postgresql start
    runuser -u postgres -- psql -c "CREATE ROLE aiobound LOGIN PASSWORD 'aiobound'"
    runuser -u postgres -- createdb -O aiobound aiobound

Then, from a clone of the repo::

    pip install -e '.[fastapi,postgres]' uvicorn
    DSN=postgresql://aiobound:aiobound@127.0.0.1:5432/aiobound
    python examples/postgres_app.py --dsn $DSN

Debian's server asks a password of connections to 127.0.0.1
(``scram-sha-256`` in ``pg_hba.conf``): the DSN carries it. With no server
there, the example says so in one line and exits (status 1) at once.

Then try::

    curl -X POST http://127.0.0.1:8000/items/7/hit   # UPDATE ... RETURNING
    curl http://127.0.0.1:8000/items/7               # SELECT
    curl http://127.0.0.1:8000/stats                 # executor and pool stats

The case users have: a blocking driver (psycopg 3) with its connection pool
(psycopg_pool), called from async handlers. The executor has one worker
thread per pooled connection, so a call that holds a worker holds a
connection, and its bound is an :class:`~aiobound.AIMD` policy between 1 and
the pool's size: a window of calls whose typical own latency (the query, not
the wait for a slot) exceeds ``--latency-threshold``, or a call the server
cancelled at ``--statement-timeout``, halves the bound, once per round (a
database behind a lock needs relief within a few rounds, not a few dozen);
windows within it add one. When the database slows down (a lock held by
another transaction, a vacuum, a noisy neighbour), the bound falls,
requests that waited ``--max-wait`` for a slot get ``503`` with
``Retry-After``, and the database is not handed more concurrent work than it
can finish; a query the server cancelled answers ``503`` with
``Retry-After`` too, never ``500``. When the database recovers, the bound
climbs back. ``--bound N`` runs a fixed bound instead.

With ``--call-timeout S`` every call has a deadline of ``S`` seconds, its
wait for a slot included: the request gets a ``504`` at the deadline, and
the query is told how much of it is left (:func:`aiobound.remaining`), as
its pool checkout's timeout and its ``statement_timeout``, so the server
cancels it then instead of running on for a client that has gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, Literal

import psycopg
import psycopg.errors
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout

from aiobound import AIMD, BoundedLoopExecutor, DeadlineExceeded, remaining
from aiobound.starlette import (
    REFUSAL_RESPONSES,
    add_exception_handlers,
    executor_state,
    get_executor,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# An endpoint parameter of this type receives the app's executor.
Executor = Annotated[BoundedLoopExecutor, Depends(get_executor)]

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id integer PRIMARY KEY, hits bigint NOT NULL);
INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) AS g
ON CONFLICT (id) DO NOTHING;
"""

# The lifespan state's key for the database (its connection pool).
DATABASE_KEY = "aiobound_example_pg"

# Seconds a client is told to wait after a 503.
RETRY_AFTER = 1

HOW_TO_START = "docs/howto/postgres.md says how to start a server and create a role"


def check_server(dsn: str, timeout: int = 3) -> None:
    """Connect once; raise :class:`SystemExit` with one line if that fails.

    Without this, the pool would retry in the background for its whole
    ``timeout`` and the server would start with a traceback.
    """
    try:
        psycopg.connect(dsn, connect_timeout=timeout).close()
    except psycopg.Error as error:
        reason = " ".join(str(error).split())  # psycopg's message spans lines
        raise SystemExit(f"postgres_app: {reason} ({HOW_TO_START})") from None


@dataclasses.dataclass(frozen=True)
class Database:
    """The connection pool, and how long the app lets a statement run."""

    pool: ConnectionPool
    statement_timeout_ms: int
    call_timeout: float | None = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection whose statements end by the call's deadline.

        Without a deadline (:func:`aiobound.remaining` is ``None``): the
        connection as it is, its ``statement_timeout`` the app's. With one:
        the checkout waits at most the time left, the session's
        ``statement_timeout`` is set to what is left after it (at most the
        app's) and put back when the connection returns to the pool. A
        statement the server cancelled at that limit is the call's deadline
        passing: it raises :class:`~aiobound.DeadlineExceeded` (a 504, as
        if the deadline had been seen first on the loop), not the driver's
        ``QueryCanceled`` (a 503). With no time left, :class:`TimeoutError`
        (the caller has had its 504).
        """
        if remaining() is None:
            with self.pool.connection() as conn:
                yield conn
            return
        with self.pool.connection(timeout=time_left()) as conn:
            ms = min(self.statement_timeout_ms, max(1, int(time_left() * 1000)))
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", (str(ms),)
            )
            try:
                yield conn
            except psycopg.errors.QueryCanceled as error:
                if ms < self.statement_timeout_ms and self.call_timeout is not None:
                    raise DeadlineExceeded(
                        f"deadline exceeded: {self.call_timeout:g} s passed "
                        "while the call was running (the server cancelled "
                        "its statement)",
                        "running",
                        self.call_timeout,
                    ) from error
                raise
            finally:
                conn.execute("RESET statement_timeout")


def time_left() -> float:
    """Seconds left before the call's deadline; :class:`TimeoutError` at 0.

    Only for a call with a deadline.
    """
    left = remaining()
    assert left is not None
    if left <= 0:
        raise TimeoutError("the call's deadline passed before its query")
    return left


def hit(db: Database, item: int) -> int | None:
    """Count a hit on *item* (blocking: runs in a worker thread)."""
    with db.connection() as conn:
        row = conn.execute(
            "UPDATE items SET hits = hits + 1 WHERE id = %s RETURNING hits", (item,)
        ).fetchone()
    return None if row is None else int(row[0])


def read(db: Database, item: int) -> int | None:
    """Read *item*'s hit count (blocking: runs in a worker thread)."""
    with db.connection() as conn:
        row = conn.execute("SELECT hits FROM items WHERE id = %s", (item,)).fetchone()
    return None if row is None else int(row[0])


def create_app(
    dsn: str,
    *,
    connections: int = 8,
    bound: int | Literal["adaptive"] = "adaptive",
    latency_threshold: float = 0.1,
    max_wait: float = 0.1,
    statement_timeout_ms: int = 500,
    call_timeout: float | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        dsn: The database to connect to.
        connections: Connections in the pool, and worker threads.
        bound: ``"adaptive"`` (an :class:`~aiobound.AIMD` policy between 1
            and ``connections``) or a fixed bound.
        latency_threshold: Seconds of typical query latency (over a window
            of queries) above which the adaptive bound backs off: about 1.25
            times a query's latency on a healthy database (the bound climbs
            until queries take about this).
        max_wait: Seconds a request may wait for a slot before a 503.
        statement_timeout_ms: The server cancels a statement running longer
            (``QueryCanceled``): the request gets a 503 with
            ``Retry-After``, and the adaptive bound counts a drop.
        call_timeout: Seconds each call may take, its wait for a slot
            included (``None``: no limit). At the deadline the request gets
            a 504; the query's ``statement_timeout`` is what is left of it
            (at most ``statement_timeout_ms``), so the server cancels it
            then.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        pool = ConnectionPool(
            dsn,
            min_size=connections,
            max_size=connections,
            open=False,
            timeout=5.0,
            kwargs={
                "autocommit": True,
                "options": f"-c statement_timeout={statement_timeout_ms}",
            },
        )
        await asyncio.to_thread(pool.open, True)
        try:
            with pool.connection() as conn:
                conn.execute(SCHEMA)
            policy = (
                AIMD(
                    max=connections,
                    initial=connections,
                    latency_threshold=latency_threshold,
                    backoff=0.5,
                    drop_on=(psycopg.errors.QueryCanceled, PoolTimeout, TimeoutError),
                )
                if bound == "adaptive"
                else bound
            )
            executor = BoundedLoopExecutor(
                max_workers=connections,
                bound=policy,
                max_wait=max_wait,
                call_timeout=call_timeout,
            )
            async with executor_state(executor) as state:
                db = Database(pool, statement_timeout_ms, call_timeout)
                yield {**state, DATABASE_KEY: db}
        finally:
            await asyncio.to_thread(pool.close)

    app = FastAPI(
        title="aiobound PostgreSQL example",
        lifespan=lifespan,
        responses=REFUSAL_RESPONSES,
    )
    add_exception_handlers(app, retry_after=RETRY_AFTER)

    async def database_busy(request: Request, exc: Exception) -> JSONResponse:
        """A cancelled statement or no free connection: 503, not 500."""
        return JSONResponse(
            {"detail": f"the database is busy ({type(exc).__name__}): retry later"},
            503,
            headers={"Retry-After": str(RETRY_AFTER)},
        )

    app.add_exception_handler(psycopg.errors.QueryCanceled, database_busy)
    app.add_exception_handler(PoolTimeout, database_busy)

    def database(request: Request) -> Database:
        db: Database = getattr(request.state, DATABASE_KEY)
        return db

    @app.post("/items/{item}/hit")
    async def hit_item(
        request: Request, executor: Executor, item: int
    ) -> dict[str, int]:
        """Count a hit; 404 if there is no such item."""
        hits = await executor.run(hit, database(request), item)
        if hits is None:
            raise HTTPException(404, "no such item")
        return {"id": item, "hits": hits}

    @app.get("/items/{item}")
    async def read_item(
        request: Request, executor: Executor, item: int
    ) -> dict[str, int]:
        """Read an item's hits; 404 if there is no such item."""
        hits = await executor.run(read, database(request), item)
        if hits is None:
            raise HTTPException(404, "no such item")
        return {"id": item, "hits": hits}

    @app.get("/stats")
    async def stats(request: Request, executor: Executor) -> dict[str, object]:
        """The executor's stats and the connection pool's."""
        executor_stats = dataclasses.asdict(executor.stats())
        pool_stats = database(request).pool.get_stats()
        return {"executor": executor_stats, "pool": pool_stats}

    return app


def main() -> None:
    """Parse the command line and serve the app with uvicorn."""
    parser = argparse.ArgumentParser(description="aiobound PostgreSQL example")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--bound", default="adaptive", help="'adaptive' (default) or a number"
    )
    parser.add_argument("--latency-threshold", type=float, default=0.1)
    parser.add_argument("--max-wait", type=float, default=0.1)
    parser.add_argument(
        "--statement-timeout", type=int, default=500, help="milliseconds"
    )
    parser.add_argument(
        "--call-timeout", type=float, default=None, help="seconds (default: none)"
    )
    args = parser.parse_args()
    check_server(args.dsn)
    bound: int | Literal["adaptive"] = (
        "adaptive" if args.bound == "adaptive" else int(args.bound)
    )
    app = create_app(
        args.dsn,
        connections=args.connections,
        bound=bound,
        latency_threshold=args.latency_threshold,
        max_wait=args.max_wait,
        statement_timeout_ms=args.statement_timeout,
        call_timeout=args.call_timeout,
    )
    uvicorn.run(app, host=args.host, port=args.port, timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
