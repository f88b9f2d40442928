"""Sync endpoints at five times their capacity: anyio's limiter or one line.

Usage::

    python benchmarks/sync_endpoints.py                # 20 s of load per case
    python benchmarks/sync_endpoints.py --duration 3   # a quick look
    nox -s bench_sync_endpoints [-- --duration 3]

The app is the same in every case, a FastAPI service written the usual way:
a sync ``def`` endpoint (``GET /work?ms=50``) with a sync dependency that
opens a session. The session's query checks a connection out of a pool of
``--pool`` connections (waiting up to ``--pool-timeout`` seconds for one,
then failing with a 500, as SQLAlchemy's ``QueuePool`` raises its
``TimeoutError``), holds it for the service time (``time.sleep``) and gives
it back. The capacity is ``pool / service time``. The cases:

* ``anyio``: as FastAPI runs it, in anyio's thread pool (40 threads per
  loop, an unbounded queue in front of them);
* ``anyio tuned``: the same with anyio's limiter set to the pool size (the
  usual advice: no more threads than connections);
* ``aiobound``: one line added, ``bound_sync_endpoints(app)``, with the
  app's ``BoundedLoopExecutor(max_workers=pool, max_pending=--max-pending,
  max_wait=--max-wait)`` made by ``executor_lifespan`` and the 503 of
  ``add_exception_handlers``;
* ``aiobound + edge``: the same, with ``EdgeSheddingMiddleware`` on
  ``/work``.

Each case is a server process of its own on 127.0.0.1 (uvicorn), offered an
open-loop load (requests on a fixed schedule, whether or not the earlier
ones were answered) of ``--factor`` times its capacity for ``--duration``
seconds; the cases run back to back in one run. Reported per case: goodput
(200 answers per second of the run, the drain included), p50 and p99
latency of the 200s, and what became of the requests: 503 (refused, with
``Retry-After``), 500 (the pool's timeout), timed out on the client
(``--timeout`` seconds), not sent (more than ``--max-outstanding`` in
flight); and the server's peak thread count. For the aiobound cases the
server's own counters split its 503s into ``rejected``, ``timed_out`` and
``shed_at_edge``.

Bounds: the generator talks to 127.0.0.1 only, sends at most ``rate x
duration`` requests, gives each ``--timeout`` seconds and stops waiting
``--timeout`` seconds after the last one was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import os
import platform
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI
from overload import HOST, free_port, percentile, running_server, unloaded_latency

from aiobound import BoundedLoopExecutor
from aiobound.starlette import (
    EdgeSheddingMiddleware,
    add_exception_handlers,
    bound_sync_endpoints,
    executor_lifespan,
    get_executor,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

CASES = ("anyio", "anyio tuned", "aiobound", "aiobound + edge")
MAX_DURATION = 120.0
MAX_RATE = 5_000.0


# -- the app, written the usual way ----------------------------------------------


class PoolTimeout(Exception):
    """No connection came free within the pool's timeout (a 500)."""


class Pool:
    """A pool of *size* connections; a checkout waits *timeout* seconds."""

    def __init__(self, size: int, timeout: float) -> None:
        self._free = threading.BoundedSemaphore(size)
        self._timeout = timeout

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        if not self._free.acquire(timeout=self._timeout):
            raise PoolTimeout(f"no connection free within {self._timeout:g} s")
        try:
            yield
        finally:
            self._free.release()


class Session:
    """What the dependency opens: queries check a connection out of the pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def query(self, seconds: float) -> float:
        with self._pool.connection():
            time.sleep(seconds)  # the database at work
        return seconds


POOL: Pool | None = None  # the server process's pool


def open_session() -> Iterator[Session]:
    """The usual sync dependency: a session per request."""
    assert POOL is not None
    yield Session(POOL)


DbSession = Annotated[Session, Depends(open_session)]


def work(session: DbSession, ms: float = 50) -> dict[str, float]:
    """The usual sync endpoint: one query."""
    return {"slept_ms": session.query(ms / 1000) * 1000}


async def stats(
    executor: Annotated[BoundedLoopExecutor, Depends(get_executor)],
) -> dict[str, int]:
    """The aiobound cases' refusal counters."""
    s = executor.stats()
    return {
        "rejected": s.rejected,
        "timed_out": s.timed_out,
        "shed_at_edge": s.shed_at_edge,
        "peak_in_flight": s.peak_in_flight,
    }


def build_app(case: str, options: argparse.Namespace) -> FastAPI:
    """The app of *case*: the same routes; what runs them differs."""
    global POOL
    POOL = Pool(options.pool, options.pool_timeout)
    if case == "anyio":
        app = FastAPI()
    elif case == "anyio tuned":

        @contextlib.asynccontextmanager
        async def tuned(app: FastAPI) -> AsyncIterator[None]:
            import anyio.to_thread

            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = options.pool
            yield

        app = FastAPI(lifespan=tuned)
    else:
        app = FastAPI(
            lifespan=executor_lifespan(
                functools.partial(
                    BoundedLoopExecutor,
                    max_workers=options.pool,
                    max_pending=options.max_pending,
                    max_wait=options.max_wait,
                )
            )
        )
        add_exception_handlers(app)
        app.get("/stats")(stats)
    app.get("/work")(work)
    if case.startswith("aiobound"):
        bound_sync_endpoints(app)  # the one line
    if case == "aiobound + edge":
        app.add_middleware(EdgeSheddingMiddleware, paths=["/work"])
    return app


def serve(case: str, options: argparse.Namespace) -> None:
    """Serve *case* on 127.0.0.1 until SIGTERM."""
    import uvicorn

    app = build_app(case, options)
    uvicorn.run(
        app, host=HOST, port=options.port, access_log=False, log_level="critical"
    )


# -- the load --------------------------------------------------------------------


@dataclass
class Outcome:
    """What one case measured."""

    case: str
    offered_rps: float
    sent: int
    not_sent: int
    ok: int
    refused: int  # 503
    errors: int  # 500
    timed_out: int  # on the client
    other: int
    goodput_rps: float
    p50_ms: float
    p99_ms: float
    peak_threads: int
    wall_s: float
    server: dict[str, int] | None


def threads_of(pid: int) -> int:
    """The thread count of process *pid* (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError(f"no thread count for pid {pid}")


async def sample_threads(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    """Append the server's thread count every 100 ms until *stop* is set."""
    while not stop.is_set():
        with contextlib.suppress(OSError, RuntimeError):
            samples.append(threads_of(pid))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def offer_load(
    port: int, pid: int, rate: float, options: argparse.Namespace
) -> tuple[list[float], collections.Counter[str], int, int, list[int], float]:
    """Send ``rate`` requests per second for the duration; wait for them."""
    import aiohttp

    url = f"http://{HOST}:{port}/work?ms={options.service_ms}"
    total = int(rate * options.duration)
    latencies: list[float] = []
    fates: collections.Counter[str] = collections.Counter()
    threads: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_threads(pid, threads, stop))
    connector = aiohttp.TCPConnector(limit=options.max_outstanding + 10)
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    pending: set[asyncio.Task[None]] = set()

    async def one(http: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        try:
            async with http.get(url) as response:
                await response.read()
                status = response.status
        except asyncio.TimeoutError:
            fates["timed out"] += 1
            return
        except (aiohttp.ClientError, OSError):
            fates["other"] += 1
            return
        if status == 200:
            latencies.append((time.perf_counter() - started) * 1000)
        fates[str(status)] += 1

    sent = not_sent = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() - started > options.duration + 1:
                break  # the generator fell far behind: stop on time anyway
            if len(pending) >= options.max_outstanding:
                not_sent += 1
                continue
            task = asyncio.create_task(one(http))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            _, late = await asyncio.wait(pending, timeout=options.timeout + 1)
            for task in late:
                task.cancel()
            fates["timed out"] += len(late)
            await asyncio.gather(*late, return_exceptions=True)
    wall = time.perf_counter() - started
    stop.set()
    await sampler
    return latencies, fates, sent, not_sent, threads, wall


def server_stats(port: int) -> dict[str, int]:
    """The aiobound server's refusal counters."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/stats", timeout=10) as r:
        counters: dict[str, int] = json.load(r)
    return counters


def run_case(case: str, options: argparse.Namespace) -> Outcome:
    """Serve *case* in a process of its own and measure it."""
    port = free_port()
    command = [
        sys.executable,
        __file__,
        "serve",
        case,
        "--port",
        str(port),
        *server_options(options),
    ]
    rate = min(MAX_RATE, options.factor * capacity(options))
    with running_server(command, port) as proc:
        asyncio.run(unloaded_latency(port, options.service_ms, 10))  # warm up
        latencies, fates, sent, not_sent, threads, wall = asyncio.run(
            offer_load(port, proc.pid, rate, options)
        )
        server = server_stats(port) if case.startswith("aiobound") else None
    return Outcome(
        case=case,
        offered_rps=(sent + not_sent) / options.duration,
        sent=sent,
        not_sent=not_sent,
        ok=fates["200"],
        refused=fates["503"],
        errors=fates["500"],
        timed_out=fates["timed out"],
        other=fates["other"]
        + sum(
            n
            for k, n in fates.items()
            if k not in {"200", "503", "500", "timed out", "other"}
        ),
        goodput_rps=len(latencies) / wall,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        peak_threads=max(threads, default=0),
        wall_s=wall,
        server=server,
    )


def capacity(options: argparse.Namespace) -> float:
    """Requests per second the pool can serve."""
    return float(options.pool / (options.service_ms / 1000))


def server_options(options: argparse.Namespace) -> list[str]:
    """The options a server process needs, as command-line arguments."""
    return [
        "--pool",
        str(options.pool),
        "--pool-timeout",
        str(options.pool_timeout),
        "--max-pending",
        str(options.max_pending),
        "--max-wait",
        str(options.max_wait),
    ]


def share(count: int, total: int) -> str:
    return f"{count / total:.0%}" if total else "-"


def report(outcomes: list[Outcome], options: argparse.Namespace) -> None:
    """Print the table (Markdown) and the servers' counters."""
    cap = capacity(options)
    print(
        f"\n{options.factor:g}x capacity for {options.duration:g} s: pool of "
        f"{options.pool} connections x {options.service_ms:g} ms = {cap:.0f} req/s, "
        f"offered {options.factor * cap:.0f} req/s; pool timeout "
        f"{options.pool_timeout:g} s; aiobound: max_workers={options.pool}, "
        f"max_pending={options.max_pending}, max_wait={options.max_wait:g}; "
        f"client timeout {options.timeout:g} s\n"
    )
    print(
        "| case | goodput req/s | p50 ms | p99 ms | 503 | 500 | timed out "
        "| server threads (peak) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for o in outcomes:
        offered = o.sent + o.not_sent
        lost = o.timed_out + o.not_sent + o.other
        print(
            f"| {o.case} | {o.goodput_rps:.0f} | {o.p50_ms:.0f} | {o.p99_ms:.0f} "
            f"| {share(o.refused, offered)} | {share(o.errors, offered)} "
            f"| {share(lost, offered)} | {o.peak_threads} |"
        )
    print()
    for o in outcomes:
        if o.server is not None:
            s = o.server
            counted = s["rejected"] + s["timed_out"] + s["shed_at_edge"]
            print(
                f"{o.case}: 503s {o.refused}; server: rejected {s['rejected']}, "
                f"timed_out {s['timed_out']}, shed_at_edge {s['shed_at_edge']} "
                f"(sum {counted}), peak in flight {s['peak_in_flight']}"
            )
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average before {options.loadavg_before}, after "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="sync endpoints at 5x capacity")
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="internal: serve one case")
    serve_parser.add_argument("case", choices=CASES)
    serve_parser.add_argument("--port", type=int, required=True)
    for p in (parser, serve_parser):
        p.add_argument("--pool", type=int, default=4, help="connections")
        p.add_argument("--pool-timeout", type=float, default=30.0, help="seconds")
        p.add_argument("--max-pending", type=int, default=16)
        p.add_argument("--max-wait", type=float, default=0.25, help="seconds")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--factor", type=float, default=5.0)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="client's")
    parser.add_argument("--max-outstanding", type=int, default=4000)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args(argv)
    if options.command is None:
        if not 0 < options.duration <= MAX_DURATION:
            parser.error(f"--duration must be in (0, {MAX_DURATION:g}]")
        if not 0 < options.timeout <= MAX_DURATION:
            parser.error(f"--timeout must be in (0, {MAX_DURATION:g}]")
        if not 0 < options.max_outstanding <= 10_000:
            parser.error("--max-outstanding must be in (0, 10000]")
        for name in options.cases.split(","):
            if name not in CASES:
                parser.error(f"unknown case {name!r}; cases: {', '.join(CASES)}")
    return options


def main(argv: list[str]) -> int:
    """Run every case and print the table."""
    options = parse_args(argv)
    if options.command == "serve":
        serve(options.case, options)
        return 0
    options.loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    outcomes: list[Outcome] = []
    for case in options.cases.split(","):
        print(f"{case}: {options.duration:g} s of load...", flush=True)
        outcomes.append(run_case(case, options))
    report(outcomes, options)
    if options.json is not None:
        options.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
