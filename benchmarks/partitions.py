"""Interactive calls next to a saturating batch, with and without partitions.

Usage::

    python benchmarks/partitions.py              # 20,000 batch items per case
    python benchmarks/partitions.py --items 4000 # a quick look
    nox -s partitions [-- --items 4000]

One :class:`~aiobound.BoundedLoopExecutor` over a ``ThreadPoolExecutor(8)``
with ``bound=8`` (each call takes ``S`` = 1 ms of sleep in a worker). A batch
of ``--items`` calls saturates it, and interactive calls (same work) arrive
on a fixed schedule, ``--rate`` per second, while the batch runs. Measured
for each interactive call: its wait for a slot, from the call of ``submit``
until ``submit`` returns (the call handed to the pool). Two batch shapes:

* ``map``: ``async for`` over ``executor.map(work, range(items))``, the lazy
  map, which keeps at most ``bound`` items in flight and takes slots that are
  free at once: it never queues ahead of the interactive calls;
* ``flood``: every batch item submitted at once (``asyncio.gather`` of
  ``items`` calls of ``run``), so that the batch's callers wait in the queue.

Each shape runs without partitions (all calls on the executor) and with
``partitions={"interactive": 0.8, "batch": 0.2}`` (the batch through
``executor.partition("batch")``, the interactive calls through
``executor.partition("interactive")``). Reported: p50, p99 and max of the
interactive calls' wait, and the ratio of the p99s (with / without).
Bounds: at most ``items`` batch calls and ``rate x`` (the batch's duration)
interactive calls; each case stops when its batch is done.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import time
from typing import Any

from aiobound import BoundedLoopExecutor, Partition

S = 0.001
WORKERS = 8
SHARES = {"interactive": 0.8, "batch": 0.2}


def work(_: object = None) -> None:
    time.sleep(S)


async def one_case(
    shape: str, partitioned: bool, items: int, rate: float
) -> list[float]:
    """Run one case; return the interactive calls' waits for a slot, in seconds."""
    pool = concurrent.futures.ThreadPoolExecutor(WORKERS)
    executor = BoundedLoopExecutor(
        executor=pool, bound=WORKERS, partitions=SHARES if partitioned else None
    )
    batch: BoundedLoopExecutor | Partition = executor
    interactive: BoundedLoopExecutor | Partition = executor
    if partitioned:
        batch = executor.partition("batch")
        interactive = executor.partition("interactive")
    waits: list[float] = []
    done = asyncio.Event()

    async def run_batch() -> None:
        if shape == "map":
            async for _ in batch.map(work, range(items)):
                pass
        else:
            await asyncio.gather(*(batch.run(work) for _ in range(items)))
        done.set()

    async def one_interactive() -> None:
        start = time.monotonic()
        future = await interactive.submit(work)
        waits.append(time.monotonic() - start)
        await future

    async def arrivals() -> None:
        calls: list[asyncio.Task[Any]] = []
        start = time.monotonic()
        n = 0
        while not done.is_set():
            n += 1
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(done.wait(), delay)
                    break
                except asyncio.TimeoutError:
                    pass
            calls.append(asyncio.create_task(one_interactive()))
        await asyncio.gather(*calls)

    batch_task = asyncio.create_task(run_batch())
    await asyncio.sleep(0.05)  # let the batch saturate the executor first
    await asyncio.gather(arrivals(), batch_task)
    await executor.aclose()
    pool.shutdown()
    return waits


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    print(
        f"bound={WORKERS} over ThreadPoolExecutor({WORKERS}), calls of {S * 1e3:g} ms, "
        f"batch of {args.items} items, interactive at {args.rate:g}/s"
    )
    header = ("shape", "partitions", "calls", "p50 ms", "p99 ms", "max ms")
    print("{:6} {:11} {:>6} {:>9} {:>9} {:>9}".format(*header))
    for shape in ("map", "flood"):
        p99s = {}
        for partitioned in (False, True):
            waits = await one_case(shape, partitioned, args.items, args.rate)
            p50, p99 = quantile(waits, 0.5), quantile(waits, 0.99)
            p99s[partitioned] = p99
            print(
                f"{shape:6} {'yes' if partitioned else 'no':11} {len(waits):6d} "
                f"{p50 * 1e3:9.3f} {p99 * 1e3:9.3f} {max(waits) * 1e3:9.3f}"
            )
        ratio = p99s[True] / p99s[False] if p99s[False] else float("nan")
        print(f"{shape:6} p99 with / without partitions: {ratio:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
