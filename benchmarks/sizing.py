"""Sizing: how busy the workers stay for each ``bound`` above ``max_workers``.

Usage::

    python benchmarks/sizing.py                      # 8 threads, 10 ms and 1 ms calls
    python benchmarks/sizing.py --rounds 3 --loop uvloop
    nox -s bench_sizing [-- --rounds 3]

``bound - max_workers`` calls wait in the pool's own queue (``stats().queued``)
where ``max_pending`` and ``max_wait`` no longer reach them; fewer of them
leave a worker idle while the loop hands it the next call. For each
``bound`` in ``--extra`` (calls above the workers: 0, 1, 2, 4, 8 by default),
``map`` pushes ``--calls`` calls of ``time.sleep(duration)`` through a
``ThreadPoolExecutor(--workers)`` and the workers' utilization is the ideal
time (``calls x duration / workers``) over the wall time. The cases are
interleaved, round after round, and the table gives medians. Each run is
bounded: at most ``--calls`` calls of at most 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from typing import TYPE_CHECKING

from aiobound import BoundedLoopExecutor

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any


def blocking(seconds: float) -> None:
    """A blocking call: hold a worker for *seconds*."""
    time.sleep(seconds)


async def utilization(workers: int, bound: int, calls: int, seconds: float) -> float:
    """Run *calls* calls through ``map``; return the workers' utilization."""
    async with BoundedLoopExecutor(max_workers=workers, bound=bound) as executor:
        async for _ in executor.map(blocking, [0.0] * workers):  # start threads
            pass
        started = time.perf_counter()
        async for _ in executor.map(blocking, [seconds] * calls):
            pass
        wall = time.perf_counter() - started
    return calls * seconds / workers / wall


def run(loop: str, coro: Coroutine[Any, Any, float]) -> float:
    """Run *coro* on a new loop of the kind *loop*."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def main(argv: list[str]) -> int:
    """Measure every case, interleaved; print the table of medians."""
    parser = argparse.ArgumentParser(description="aiobound sizing benchmark")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--extra", default="0,1,2,4,8", help="bound - workers")
    parser.add_argument("--durations", default="0.01,0.001", help="seconds a call")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    options = parser.parse_args(argv)
    extras = [int(x) for x in options.extra.split(",")]
    durations = [float(x) for x in options.durations.split(",")]
    if not 1 <= options.workers <= 256 or min(extras) < 0:
        parser.error("--workers must be in [1, 256] and --extra >= 0")
    if not 0 < min(durations) <= max(durations) <= 0.1:
        parser.error("--durations must be in (0, 0.1] seconds")
    if not 1 <= options.calls <= 100_000 or not 1 <= options.rounds <= 20:
        parser.error("--calls must be in [1, 100000] and --rounds in [1, 20]")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results: dict[tuple[float, int], list[float]] = {}
    for rnd in range(options.rounds):
        for seconds in durations:
            for extra in extras:
                bound = options.workers + extra
                value = run(
                    options.loop,
                    utilization(options.workers, bound, options.calls, seconds),
                )
                results.setdefault((seconds, extra), []).append(value)
        print(f"round {rnd + 1} of {options.rounds} done", flush=True)
    print()
    print(
        f"{options.workers} threads, {options.calls} calls per case, "
        f"{options.loop}, median of {options.rounds} interleaved rounds"
    )
    print()
    header = " | ".join(f"{s * 1000:g} ms calls" for s in durations)
    print(f"| `bound` | {header} |")
    print("|---|" + "---:|" * len(durations))
    for extra in extras:
        cells = " | ".join(
            f"{statistics.median(results[s, extra]):.1%}" for s in durations
        )
        print(f"| {options.workers + extra} (workers + {extra}) | {cells} |")
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average before {load_before}, after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
