"""Overload: the example services at about 5x their capacity, for real.

Usage::

    python benchmarks/overload.py                 # 20 s of load per case
    python benchmarks/overload.py --duration 3    # a quick look
    python benchmarks/overload.py --plot overload.png   # and draw it
    nox -s overload [-- --duration 3]

Each case starts a server in a process of its own on 127.0.0.1 and offers it
an open-loop load (requests are sent on a fixed schedule, whether or not the
earlier ones were answered, as real clients do) of ``--factor`` times its
capacity for ``--duration`` seconds. Capacity is ``workers / service time``:
every request of ``/work?ms=<service-ms>`` holds a worker thread in
``time.sleep``. Cases, for FastAPI (uvicorn) and aiohttp alike:

* ``usual``: the same endpoint written the usual way, ``run_in_threadpool``
  (with anyio's thread limiter set to ``workers``) or ``loop.run_in_executor``
  on a ``ThreadPoolExecutor(workers)``; nothing is ever refused;
* the example itself (``examples/fastapi_app.py``,
  ``examples/aiohttp_app.py``), run as its docstring says, with
  ``BoundedLoopExecutor(max_workers=workers, ...)`` in three settings:

  - ``pending``: ``max_pending=--max-pending`` (16), a waiting room sized by
    hand to the service time, no ``max_wait``;
  - ``room``: ``max_pending=--room`` (200), a big waiting room and no
    ``max_wait``: nothing but the count limits how long a request waits;
  - ``room+wait``: the same big room with ``max_wait=--max-wait`` (0.25 s):
    a request that waited that long for a slot gets its 503 then.

The cases of one framework run back to back in that order (usual, pending,
room, room+wait), in one run, so the two ``room`` cases see the same machine.

Reported per case: goodput (200 responses per second of the run, drain
included), p50/p99 latency of the accepted (200) requests, the share refused
with 503, the share that failed or timed out on the client, and the server's
RSS before the load and at its peak (sampled from ``/proc`` every 100 ms,
Linux only). For the aiobound cases, the server's own ``/stats`` after the
load splits the 503s into ``shed_at_edge`` (refused by the edge check before
the handler: the room was full), ``rejected`` (the room was full when the
handler submitted) and ``timed_out`` (waited ``max_wait``) and gives the
longest wait for a slot.

Bounds: the generator talks to 127.0.0.1 only, sends at most ``rate x
duration`` requests, keeps at most ``--max-outstanding`` in flight (more are
counted as not sent), gives each ``--timeout`` seconds, and stops waiting
``--timeout`` seconds after the last one was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

HOST = "127.0.0.1"  # the only address this script ever talks to
REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("fastapi", "aiohttp")
PATTERNS = ("usual", "pending", "room", "room+wait")
SERVER_NAMES = {"fastapi": "FastAPI (uvicorn)", "aiohttp": "aiohttp"}
USUAL_NAMES = {"fastapi": "`run_in_threadpool`", "aiohttp": "`run_in_executor`"}
MAX_DURATION = 120.0
MAX_RATE = 5_000.0
MB = 1024 * 1024


# -- the servers ---------------------------------------------------------------


def blocking_work(seconds: float) -> float:
    """The same blocking call as the examples': hold a worker in sleep."""
    time.sleep(seconds)
    return seconds


def serve_usual_fastapi(port: int, workers: int) -> None:
    """Serve FastAPI with ``run_in_threadpool``, no shedding (the usual way)."""
    import anyio.to_thread
    import uvicorn
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Same number of threads as the aiobound case (anyio's default is 40).
        anyio.to_thread.current_default_thread_limiter().total_tokens = workers
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/work")
    async def work(ms: float = 50) -> dict[str, float]:
        slept = await run_in_threadpool(blocking_work, ms / 1000)
        return {"slept_ms": slept * 1000}

    uvicorn.run(app, host=HOST, port=port, access_log=False, log_level="warning")


def serve_usual_aiohttp(port: int, workers: int) -> None:
    """Serve aiohttp with ``loop.run_in_executor``, no shedding (the usual way)."""
    import concurrent.futures

    from aiohttp import web

    pool = concurrent.futures.ThreadPoolExecutor(workers)

    async def work(request: web.Request) -> web.Response:
        ms = float(request.query.get("ms", "50"))
        loop = asyncio.get_running_loop()
        slept = await loop.run_in_executor(pool, blocking_work, ms / 1000)
        return web.json_response({"slept_ms": slept * 1000})

    app = web.Application()
    app.router.add_get("/work", work)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


def limits(pattern: str, options: argparse.Namespace) -> tuple[int, float | None]:
    """``(max_pending, max_wait)`` of an aiobound *pattern*."""
    if pattern == "pending":
        return options.max_pending, None
    if pattern == "room":
        return options.room, None
    if pattern == "room+wait":
        return options.room, options.max_wait
    raise ValueError(f"not an aiobound pattern: {pattern!r}")


def label(framework: str, pattern: str, options: argparse.Namespace) -> str:
    """How the README's table names *pattern*."""
    if pattern == "usual":
        return f"usual: {USUAL_NAMES[framework]}"
    max_pending, max_wait = limits(pattern, options)
    if max_wait is None:
        return f"aiobound, `max_pending={max_pending}`"
    return f"aiobound, `max_pending={max_pending}, max_wait={max_wait:g}`"


def server_command(
    framework: str, pattern: str, port: int, options: argparse.Namespace
) -> list[str]:
    """The command line that serves one case on *port*."""
    workers = options.workers
    if pattern != "usual":
        max_pending, max_wait = limits(pattern, options)
        example = REPO / "examples" / f"{framework}_app.py"
        return [
            sys.executable,
            str(example),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--max-pending",
            str(max_pending),
            "--max-wait",
            str(max_wait or 0),  # 0: no limit
            "--quiet",
        ]
    return [
        sys.executable,
        __file__,
        "serve-usual",
        framework,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_server(
    command: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the server, wait until it answers, stop it on exit.

    *env* is added to the server's environment.
    """
    environ = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log, env=environ)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    url = f"http://{HOST}:{port}/work?ms=0"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        response.read()
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        sys.stderr.write(log.read().decode(errors="replace"))
                        raise RuntimeError(f"server did not start: {command}") from None
                    time.sleep(0.1)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # the usual case still has a queue
                proc.kill()
                proc.wait()


def server_stats(port: int) -> dict[str, object]:
    """The aiobound example's ``GET /stats`` (its executor's counters)."""
    url = f"http://{HOST}:{port}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats: dict[str, object] = json.load(response)
    return stats


def rss_bytes(pid: int) -> int:
    """Resident set size of process *pid*, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- the load ------------------------------------------------------------------


@dataclass
class Load:
    """What the load generator saw."""

    latencies_ms: list[float]
    sent: int
    not_sent: int
    rejected: int
    failed: int
    rss_samples: list[int]
    wall_s: float


@dataclass
class Outcome:
    """What one case measured."""

    framework: str
    pattern: str
    offered_rps: float
    sent: int
    not_sent: int
    ok: int
    rejected: int
    failed: int
    goodput_rps: float
    p50_ms: float
    p99_ms: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    wall_s: float
    server_stats: dict[str, object] | None  # aiobound's /stats after the load


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of *values*; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    """Append the server's RSS every 100 ms until *stop* is set."""
    while not stop.is_set():
        with contextlib.suppress(OSError, RuntimeError):
            samples.append(rss_bytes(pid))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def unloaded_latency(port: int, service_ms: float, count: int) -> float:
    """Median latency (ms) of *count* requests sent one at a time."""
    import aiohttp

    url = f"http://{HOST}:{port}/work?ms={service_ms}"
    latencies: list[float] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            started = time.perf_counter()
            async with http.get(url) as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append((time.perf_counter() - started) * 1000)
    return statistics.median(latencies)


async def offer_load(
    port: int,
    pid: int,
    *,
    rate: float,
    duration: float,
    service_ms: float,
    timeout: float,
    max_outstanding: int,
) -> Load:
    """Send ``rate`` requests per second for ``duration`` seconds; wait for them."""
    import aiohttp

    url = f"http://{HOST}:{port}/work?ms={service_ms}"
    total = int(rate * duration)
    latencies: list[float] = []
    counts = {"rejected": 0, "failed": 0}
    rss: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, rss, stop))
    connector = aiohttp.TCPConnector(limit=max_outstanding + 10)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    pending: set[asyncio.Task[None]] = set()

    async def one(http: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        try:
            async with http.get(url) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            counts["failed"] += 1
            return
        if status == 200:
            latencies.append((time.perf_counter() - started) * 1000)
        elif status == 503:
            counts["rejected"] += 1
        else:
            counts["failed"] += 1

    sent = not_sent = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=connector, timeout=client_timeout
    ) as http:
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() - started > duration + 1:
                break  # the generator fell far behind: stop on time anyway
            if len(pending) >= max_outstanding:
                not_sent += 1
                continue
            task = asyncio.create_task(one(http))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout + 1)
            for task in late:
                task.cancel()
            counts["failed"] += len(late)
            await asyncio.gather(*late, return_exceptions=True)
    wall = time.perf_counter() - started
    stop.set()
    await sampler
    return Load(
        latencies, sent, not_sent, counts["rejected"], counts["failed"], rss, wall
    )


def run_case(framework: str, pattern: str, options: argparse.Namespace) -> Outcome:
    """Serve one case in its own process and measure it."""
    port = free_port()
    command = server_command(framework, pattern, port, options)
    capacity = options.workers / (options.service_ms / 1000)
    rate = min(MAX_RATE, options.factor * capacity)
    with running_server(command, port) as proc:
        asyncio.run(unloaded_latency(port, options.service_ms, 10))  # warm up
        rss_before = rss_bytes(proc.pid)
        load = asyncio.run(
            offer_load(
                port,
                proc.pid,
                rate=rate,
                duration=options.duration,
                service_ms=options.service_ms,
                timeout=options.timeout,
                max_outstanding=options.max_outstanding,
            )
        )
        rss_end = rss_bytes(proc.pid)
        stats = None if pattern == "usual" else server_stats(port)
    latencies = load.latencies_ms
    return Outcome(
        framework=framework,
        pattern=pattern,
        offered_rps=(load.sent + load.not_sent) / options.duration,
        sent=load.sent,
        not_sent=load.not_sent,
        ok=len(latencies),
        rejected=load.rejected,
        failed=load.failed,
        goodput_rps=len(latencies) / load.wall_s,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        rss_before_mb=rss_before / MB,
        rss_peak_mb=max([rss_before, *load.rss_samples]) / MB,
        rss_end_mb=rss_end / MB,
        wall_s=load.wall_s,
        server_stats=stats,
    )


# -- the report ----------------------------------------------------------------


def share(part: int, whole: int) -> str:
    """*part* of *whole* as a percentage."""
    return f"{100 * part / whole:.0f} %" if whole else "-"


def report(
    outcomes: list[Outcome], unloaded: dict[str, float], options: argparse.Namespace
) -> bool:
    """Print the table and the target check; return whether targets were met."""
    bound = 2 * options.workers
    capacity = options.workers / (options.service_ms / 1000)
    print()
    print(
        f"{options.workers} workers x {options.service_ms:g} ms = capacity "
        f"{capacity:.0f} req/s; offered {options.factor:g}x for "
        f"{options.duration:g} s; aiobound bound={bound}; client timeout "
        f"{options.timeout:g} s"
    )
    print()
    print(
        "| server | pattern | offered req/s | goodput req/s | p50 ms | p99 ms "
        "| rejected (503) | failed (timed out) | server RSS before → peak MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    met = True
    for o in outcomes:
        offered = o.sent + o.not_sent
        failed = o.failed + o.not_sent
        print(
            f"| {SERVER_NAMES[o.framework]} | {label(o.framework, o.pattern, options)} "
            f"| {o.offered_rps:.0f} | {o.goodput_rps:.0f} | {o.p50_ms:.0f} | "
            f"{o.p99_ms:.0f} | {share(o.rejected, offered)} | "
            f"{share(failed, offered)} | "
            f"{o.rss_before_mb:.0f} → {o.rss_peak_mb:.0f} |"
        )
    print()
    for o in outcomes:
        if o.server_stats is None:
            continue
        # The longest an accepted request may queue: behind the calls in the
        # pool (bound - workers of them, over the workers) and in the waiting
        # room, for max_pending calls' worth or max_wait, whichever is less.
        max_pending, max_wait = limits(o.pattern, options)
        pool_ms = (bound - options.workers) / options.workers * options.service_ms
        room_ms = max_pending / options.workers * options.service_ms
        if max_wait is not None:
            room_ms = min(room_ms, 1000 * max_wait)
        queue_ms = pool_ms + room_ms
        target = 3 * unloaded[o.framework] + queue_ms
        growth = o.rss_peak_mb - o.rss_before_mb
        ok = o.p99_ms <= target and o.failed == 0 and o.not_sent == 0
        met = met and ok
        st = o.server_stats
        wait_ms = 1000 * float(str(st["queue_wait_max"]))
        print(
            f"{o.framework} {o.pattern}: unloaded p50 {unloaded[o.framework]:.0f} "
            f"ms; target p99 <= 3 x {unloaded[o.framework]:.0f} + {queue_ms:.0f} "
            f"(queue the limits allow) = {target:.0f} ms: p99 {o.p99_ms:.0f} ms "
            f"{'met' if ok else 'MISSED'}; RSS grew {growth:.1f} MB; server: "
            f"shed_at_edge {st.get('shed_at_edge', 0)}, rejected {st['rejected']}, "
            f"timed_out {st['timed_out']}, longest "
            f"wait for a slot {wait_ms:.0f} ms"
        )
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average before {options.loadavg_before}"
    )
    return met


PLOT_NAMES = {
    "usual": "usual",
    "pending": "max_pending={max_pending}",
    "room": "max_pending={room}",
    "room+wait": "max_pending={room},\nmax_wait={max_wait:g}",
}
PLOT_COLORS = {
    "usual": "tab:red",
    "pending": "tab:blue",
    "room": "tab:orange",
    "room+wait": "tab:green",
}


def plot(outcomes: list[Outcome], options: argparse.Namespace, path: Path) -> None:
    """Draw goodput, p99 latency and what became of the requests, per case."""
    from matplotlib.figure import Figure

    frameworks = list(dict.fromkeys(o.framework for o in outcomes))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    goodput_ax, p99_ax, fate_ax = fig.subplots(1, 3)
    width = 0.8 / len(PATTERNS)
    capacity = options.workers / (options.service_ms / 1000)
    for o in outcomes:
        x = frameworks.index(o.framework) + (PATTERNS.index(o.pattern) - 1.5) * width
        color = PLOT_COLORS[o.pattern]
        name = PLOT_NAMES[o.pattern].format(
            max_pending=options.max_pending,
            room=options.room,
            max_wait=options.max_wait,
        )
        first = o.framework == frameworks[0]
        goodput_ax.bar(
            x, o.goodput_rps, width, color=color, label=name if first else None
        )
        p99_ax.bar(x, o.p99_ms / 1000, width, color=color)
        offered = o.sent + o.not_sent
        failed = (o.failed + o.not_sent) / offered
        rejected = o.rejected / offered
        accepted = 1 - failed - rejected
        fate_ax.bar(x, accepted, width, color=color)
        fate_ax.bar(x, rejected, width, bottom=accepted, color=color, alpha=0.35)
        fate_ax.bar(
            x, failed, width, bottom=accepted + rejected, color="black", alpha=0.8
        )
    goodput_ax.axhline(capacity, color="grey", linestyle="--", linewidth=1)
    goodput_ax.annotate(
        f"capacity {capacity:.0f} req/s",
        (0.5, capacity),
        xycoords=("axes fraction", "data"),
        ha="center",
        va="bottom",
        fontsize="small",
    )
    goodput_ax.set_ylim(0, capacity * 1.25)
    goodput_ax.set_ylabel("goodput: 200 OK answers (req/s)")
    p99_ax.set_yscale("log")
    p99_ax.axhline(options.timeout, color="black", linestyle=":", linewidth=1)
    p99_ax.annotate(
        f"client gives up at {options.timeout:g} s",
        (0.5, options.timeout),
        xycoords=("axes fraction", "data"),
        ha="center",
        va="bottom",
        fontsize="small",
    )
    p99_ax.set_ylim(0.1, options.timeout * 3)
    p99_ax.set_ylabel("p99 latency of accepted requests (s, log scale)")
    fate_ax.set_ylim(0, 1)
    fate_ax.yaxis.set_major_formatter("{x:.0%}")
    fate_ax.set_ylabel(
        "share of requests: accepted (solid),\n503 (pale), timed out (black)"
    )
    for ax in (goodput_ax, p99_ax, fate_ax):
        ax.set_xticks(range(len(frameworks)), [SERVER_NAMES[f] for f in frameworks])
        ax.grid(visible=True, axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=len(PATTERNS), fontsize="small")
    fig.suptitle(
        f"{options.factor:g}x capacity for {options.duration:g} s: "
        f"{options.workers} workers x {options.service_ms:g} ms, "
        f"offered {options.factor * capacity:.0f} req/s"
    )
    fig.savefig(path, dpi=100)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="aiobound overload benchmark")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve-usual", help="internal: serve the usual pattern")
    serve.add_argument("framework", choices=FRAMEWORKS)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--workers", type=int, required=True)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--factor", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--max-pending", type=int, default=16)
    parser.add_argument("--room", type=int, default=200, help="the big max_pending")
    parser.add_argument("--max-wait", type=float, default=0.25, help="seconds")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-outstanding", type=int, default=4000)
    parser.add_argument(
        "--frameworks", default=",".join(FRAMEWORKS), help="comma-separated"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PATH",
        help="also draw goodput, p99 and each request's fate into PATH (matplotlib)",
    )
    options = parser.parse_args(argv)
    if options.command is None:
        if not 0 < options.duration <= MAX_DURATION:
            parser.error(f"--duration must be in (0, {MAX_DURATION:g}]")
        if not 0 < options.timeout <= MAX_DURATION:
            parser.error(f"--timeout must be in (0, {MAX_DURATION:g}]")
        if not 0 < options.max_wait <= MAX_DURATION:
            parser.error(f"--max-wait must be in (0, {MAX_DURATION:g}]")
        if not 0 < options.max_outstanding <= 10_000:
            parser.error("--max-outstanding must be in (0, 10000]")
        for name in options.frameworks.split(","):
            if name not in FRAMEWORKS:
                parser.error(f"unknown framework {name!r}")
        if options.plot is not None and not options.plot.parent.is_dir():
            parser.error(f"--plot: the folder {str(options.plot.parent)!r} is missing")
    return options


def main(argv: list[str]) -> int:
    """Run every case and print the table."""
    options = parse_args(argv)
    if options.command == "serve-usual":
        serve = (
            serve_usual_fastapi
            if options.framework == "fastapi"
            else serve_usual_aiohttp
        )
        serve(options.port, options.workers)
        return 0
    options.loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    outcomes: list[Outcome] = []
    unloaded: dict[str, float] = {}
    for framework in options.frameworks.split(","):
        port = free_port()
        command = server_command(framework, "pending", port, options)
        with running_server(command, port):
            unloaded[framework] = asyncio.run(
                unloaded_latency(port, options.service_ms, 50)
            )
        for pattern in PATTERNS:
            print(f"{framework} / {pattern}: {options.duration:g} s of load...")
            outcomes.append(run_case(framework, pattern, options))
    met = report(outcomes, unloaded, options)
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if options.json is not None:
        payload = {"unloaded_p50_ms": unloaded, "cases": [asdict(o) for o in outcomes]}
        options.json.write_text(json.dumps(payload, indent=2))
    if options.plot is not None:
        plot(outcomes, options, options.plot)
        print(f"plot saved to {options.plot}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
