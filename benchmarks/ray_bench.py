"""A bounded map through Ray against Ray's own patterns.

Usage::

    python benchmarks/ray_bench.py                 # both workloads, 3 rounds
    python benchmarks/ray_bench.py --rounds 1 --items 100000 --tasks 2000
    nox -s bench_ray [-- --rounds 1]

Three ways to push a stream of items through a local Ray (``--cpus``, 2 by
default, on 127.0.0.1), each in a fresh process with its own Ray:

* ``aiobound``: ``aiobound.ray.from_ray(bound=B)`` and
  ``executor.map(fn, items, chunksize=C)`` (results in order, one by one);
* ``aiobound, lists`` (``chunks`` only): the same executor mapping a
  function over lists of ``C`` items made by hand (one result per task, as
  in the two Ray patterns);
* ``ray.wait``: the loop from Ray's documentation ("Pattern: Using ray.wait
  to limit the number of pending tasks"): submit, and once ``B`` tasks are
  pending, ``ray.wait(pending, num_returns=1)`` and consume what is ready
  (results as they come);
* ``all at once``: submit every task, then ``ray.get`` each in order,
  dropping each reference once consumed.

Two workloads:

* ``chunks``: ``--items`` small items (1,000,000 by default) in tasks of
  ``--chunksize`` items (1,000): the stream aiobound's example runs;
* ``payload``: ``--tasks`` tasks of one item each (2,000 by default), each
  item carrying ``--payload`` bytes (200,000) as its argument, as rows read
  from a database would: above Ray's 100 KiB limit for arguments sent
  inline, so each goes through the object store. (A million one-item tasks
  would take close to an hour per case on two cores: the driver and Ray
  spend about 3 ms per task there.)

Reported per case: wall time; the driver's peak RSS above its RSS after
``ray.init`` (sampled every 50 ms, plus ``ru_maxrss`` at the end); and the
peak of Ray's object-store memory in use (``object_store_memory`` total
minus available, which Ray updates about once a second, so short peaks may
be missed). ``B`` is ``2 x cpus`` (``--bound``) for both bounded cases.
With ``--rounds`` above 1 the cases run interleaved, round by round, and the
medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CASES = ("aiobound", "aiobound, lists", "ray.wait", "all at once")
WORKLOADS = ("chunks", "payload")


def score(x: int) -> int:
    """A few microseconds of work on one small item."""
    return (x * 2654435761) % 1000


def weigh(row: bytes) -> int:
    """Work on one item with a payload: a checksum of its bytes."""
    return sum(row[::97]) % 1000


def score_chunk(chunk: list[int]) -> list[int]:
    return [score(x) for x in chunk]


def chunked(n: int, size: int) -> Iterator[list[int]]:
    for start in range(0, n, size):
        yield list(range(start, min(n, start + size)))


def rows(n: int, size: int) -> Iterator[bytes]:
    for i in range(n):
        yield i.to_bytes(8, "little") * (size // 8)


class Sampler:
    """Samples the driver's RSS and the object store's use every 50 ms."""

    def __init__(self) -> None:
        import psutil
        import ray

        self._ray = ray
        self._process = psutil.Process()
        self._total = ray.cluster_resources().get("object_store_memory", 0.0)
        self.base_rss = self._process.memory_info().rss
        self.peak_rss = self.base_rss
        self.peak_store = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        free = self._ray.available_resources().get("object_store_memory", self._total)
        self.peak_store = max(self.peak_store, self._total - free)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> Sampler:  # noqa: PYI034 - never subclassed
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_case(case: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: run one case, return its figures."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    # The workers import this module (by name, as they would an application's).
    here = os.path.dirname(os.path.abspath(__file__))
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
        job_config=ray.job_config.JobConfig(code_search_path=[here]),
    )
    bound = args.bound or 2 * args.cpus
    if workload == "chunks":
        n_tasks = -(-args.items // args.chunksize)
        expected = args.items
    else:
        n_tasks = args.tasks
        expected = args.tasks
    # Warm the workers up, outside the measure, the same way for every
    # case: each imports this module and aiobound's task function.
    warm = ray.remote(score)
    ray.get([warm.remote(i) for i in range(4 * args.cpus)])
    asyncio.run(_warm(4 * args.cpus))
    consumed = 0
    started = time.perf_counter()
    with Sampler() as sampler:
        if case.startswith("aiobound"):
            lists = case == "aiobound, lists"
            consumed = asyncio.run(_aiobound(workload, bound, args, lists))
        else:
            remote: Any = (
                ray.remote(score_chunk) if workload == "chunks" else ray.remote(weigh)
            )
            source: Iterator[Any] = (
                chunked(args.items, args.chunksize)
                if workload == "chunks"
                else rows(args.tasks, args.payload)
            )
            count: Callable[[Any], int] = len if workload == "chunks" else (lambda _: 1)
            if case == "ray.wait":
                pending: list[Any] = []
                for item in source:
                    if len(pending) >= bound:
                        ready, pending = ray.wait(pending, num_returns=1)
                        consumed += count(ray.get(ready[0]))
                    pending.append(remote.remote(item))
                for ref in pending:
                    consumed += count(ray.get(ref))
            else:
                refs: list[Any] = [remote.remote(item) for item in source]
                for index, ref in enumerate(refs):
                    consumed += count(ray.get(ref))
                    refs[index] = None
    wall = time.perf_counter() - started
    assert consumed == expected, (consumed, expected)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ray.shutdown()
    return {
        "case": case,
        "workload": workload,
        "tasks": n_tasks,
        "wall": wall,
        "rss": max(sampler.peak_rss, maxrss) - sampler.base_rss,
        "store": sampler.peak_store,
    }


async def _warm(calls: int) -> None:
    from aiobound.ray import from_ray

    async with from_ray(bound=calls) as executor:
        await asyncio.gather(*(executor.run(score, i) for i in range(calls)))


async def _aiobound(
    workload: str, bound: int, args: argparse.Namespace, lists: bool
) -> int:
    from aiobound.ray import from_ray

    consumed = 0
    async with from_ray(bound=bound) as executor:
        if lists:  # chunks made by hand: one result (a list) per task
            async for chunk in executor.map(
                score_chunk, chunked(args.items, args.chunksize)
            ):
                consumed += len(chunk)
            return consumed
        if workload == "chunks":
            items = executor.map(score, range(args.items), chunksize=args.chunksize)
        else:
            items = executor.map(weigh, rows(args.tasks, args.payload))
        async for _ in items:
            consumed += 1
    return consumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--bound", type=int, default=None)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--chunksize", type=int, default=1_000)
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--payload", type=int, default=200_000)
    parser.add_argument("--workload", choices=WORKLOADS, action="append")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        # Run as the module ray_bench (not __main__), so that its functions
        # are sent to Ray by reference, as an application's would be.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import ray_bench

        print(json.dumps(ray_bench.run_case(args.one[0], args.one[1], args)))
        return
    workloads = args.workload or list(WORKLOADS)
    forwarded = [
        f"--cpus={args.cpus}",
        f"--items={args.items}",
        f"--chunksize={args.chunksize}",
        f"--tasks={args.tasks}",
        f"--payload={args.payload}",
    ]
    if args.bound is not None:
        forwarded.append(f"--bound={args.bound}")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for workload in workloads:
            for case in CASES:
                if case == "aiobound, lists" and workload != "chunks":
                    continue
                out = subprocess.run(
                    [sys.executable, __file__, "--one", case, workload, *forwarded],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((workload, case), []).append(figures)
                print(
                    f"round {round_ + 1} {workload:8} {case:12} "
                    f"{figures['wall']:7.2f} s  driver +{figures['rss'] / 2**20:7.1f} "
                    f"MiB  object store {figures['store'] / 2**20:7.1f} MiB",
                    flush=True,
                )
    print()
    print(
        f"medians of {args.rounds} rounds, {args.cpus} CPUs, bound "
        f"{args.bound or 2 * args.cpus}:"
    )
    print(
        "| workload | case | tasks | wall (s) | driver peak RSS (MiB) "
        "| object store peak (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for (workload, case), runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        rss = statistics.median(r["rss"] for r in runs) / 2**20
        store = statistics.median(r["store"] for r in runs) / 2**20
        print(
            f"| {workload} | {case} | {runs[0]['tasks']:,} | {wall:.2f} | "
            f"{rss:.1f} | {store:.1f} |"
        )


if __name__ == "__main__":
    main()
