"""Quickstart: bounded, awaitable submission of blocking calls.

Run with ``python examples/quickstart.py``: one call with ``run``, then a
thousand through the lazy ``map``, 10 ms each on 10 threads, in about a
second. It is the program of README.md's Quickstart.
"""

from __future__ import annotations

import asyncio
import time

from aiobound import BoundedLoopExecutor


def blocking_io(n: int) -> int:
    time.sleep(0.01)  # stands for a blocking driver call
    return n * n


async def main() -> None:
    async with BoundedLoopExecutor(max_workers=10) as executor:  # bound = 20
        print(await executor.run(blocking_io, 3))  # wait for a slot, run, await
        started = time.perf_counter()
        total = 0
        async for square in executor.map(blocking_io, range(1_000)):  # lazy
            total += square
        elapsed = time.perf_counter() - started
        stats = executor.stats()
        print(
            f"1,000 calls in {elapsed:.1f} s, sum {total}, "
            f"at most {stats.peak_in_flight} in flight"
        )


if __name__ == "__main__":
    asyncio.run(main())
