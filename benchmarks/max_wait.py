"""``max_wait`` under a burst: how long admitted callers waited, how late refusals came.

Usage::

    python benchmarks/max_wait.py                 # 5 rounds on asyncio and uvloop
    python benchmarks/max_wait.py --rounds 1 --burst 100   # a quick look
    nox -s bench_max_wait [-- --rounds 3]

The promise (``docs/explanation/guarantees.md``): a caller is never refused
before it has waited ``max_wait`` (``time.monotonic``), and a waiter that
would be let in after its ``max_wait`` has passed is refused instead, so
every admitted call waited at most ``max_wait`` for its slot
(``stats().queue_wait_max <= max_wait``, measured at the grant). A refusal
reaches its caller when the loop runs it: late by the loop's lag. This
measures both sides of that.

Each round, on a fresh loop, ``--burst`` callers arrive at once at an
executor of ``--workers`` threads (``bound`` = workers, so no call waits in
the pool's own queue; no ``max_pending``) whose calls hold a worker for
``--service-ms``, as a web service's handlers would: each spends
``--handler-us`` of CPU on the loop before it submits and again after its
answer (reading the request, writing the response), which is what makes the
loop late under a burst (each value of ``--handler-us`` is a case; 0 shows
aiobound's own share). Reported, per loop and case, over every caller of
every round:

* admitted: ``stats().queue_wait_max`` (the wait at the grant, the
  promise) and how many grants came after ``max_wait`` in
  ``stats().queue_wait`` (none may); and how long each caller had waited
  when its task resumed with its slot (the wait plus the loop's lag);
* refused: how long after ``max_wait`` each caller resumed with its
  ``OverloadedError`` (never before it: the minimum is at least 0).

The latencies are the median over the rounds of each round's min, p50, p99
and max (one stalled round, as a shared machine has, moves them little),
then the worst of any round.

Everything runs in this process; no network. Each round is bounded: at most
``--burst`` calls of at most 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiobound import BoundedLoopExecutor, OverloadedError

if TYPE_CHECKING:
    from collections.abc import Callable

LOOPS = ("asyncio", "uvloop")


def blocking(seconds: float) -> None:
    """A blocking call: hold a worker for *seconds*."""
    time.sleep(seconds)


def spin(seconds: float) -> None:
    """Spend *seconds* of CPU on the loop (a handler's own work)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@dataclass
class Samples:
    """Seconds, per caller, pooled over rounds (one loop, one case)."""

    admitted: list[list[float]] = field(default_factory=list)  # per round
    refused: list[list[float]] = field(default_factory=list)  # per round
    queue_wait_max: list[float] = field(default_factory=list)  # per round
    granted_late: int = 0  # grants after max_wait, from the histogram
    other_refusals: int = 0


async def burst(
    options: argparse.Namespace, handler_us: float, samples: Samples
) -> None:
    """One burst of callers on the running loop."""
    handler = handler_us / 1e6
    max_wait = options.max_wait
    admitted: list[float] = []
    refused: list[float] = []
    samples.admitted.append(admitted)
    samples.refused.append(refused)
    async with BoundedLoopExecutor(
        max_workers=options.workers, bound=options.workers, max_wait=max_wait
    ) as executor:
        # Start the threads before the clock matters.
        await asyncio.gather(*(executor.run(blocking, 0) for _ in range(8)))

        async def request() -> None:
            spin(handler)  # read and route the request
            arrived = time.monotonic()
            try:
                future = await executor.submit(blocking, options.service_ms / 1000)
            except OverloadedError as exc:
                refused.append(time.monotonic() - arrived)
                if "max_wait" not in str(exc):
                    samples.other_refusals += 1
                spin(handler)  # write the 503
                return
            admitted.append(time.monotonic() - arrived)
            await future
            spin(handler)  # write the answer

        await asyncio.gather(*(request() for _ in range(options.burst)))
        stats = executor.stats()
        samples.queue_wait_max.append(stats.queue_wait_max)
        histogram = stats.queue_wait
        # Cumulative counts: the grants above the first bucket bound at or
        # past max_wait (exact when max_wait is a bound, as 0.25 is).
        index = bisect.bisect_left(histogram.bounds, max_wait)
        samples.granted_late += histogram.count - histogram.counts[index]


def run_round(
    loop: str, options: argparse.Namespace, handler_us: float, samples: Samples
) -> None:
    """Run one burst on a new loop of the kind *loop*."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(burst(options, handler_us, samples))


def quantile(values: list[float], q: float) -> float:
    """The *q* quantile of *values* (nearest rank), or NaN."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def figures(rounds: list[list[float]], offset: float) -> str:
    """Each round's min, p50, p99 and max, minus *offset*: medians, in ms.

    Then, in parentheses, the largest value of any round.
    """
    stats = [(min(r), quantile(r, 0.5), quantile(r, 0.99), max(r)) for r in rounds if r]
    if not stats:
        return "-"
    medians = (
        statistics.median(column) - offset for column in zip(*stats, strict=True)
    )
    worst = max(row[3] for row in stats) - offset
    return " / ".join(ms(x) for x in medians) + f" (worst {ms(worst)})"


def report(
    results: dict[tuple[str, float], Samples], options: argparse.Namespace
) -> None:
    """Print the table of the run."""
    wait = options.max_wait
    print()
    print(
        f"burst of {options.burst} callers at once, {options.workers} workers x "
        f"{options.service_ms:g} ms, bound = workers, max_wait = {wait:g} s; "
        f"{options.rounds} round(s) per case, interleaved; medians over the "
        f"rounds of each round's figure, and the worst of any round"
    )
    print()
    print(
        "| loop | handler CPU before and after each call | admitted "
        "| `queue_wait_max` (at the grant), ms | grants after `max_wait` "
        "| admitted caller resumed: wait min / p50 / p99 / max, ms "
        "| refused | refused caller resumed, after `max_wait`: "
        "min / p50 / p99 / max, ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (loop, handler_us), s in results.items():
        print(
            f"| {loop} | {handler_us:g} µs | {sum(map(len, s.admitted))} | "
            f"{ms(max(s.queue_wait_max))} | {s.granted_late} | "
            f"{figures(s.admitted, 0.0)} | {sum(map(len, s.refused))} | "
            f"{figures(s.refused, wait)} |"
        )
    for (loop, handler_us), s in results.items():
        early = sum(1 for r in s.refused for v in r if v < wait)
        print(
            f"{loop}, {handler_us:g} µs: refused before max_wait: {early}; "
            f"refused for another reason: {s.other_refusals}"
        )
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; load "
        f"average before {options.load_before}, after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )


def main(argv: list[str]) -> int:
    """Run the rounds, interleaving the loops; print the tables."""
    parser = argparse.ArgumentParser(description="aiobound max_wait benchmark")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--max-wait", type=float, default=0.25)
    parser.add_argument(
        "--handler-us", default="0,200", help="µs of CPU per handler, cases"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loops", default=",".join(LOOPS))
    options = parser.parse_args(argv)
    loops = [x for x in options.loops.split(",") if x]
    if not loops or set(loops) - set(LOOPS):
        parser.error(f"--loops takes {' and '.join(LOOPS)}, got {options.loops!r}")
    if not 1 <= options.burst <= 10_000 or not 1 <= options.workers <= 64:
        parser.error("--burst must be in [1, 10000] and --workers in [1, 64]")
    if not 0 <= options.service_ms <= 1000 or not 0 < options.max_wait <= 10:
        parser.error("--service-ms must be in [0, 1000], --max-wait in (0, 10]")
    handlers = [float(x) for x in options.handler_us.split(",") if x]
    if not handlers or not all(0 <= x <= 10_000 for x in handlers):
        parser.error("--handler-us takes values in [0, 10000]")
    if not 1 <= options.rounds <= 50:
        parser.error("--rounds must be in [1, 50]")
    options.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = {(loop, h): Samples() for loop in loops for h in handlers}
    for rnd in range(options.rounds):
        for loop, handler_us in results:
            run_round(loop, options, handler_us, results[loop, handler_us])
        print(f"round {rnd + 1} of {options.rounds} done", flush=True)
    report(results, options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
