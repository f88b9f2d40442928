"""Adaptive bounds against fixed ones, over a downstream whose capacity changes.

Usage::

    python benchmarks/adaptive.py                  # 3 phases of 10 s per case
    python benchmarks/adaptive.py --phase 4        # a quick look
    python benchmarks/adaptive.py --plot docs/_static/adaptive.png
    nox -s adaptive [-- --phase 4]

The downstream is simulated in-process, and behaves as real ones do: at most
``C`` calls are served at full speed, each taking ``S`` (20 ms) of work; past
``C`` it thrashes: with ``n`` calls inside, every call progresses at
``1 / (1 + 2 (n - C) / C)`` of full speed, so pushing past capacity lowers
the throughput (at ``n = 2C``, to two thirds). Calls re-read ``n`` a few
times while they run, so a call slows down when others arrive. ``C`` is 16,
then 4, then 12, for ``--phase`` seconds each.

Each case is a :class:`~aiobound.BoundedLoopExecutor` over a
``ThreadPoolExecutor(32)`` with ``max_wait=0.05`` (50 ms) shedding in
front, under an open-loop load (arrivals on a fixed schedule, whatever the
answers) of 1.5x the highest capacity (1200 calls/s). Cases: fixed bounds 32
and 8, ``AIMD(latency_threshold=1.25 S)`` (the how-to's rule: 1.25 times a
call's latency on the healthy downstream) and ``Gradient()`` (its defaults).

Reported per phase, from 2 s after the change (``--settle``) to the next
change: goodput (calls that ended in that span, per second) against
``C / S``; p50 and p99 of the calls' own latency (measured inside the call)
and of their end-to-end latency (arrival to answer), over the served calls
that arrived and ended in that span (a call still running at the next
change runs under the next phase's capacity: it belongs to that phase's
first 2 s, which no figure covers); the share of the calls that arrived in
the span that were shed (``OverloadedError``); the mean limit; the time to
converge after the change: from the change until the limit's 0.5 s rolling
mean stays within 30% of the phase's settled mean limit (0 for a fixed
bound); and the share of those served calls that ran past ``C`` (more than
``C`` calls inside the downstream at some point of the call). Bounds: at
most ``rate x phase x 3`` calls, none waited for longer than a phase plus
5 s.

The load generator, the executor and the simulated downstream share one
process, so a pause of Python's cyclic garbage collector stops the
downstream's calls too and reads as downstream latency, which a real
downstream (another process) would not show. The script keeps its records
in plain tuples of numbers (which the collector stops tracking), keeps only
the limit trace and the report's rows of a finished case, and starts each
case from a collected, frozen heap (``gc.freeze()``), so that no case's
collections grow with the records of the cases before it; it prints the
longest full collection of each case.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import os
import statistics
import threading
import time
from dataclasses import dataclass, field

from aiobound import AIMD, BoundedLoopExecutor, Gradient, OverloadedError

S = 0.020
CAPACITIES = (16, 4, 12)
WORKERS = 32


class Downstream:
    """At most ``capacity`` calls at full speed; more make every call slower."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._inside = 0

    def _speed(self) -> float:
        c = self.capacity
        return 1.0 / (1.0 + 2.0 * max(0, self._inside - c) / c)

    def call(self) -> tuple[float, bool]:
        """Do ``S`` of work at the current speed.

        Returns:
            The own latency, and whether more than ``capacity`` calls were
            inside at some point of the call.
        """
        start = time.monotonic()
        crowded = False
        with self._lock:
            self._inside += 1
        try:
            work = S
            while work > 1e-6:
                with self._lock:
                    speed = self._speed()
                    crowded = crowded or self._inside > self.capacity
                step = max(0.002, work / speed / 3)
                t0 = time.monotonic()
                time.sleep(step)
                work -= (time.monotonic() - t0) * speed
        finally:
            with self._lock:
                self._inside -= 1
        return time.monotonic() - start, crowded


# (arrived, served, own latency, end-to-end latency, ran past C): a plain
# tuple of numbers, which the cyclic garbage collector stops tracking.
Record = tuple[float, bool, float, float, bool]


@dataclass
class Run:
    name: str
    records: list[Record] = field(default_factory=list)
    limits: list[tuple[float, int]] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)
    gc_pauses: list[float] = field(default_factory=list)


async def one_case(name: str, bound: object, phase: float, rate: float) -> Run:
    run = Run(name)
    downstream = Downstream(CAPACITIES[0])
    pool = concurrent.futures.ThreadPoolExecutor(WORKERS)
    executor = BoundedLoopExecutor(executor=pool, bound=bound, max_wait=0.05)  # type: ignore[arg-type]
    tasks: set[asyncio.Task[None]] = set()

    async def request(arrived: float) -> None:
        try:
            own, crowded = await executor.run(downstream.call)
        except OverloadedError:
            run.records.append((arrived, False, 0.0, 0.0, False))
            return
        end_to_end = time.monotonic() - arrived
        run.records.append((arrived, True, own, end_to_end, crowded))

    async def sample_limit(stop: float) -> None:
        while time.monotonic() < stop:
            run.limits.append((time.monotonic(), executor.bound))
            await asyncio.sleep(0.05)

    collecting: list[float] = []

    def on_collect(event: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if event == "start":
            collecting.append(time.perf_counter())
        elif collecting:
            run.gc_pauses.append(time.perf_counter() - collecting.pop())

    gc.collect()
    gc.freeze()  # what earlier cases left is no work for this case's collections
    gc.callbacks.append(on_collect)
    start = time.monotonic()
    stop = start + phase * len(CAPACITIES)
    sampler = asyncio.create_task(sample_limit(stop))
    interval = 1.0 / rate
    sent = 0
    for index, capacity in enumerate(CAPACITIES):
        downstream.capacity = capacity
        run.changes.append(start + index * phase)
        phase_end = start + (index + 1) * phase
        while (now := time.monotonic()) < phase_end:
            due = start + sent * interval
            while due <= now and sent < rate * phase * 3:
                task = asyncio.create_task(request(due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
                due = start + sent * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    await asyncio.wait_for(asyncio.gather(*tasks), phase + 5.0)
    await sampler
    await executor.aclose()
    pool.shutdown()
    gc.callbacks.remove(on_collect)
    return run


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def converge_time(run: Run, begin: float, settle: float, end: float) -> float:
    """Seconds from *begin* until the limit stays within 30% of its settled mean.

    The settled mean is the mean limit from ``begin + settle`` to *end*; the
    limit counts as there once every later 0.5 s rolling mean is within 30%.
    """
    settled = [n for t, n in run.limits if begin + settle <= t < end]
    if not settled:
        return float("nan")
    target = statistics.mean(settled)
    points = [(t, n) for t, n in run.limits if begin <= t < end]
    last_bad = begin
    for t, _ in points:
        near = [n for u, n in points if t - 0.5 < u <= t]
        if abs(statistics.mean(near) - target) > 0.3 * target:
            last_bad = t
    return last_bad - begin


def report(runs: list[Run], phase: float, settle: float) -> list[dict[str, object]]:
    rows = []
    for run in runs:
        for index, capacity in enumerate(CAPACITIES):
            begin = run.changes[index]
            lo, hi = begin + settle, begin + phase
            window = [r for r in run.records if lo <= r[0] < hi]
            ended = [r for r in run.records if r[1] and lo <= r[0] + r[3] < hi]
            served = [r for r in ended if lo <= r[0]]
            own = [r[2] for r in served]
            e2e = [r[3] for r in served]
            goodput = len(ended) / (hi - lo)
            limits = [n for t, n in run.limits if lo <= t < hi]
            rows.append(
                {
                    "case": run.name,
                    "C": capacity,
                    "goodput": goodput,
                    "of_capacity": goodput / (capacity / S),
                    "own_p50_ms": 1000 * quantile(own, 0.5),
                    "own_p99_ms": 1000 * quantile(own, 0.99),
                    "e2e_p50_ms": 1000 * quantile(e2e, 0.5),
                    "e2e_p99_ms": 1000 * quantile(e2e, 0.99),
                    "shed": sum(not r[1] for r in window) / len(window)
                    if window
                    else 0.0,
                    "limit": statistics.mean(limits) if limits else float("nan"),
                    "converged_s": converge_time(run, begin, settle, hi),
                    "past_c": sum(r[4] for r in served) / len(served)
                    if served
                    else 0.0,
                }
            )
    return rows


def verdict(rows: list[dict[str, object]]) -> list[str]:
    lines = []
    for capacity in CAPACITIES:
        phase_rows = [r for r in rows if r["C"] == capacity]
        fixed = [r for r in phase_rows if str(r["case"]).startswith("fixed")]
        if not fixed:
            continue
        best = max(float(r["goodput"]) for r in fixed)  # type: ignore[arg-type]
        for r in phase_rows:
            meets_goodput = float(r["goodput"]) >= 0.9 * best  # type: ignore[arg-type]
            meets_latency = float(r["own_p99_ms"]) <= 2000 * S  # type: ignore[arg-type]
            lines.append(
                f"C={capacity:<3} {r['case']:<10} goodput>=0.9x best fixed: "
                f"{'yes' if meets_goodput else 'NO '}  p99 own <= 2S: "
                f"{'yes' if meets_latency else 'NO'}"
            )
    return lines


def plot(runs: list[Run], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    start = runs[0].changes[0]
    for run in runs:
        t0 = run.changes[0]
        ax.plot(
            [t - t0 for t, _ in run.limits], [n for _, n in run.limits], label=run.name
        )
    phase = runs[0].changes[1] - start
    for index, capacity in enumerate(CAPACITIES):
        ax.hlines(
            capacity,
            index * phase,
            (index + 1) * phase,
            colors="grey",
            linestyles="dotted",
        )
    ax.set_xlabel("seconds (capacity C dotted: 16, 4, 12)")
    ax.set_ylabel("bound (limit)")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(
    args: argparse.Namespace,
) -> tuple[list[Run], list[dict[str, object]]]:
    cases: list[tuple[str, object]] = [
        ("fixed 32", 32),
        ("fixed 8", 8),
        # 1.25x the latency of a call on the healthy downstream (S), the rule
        # docs/howto/adaptive.md gives for latency_threshold.
        ("AIMD", AIMD(latency_threshold=1.25 * S)),
        ("Gradient", Gradient(seed=1)),
    ]
    runs, rows = [], []
    for name, bound in cases:
        if args.only and name not in args.only:
            continue
        run = await one_case(name, bound, args.phase, args.rate)
        rows += report([run], args.phase, args.settle)
        run.records.clear()  # the rows are all the report needs
        runs.append(run)
        longest = 1000 * max(run.gc_pauses, default=0.0)
        print(
            f"{name}: load average after it {os.getloadavg()}; "
            f"{len(run.gc_pauses)} full collections, longest {longest:.1f} ms"
        )
    return runs, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=1.5 * max(CAPACITIES) / S)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}  cpus: {os.cpu_count()}")
    runs, rows = asyncio.run(main_async(args))
    print(
        "| case | C | goodput/s | of C/S | own p50 ms | own p99 ms | e2e p50 ms "
        "| e2e p99 ms | shed | mean limit | converged s | ran past C |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        conv = f"{r['converged_s']:.2f}"
        print(
            f"| {r['case']} | {r['C']} | {r['goodput']:.0f} | {r['of_capacity']:.2f} "
            f"| {r['own_p50_ms']:.1f} | {r['own_p99_ms']:.1f} | {r['e2e_p50_ms']:.1f} "
            f"| {r['e2e_p99_ms']:.1f} | {r['shed']:.0%} | {r['limit']:.1f} | {conv} "
            f"| {r['past_c']:.0%} |"
        )
    print()
    print("\n".join(verdict(rows)))
    print(f"load after: {os.getloadavg()}")
    if args.plot:
        plot(runs, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
