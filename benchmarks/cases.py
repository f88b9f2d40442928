"""One benchmark case in a process of its own; prints one JSON line.

Run by ``bench.py`` as ``python benchmarks/cases.py WORKLOAD CASE --loop LOOP
--calls N --workers W --bound B``; run it by hand to try a single case. The
pool is created and warmed up (every worker started) before the clock
starts; the peak-memory mark is reset at the same moment.

Every case pushes the same calls, ``fn(i)`` for ``i`` in ``range(calls)``,
through a pool of ``workers``, and consumes each result:

* ``raw``: ``loop.run_in_executor`` for every call at once, then ``gather``;
* ``to_thread``: ``asyncio.to_thread`` for every call at once (default
  executor set to the pool), then ``gather``;
* ``recipe``: the hand-written recipe: ``asyncio.Semaphore(bound)`` acquired
  before ``loop.run_in_executor``, released in the future's done callback;
* ``anyio``: one task per call in a task group, each
  ``anyio.to_thread.run_sync(fn, i, limiter=CapacityLimiter(workers))``
  (anyio runs calls in its own threads; the limiter is their number);
* ``aiometer``: ``aiometer.amap(max_at_once=bound)`` over a coroutine that
  awaits ``loop.run_in_executor``;
* ``aiojobs``: ``Scheduler(limit=bound, pending_limit=bound)``, one job per
  call, each awaiting ``loop.run_in_executor``;
* ``submit``: ``await BoundedLoopExecutor.submit`` with a window of futures
  (done ones are read from the left as the producer goes);
* ``submit_otel``: ``submit`` on an executor instrumented by
  :mod:`aiobound.opentelemetry` with the OpenTelemetry SDK (every span
  sampled, batched to an exporter that drops them; metrics recorded, read
  by nobody): the price of telemetry (needs ``opentelemetry-sdk``);
* ``map``: ``async for`` over ``BoundedLoopExecutor.map`` (on a process
  pool it sends items in automatically sized chunks);
* ``map_chunksize_1``: the same with ``chunksize=1``, one call per item;
* ``sync``: no loop at all, ``ThreadPoolExecutor.map`` (the ceiling for the
  sleep workload);
* ``bounded_sync_window``: no loop, one thread keeps ``bound`` futures in
  flight through ``BoundedExecutor.submit`` (the synchronous twin's submit);
* ``bounded_sync_map``: no loop, ``BoundedExecutor.map``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import json
import multiprocessing
import sys
import time
from collections import deque
from typing import TYPE_CHECKING

from aiobound import BoundedExecutor, BoundedLoopExecutor
from aiobound._demo._memory import PeakMemory

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from typing import TypeAlias

    Call: TypeAlias = Callable[[int], None]
    Submit: TypeAlias = Callable[[Call, int], Awaitable[asyncio.Future[None]]]
    Pool: TypeAlias = concurrent.futures.Executor

WORKLOADS = ("noop", "sleep", "rss", "process")
CASES = (
    "raw",
    "to_thread",
    "recipe",
    "anyio",
    "aiometer",
    "aiojobs",
    "submit",
    "submit_otel",
    "map",
    "map_chunksize_1",
    "map_unordered",
    "sync",
    "sync_window",
    "bounded_sync_window",
    "bounded_sync_map",
)
# The cases that run no event loop: the synchronous ceilings, and the
# synchronous twin.
SYNC_CASES = ("sync", "sync_window", "bounded_sync_window", "bounded_sync_map")
SLEEP = 0.01


def noop(i: int) -> None:
    """A call that does nothing: measures the per-call overhead."""


def sleep_10ms(i: int) -> None:
    """A call that blocks for 10 ms without using the CPU."""
    time.sleep(SLEEP)


async def run_raw(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """All calls at once with ``loop.run_in_executor``."""
    loop = asyncio.get_running_loop()
    futures = [loop.run_in_executor(pool, fn, i) for i in range(calls)]
    await asyncio.gather(*futures)


async def run_to_thread(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """All calls at once with ``asyncio.to_thread`` on the pool."""
    asyncio.get_running_loop().set_default_executor(pool)
    await asyncio.gather(*[asyncio.to_thread(fn, i) for i in range(calls)])


async def _windowed(submit: Submit, fn: Call, calls: int) -> None:
    """Submit every call, reading finished results from the left as we go."""
    window: deque[asyncio.Future[None]] = deque()
    for i in range(calls):
        window.append(await submit(fn, i))
        while window[0].done():
            window.popleft().result()
            if not window:
                break
    for fut in window:
        await fut


async def run_recipe(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """The hand-written recipe: a semaphore around ``run_in_executor``."""
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(bound)

    def release(_: asyncio.Future[None]) -> None:
        semaphore.release()

    async def submit(fn: Call, i: int) -> asyncio.Future[None]:
        await semaphore.acquire()
        fut = loop.run_in_executor(pool, fn, i)
        fut.add_done_callback(release)
        return fut

    await _windowed(submit, fn, calls)


async def run_submit(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """``await executor.submit`` with a window of futures."""
    async with BoundedLoopExecutor(executor=pool, bound=bound) as executor:
        await _windowed(executor.submit, fn, calls)


async def run_submit_otel(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """``submit`` as above, instrumented with the OpenTelemetry SDK."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from aiobound.opentelemetry import instrument

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        async with BoundedLoopExecutor(executor=pool, bound=bound) as executor:
            instrument(
                executor,
                meter_provider=meter_provider,
                tracer_provider=tracer_provider,
            )
            await _windowed(executor.submit, fn, calls)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


async def run_map(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """``async for`` over ``executor.map``."""
    async with BoundedLoopExecutor(executor=pool, bound=bound) as executor:
        async for _ in executor.map(fn, range(calls)):
            pass


async def run_map_unchunked(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """``executor.map(..., chunksize=1)``: one call per item on any pool."""
    async with BoundedLoopExecutor(executor=pool, bound=bound) as executor:
        async for _ in executor.map(fn, range(calls), chunksize=1):
            pass


async def run_map_unordered(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """``async for`` over ``executor.map(..., ordered=False)``."""
    async with BoundedLoopExecutor(executor=pool, bound=bound) as executor:
        async for _ in executor.map(fn, range(calls), ordered=False):
            pass


def run_sync_window(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """No event loop: one thread keeps ``bound`` futures in flight.

    It uses ``pool.submit`` and ``result()``: the ceiling for any design
    that feeds the pool from one thread.
    """
    window: deque[concurrent.futures.Future[None]] = deque()
    for i in range(calls):
        if len(window) >= bound:
            window.popleft().result()
        window.append(pool.submit(fn, i))
    for fut in window:
        fut.result()


def run_bounded_sync_window(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """``sync_window`` through ``BoundedExecutor.submit`` (it blocks at the bound)."""
    with BoundedExecutor(executor=pool, bound=bound) as executor:
        window: deque[concurrent.futures.Future[None]] = deque()
        for i in range(calls):
            if len(window) >= bound:
                window.popleft().result()
            window.append(executor.submit(fn, i))
        for fut in window:
            fut.result()


def run_bounded_sync_map(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """``BoundedExecutor.map``, every result consumed."""
    with BoundedExecutor(executor=pool, bound=bound) as executor:
        for _ in executor.map(fn, range(calls)):
            pass


async def run_anyio(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """One task per call, ``anyio.to_thread.run_sync`` with a limiter."""
    import anyio
    import anyio.to_thread

    workers = getattr(pool, "_max_workers", bound)
    limiter = anyio.CapacityLimiter(workers)
    async with anyio.create_task_group() as tg:
        for i in range(calls):
            tg.start_soon(
                functools.partial(anyio.to_thread.run_sync, fn, i, limiter=limiter)
            )


async def run_aiometer(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """``aiometer.amap`` with ``max_at_once=bound``."""
    import aiometer

    loop = asyncio.get_running_loop()

    async def call(i: int) -> None:
        await loop.run_in_executor(pool, fn, i)

    async with aiometer.amap(call, range(calls), max_at_once=bound) as results:
        async for _ in results:
            pass


async def run_aiojobs(pool: Pool, fn: Call, calls: int, bound: int) -> None:
    """An aiojobs scheduler with ``limit=bound`` and ``pending_limit=bound``."""
    import aiojobs

    loop = asyncio.get_running_loop()

    async def call(i: int) -> None:
        await loop.run_in_executor(pool, fn, i)

    scheduler = aiojobs.Scheduler(limit=bound, pending_limit=bound, wait_timeout=None)
    for i in range(calls):
        await scheduler.spawn(call(i))
    await scheduler.wait_and_close()


RUNNERS: dict[str, Callable[[Pool, Call, int, int], Coroutine[None, None, None]]] = {
    "raw": run_raw,
    "to_thread": run_to_thread,
    "recipe": run_recipe,
    "anyio": run_anyio,
    "aiometer": run_aiometer,
    "aiojobs": run_aiojobs,
    "submit": run_submit,
    "submit_otel": run_submit_otel,
    "map": run_map,
    "map_chunksize_1": run_map_unchunked,
    "map_unordered": run_map_unordered,
}


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def _make_pool(workload: str, workers: int) -> Pool:
    if workload == "process":
        methods = multiprocessing.get_all_start_methods()
        method = "forkserver" if "forkserver" in methods else "spawn"
        return concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context(method)
        )
    return concurrent.futures.ThreadPoolExecutor(workers)


def measure(
    workload: str, case: str, *, loop_name: str, calls: int, workers: int, bound: int
) -> dict[str, object]:
    """Run one case in this process and return its figures.

    Args:
        workload: One of :data:`WORKLOADS`.
        case: One of :data:`CASES`.
        loop_name: ``"asyncio"`` or ``"uvloop"`` (ignored by ``sync``).
        calls: Number of calls.
        workers: Threads or processes in the pool.
        bound: Most calls in flight, for the cases that bound them.

    Returns:
        ``elapsed`` seconds, ``calls_per_s``, CPU time per call of the whole
        process and of the loop's thread alone (``cpu_us_per_call``,
        ``loop_cpu_us_per_call``: steadier than wall time on a busy
        machine), ``peak_rss_growth`` bytes and ``utilization`` (ideal time
        over elapsed, sleep workload only).
    """
    fn = sleep_10ms if workload == "sleep" else noop
    pool = _make_pool(workload, workers)
    memory = PeakMemory()
    loop = None if case in SYNC_CASES else _new_loop(loop_name)
    try:
        # Start every worker before the clock does.
        list(pool.map(noop, range(4 * workers)))
        memory.start()
        started = time.perf_counter()
        cpu_started = time.process_time()
        loop_cpu_started = time.thread_time()  # the loop runs in this thread
        if case == "sync_window":
            run_sync_window(pool, fn, calls, bound)
        elif case == "bounded_sync_window":
            run_bounded_sync_window(pool, fn, calls, bound)
        elif case == "bounded_sync_map":
            run_bounded_sync_map(pool, fn, calls, bound)
        elif loop is None:
            for _ in pool.map(fn, range(calls)):
                pass
        else:
            loop.run_until_complete(RUNNERS[case](pool, fn, calls, bound))
        elapsed = time.perf_counter() - started
        loop_cpu = time.thread_time() - loop_cpu_started
        cpu = time.process_time() - cpu_started
        growth = memory.growth()
    finally:
        pool.shutdown()
        if loop is not None:
            loop.close()
    ideal = calls * SLEEP / workers if workload == "sleep" else 0.0
    return {
        "workload": workload,
        "case": case,
        "loop": loop_name,
        "calls": calls,
        "workers": workers,
        "bound": bound,
        "elapsed": elapsed,
        "calls_per_s": calls / elapsed,
        "cpu_us_per_call": cpu / calls * 1e6,
        "loop_cpu_us_per_call": loop_cpu / calls * 1e6,
        "peak_rss_growth": growth,
        "peak_rss_exact": memory.exact,
        "utilization": ideal / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the case and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--bound", type=int, required=True)
    args = parser.parse_args(argv)
    result = measure(
        args.workload,
        args.case,
        loop_name=args.loop,
        calls=args.calls,
        workers=args.workers,
        bound=args.bound,
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
