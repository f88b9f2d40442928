"""A FastAPI service doing blocking work that sheds load instead of queueing.

Run it from a clone of the repo with one command::

    pip install -e '.[examples]' && python examples/fastapi_app.py

Then try::

    curl 'http://127.0.0.1:8000/work?ms=50'     # time.sleep(0.05) in a worker
    curl http://127.0.0.1:8000/file/README.md  # size and sha256 of a file
    curl 'http://127.0.0.1:8000/batch?n=100&ms=50'  # 100 sleeps, batch share
    curl http://127.0.0.1:8000/stats           # executor.stats() as JSON
    curl http://127.0.0.1:8000/metrics         # the same, for Prometheus

With ``--trace`` (the SDK is in the ``examples`` extra) every request prints its
spans on the console: the request's span, the ``aiobound.call`` span of its
call in the executor (a child; its ``handed over`` event says how long it
waited for a slot), and the worker's own span (a child of that one), all in
one trace.

The app owns one :class:`BoundedLoopExecutor` (``--workers`` threads, bound
twice that, or ``--bound adaptive``) through its lifespan. At most
``--max-pending`` requests wait for a slot; the next one gets ``503`` with
``Retry-After`` at once. A request that has waited ``--max-wait`` seconds for
a slot gets the same 503, so accepted requests keep a short, bounded latency
however much load arrives and however slow the blocking calls become.

Batch work does not crowd out the interactive endpoints: ``/batch`` runs its
items through the executor's ``"batch"`` partition (``--batch-share`` of the
bound, 0.25 by default), and ``/work`` and ``/file`` are the ``"default"``
partition's, with the rest. Alone, a batch borrows every idle slot; when
interactive requests wait, each slot freed goes to them first until they
hold their share, and the batch keeps its own share. Each partition has its
own waiting room (``--max-pending`` and ``--max-wait`` apply to each): a
flood of batches is refused with 503 while the interactive endpoints are
still served.

Under a flood, refusing must cost less than serving: the edge check
(:class:`EdgeSheddingMiddleware` on ``/work`` and ``/file``) answers the 503
before routing and dependencies whenever the waiting room is full, with a
``Retry-After`` derived from the recent wait for a slot; the exception
handlers remain the exact fallback (``--no-edge`` turns the edge check off,
for comparison). ``/batch`` is left to the handlers: the edge check reads the
executor's own waiting room, the interactive endpoints' one.

Graceful shutdown: on Ctrl-C or SIGTERM uvicorn stops listening, lets the
requests in flight finish (up to 30 s), then runs the lifespan's exit, which
closes the executor and its pool.

The HTTP stack: uvicorn's C parser (httptools) and uvloop when they are
installed (``uvicorn[standard]``, which the ``examples`` extra holds), else
its pure-Python parser (h11) and asyncio; ``--http`` and ``--loop`` choose,
and the first line printed says which runs. Under a wrk flood the C stack
answered about twice as many requests per second. It also keeps the event
loop busier, and a worker that finished its call then waits longer for the
GIL: ``--switch-interval 0.0005`` shortens that wait (the benchmarks page
has the figures).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import itertools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aiobound import BoundedLoopExecutor, ExecutorStats, Gradient
from aiobound.prometheus import ExecutorCollector
from aiobound.starlette import (
    REFUSAL_RESPONSES,
    STATE_KEY,
    EdgeSheddingMiddleware,
    add_exception_handlers,
    executor_state,
    get_executor,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from fastapi import Request
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

# An endpoint parameter of this type receives the app's executor.
Executor = Annotated[BoundedLoopExecutor, Depends(get_executor)]

REPO = Path(__file__).resolve().parent.parent
MAX_SLEEP_MS = 10_000
MAX_BATCH = 1000  # items of one /batch request

# The batch partition's share of the bound; the interactive endpoints (the
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

# The paths whose endpoints use the executor's default partition: the edge
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


NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {
        "description": "No such file in the data directory.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    }
}


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
    work: Callable[[float], float] = blocking_work,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    edge: bool = True,
    batch_share: float = BATCH_SHARE,
    call_timeout: float | None = None,
) -> FastAPI:
    """Build the app: blocking work, batches, file reads, stats and metrics.

    Every endpoint that uses the executor declares the 503 it may answer
    (``REFUSAL_RESPONSES``) in the OpenAPI schema.

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
        work: What ``/work`` runs in the executor, given seconds, and
            ``/batch`` for each item (tests pass one that does not sleep).
        tracer_provider: Trace with it (OpenTelemetry): a span per request,
            the executor instrumented (:mod:`aiobound.opentelemetry`), and a
            span of the worker's own around ``work``. ``None``: no tracing.
        meter_provider: Count with it (OpenTelemetry): the executor's
            metrics, its refusals by reason among them. ``None``: with a
            *tracer_provider*, the global one; else none.
        edge: Refuse at the edge (:class:`EdgeSheddingMiddleware`) when
            the waiting room is full.
        batch_share: The share of the bound guaranteed to ``/batch`` (the
            ``"batch"`` partition); the other endpoints get the rest.
        call_timeout: Seconds each call may take, its wait for a slot
            included; a request whose call misses it is answered with a 504
            at the deadline (``None``: no limit).
    """
    registry = CollectorRegistry()
    collector = ExecutorCollector()
    registry.register(collector)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, BoundedLoopExecutor]]:
        executor = BoundedLoopExecutor(
            max_workers=workers,
            bound=make_bound(bound),
            max_pending=max_pending,
            max_wait=max_wait,
            partitions={BATCH: batch_share},
            call_timeout=call_timeout,
        )
        if tracer_provider is not None or meter_provider is not None:
            from aiobound.opentelemetry import instrument

            instrument(
                executor,
                name="default",
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            )
        async with executor_state(executor) as state:
            collector.track("default", state[STATE_KEY])
            try:
                yield state
            finally:
                collector.untrack("default")

    app = FastAPI(
        title="aiobound example", lifespan=lifespan, responses=REFUSAL_RESPONSES
    )
    add_exception_handlers(app, retry_after=1)
    if tracer_provider is not None:
        work = _trace_requests_and_work(app, tracer_provider, work)
    if edge:
        app.add_middleware(EdgeSheddingMiddleware, paths=EXECUTOR_PATHS)

    @app.get("/work")
    async def work_endpoint(
        executor: Executor,
        ms: Annotated[float, Query(ge=0, le=MAX_SLEEP_MS)] = 50,
    ) -> dict[str, float]:
        """Sleep ``ms`` milliseconds in a worker thread."""
        slept = await executor.run(work, ms / 1000)
        return {"slept_ms": slept * 1000}

    @app.get("/batch")
    async def batch_endpoint(
        executor: Executor,
        n: Annotated[int, Query(ge=1, le=MAX_BATCH)] = 10,
        ms: Annotated[float, Query(ge=0, le=MAX_SLEEP_MS)] = 50,
    ) -> dict[str, int | float]:
        """Sleep ``ms`` milliseconds ``n`` times, in the batch partition.

        A lazy map: at most the bound's worth of items in the pool at once.
        A refusal (its waiting room full, or ``max_wait``) is a 503, even
        midway, when some items have run.
        """
        items = itertools.repeat(ms / 1000, n)
        slept = 0.0
        async with executor.partition(BATCH).map(work, items) as results:
            async for seconds in results:
                slept += seconds
        return {"n": n, "slept_ms": slept * 1000}

    @app.get("/file/{name}", responses=NOT_FOUND)
    async def read_file(executor: Executor, name: str) -> dict[str, int | str]:
        """Read a file of ``data_dir`` in a worker thread; report its digest."""
        path = data_dir / name
        if Path(name).name != name or name.startswith("."):
            raise HTTPException(404, "no such file")
        try:
            size, sha256 = await executor.run(file_digest, path)
        except (FileNotFoundError, IsADirectoryError):
            raise HTTPException(404, "no such file") from None
        return {"name": name, "bytes": size, "sha256": sha256}

    @app.get("/stats")
    async def stats(executor: Executor) -> ExecutorStats:
        """The executor's counters, for dashboards and health checks."""
        return executor.stats()

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus exposition of the executor's stats (and nothing else)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _trace_requests_and_work(
    app: FastAPI, tracer_provider: TracerProvider, work: Callable[[float], float]
) -> Callable[[float], float]:
    """Give each request a span; return *work* wrapped in a span of its own.

    (A real service would use opentelemetry-instrumentation-fastapi for the
    request spans; this keeps the example to the SDK.)
    """
    from opentelemetry.trace import SpanKind

    tracer = tracer_provider.get_tracer("fastapi_app")

    @app.middleware("http")
    async def request_span(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        name = f"{request.method} {request.url.path}"
        with tracer.start_as_current_span(name, kind=SpanKind.SERVER):
            return await call_next(request)

    def traced_work(seconds: float) -> float:
        # Runs in a worker thread, where the aiobound.call span is current.
        with tracer.start_as_current_span("blocking work"):
            return work(seconds)

    return traced_work


def _console_tracer_provider() -> TracerProvider:
    """An SDK tracer provider that prints every span as it ends."""
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = SdkTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def http_stack(http: str = "auto", loop: str = "auto") -> tuple[str, str]:
    """The HTTP parser and event loop of uvicorn for *http* and *loop*.

    ``"auto"`` is what uvicorn picks: httptools and uvloop when installed.
    """
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return http, loop


def main() -> None:
    """Parse the command line and serve the app with uvicorn."""
    parser = argparse.ArgumentParser(description="aiobound FastAPI example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
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
        "--trace", action="store_true", help="print OpenTelemetry spans"
    )
    parser.add_argument(
        "--http",
        choices=("auto", "httptools", "h11"),
        default="auto",
        help="HTTP parser (default: httptools when installed, else h11)",
    )
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
    http, loop = http_stack(args.http, args.loop)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(f"HTTP parser {http}, event loop {loop}", file=sys.stderr, flush=True)
    app = create_app(
        workers=args.workers,
        bound=args.bound,
        max_pending=args.max_pending,
        max_wait=args.max_wait or None,
        tracer_provider=_console_tracer_provider() if args.trace else None,
        edge=not args.no_edge,
        batch_share=args.batch_share,
        call_timeout=args.call_timeout or None,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        access_log=not args.quiet,
        timeout_graceful_shutdown=30,
        http=http,
        loop=loop,
    )


if __name__ == "__main__":
    main()
