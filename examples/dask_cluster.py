"""Stream a large iterable through a Dask cluster with bounded client memory.

A producer yields a million items; ``aiobound.dask.from_client`` keeps at
most ``bound`` tasks (each a chunk of items) on the scheduler, so neither the
client nor the scheduler ever holds more than ``bound x chunksize`` items in
flight, whatever the length of the stream. ``stats()`` is printed as it goes,
with how far the producer has run ahead of the consumer (the items the
client holds): never more than ``bound x chunksize``.

Run from a clone (starts a local cluster of 2 worker processes on
127.0.0.1)::

    pip install -e '.[dask]' && python examples/dask_cluster.py
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from distributed import Client, LocalCluster

from aiobound.dask import from_client

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


async def stream(client: Client, items: int, chunksize: int, bound: int) -> None:
    producer = Producer(items)
    total = count = most_ahead = 0
    every = max(1, items // 10)
    async with from_client(client, bound=bound) as executor:
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
    print(f"done: sum of scores {total}; the client never held more than")
    print(f"{most_ahead} items (bound x chunksize = {bound * chunksize})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--chunksize", type=int, default=2_000)
    parser.add_argument("--bound", type=int, default=8)
    args = parser.parse_args()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        asyncio.run(stream(client, args.items, args.chunksize, args.bound))


if __name__ == "__main__":
    main()
