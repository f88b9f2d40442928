"""Flood: the example services under a wrk flood, with and without the edge check.

Usage::

    python benchmarks/flood.py                  # 10 s of wrk per case, 3 rounds
    python benchmarks/flood.py --duration 3 --rounds 1   # a quick look
    nox -s flood [-- --rounds 1]

Each case starts the example service (``examples/fastapi_app.py`` or
``examples/aiohttp_app.py``: 4 workers, ``/work?ms=50``, so a capacity of 80
requests/s; ``max_pending=16``, ``max_wait=0.25``) in a process of its own on
127.0.0.1, with one extra route, ``/bare503``, that answers 503 and nothing
else. Cases:

* ``no edge``: the example with ``edge=False``: every refusal goes through
  routing, the dependency, the executor's ``OverloadedError`` and the
  exception handler (or the shedding middleware);
* ``edge``: the example as shipped, with the edge check;
* ``uvicorn --limit-concurrency``: FastAPI only, no edge check, uvicorn's
  own limit set to ``--limit-concurrency`` (default ``bound + max_pending``,
  what the executor admits).

Each case runs on two HTTP stacks (``--stacks``): ``c``, the production one,
with the HTTP parser in C and uvloop (uvicorn's httptools, from
``uvicorn[standard]``; aiohttp's own C parser), and ``python``, with the
pure-Python parser and asyncio (uvicorn's h11; aiohttp with
``AIOHTTP_NO_EXTENSIONS=1``). ``--switch-intervals`` adds a dimension: the
server's ``sys.setswitchinterval`` (``default``: Python's 5 ms), how long a
worker thread that finished its call may wait for the GIL while the event
loop thread holds it.

Per case it measures, against the same server process (how much longer
than 50 ms each worker's call took, timed inside the worker, comes with the
flood's figures: ``time.sleep`` returns once its thread has the GIL again):

1. ``wrk -t1 -c200 -d<duration>s --latency`` on ``/work?ms=50`` (closed
   loop): responses/s, goodput (200s/s) against capacity, p50/p99 of all
   responses, refusals (503s)/s, the server's peak RSS;
2. ``wrk`` the same way on ``/bare503`` for ``--bare-duration`` seconds:
   the rate at which the server can answer a bare 503, to which the
   refusal rate of 1. is compared;
3. the overload benchmark's open-loop client (``benchmarks/overload.py``) at
   ``--factor`` times capacity for ``--duration`` seconds: goodput, p50/p99
   of the accepted requests (wrk reports latency over all responses only).

Rounds are interleaved (every case once per round) and the table gives the
median of the rounds. Targets under the wrk flood: goodput >= 0.95 x
capacity, p99 of all responses <= 400 ms, refusals >= 0.8 x the bare-503
rate. wrk must be installed (``apt-get install -y wrk``); the script says so
and stops when it is missing. Everything talks to 127.0.0.1 only, and every
load is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overload import (  # the sibling benchmark, found on the path above
    HOST,
    free_port,
    offer_load,
    percentile,
    rss_bytes,
    running_server,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
CASES = (
    ("fastapi", "no-edge"),
    ("fastapi", "edge"),
    ("fastapi", "limit"),
    ("aiohttp", "no-edge"),
    ("aiohttp", "edge"),
)
CASE_NAMES = {
    "no-edge": "no edge check (refused in the handler)",
    "edge": "edge check",
    "limit": "uvicorn --limit-concurrency, no edge check",
}
SERVER_NAMES = {"fastapi": "FastAPI (uvicorn)", "aiohttp": "aiohttp"}
STACKS = ("c", "python")
STACK_NAMES = {
    ("fastapi", "c"): "httptools + uvloop",
    ("fastapi", "python"): "h11 + asyncio",
    ("aiohttp", "c"): "C parser + uvloop",
    ("aiohttp", "python"): "Python parser + asyncio",
}
# uvicorn's http= and loop= for each stack.
UVICORN_STACKS = {"c": ("httptools", "uvloop"), "python": ("h11", "asyncio")}
MB = 1024 * 1024
MAX_DURATION = 60.0

# Counts the statuses in wrk's Lua; prints one JSON line at the end.
WRK_SCRIPT = """
ok = 0
refused = 0
other = 0
response = function(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 then refused = refused + 1
  else other = other + 1 end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local o, r, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); r = r + t:get("refused"); x = x + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    '\\nWRKJSON {"duration_us":%d,"requests":%d,"ok":%d,"refused":%d,' ..
    '"other":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.duration, summary.requests, o, r, x,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


# -- the servers ---------------------------------------------------------------


class Overruns:
    """How much longer than asked each worker's blocking call took.

    ``time.sleep`` returns once its thread has the GIL again, so the
    overrun is the worker's wait for the GIL (and the OS's scheduling).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: list[float] = []

    def timed(self, seconds: float) -> float:
        """The examples' blocking call, timed from inside the worker."""
        started = time.perf_counter()
        time.sleep(seconds)
        overrun = time.perf_counter() - started - seconds
        with self._lock:
            self._seconds.append(overrun)
        return seconds

    def take(self) -> dict[str, float]:
        """Median and p90 overrun in ms of the calls since the last take."""
        with self._lock:
            values, self._seconds = sorted(self._seconds), []
        if not values:
            return {"calls": 0, "p50_ms": float("nan"), "p90_ms": float("nan")}
        return {
            "calls": len(values),
            "p50_ms": 1000 * values[len(values) // 2],
            "p90_ms": 1000 * values[int(len(values) * 0.9)],
        }


def serve(framework: str, mode: str, stack: str, options: argparse.Namespace) -> None:
    """Serve the example with ``/bare503`` and ``/overrun`` added (here).

    ``/bare503`` answers 503 and nothing else; ``/overrun`` reports (and
    resets) how much longer than asked the workers' calls took.
    """
    if options.switch_interval is not None:
        sys.setswitchinterval(options.switch_interval)
    sys.path.insert(0, str(REPO / "examples"))
    edge = mode == "edge"
    overruns = Overruns()
    if framework == "fastapi":
        import uvicorn
        from fastapi import Response
        from fastapi_app import create_app as create_fastapi_app

        app = create_fastapi_app(
            workers=options.workers,
            max_pending=options.max_pending,
            max_wait=options.max_wait,
            edge=edge,
            work=overruns.timed,
        )

        @app.get("/bare503")
        async def bare503() -> Response:
            return Response(status_code=503, headers={"Retry-After": "1"})

        @app.get("/overrun")
        async def overrun() -> dict[str, float]:
            return overruns.take()

        limit = options.limit_concurrency if mode == "limit" else None
        http, loop = UVICORN_STACKS[stack]
        uvicorn.run(
            app,
            host=HOST,
            port=options.port,
            access_log=False,
            log_level="warning",
            limit_concurrency=limit,
            http=http,
            loop=loop,
        )
        return
    import aiohttp_app
    from aiohttp import web
    from aiohttp_app import create_app as create_aiohttp_app
    from aiohttp_app import http_stack, new_event_loop

    aiohttp_app.blocking_work = overruns.timed  # what its handlers call

    parser, _ = http_stack()
    if parser != {"c": "C", "python": "Python"}[stack]:
        raise RuntimeError(f"aiohttp runs its {parser} parser, not the {stack} one")

    aio_app = create_aiohttp_app(
        workers=options.workers,
        max_pending=options.max_pending,
        max_wait=options.max_wait,
        edge=edge,
    )

    async def bare(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "1"})

    async def overrun(request: web.Request) -> web.Response:
        return web.json_response(overruns.take())

    aio_app.router.add_get("/bare503", bare)
    aio_app.router.add_get("/overrun", overrun)
    web.run_app(
        aio_app,
        host=HOST,
        port=options.port,
        access_log=None,
        print=None,
        loop=new_event_loop("uvloop" if stack == "c" else "asyncio"),
    )


def server_env(framework: str, stack: str) -> dict[str, str]:
    """The environment a server needs for *stack* (aiohttp's parser)."""
    if framework == "aiohttp" and stack == "python":
        return {"AIOHTTP_NO_EXTENSIONS": "1"}
    return {}


def server_command(
    framework: str,
    mode: str,
    stack: str,
    interval: float | None,
    port: int,
    options: argparse.Namespace,
) -> list[str]:
    extra = [] if interval is None else ["--switch-interval", repr(interval)]
    return [
        sys.executable,
        __file__,
        "serve",
        framework,
        mode,
        stack,
        "--port",
        str(port),
        "--workers",
        str(options.workers),
        "--max-pending",
        str(options.max_pending),
        "--max-wait",
        str(options.max_wait),
        "--limit-concurrency",
        str(options.limit_concurrency),
        *extra,
    ]


# -- the loads -----------------------------------------------------------------


@dataclass
class Wrk:
    """What one wrk run saw."""

    seconds: float
    responses: int
    ok: int
    refused: int
    other: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    rss_peak_mb: float


@contextlib.contextmanager
def rss_sampler(pid: int) -> Iterator[list[int]]:
    """Sample the server's RSS every 100 ms while the block runs."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                samples.append(rss_bytes(pid))
            stop.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def run_wrk(url: str, seconds: float, connections: int, pid: int, script: Path) -> Wrk:
    """Flood *url* with wrk (one thread, closed loop) for *seconds*."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    with rss_sampler(pid) as samples:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 30, check=True
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("WRKJSON "))
    return Wrk(
        seconds=data["duration_us"] / 1e6,
        responses=data["requests"],
        ok=data["ok"],
        refused=data["refused"],
        other=data["other"],
        socket_errors=data["socket_errors"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        rss_peak_mb=max(samples, default=0) / MB,
    )


@dataclass
class Outcome:
    """One case in one round."""

    framework: str
    mode: str
    stack: str
    switch_interval: float | None
    round: int
    flood: Wrk
    bare: Wrk
    open_offered_rps: float
    open_goodput_rps: float
    open_ok_p50_ms: float
    open_ok_p99_ms: float
    open_refused_share: float
    open_failed: int
    overrun_p50_ms: float
    overrun_p90_ms: float


def run_case(
    framework: str,
    mode: str,
    stack: str,
    interval: float | None,
    rnd: int,
    options: argparse.Namespace,
    script: Path,
) -> Outcome:
    """Start the server, flood it, measure the bare 503, then the open loop."""
    port = free_port()
    command = server_command(framework, mode, stack, interval, port, options)
    base = f"http://{HOST}:{port}"
    capacity = options.workers / 0.05
    with running_server(command, port, server_env(framework, stack)) as proc:
        server_json(port, "/overrun")  # forget the start-up probes
        flood = run_wrk(
            f"{base}/work?ms=50",
            options.duration,
            options.connections,
            proc.pid,
            script,
        )
        overrun = server_json(port, "/overrun")
        bare = run_wrk(
            f"{base}/bare503",
            options.bare_duration,
            options.connections,
            proc.pid,
            script,
        )
        load = asyncio.run(
            offer_load(
                port,
                proc.pid,
                rate=options.factor * capacity,
                duration=options.duration,
                service_ms=50.0,
                timeout=10.0,
                max_outstanding=4000,
            )
        )
    offered = load.sent + load.not_sent
    return Outcome(
        framework=framework,
        mode=mode,
        stack=stack,
        switch_interval=interval,
        round=rnd,
        flood=flood,
        bare=bare,
        open_offered_rps=offered / options.duration,
        open_goodput_rps=len(load.latencies_ms) / load.wall_s,
        open_ok_p50_ms=percentile(load.latencies_ms, 50),
        open_ok_p99_ms=percentile(load.latencies_ms, 99),
        open_refused_share=load.rejected / offered if offered else 0.0,
        open_failed=load.failed + load.not_sent,
        overrun_p50_ms=overrun["p50_ms"],
        overrun_p90_ms=overrun["p90_ms"],
    )


def server_json(port: int, path: str) -> dict[str, float]:
    """GET *path* of the server on 127.0.0.1:*port*, as JSON."""
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as answer:
        found: dict[str, float] = json.load(answer)
    return found


# -- the report ----------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interval_name(interval: float | None) -> str:
    """How the table names a switch interval."""
    if interval is None:
        return "5 ms (default)"
    return f"{interval * 1000:g} ms"


def report(outcomes: list[Outcome], options: argparse.Namespace) -> bool:
    """Print the table of medians and the target check; return whether met."""
    capacity = options.workers / 0.05
    print()
    print(
        f"{options.workers} workers x 50 ms = capacity {capacity:.0f} req/s; "
        f"max_pending={options.max_pending}, max_wait={options.max_wait:g}; wrk "
        f"-t1 -c{options.connections} -d{options.duration:g}s; open loop at "
        f"{options.factor:g}x capacity; median of {options.rounds} round(s)"
    )
    print()
    print(
        "| server | HTTP stack | GIL switch interval | case | responses/s "
        "| goodput (x capacity) | p50 / p99 all, ms | refusals/s (x bare 503) "
        "| open loop: goodput, p50 / p99 accepted, ms | server RSS peak MB "
        "| a 50 ms call overran, p50 / p90 ms |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    met = True
    for (framework, mode), stack, interval in itertools.product(
        CASES, options.stack_list, options.interval_list
    ):
        runs = [
            o
            for o in outcomes
            if (o.framework, o.mode, o.stack, o.switch_interval)
            == (framework, mode, stack, interval)
        ]
        if not runs:
            continue
        rps = median([o.flood.responses / o.flood.seconds for o in runs])
        good = median([o.flood.ok / o.flood.seconds for o in runs])
        p50 = median([o.flood.p50_ms for o in runs])
        p99 = median([o.flood.p99_ms for o in runs])
        refusals = median([o.flood.refused / o.flood.seconds for o in runs])
        bare = median([o.bare.refused / o.bare.seconds for o in runs])
        ratio = median(
            [
                (o.flood.refused / o.flood.seconds) / (o.bare.refused / o.bare.seconds)
                for o in runs
                if o.bare.refused
            ]
        )
        open_good = median([o.open_goodput_rps for o in runs])
        open_p50 = median([o.open_ok_p50_ms for o in runs])
        open_p99 = median([o.open_ok_p99_ms for o in runs])
        rss = median([max(o.flood.rss_peak_mb, o.bare.rss_peak_mb) for o in runs])
        over50 = median([o.overrun_p50_ms for o in runs])
        over90 = median([o.overrun_p90_ms for o in runs])
        print(
            f"| {SERVER_NAMES[framework]} | {STACK_NAMES[framework, stack]} "
            f"| {interval_name(interval)} | {CASE_NAMES[mode]} | {rps:,.0f} | "
            f"{good:.0f} ({good / capacity:.2f}) | {p50:.0f} / {p99:.0f} | "
            f"{refusals:,.0f} ({ratio:.2f} of {bare:,.0f}) | {open_good:.0f}, "
            f"{open_p50:.0f} / {open_p99:.0f} | {rss:.0f} | "
            f"{over50:.1f} / {over90:.1f} |"
        )
        if mode == "edge":
            ok = good >= 0.95 * capacity and p99 <= 400 and ratio >= 0.8
            met = met and ok
            print(
                f"  targets ({framework}, {STACK_NAMES[framework, stack]}, "
                f"{interval_name(interval)}, edge): "
                f"goodput >= {0.95 * capacity:.0f} "
                f"req/s, p99 all <= 400 ms, refusals >= 0.8 x bare: "
                f"{'met' if ok else 'MISSED'}"
            )
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average before {options.loadavg_before}"
    )
    return met


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="aiobound flood benchmark")
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="internal: serve one case")
    srv.add_argument("framework", choices=("fastapi", "aiohttp"))
    srv.add_argument("mode", choices=tuple(CASE_NAMES))
    srv.add_argument("stack", choices=STACKS)
    srv.add_argument("--switch-interval", type=float, default=None)
    srv.add_argument("--port", type=int, required=True)
    for target in (parser, srv):
        target.add_argument("--workers", type=int, default=4)
        target.add_argument("--max-pending", type=int, default=16)
        target.add_argument("--max-wait", type=float, default=0.25)
        target.add_argument(
            "--limit-concurrency",
            type=int,
            default=None,
            help="uvicorn's limit in the 'limit' case (default bound + max_pending)",
        )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--bare-duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--factor", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="all", help="e.g. fastapi:edge,aiohttp:edge")
    parser.add_argument(
        "--stacks",
        default=",".join(STACKS),
        help="HTTP stacks, comma-separated: c (C parser + uvloop), python "
        "(pure-Python parser + asyncio); default: both",
    )
    parser.add_argument(
        "--switch-intervals",
        default="default",
        help="the servers' sys.setswitchinterval, seconds, comma-separated; "
        "'default' is Python's (default: default)",
    )
    parser.add_argument("--json", type=Path, help="also write every run here")
    options = parser.parse_args(argv)
    if options.limit_concurrency is None:
        options.limit_concurrency = 2 * options.workers + options.max_pending
    if options.command is None:
        for name in ("duration", "bare_duration"):
            if not 0 < getattr(options, name) <= MAX_DURATION:
                parser.error(
                    f"--{name.replace('_', '-')} must be in (0, {MAX_DURATION:g}]"
                )
        if not 0 < options.connections <= 1000:
            parser.error("--connections must be in (0, 1000]")
        if not 1 <= options.rounds <= 10:
            parser.error("--rounds must be in [1, 10]")
        try:
            options.interval_list = [
                None if x == "default" else float(x)
                for x in options.switch_intervals.split(",")
                if x
            ]
        except ValueError:
            parser.error(f"--switch-intervals: {options.switch_intervals!r}")
        if not options.interval_list or not all(
            x is None or 0 < x <= 0.1 for x in options.interval_list
        ):
            parser.error("--switch-intervals takes 'default' or seconds in (0, 0.1]")
        options.stack_list = [x for x in options.stacks.split(",") if x]
        unknown = sorted(set(options.stack_list) - set(STACKS))
        if unknown or not options.stack_list:
            parser.error(
                f"--stacks takes {' and '.join(STACKS)}, got {options.stacks!r}"
            )
    return options


def main(argv: list[str]) -> int:
    """Run every case, interleaved, and print the table."""
    options = parse_args(argv)
    if options.command == "serve":
        serve(options.framework, options.mode, options.stack, options)
        return 0
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: install it with `apt-get install -y wrk` "
            "(Debian/Ubuntu) or from https://github.com/wg/wrk, then run again.",
            file=sys.stderr,
        )
        return 2
    cases = list(CASES)
    if options.cases != "all":
        wanted = {tuple(c.split(":", 1)) for c in options.cases.split(",")}
        cases = [c for c in CASES if c in wanted]
    options.loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "count.lua"
        script.write_text(WRK_SCRIPT)
        for rnd in range(options.rounds):
            for (framework, mode), stack, interval in itertools.product(
                cases, options.stack_list, options.interval_list
            ):
                print(
                    f"round {rnd + 1}: {framework} / {mode} / "
                    f"{STACK_NAMES[framework, stack]} / {interval_name(interval)}...",
                    flush=True,
                )
                outcome = run_case(
                    framework, mode, stack, interval, rnd, options, script
                )
                f = outcome.flood
                print(
                    f"  {f.responses / f.seconds:,.0f} resp/s, "
                    f"{f.ok / f.seconds:.0f} ok/s, p99 {f.p99_ms:.0f} ms; bare 503 "
                    f"{outcome.bare.refused / outcome.bare.seconds:,.0f}/s; load "
                    f"{os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                outcomes.append(outcome)
                time.sleep(1)  # let the port and the machine settle
    met = report(outcomes, options)
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if options.json is not None:
        options.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
