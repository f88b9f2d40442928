"""Soak: many calls with random cancellations, errors and durations.

Runs ``submit``/``run`` and ``map`` on a thread pool and on a process pool,
with about 10 % of calls cancelled (half while waiting for a slot, half after
submission), about 5 % raising, and random short durations. At the end of each
phase nothing may be in flight or waiting, ``stats()`` must agree exactly with
what the underlying executor saw happen to each of its futures, and the
process's RSS must not have grown by more than 20 MB over the run.

    python benchmarks/soak.py       # 1,000,000 calls on threads, then on processes
    python benchmarks/soak.py --calls 20000 --process-calls 2000   # smoke run

Exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import platform
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import psutil

from aiobound import BoundedLoopExecutor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

P = ParamSpec("P")
T = TypeVar("T")

MB = 1024 * 1024
RSS_LIMIT_MB = 20.0


class SoakError(Exception):
    """Raised by ``work`` for the items drawn to fail."""


# An item: (number, seconds to sleep, whether to raise).
Item = tuple[int, float, bool]


def work(item: Item) -> int:
    number, duration, fail = item
    if duration:
        time.sleep(duration)
    if fail:
        raise SoakError(number)
    return number * 2


class Tally(concurrent.futures.Executor):
    """Wraps a pool; counts what becomes of every future it hands out."""

    def __init__(self, pool: concurrent.futures.Executor) -> None:
        self.pool = pool
        self._lock = threading.Lock()
        self.submits = 0
        self.results = 0
        self.errors = 0
        self.cancelled = 0

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        with self._lock:
            self.submits += 1
        cfut = self.pool.submit(fn, *args, **kwargs)
        cfut.add_done_callback(self._count)
        return cfut

    def _count(self, cfut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if cfut.cancelled():
                self.cancelled += 1
            elif cfut.exception() is None:
                self.results += 1
            else:
                self.errors += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


@dataclass
class Seen:
    """What the callers saw."""

    values: int = 0
    errors: int = 0
    cancelled: int = 0
    wrong: list[str] = field(default_factory=list)


class Items:
    """Random items: ~5 % fail, ~20 % sleep up to ``max_sleep`` seconds."""

    def __init__(self, rng: random.Random, max_sleep: float) -> None:
        self._rng = rng
        self._max_sleep = max_sleep
        self._next = 0

    def __call__(self) -> Item:
        rng = self._rng
        self._next += 1
        duration = rng.uniform(0, self._max_sleep) if rng.random() < 0.2 else 0.0
        return (self._next, duration, rng.random() < 0.05)


async def soak_submit(
    executor: BoundedLoopExecutor, calls: int, items: Items, rng: random.Random
) -> Seen:
    seen = Seen()
    share = iter(range(calls))

    def check(item: Item, value: int) -> None:
        seen.values += 1
        if item[2] or value != item[0] * 2:
            seen.wrong.append(f"{item} -> {value}")

    async def producer() -> None:
        for _ in share:
            item = items()
            draw = rng.random()
            if draw < 0.05:  # cancelled while it waits for a slot (usually)
                task = asyncio.ensure_future(executor.run(work, item))
                await asyncio.sleep(0)
                task.cancel()
                try:
                    check(item, await task)
                except asyncio.CancelledError:
                    seen.cancelled += 1
                except SoakError:
                    seen.errors += 1
            elif draw < 0.10:  # cancelled once submitted: queued or running
                fut = await executor.submit(work, item)
                fut.cancel()
                seen.cancelled += 1
            else:
                try:
                    check(item, await executor.run(work, item))
                except SoakError:
                    seen.errors += 1
                    if not item[2]:
                        seen.wrong.append(f"{item} raised")

    await asyncio.gather(*(producer() for _ in range(4 * executor.bound)))
    return seen


async def soak_map(
    executor: BoundedLoopExecutor, calls: int, items: Items, rng: random.Random
) -> Seen:
    """Short maps until ``calls`` have been submitted through them.

    About 10 % of the maps are left early, and the first error ends each one.
    """
    seen = Seen()
    target = executor.stats().submitted + calls
    while (left := target - executor.stats().submitted) > 0:
        size = min(left, rng.randint(20, 200))
        batch = [items() for _ in range(size)]
        stop_at = rng.randrange(size) if rng.random() < 0.1 else size
        ordered = rng.random() < 0.5

        async def source(batch: list[Item] = batch) -> AsyncIterator[Item]:
            for item in batch:
                yield item

        it: Iterator[Item] | AsyncIterator[Item]
        it = source() if rng.random() < 0.5 else iter(batch)
        received = 0
        try:
            async with executor.map(work, it, ordered=ordered) as results:
                async for value in results:
                    seen.values += 1
                    received += 1
                    if value % 2:
                        seen.wrong.append(f"odd value {value}")
                    if received == stop_at:
                        break
        except SoakError:
            seen.errors += 1
    return seen


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / MB


async def sample_rss(peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def phase(
    name: str,
    make_pool: Callable[[], concurrent.futures.Executor],
    bound: int,
    calls: int,
    max_sleep: float,
    seed: int,
    peak: list[float],
) -> list[str]:
    """Run ``calls`` through submit, then as many through map; check."""
    rng = random.Random(seed)
    items = Items(rng, max_sleep)
    problems: list[str] = []
    with make_pool() as pool:
        tally = Tally(pool)
        executor = BoundedLoopExecutor(executor=tally, bound=bound)
        started = time.perf_counter()
        half = calls // 2
        seen_submit = await soak_submit(executor, half, items, rng)
        seen_map = await soak_map(executor, calls - half, items, rng)
        await executor.aclose()
        elapsed = time.perf_counter() - started
    stats = executor.stats()
    print(
        f"{name}: {calls:,} calls (submit {half:,}, map {calls - half:,} "
        f"submitted) in "
        f"{elapsed:.1f} s, {calls / elapsed:,.0f} calls/s; "
        f"submitted {stats.submitted:,}, completed {stats.completed:,}, "
        f"failed {stats.failed:,}, cancelled {stats.cancelled:,}; "
        f"peak in flight {stats.peak_in_flight} of bound {stats.bound}"
    )
    print(
        f"  callers saw: submit {seen_submit.values:,} values, "
        f"{seen_submit.errors:,} errors, {seen_submit.cancelled:,} cancellations; "
        f"map {seen_map.values:,} values, {seen_map.errors:,} errors"
    )
    expected = (0, 0, tally.submits, tally.results, tally.errors, tally.cancelled)
    actual = (
        stats.in_flight,
        stats.waiting,
        stats.submitted,
        stats.completed,
        stats.failed,
        stats.cancelled,
    )
    if actual != expected:
        problems.append(f"{name}: stats {actual} != executor's own count {expected}")
    if stats.submitted != stats.completed + stats.failed + stats.cancelled:
        problems.append(f"{name}: submitted != completed + failed + cancelled")
    if stats.peak_in_flight > bound:
        problems.append(f"{name}: peak in flight {stats.peak_in_flight} > {bound}")
    # Every value a caller received was returned by a call that completed.
    received = seen_submit.values + seen_map.values
    if received > stats.completed:
        problems.append(f"{name}: {received} values but {stats.completed} completed")
    for seen in (seen_submit, seen_map):
        problems += [f"{name}: {w}" for w in seen.wrong[:5]]
    return problems


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--process-calls", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()

    print(
        f"Python {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"loop {type(asyncio.get_running_loop()).__module__}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    context = multiprocessing.get_context("forkserver")
    peak = [0.0]
    # Warm up (threads started, code paths taken, allocator pools filled),
    # then measure growth from there.
    warm = await phase(
        "warm-up",
        lambda: concurrent.futures.ThreadPoolExecutor(8),
        16,
        20_000,
        1e-4,
        args.seed,
        peak,
    )
    gc.collect()
    baseline = rss_mb()
    peak[0] = baseline
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample_rss(peak, stop))
    problems = list(warm)
    problems += await phase(
        "threads",
        lambda: concurrent.futures.ThreadPoolExecutor(8),
        16,
        args.calls,
        1e-4,
        args.seed + 1,
        peak,
    )
    if args.process_calls:
        problems += await phase(
            "processes",
            lambda: concurrent.futures.ProcessPoolExecutor(2, mp_context=context),
            4,
            args.process_calls,
            1e-4,
            args.seed + 2,
            peak,
        )
    stop.set()
    await sampler
    gc.collect()
    growth = peak[0] - baseline
    print(
        f"RSS: {baseline:.1f} MB after warm-up, peak {peak[0]:.1f} MB "
        f"(+{growth:.1f} MB), {rss_mb():.1f} MB at the end"
    )
    if growth > RSS_LIMIT_MB:
        problems.append(f"RSS grew by {growth:.1f} MB (limit {RSS_LIMIT_MB} MB)")
    for problem in problems:
        print("FAIL:", problem)
    print("OK" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
