"""Stream a large iterable through Ray with bounded driver memory.

A producer yields a million items; ``aiobound.ray.from_ray`` keeps at most
``bound`` Ray tasks (each a chunk of items) submitted and unfinished, so
neither the driver nor Ray's object store ever holds more than ``bound x
chunksize`` items in flight, whatever the length of the stream. ``stats()``
is printed as it goes, with how far the producer has run ahead of the
consumer (the items the driver holds): never more than ``bound x
chunksize``.

Run from a clone (starts a local Ray with 2 CPUs on 127.0.0.1)::

    pip install -e '.[ray]' && python examples/ray_cluster.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import TYPE_CHECKING

# A local Ray binds to the machine's network address unless told that it is
# not a cluster; this keeps it on 127.0.0.1. Set before ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray

from aiobound.ray import from_ray

if TYPE_CHECKING:
    from collections.abc import Iterator


def score(x: int) -> int:
    """Stand-in for real work on one item."""
    return (x * 2654435761) % 1000


class Producer:
    """A source too large to materialise (imagine rows from a database)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.pulled += 1
            yield i


async def stream(items: int, chunksize: int, bound: int) -> None:
    producer = Producer(items)
    total = count = most_ahead = 0
    every = max(1, items // 10)
    async with from_ray(bound=bound) as executor:
        async for value in executor.map(score, producer, chunksize=chunksize):
            total += value
            count += 1
            most_ahead = max(most_ahead, producer.pulled - count)
            if count % every == 0:
                stats = executor.stats()
                print(
                    f"{count:>9} results  in_flight={stats.in_flight}/"
                    f"{stats.bound} tasks  submitted={stats.submitted}  "
                    f"completed={stats.completed}  items ahead="
                    f"{producer.pulled - count} (most {most_ahead})"
                )
    assert most_ahead <= bound * chunksize
    print(f"done: sum of scores {total}; the driver never held more than")
    print(f"{most_ahead} items (bound x chunksize = {bound * chunksize})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--chunksize", type=int, default=2_000)
    parser.add_argument("--bound", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    ray.init(num_cpus=args.cpus, include_dashboard=False)
    try:
        asyncio.run(stream(args.items, args.chunksize, args.bound))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
