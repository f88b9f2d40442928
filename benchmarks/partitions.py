"""Interactive calls next to a saturating batch, with and without partitions.

Usage::

    python benchmarks/partitions.py              # 20,000 batch items per case
    python benchmarks/partitions.py --items 4000 --reps 1  # a quick look
    nox -s partitions [-- --items 4000]

One :class:`~aiobound.BoundedLoopExecutor` over a ``ThreadPoolExecutor(8)``
with ``bound=8`` (each call takes ``S`` = 1 ms of sleep in a worker). A batch
of ``--items`` calls saturates it, and interactive calls (same work) arrive
on a fixed schedule, ``--rate`` per second, while the batch runs. Measured
for each interactive call: its wait for a slot, from the call of ``submit``
until ``submit`` returns (the call handed to the pool), which includes the
hand-off and whatever delays the loop's thread (the GIL, the OS); with
partitions, also the longest wait in the interactive partition's queue as
the gate measures it (``queue_wait_max``: 0 when no call had to wait); and
the batch's duration (what a ceiling costs it). Two batch shapes:

* ``map``: ``async for`` over ``executor.map(work, range(items))``, the lazy
  map, which keeps at most ``bound`` items in flight and takes slots that are
  free at once: it never queues ahead of the interactive calls;
* ``flood``: every batch item submitted at once (``asyncio.gather`` of
  ``items`` calls of ``run``), so that the batch's callers wait in the queue.

Each shape runs in three setups: ``none`` (all calls on the executor, no
partitions); ``shares``, ``partitions={"interactive": 0.8, "batch": 0.2}``
(the batch through ``executor.partition("batch")``, the interactive calls
through ``executor.partition("interactive")``); and ``ceiling``, the same
with ``"batch": Share(0.2, max_share=0.75)``, so the batch never holds more
than 6 of the 8 slots and 2 stay free for the interactive calls.

``--reps`` rounds run every case once each, in the same order (so each case
sees the machine's load of every round); reported are the medians over the
rounds of each case's p50, p99 and max interactive wait and of the batch's
duration (the gate's longest wait: the maximum over the rounds), the ratio
of the median p99s (setup / ``none``), and the median and range of the
ratios paired by round (each round's cases ran back to back). Bounds: at
most ``items`` batch calls and ``rate x`` (the batch's duration) interactive
calls per case; each case stops when its batch is done.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import time
from typing import Any

from aiobound import BoundedLoopExecutor, Partition, Share

S = 0.001
WORKERS = 8
SETUPS: dict[str, dict[str, float | Share] | None] = {
    "none": None,
    "shares": {"interactive": 0.8, "batch": 0.2},
    "ceiling": {"interactive": 0.8, "batch": Share(0.2, max_share=0.75)},
}
SHAPES = ("map", "flood")


def work(_: object = None) -> None:
    time.sleep(S)


async def one_case(
    shape: str, setup: str, items: int, rate: float
) -> tuple[list[float], float, float | None]:
    """Run one case.

    Returns:
        The interactive calls' waits for a slot, the batch's duration and,
        with partitions, the interactive partition's longest wait in the
        gate's queue, in seconds.
    """
    pool = concurrent.futures.ThreadPoolExecutor(WORKERS)
    partitions = SETUPS[setup]
    executor = BoundedLoopExecutor(executor=pool, bound=WORKERS, partitions=partitions)
    batch: BoundedLoopExecutor | Partition = executor
    interactive: BoundedLoopExecutor | Partition = executor
    if partitions is not None:
        batch = executor.partition("batch")
        interactive = executor.partition("interactive")
    waits: list[float] = []
    done = asyncio.Event()
    batch_time = 0.0

    async def run_batch() -> None:
        nonlocal batch_time
        start = time.monotonic()
        if shape == "map":
            async for _ in batch.map(work, range(items)):
                pass
        else:
            await asyncio.gather(*(batch.run(work) for _ in range(items)))
        batch_time = time.monotonic() - start
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
    gate_max = None
    if partitions is not None:
        gate_max = executor.stats().partitions["interactive"].queue_wait_max
    await executor.aclose()
    pool.shutdown()
    return waits, batch_time, gate_max


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(
        f"bound={WORKERS} over ThreadPoolExecutor({WORKERS}), calls of {S * 1e3:g} ms, "
        f"batch of {args.items} items, interactive at {args.rate:g}/s, "
        f"{args.reps} rounds; load average {os.getloadavg()[0]:.2f} at the start"
    )
    cases = [(shape, setup) for shape in SHAPES for setup in SETUPS]
    runs: dict[tuple[str, str], list[tuple[list[float], float, float | None]]] = {
        case: [] for case in cases
    }
    for _ in range(args.reps):
        for case in cases:
            runs[case].append(await one_case(*case, args.items, args.rate))
    print(f"load average {os.getloadavg()[0]:.2f} at the end; medians over rounds:")
    header = ("shape", "setup", "calls", "p50 ms", "p99 ms", "max ms", "batch s")
    header += ("gate max ms",)
    print("{:6} {:8} {:>6} {:>9} {:>9} {:>9} {:>8} {:>12}".format(*header))
    for shape in SHAPES:
        p99s: dict[str, float] = {}
        for setup in SETUPS:
            rounds = runs[shape, setup]

            def median(stat: Any, rounds: Any = rounds) -> float:
                return statistics.median(stat(w, took) for w, took, _ in rounds)

            calls = median(lambda waits, _: len(waits))
            p50 = median(lambda waits, _: quantile(waits, 0.5))
            p99 = p99s[setup] = median(lambda waits, _: quantile(waits, 0.99))
            longest = median(lambda waits, _: max(waits))
            took = median(lambda _, took: took)
            gate_maxima = [g for _, _, g in rounds if g is not None]
            gate = f"{max(gate_maxima) * 1e3:12.3f}" if gate_maxima else f"{'-':>12}"
            print(
                f"{shape:6} {setup:8} {calls:6.0f} {p50 * 1e3:9.3f} {p99 * 1e3:9.3f} "
                f"{longest * 1e3:9.3f} {took:8.2f} {gate}"
            )
        for setup in ("shares", "ceiling"):
            ratio = p99s[setup] / p99s["none"] if p99s["none"] else float("nan")
            paired = sorted(
                quantile(mine[0], 0.99) / quantile(theirs[0], 0.99)
                for mine, theirs in zip(
                    runs[shape, setup], runs[shape, "none"], strict=True
                )
            )
            print(
                f"{shape:6} p99 {setup} / none: {ratio:.3f} (paired by round: "
                f"median {statistics.median(paired):.3f}, "
                f"from {paired[0]:.3f} to {paired[-1]:.3f})"
            )


if __name__ == "__main__":
    asyncio.run(main())
