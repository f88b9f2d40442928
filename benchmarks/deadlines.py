"""A service whose downstream sometimes hangs: with and without deadlines.

Each request of the service is one blocking call, ``await executor.run(...)``,
on a pool of ``--workers`` workers (bound = workers: nothing waits inside
the pool). The downstream takes ``--work`` seconds, except one call in
``--every`` (the same ones in every case), which either sleeps ten times as
long (``slow``) or blocks until the end of the round (``hang``: a stuck
connection, a lock never released). Requests arrive at a fixed rate, open
loop (``--load`` of the pool's capacity), for ``--seconds`` per round; a
request is answered when its call returns or fails (``DeadlineExceeded``
included).

For each case the round reports the *goodput* (requests answered with a
result within ``--slo`` seconds, per second) and the p99 latency of all the
requests (a request unanswered when the round's calls are let go counts
with its latency then). Cases, each on a fresh pool:

* ``threads``: a thread pool, no deadline;
* ``threads + deadline``: ``call_timeout=--deadline``; a late call's caller
  is released, its thread runs on (``abandoned``) and holds its slot;
* ``processes``: a process pool, no deadline;
* ``processes + deadline``: the same, on processes;
* ``processes + kill_on_timeout``: the late call's worker is stopped and
  replaced at the deadline (pebble's pool; skipped without pebble).

Rounds interleave the cases (one round runs each case once, in an order
that rotates), and the figures are the medians over ``--rounds`` rounds.
Run ``python benchmarks/deadlines.py`` (``--quick`` for a smoke run);
``nox -s bench_deadlines`` does the same in a fresh environment.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import statistics
import time
from dataclasses import dataclass

from aiobound import BoundedLoopExecutor

# -- the downstream (module level: the worker processes import it) ------------


def downstream(index: int, every: int, work: float, mode: str, until: float) -> int:
    """Take *work* seconds; one call in *every* is slow or hangs."""
    if index % every == every - 1:
        if mode == "slow":
            time.sleep(10 * work)
        else:  # hang: until the round lets its calls go
            time.sleep(max(0.0, until - time.time()))
    else:
        time.sleep(work)
    return index


# -- one round of one case ------------------------------------------------------


@dataclass
class Settings:
    workers: int
    work: float
    every: int
    load: float
    seconds: float
    deadline: float
    slo: float


@dataclass
class Case:
    name: str
    processes: bool
    deadline: bool
    kill: bool = False


def make_executor(case: Case, settings: Settings) -> BoundedLoopExecutor:
    limit = settings.deadline if case.deadline else None
    if case.processes:
        return BoundedLoopExecutor.process(
            max_workers=settings.workers,
            bound=settings.workers,
            call_timeout=limit,
            kill_on_timeout=case.kill,
        )
    return BoundedLoopExecutor(
        max_workers=settings.workers, bound=settings.workers, call_timeout=limit
    )


async def one_round(case: Case, mode: str, settings: Settings) -> tuple[float, float]:
    """Run *case* for one round; return (goodput per second, p99 seconds)."""
    executor = make_executor(case, settings)
    # Start every worker before the clock starts (each busy at once).
    warm = executor.with_timeout(None)
    await asyncio.gather(*[warm.run(time.sleep, 0.05) for _ in range(settings.workers)])
    rate = settings.load * settings.workers / settings.work
    count = int(rate * settings.seconds)
    interval = 1 / rate
    until = time.time() + settings.seconds + 0.5  # hung calls are let go then
    latencies: list[float] = []
    good = 0

    async def request(index: int) -> None:
        nonlocal good
        begun = time.perf_counter()
        try:
            await executor.run(
                downstream, index, settings.every, settings.work, mode, until
            )
        except Exception:  # DeadlineExceeded: answered, without a result
            ok = False
        else:
            ok = True
        took = time.perf_counter() - begun
        latencies.append(took)
        if ok and took <= settings.slo:
            good += 1

    tasks = []
    started = time.perf_counter()
    for index in range(count):
        delay = started + index * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(request(index)))
    await asyncio.gather(*tasks)
    await executor.aclose()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return good / settings.seconds, p99


# -- the rounds -----------------------------------------------------------------


def cases() -> list[Case]:
    made = [
        Case("threads", processes=False, deadline=False),
        Case("threads + deadline", processes=False, deadline=True),
        Case("processes", processes=True, deadline=False),
        Case("processes + deadline", processes=True, deadline=True),
    ]
    if importlib.util.find_spec("pebble") is not None:
        made.append(
            Case(
                "processes + kill_on_timeout", processes=True, deadline=True, kill=True
            )
        )
    return made


async def run(settings: Settings, rounds: int, modes: list[str]) -> None:
    all_cases = cases()
    for mode in modes:
        figures: dict[str, list[tuple[float, float]]] = {c.name: [] for c in all_cases}
        for number in range(rounds):
            shift = number % len(all_cases)
            for case in all_cases[shift:] + all_cases[:shift]:
                figures[case.name].append(await one_round(case, mode, settings))
        offered = settings.load * settings.workers / settings.work
        print(
            f"\n{mode}: 1 call in {settings.every} "
            + ("sleeps 10x longer" if mode == "slow" else "blocks to the round's end")
            + f"; {offered:.0f} requests/s offered; deadline {settings.deadline:g} s; "
            f"goodput = results within {settings.slo:g} s"
        )
        print(f"{'case':<30} {'goodput/s':>10} {'p99 (ms)':>10}")
        for name, values in figures.items():
            goodput = statistics.median(v[0] for v in values)
            p99 = statistics.median(v[1] for v in values)
            print(f"{name:<30} {goodput:>10.1f} {p99 * 1000:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--work", type=float, default=0.02, help="seconds per call")
    parser.add_argument("--every", type=int, default=50, help="1 call in N misbehaves")
    parser.add_argument("--load", type=float, default=0.6, help="of the capacity")
    parser.add_argument("--seconds", type=float, default=4.0, help="per round")
    parser.add_argument("--deadline", type=float, default=0.1)
    parser.add_argument("--slo", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--mode", choices=["slow", "hang", "both"], default="both", help="misbehaviour"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    settings = Settings(
        workers=args.workers,
        work=args.work,
        every=args.every,
        load=args.load,
        seconds=args.seconds,
        deadline=args.deadline,
        slo=args.slo,
    )
    print(
        f"Python {platform.python_version()} on {platform.system()}, "
        f"{os.cpu_count()} CPUs; {args.workers} workers, {args.work * 1000:g} ms "
        f"calls, {args.rounds} interleaved rounds of {args.seconds:g} s, medians"
    )
    modes = ["slow", "hang"] if args.mode == "both" else [args.mode]
    asyncio.run(run(settings, args.rounds, modes))


if __name__ == "__main__":
    main()
