"""Tiny calls on a process pool: chunked ``map`` against per-item calls.

Every case pushes ``noop(i)`` for ``i`` in ``range(items)`` through a pool
of ``--workers`` processes (forkserver where available, else spawn) and
consumes every result; throughput is items per second, the median of
``--repeat`` runs. The pool is started and warmed up before the clock starts.

* ``submit``: ``await executor.submit(noop, i)`` per item, with a window of
  futures read from the left as the producer goes (per-item, bounded);
* ``map chunksize=1``: ``async for`` over ``executor.map(noop, items, chunksize=1)``;
* ``map chunksize=N``: the same with N items per call;
* ``map auto``: the default on a process pool (automatic chunk size);
* ``ProcessPoolExecutor.map chunksize=N``: the synchronous stdlib call, no
  event loop (it submits every chunk at once: neither lazy nor bounded).

Run ``python benchmarks/process_pool.py`` (``--quick`` for a smoke run);
``nox -s bench_process`` does the same in a fresh environment.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import platform
import statistics
import time
from collections import deque
from typing import TYPE_CHECKING

from aiobound import BoundedLoopExecutor
from aiobound._process import process_context

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def noop(x: int) -> int:
    return x


async def warm_up(executor: BoundedLoopExecutor, workers: int) -> None:
    """Start every worker process before the clock starts."""
    await asyncio.gather(*[executor.run(noop, i) for i in range(4 * workers)])


async def by_submit(executor: BoundedLoopExecutor, items: int) -> int:
    window: deque[asyncio.Future[int]] = deque()
    total = 0
    for i in range(items):
        window.append(await executor.submit(noop, i))
        while window and window[0].done():
            total += window.popleft().result()
    for fut in window:
        total += await fut
    return total


def by_map(
    chunksize: int | None,
) -> Callable[[BoundedLoopExecutor, int], Awaitable[int]]:
    async def run(executor: BoundedLoopExecutor, items: int) -> int:
        total = 0
        async for value in executor.map(noop, range(items), chunksize=chunksize):
            total += value
        return total

    return run


def time_async(
    case: Callable[[BoundedLoopExecutor, int], Awaitable[int]],
    items: int,
    workers: int,
) -> float:
    async def main() -> float:
        async with BoundedLoopExecutor.process(max_workers=workers) as executor:
            await warm_up(executor, workers)
            start = time.perf_counter()
            total = await case(executor, items)
            elapsed = time.perf_counter() - start
        assert total == items * (items - 1) // 2
        return elapsed

    return asyncio.run(main())


def time_stdlib(items: int, workers: int, chunksize: int) -> float:
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=process_context()
    ) as pool:
        list(pool.map(noop, range(4 * workers)))
        start = time.perf_counter()
        total = sum(pool.map(noop, range(items), chunksize=chunksize))
        elapsed = time.perf_counter() - start
    assert total == items * (items - 1) // 2
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=200_000, help="chunked cases")
    parser.add_argument("--per-item", type=int, default=10_000, help="per-item cases")
    parser.add_argument("--chunksize", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.items, args.per_item, args.repeat = 5_000, 500, 1

    rows: list[tuple[str, int, float]] = []

    def record(name: str, items: int, run: Callable[[], float]) -> float:
        seconds = statistics.median(run() for _ in range(args.repeat))
        rate = items / seconds
        rows.append((name, items, rate))
        print(f"{name:<42} {items:>8} items  {rate:>12,.0f} items/s", flush=True)
        return rate

    w = args.workers
    per_item = record(
        "aiobound submit, per item",
        args.per_item,
        lambda: time_async(by_submit, args.per_item, w),
    )
    record(
        "aiobound map chunksize=1",
        args.per_item,
        lambda: time_async(by_map(1), args.per_item, w),
    )
    record(
        "aiobound map chunksize=None (auto)",
        args.items,
        lambda: time_async(by_map(None), args.items, w),
    )
    ratios: list[tuple[int, float, float]] = []
    for size in args.chunksize:
        ours = record(
            f"aiobound map chunksize={size}",
            args.items,
            lambda size=size: time_async(by_map(size), args.items, w),  # type: ignore[misc]
        )
        stdlib = record(
            f"ProcessPoolExecutor.map chunksize={size}",
            args.items,
            lambda size=size: time_stdlib(args.items, w, size),  # type: ignore[misc]
        )
        ratios.append((size, ours / per_item, stdlib / ours))

    print()
    print(
        f"Python {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {w} workers, median of {args.repeat}"
    )
    print("| case | items | items/s |")
    print("|---|---:|---:|")
    for name, items, rate in rows:
        print(f"| {name} | {items:,} | {rate:,.0f} |")
    print()
    for size, speedup, gap in ratios:
        print(
            f"chunksize={size}: {speedup:.1f} x per-item submit (target >= 10); "
            f"ProcessPoolExecutor.map is {gap:.2f} x faster (target <= 1.5)"
        )


if __name__ == "__main__":
    main()
