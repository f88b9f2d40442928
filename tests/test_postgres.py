"""The PostgreSQL example, served for real against a real PostgreSQL server.

The server is started once per session on 127.0.0.1 (see ``pg_server``).
Without PostgreSQL or psycopg the tests are skipped with the reason, except
under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING

import httpx
import pytest

from pg_server import find_bin_dir, postgres_server

if TYPE_CHECKING:
    from collections.abc import Iterator

# Bounds of the load loops: requests sent, and seconds, at most.
MAX_REQUESTS = 600
DEADLINE = 30.0


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for the whole session; its DSN."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        _missing("psycopg[pool] is not installed: pip install -e '.[postgres]'")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _missing(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: "
            "apt-get install postgresql"
        )
    assert bin_dir is not None
    with postgres_server(bin_dir) as dsn:
        yield dsn


class LockHolder:
    """A competing transaction: holds an EXCLUSIVE lock on ``items`` for
    ``hold`` seconds (``pg_sleep`` on the server), again and again."""

    def __init__(self, dsn: str, hold: float) -> None:
        import psycopg

        self._conn = psycopg.connect(dsn, autocommit=True)
        self._hold = hold
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._conn.transaction():
                self._conn.execute("LOCK TABLE items IN EXCLUSIVE MODE")
                self._conn.execute("SELECT pg_sleep(%s)", (self._hold,))

    def __enter__(self) -> LockHolder:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)
        self._conn.close()


def lock_waiters(dsn: str) -> int:
    """Sessions of the app blocked on a lock right now."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE items%%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def hammer(
    http: httpx.AsyncClient, clients: int, done: asyncio.Event, statuses: list[int]
) -> None:
    """*clients* clients POSTing hits until *done* or the bounds are reached."""

    async def one(n: int) -> None:
        while not done.is_set() and len(statuses) < MAX_REQUESTS:
            response = await http.post(f"/items/{1 + n % 10}/hit")
            statuses.append(response.status_code)

    await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(clients))), DEADLINE)


class TestPostgresExample:
    async def test_a_slow_database_lowers_the_bound_and_requests_get_503(
        self, postgres_dsn: str
    ) -> None:
        from postgres_app import create_app

        from test_fastapi import serve

        app = create_app(
            postgres_dsn, connections=4, latency_threshold=0.05, max_wait=0.05
        )
        async with (
            serve(app) as (_, url),
            httpx.AsyncClient(base_url=url, timeout=DEADLINE) as http,
        ):
            for _ in range(10):
                response = await http.post("/items/1/hit")
                assert response.status_code == 200
            assert (await http.get("/items/1")).json()["hits"] >= 10
            assert (await http.get("/items/999")).status_code == 404
            stats = (await http.get("/stats")).json()
            assert 1 <= stats["executor"]["bound"] <= 4  # AIMD(max=connections)
            assert stats["pool"]["pool_size"] == 4

            # The database slows: a transaction holds a lock 0.2 s at a time.
            statuses: list[int] = []
            done = asyncio.Event()

            async def watch() -> tuple[int, int, int]:
                """Until the bound fell to 2 and a 503 came back; then look."""
                while len(statuses) < MAX_REQUESTS:
                    executor = (await http.get("/stats")).json()["executor"]
                    if executor["bound"] <= 2 and 503 in statuses:
                        before = executor["bound"]
                        waiters = await asyncio.to_thread(lock_waiters, postgres_dsn)
                        after = (await http.get("/stats")).json()["executor"]["bound"]
                        done.set()
                        return before, waiters, after
                    await asyncio.sleep(0.02)  # polling /stats, not a sync
                done.set()
                return -1, -1, -1

            with LockHolder(postgres_dsn, hold=0.2):
                load = asyncio.create_task(hammer(http, 12, done, statuses))
                before, waiters, after = await asyncio.wait_for(watch(), DEADLINE)
                await load
            assert 1 <= before <= 2, f"bound still high after {len(statuses)} requests"
            assert 503 in statuses
            # Not every connection blocked behind the lock: at most the bound.
            assert waiters <= max(before, after) < 4
            slow = (await http.get("/stats")).json()["executor"]
            assert slow["timed_out"] > 0
            assert slow["latency_short"] is not None

            # The lock is gone: under load again, the bound climbs back.
            statuses.clear()
            done.clear()

            async def recovered() -> None:
                while len(statuses) < MAX_REQUESTS:
                    if (await http.get("/stats")).json()["executor"]["bound"] >= 3:
                        break
                    await asyncio.sleep(0.02)
                done.set()

            await asyncio.gather(hammer(http, 4, done, statuses), recovered())
            assert (await http.get("/stats")).json()["executor"]["bound"] >= 3
