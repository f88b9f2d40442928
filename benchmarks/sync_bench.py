"""BoundedExecutor and SharedBound against the article's recipe and the stdlib.

Usage::

    python benchmarks/sync_bench.py             # 1,000,000 calls, 3 repetitions
    python benchmarks/sync_bench.py --quick     # 20,000 calls, 1 repetition
    nox -s bench_sync [-- --quick]

Every measurement runs in a fresh process (this script with ``--case``), so
peak memory is the case's own; each repetition runs every case once, in an
order shuffled per repetition (fixed seed), so drift in the machine's load
spreads over all cases. Figures are medians; ratios are paired within a
repetition, then their median is reported.

Cases (``--calls`` no-op calls each, 10 worker threads, bound 20):

* ``recipe_submit``: the article's ``BoundedExecutor`` (a ``Semaphore`` taken
  before ``submit``, given back in a done-callback) around a
  ``ThreadPoolExecutor``: ``submit`` in a loop, futures dropped;
* ``bounded_submit``: ``aiobound.BoundedExecutor.submit`` the same way;
* ``bounded_map``: ``for r in BoundedExecutor.map(noop, range(calls))``;
* ``stdlib_map``: ``ThreadPoolExecutor.map`` (submits everything at once);
* ``stdlib_map_buffersize``: ``ThreadPoolExecutor.map(buffersize=20)``, where
  the interpreter has it (3.14+).

Shared bound (``--shared-calls`` calls in all, one ``ThreadPoolExecutor(8)``,
bound 16):

* ``shared_mix``: 2 event loops in 2 threads (``BoundedLoopExecutor.map``) and
  2 threads (``BoundedExecutor.map``), all over one ``SharedBound(16)``; a
  counter inside the called function records the most calls running at once;
* ``one_loop``: one loop alone, ``BoundedLoopExecutor(bound=16)`` (an int: the
  loop-only gate), the same number of calls.

``--baseline-src DIR`` also runs ``one_loop`` with the package imported from
*DIR* (another checkout's ``src``), to compare the int-bound fast path.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SRC = HERE.parent.parent / "src"
MB = 1_000_000
WORKERS = 10
BOUND = 20
SHARED_BOUND = 16


def noop(x: int) -> int:
    return x


def rss_now() -> int:
    """Resident set size of this process, in bytes (Linux: /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return peak_rss()


def peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# -- the cases (each runs in its own process) ------------------------------------


class RecipeExecutor:
    """The article's wrapper: a semaphore slot per call, freed when it ends."""

    def __init__(self, executor: concurrent.futures.Executor, bound: int) -> None:
        self.executor = executor
        self.semaphore = threading.BoundedSemaphore(bound)

    def submit(self, fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
        self.semaphore.acquire()
        try:
            future = self.executor.submit(fn, *args)
        except BaseException:
            self.semaphore.release()
            raise
        future.add_done_callback(lambda _: self.semaphore.release())
        return future

    def shutdown(self, wait: bool = True) -> None:
        self.executor.shutdown(wait)


def case_recipe_submit(calls: int) -> dict[str, float]:
    executor = RecipeExecutor(concurrent.futures.ThreadPoolExecutor(WORKERS), BOUND)
    start = time.perf_counter()
    for i in range(calls):
        executor.submit(noop, i)
    executor.shutdown(wait=True)
    return {"seconds": time.perf_counter() - start}


def case_bounded_submit(calls: int) -> dict[str, float]:
    from aiobound import BoundedExecutor

    executor = BoundedExecutor(max_workers=WORKERS, bound=BOUND)
    start = time.perf_counter()
    for i in range(calls):
        executor.submit(noop, i)
    executor.shutdown(wait=True)
    return {"seconds": time.perf_counter() - start}


def case_bounded_map(calls: int) -> dict[str, float]:
    from aiobound import BoundedExecutor

    executor = BoundedExecutor(max_workers=WORKERS, bound=BOUND)
    start = time.perf_counter()
    total = sum(executor.map(noop, range(calls)))
    executor.shutdown(wait=True)
    assert total == calls * (calls - 1) // 2
    return {"seconds": time.perf_counter() - start}


def case_stdlib_map(calls: int) -> dict[str, float]:
    executor = concurrent.futures.ThreadPoolExecutor(WORKERS)
    start = time.perf_counter()
    total = sum(executor.map(noop, range(calls)))
    executor.shutdown(wait=True)
    assert total == calls * (calls - 1) // 2
    return {"seconds": time.perf_counter() - start}


def case_stdlib_map_buffersize(calls: int) -> dict[str, float]:
    executor = concurrent.futures.ThreadPoolExecutor(WORKERS)
    start = time.perf_counter()
    total = sum(executor.map(noop, range(calls), buffersize=BOUND))  # type: ignore[call-arg,unused-ignore]
    executor.shutdown(wait=True)
    assert total == calls * (calls - 1) // 2
    return {"seconds": time.perf_counter() - start}


class Probe:
    """No-op that records the most calls running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def __call__(self, x: int) -> int:
        with self.lock:
            self.running += 1
            if self.running > self.peak:
                self.peak = self.running
        with self.lock:
            self.running -= 1
        return x


def case_shared_mix(calls: int) -> dict[str, float]:
    from aiobound import BoundedExecutor, BoundedLoopExecutor, SharedBound

    pool = concurrent.futures.ThreadPoolExecutor(8)
    shared = SharedBound(SHARED_BOUND)
    probe = Probe()
    share = calls // 4
    sync = BoundedExecutor(executor=pool, bound=shared)

    async def on_loop() -> int:
        ex = BoundedLoopExecutor(executor=pool, bound=shared)
        total = 0
        async for value in ex.map(probe, range(share)):
            total += value
        await ex.aclose()
        return total

    def in_thread() -> int:
        return sum(sync.map(probe, range(share)))

    runners = [lambda: asyncio.run(on_loop())] * 2 + [in_thread] * 2
    results: list[int] = []
    start_line = threading.Barrier(len(runners) + 1)

    def run(fn: Any) -> None:
        start_line.wait()
        results.append(fn())

    threads = [threading.Thread(target=run, args=(fn,)) for fn in runners]
    for thread in threads:
        thread.start()
    start_line.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    sync.shutdown()
    pool.shutdown()
    assert sum(results) == 4 * (share * (share - 1) // 2)
    stats = shared.stats()
    return {
        "seconds": seconds,
        "calls": 4 * share,
        "peak_running": probe.peak,
        "peak_in_flight": stats.peak_in_flight,
    }


def case_one_loop(calls: int) -> dict[str, float]:
    from aiobound import BoundedLoopExecutor

    pool = concurrent.futures.ThreadPoolExecutor(8)
    probe = Probe()
    total_calls = 4 * (calls // 4)

    async def main() -> int:
        ex = BoundedLoopExecutor(executor=pool, bound=SHARED_BOUND)
        total = 0
        async for value in ex.map(probe, range(total_calls)):
            total += value
        await ex.aclose()
        return total

    start = time.perf_counter()
    asyncio.run(main())
    seconds = time.perf_counter() - start
    pool.shutdown()
    return {"seconds": seconds, "calls": total_calls, "peak_running": probe.peak}


CASES = {
    "recipe_submit": case_recipe_submit,
    "bounded_submit": case_bounded_submit,
    "bounded_map": case_bounded_map,
    "stdlib_map": case_stdlib_map,
    "stdlib_map_buffersize": case_stdlib_map_buffersize,
    "shared_mix": case_shared_mix,
    "one_loop": case_one_loop,
}
SHARED_CASES = ("shared_mix", "one_loop")


def run_case(name: str, calls: int) -> None:
    """In the child: run one case, print its figures as JSON."""
    import aiobound  # imported before the baseline, as the stdlib modules are

    del aiobound
    before = rss_now()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    figures = CASES[name](calls)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures.setdefault("calls", calls)
    # CPU time of the whole process (all threads) per call: less sensitive
    # than wall time to other processes sharing the machine.
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    figures["cpu_us_per_call"] = cpu / figures["calls"] * 1e6
    figures["calls_per_s"] = figures["calls"] / figures["seconds"]
    figures["rss_growth_mb"] = (peak_rss() - before) / MB
    print(json.dumps(figures))


# -- the driver ------------------------------------------------------------------


def spawn(name: str, calls: int, src: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, str(HERE), "--case", name, "--calls", str(calls)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--shared-calls", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline-src", type=Path)
    args = parser.parse_args()
    if args.case:
        run_case(args.case, args.calls)
        return
    if args.quick:
        args.calls, args.shared_calls, args.reps = 20_000, 20_000, 1
    names = [n for n in CASES if n != "stdlib_map_buffersize"]
    if sys.version_info >= (3, 14):
        names.append("stdlib_map_buffersize")
    jobs: list[tuple[str, Path]] = [(n, SRC) for n in names]
    if args.baseline_src is not None:
        jobs.append(("one_loop@baseline", args.baseline_src))
    rng = random.Random(17)
    runs: list[dict[str, dict[str, float]]] = []
    for rep in range(args.reps):
        order = jobs[:]
        rng.shuffle(order)
        figures: dict[str, dict[str, float]] = {}
        for label, src in order:
            name = label.split("@")[0]
            calls = args.shared_calls if name in SHARED_CASES else args.calls
            figures[label] = spawn(name, calls, src)
            print(
                f"rep {rep + 1}: {label:24} {figures[label]['calls_per_s']:>10,.0f} "
                f"calls/s  RSS +{figures[label]['rss_growth_mb']:.1f} MB",
                file=sys.stderr,
            )
        runs.append(figures)
    report(runs, [label for label, _ in jobs], args)


def report(
    runs: list[dict[str, dict[str, float]]], labels: list[str], args: Any
) -> None:
    def median(label: str, key: str) -> float:
        return statistics.median(run[label][key] for run in runs)

    def ratio(a: str, b: str) -> float:
        return statistics.median(
            run[a]["calls_per_s"] / run[b]["calls_per_s"] for run in runs
        )

    print(
        f"\nPython {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{args.reps} repetitions, {args.calls:,} calls "
        f"({args.shared_calls:,} for the shared bound)\n"
    )
    print("| case | calls/s | CPU per call | RSS growth |")
    print("|---|---:|---:|---:|")
    for label in labels:
        print(
            f"| {label} | {median(label, 'calls_per_s'):,.0f} | "
            f"{median(label, 'cpu_us_per_call'):.1f} µs | "
            f"{median(label, 'rss_growth_mb'):.1f} MB |"
        )
    print("\n| ratio (paired median) | value | target |")
    print("|---|---:|---|")
    print(
        "| bounded_submit / recipe_submit | "
        f"{ratio('bounded_submit', 'recipe_submit'):.2f} | >= 0.90 |"
    )
    to_recipe = ratio("bounded_map", "recipe_submit")
    print(f"| bounded_map / recipe_submit | {to_recipe:.2f} | |")
    print(f"| bounded_map / stdlib_map | {ratio('bounded_map', 'stdlib_map'):.2f} | |")
    print(
        f"| shared_mix / one_loop | {ratio('shared_mix', 'one_loop'):.2f} | >= 0.80 |"
    )
    if "one_loop@baseline" in labels:
        print(
            "| one_loop / one_loop@baseline | "
            f"{ratio('one_loop', 'one_loop@baseline'):.2f} | ~1.00 |"
        )
        cpu = statistics.median(
            run["one_loop"]["cpu_us_per_call"]
            / run["one_loop@baseline"]["cpu_us_per_call"]
            for run in runs
        )
        print(f"| one_loop / one_loop@baseline, CPU per call | {cpu:.2f} | ~1.00 |")
    peak = max(run["shared_mix"]["peak_running"] for run in runs)
    in_flight = max(run["shared_mix"]["peak_in_flight"] for run in runs)
    print(
        f"\nshared_mix: at most {peak:.0f} calls running and {in_flight:.0f} in "
        f"flight at once (bound {SHARED_BOUND})"
    )


if __name__ == "__main__":
    main()
