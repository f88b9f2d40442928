"""An aiohttp service doing blocking work that sheds load instead of queueing.

Run it from a clone of the repo with one command::

    pip install -e '.[examples]' && python examples/aiohttp_app.py

Then try::

    curl 'http://127.0.0.1:8080/work?ms=50'     # time.sleep(0.05) in a worker
    curl http://127.0.0.1:8080/file/README.md  # size and sha256 of a file
    curl 'http://127.0.0.1:8080/batch?n=100&ms=50'  # 100 sleeps, batch share
    curl http://127.0.0.1:8080/stats           # executor.stats() as JSON
    curl http://127.0.0.1:8080/metrics         # the same, for Prometheus

The app owns one :class:`BoundedLoopExecutor` (``--workers`` threads, bound
twice that, or ``--bound adaptive``) through ``app.cleanup_ctx``. At most
``--max-pending`` requests wait for a slot; the next one gets ``503`` with
``Retry-After`` at once. A request that has waited ``--max-wait`` seconds for
a slot gets the same 503, so accepted requests keep a short, bounded latency
however much load arrives and however slow the blocking calls become.

Batch work does not crowd out the interactive handlers: ``/batch`` runs its
items through the executor's ``"batch"`` partition (``--batch-share`` of the
bound, 0.25 by default), and ``/work`` and ``/file`` are the ``"default"``
partition's, with the rest. Alone, a batch borrows every idle slot; when
interactive requests wait, each slot freed goes to them first until they
hold their share, and the batch keeps its own share. Each partition has its
own waiting room (``--max-pending`` and ``--max-wait`` apply to each): a
flood of batches is refused with 503 while the interactive handlers are
still served.

Under a flood, refusing must cost less than serving: the edge check
(``setup(..., edge_paths=...)`` on ``/work`` and ``/file``) answers the 503
before the handler runs whenever the waiting room is full, with a
``Retry-After`` derived from the recent wait for a slot; the shedding
middleware remains the exact fallback (``--no-edge`` turns the edge check
off, for comparison). ``/batch`` is left to the middleware: the edge check
reads the executor's own waiting room, the interactive handlers' one.

Graceful shutdown: on Ctrl-C or SIGTERM aiohttp stops listening, lets the
handlers in flight finish (up to 30 s), then runs the cleanup contexts, which
close the executor and its pool.

The HTTP stack: aiohttp's own C parser (in its wheels; the environment
variable ``AIOHTTP_NO_EXTENSIONS=1`` turns it off) and uvloop when it is
installed (the ``uvloop`` or ``examples`` extra), else asyncio; ``--loop``
chooses, and the first line printed says which runs. ``--switch-interval
0.0005`` lets a worker that finished its call take the GIL sooner from a
busy event loop (the benchmarks page has the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import importlib.util
import itertools
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from aiobound import BoundedLoopExecutor, Gradient
from aiobound.aiohttp import EXECUTOR_KEY, get_executor, setup
from aiobound.prometheus import ExecutorCollector

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from opentelemetry.metrics import MeterProvider

REPO = Path(__file__).resolve().parent.parent
MAX_SLEEP_MS = 10_000
MAX_BATCH = 1000  # items of one /batch request

# The batch partition's share of the bound; the interactive handlers (the
# "default" partition) get the rest. 0.25 guarantees the batch 2 of the 8
# slots of 4 workers (at least 1 of an adaptive bound), so it never starves,
# and keeps 6 for the interactive requests, enough that one waits for a slot
# only when 6 others hold one. Idle slots are borrowed either way.
BATCH_SHARE = 0.25
BATCH = "batch"

# max_pending counts requests, not time: 16 waiting requests are 200 ms of
# queue when a call takes 50 ms on 4 workers, but 4 s when the backend slows
# to 1 s a call. MAX_WAIT caps the wait for a slot in seconds whatever the
# calls cost: 0.25 s is about five times the unloaded latency of
# /work?ms=50, and a request that has waited that long is better refused now,
# with Retry-After, than answered after its client has given up.
MAX_WAIT = 0.25
DATA_DIR_KEY = web.AppKey("data_dir", Path)
WORK_KEY: web.AppKey[Callable[[float], float]] = web.AppKey("work")

# The paths whose handlers use the executor's default partition: the edge
# check covers them (it reads that partition's waiting room, not the batch's).
EXECUTOR_PATHS = ("/work", "/file")


def blocking_work(seconds: float) -> float:
    """Stand in for a blocking driver call: sleep, holding a worker thread."""
    time.sleep(seconds)
    return seconds


def file_digest(path: Path) -> tuple[int, str]:
    """Read *path* (blocking IO) and return its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 16):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def query_ms(request: web.Request) -> float:
    """``?ms=`` (default 50), or a 400 that says what is wrong."""
    try:
        ms = float(request.query.get("ms", "50"))
    except ValueError:
        raise web.HTTPBadRequest(text="ms must be a number") from None
    if not 0 <= ms <= MAX_SLEEP_MS:
        raise web.HTTPBadRequest(text=f"ms must be in [0, {MAX_SLEEP_MS}]")
    return ms


async def work_endpoint(request: web.Request) -> web.Response:
    """Sleep ``?ms=`` milliseconds (default 50) in a worker thread."""
    ms = query_ms(request)
    slept = await get_executor(request).run(request.app[WORK_KEY], ms / 1000)
    return web.json_response({"slept_ms": slept * 1000})


async def batch(request: web.Request) -> web.Response:
    """Sleep ``?ms=`` milliseconds ``?n=`` times (default 10), batch partition.

    A lazy map: at most the bound's worth of items in the pool at once. A
    refusal (its waiting room full, or ``max_wait``) is a 503, even midway,
    when some items have run.
    """
    text = request.query.get("n", "10")
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_BATCH:
        raise web.HTTPBadRequest(
            text=f"n must be an integer in [1, {MAX_BATCH}], got {text!r}"
        )
    items = itertools.repeat(query_ms(request) / 1000, n)
    partition = get_executor(request).partition(BATCH)
    slept = 0.0
    async with partition.map(request.app[WORK_KEY], items) as results:
        async for seconds in results:
            slept += seconds
    return web.json_response({"n": n, "slept_ms": slept * 1000})


async def read_file(request: web.Request) -> web.Response:
    """Read a file of the data directory in a worker thread; report its digest."""
    name = request.match_info["name"]
    if Path(name).name != name or name.startswith("."):
        raise web.HTTPNotFound(text="no such file")
    path = request.app[DATA_DIR_KEY] / name
    try:
        size, sha256 = await get_executor(request).run(file_digest, path)
    except (FileNotFoundError, IsADirectoryError):
        raise web.HTTPNotFound(text="no such file") from None
    return web.json_response({"name": name, "bytes": size, "sha256": sha256})


async def stats(request: web.Request) -> web.Response:
    """The executor's counters, for dashboards and health checks."""
    return web.json_response(dataclasses.asdict(get_executor(request).stats()))


def bound_argument(text: str) -> int | Literal["adaptive"]:
    """Parse ``--bound``: a number, or ``adaptive``."""
    if text == "adaptive":
        return "adaptive"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or 'adaptive', got {text!r}"
        ) from None


def share_argument(text: str) -> float:
    """Parse ``--batch-share``: a number in (0, 1)."""
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 < share < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a share of the bound in (0, 1), got {text!r}"
        )
    return share


def make_bound(bound: int | Literal["adaptive"] | None) -> int | Gradient | None:
    """A fresh policy for ``"adaptive"`` (one per executor), else *bound*."""
    return Gradient() if bound == "adaptive" else bound


def create_app(
    *,
    workers: int = 4,
    bound: int | Literal["adaptive"] | None = None,
    max_pending: int | None = 16,
    max_wait: float | None = MAX_WAIT,
    data_dir: Path = REPO,
    edge: bool = True,
    batch_share: float = BATCH_SHARE,
    meter_provider: MeterProvider | None = None,
    call_timeout: float | None = None,
    work: Callable[[float], float] = blocking_work,
) -> web.Application:
    """Build the app: blocking work, batches, file reads, stats and metrics.

    Args:
        workers: Threads in the executor's pool.
        bound: Calls in the pool at once (default: twice ``workers``), or
            ``"adaptive"``: a :class:`~aiobound.Gradient` policy that tunes
            it between 1 and ``workers`` from the calls' latencies, lower
            when the backend slows down.
        max_pending: Requests allowed to wait for a slot before 503s, in
            each partition.
        max_wait: Seconds a request may wait for a slot before a 503
            (``None``: no limit).
        data_dir: The directory ``/file/{name}`` reads from.
        edge: Refuse at the edge (before the handler) when the waiting room
            is full.
        batch_share: The share of the bound guaranteed to ``/batch`` (the
            ``"batch"`` partition); the other handlers get the rest.
        meter_provider: Count with it (OpenTelemetry): the executor's
            metrics, its refusals by reason among them. ``None``: no
            OpenTelemetry.
        call_timeout: Seconds each call may take, its wait for a slot
            included; a request whose call misses it is answered with a 504
            at the deadline (``None``: no limit).
        work: What ``/work`` and each ``/batch`` item run in the executor,
            given seconds (tests pass one they hold).
    """
    app = web.Application()
    app[DATA_DIR_KEY] = data_dir
    app[WORK_KEY] = work

    def make_executor() -> BoundedLoopExecutor:
        executor = BoundedLoopExecutor(
            max_workers=workers,
            bound=make_bound(bound),
            max_pending=max_pending,
            max_wait=max_wait,
            partitions={BATCH: batch_share},
            call_timeout=call_timeout,
        )
        if meter_provider is not None:
            from aiobound.opentelemetry import instrument

            instrument(executor, name="default", meter_provider=meter_provider)
        return executor

    setup(
        app,
        make_executor,
        retry_after=1,
        edge_paths=EXECUTOR_PATHS if edge else None,
    )

    registry = CollectorRegistry()
    collector = ExecutorCollector()
    registry.register(collector)

    async def track_executor(app: web.Application) -> AsyncIterator[None]:
        # Runs after setup()'s context made the executor, ends before it closes.
        collector.track("default", app[EXECUTOR_KEY])
        yield
        collector.untrack("default")

    app.cleanup_ctx.append(track_executor)
    app.router.add_get("/work", work_endpoint)
    app.router.add_get("/batch", batch)
    app.router.add_get("/file/{name}", read_file)
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


def http_stack(loop: str = "auto") -> tuple[str, str]:
    """The HTTP parser of aiohttp (``"C"`` or ``"Python"``) and the event loop.

    *loop*: ``"auto"`` (uvloop when installed), ``"uvloop"`` or
    ``"asyncio"``.
    """
    from aiohttp import http_parser

    pure = http_parser.HttpRequestParser.__module__ == "aiohttp.http_parser"
    parser = "Python" if pure else "C"
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return parser, loop


def new_event_loop(loop: str) -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's for ``"uvloop"``, else asyncio's."""
    if loop == "uvloop":
        import uvloop

        new_loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return new_loop
    return asyncio.new_event_loop()


def main() -> None:
    """Parse the command line and serve the app."""
    parser = argparse.ArgumentParser(description="aiobound aiohttp example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--bound",
        type=bound_argument,
        default=None,
        help="calls in the pool at once: a number, or 'adaptive'",
    )
    parser.add_argument(
        "--batch-share",
        type=share_argument,
        default=BATCH_SHARE,
        help="share of the bound guaranteed to /batch (default: %(default)s)",
    )
    parser.add_argument(
        "--max-pending", type=int, default=16, help="waiting requests per partition"
    )
    parser.add_argument(
        "--max-wait", type=float, default=MAX_WAIT, help="seconds; 0: no limit"
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=0,
        help="seconds each call may take, wait included (504 after); 0: no limit",
    )
    parser.add_argument(
        "--no-edge", action="store_true", help="no edge check: refuse in handlers"
    )
    parser.add_argument("--quiet", action="store_true", help="no access log")
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop (default: uvloop when installed, else asyncio)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval, seconds (default: Python's, 0.005); "
        "0.0005 lets a worker that finished its call take the GIL sooner "
        "from a busy event loop",
    )
    args = parser.parse_args()
    http, loop = http_stack(args.loop)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(f"HTTP parser {http}, event loop {loop}", file=sys.stderr, flush=True)
    app = create_app(
        workers=args.workers,
        bound=args.bound,
        max_pending=args.max_pending,
        max_wait=args.max_wait or None,
        edge=not args.no_edge,
        batch_share=args.batch_share,
        call_timeout=args.call_timeout or None,
    )
    access_log = None if args.quiet else logging.getLogger("aiohttp.access")
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        shutdown_timeout=30,
        access_log=access_log,
        loop=new_event_loop(loop),
    )


if __name__ == "__main__":
    main()
