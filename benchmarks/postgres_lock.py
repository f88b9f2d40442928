"""The PostgreSQL example under a held table lock: how fast the bound answers.

Usage::

    python benchmarks/postgres_lock.py            # 3 runs, 5 s of lock each
    python benchmarks/postgres_lock.py --runs 1 --hold 10
    nox -s postgres_lock

Starts a throwaway PostgreSQL server on 127.0.0.1 (``tests/pg_server.py``:
Debian's binaries, a temporary directory, a free port, set up as
docs/howto/postgres.md sets up Debian's server), serves
``examples/postgres_app.py`` with uvicorn (8 connections, adaptive bound,
``latency_threshold`` 0.2 s, ``max_wait`` 0.05 s, statement timeout 500 ms),
and sends hits from 16 clients, each again as soon as answered: 2 s on a
healthy database, then ``--hold`` seconds with an ``EXCLUSIVE`` lock on the
table held by another connection, then 5 s after it is released.

Prints per run: the seconds from taking the lock until the bound was 2 or
less, the most sessions seen waiting on the lock (``pg_stat_activity``,
read every 0.1 s) before that and after it, the answers by status during the
lock and after it, and the seconds from the release until the bound was back
to 8. Bounds: 16
clients, at most ``hold + 7`` seconds a run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "examples")]

from postgres_app import create_app  # noqa: E402

from pg_server import find_bin_dir, postgres_server  # noqa: E402

CONNECTIONS = 8
CLIENTS = 16


def lock_waiters(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE items%%'"
        ).fetchone()
    return 0 if row is None else int(row[0])


def hold_lock(dsn: str, taken: threading.Event, release: threading.Event) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("LOCK TABLE items IN EXCLUSIVE MODE")
        taken.set()
        release.wait(60)


async def one_run(dsn: str, hold: float) -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = create_app(
        dsn,
        connections=CONNECTIONS,
        latency_threshold=0.2,
        max_wait=0.05,
        statement_timeout_ms=500,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, log_level="warning", access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    phase = "healthy"
    answers: dict[str, collections.Counter[int]] = collections.defaultdict(
        collections.Counter
    )
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def client(n: int) -> None:
            while not stop.is_set():
                response = await http.post(f"/items/{1 + n % 10}/hit")
                answers[phase][response.status_code] += 1

        async def bound() -> int:
            stats = (await http.get("/stats")).json()
            return int(stats["executor"]["bound"])

        while True:  # the server's lifespan has run once /stats answers
            try:
                await bound()
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
        await asyncio.sleep(2.0)
        taken, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=hold_lock, args=(dsn, taken, release))
        holder.start()
        await asyncio.to_thread(taken.wait, 30)
        phase = "locked"
        start = time.monotonic()
        fell = None
        waiting_before = waiting_after = 0
        while time.monotonic() - start < hold:
            if fell is None and await bound() <= 2:
                fell = time.monotonic() - start
            waiting = await asyncio.to_thread(lock_waiters, dsn)
            if fell is None:
                waiting_before = max(waiting_before, waiting)
            else:
                waiting_after = max(waiting_after, waiting)
            await asyncio.sleep(0.1)
        release.set()
        await asyncio.to_thread(holder.join, 30)
        phase = "after"
        start = time.monotonic()
        back = None
        while time.monotonic() - start < 5.0:
            if back is None and await bound() >= CONNECTIONS:
                back = time.monotonic() - start
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)
    server.should_exit = True
    await serving
    sock.close()

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f} s"

    def counts(name: str) -> str:
        return ", ".join(f"{n} x {code}" for code, n in sorted(answers[name].items()))

    return (
        f"bound <= 2 after {seconds(fell)} of lock; sessions waiting on it: "
        f"at most {waiting_before} before, {waiting_after} after; answers "
        f"during the lock: {counts('locked')}; "
        f"after: {counts('after')}; bound back to {CONNECTIONS} "
        f"{seconds(back)} after the release"
    )


async def main_async(args: argparse.Namespace) -> None:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL server binaries: apt-get install postgresql")
    with postgres_server(bin_dir) as dsn:
        for n in range(args.runs):
            print(f"run {n + 1}: {await one_run(dsn, args.hold)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", type=float, default=5.0)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}  cpus: {os.cpu_count()}")
    asyncio.run(main_async(args))
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
