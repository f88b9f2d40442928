"""Quickstart: bounded, awaitable submission of blocking calls.

Run with ``python examples/quickstart.py``. It pushes 200 blocking calls
(5 ms each) through 4 worker threads, first one by one with ``submit``, then
with the lazy ``map``, and prints what the executor saw.
"""

from __future__ import annotations

import asyncio
import time

from aiobound import BoundedLoopExecutor


def blocking_io(n: int) -> int:
    """Stand in for a blocking driver call."""
    time.sleep(0.005)
    return n * n


async def main() -> None:
    async with BoundedLoopExecutor(max_workers=4) as executor:  # bound = 8
        # One call: wait for a slot, submit, await the result.
        print("run:", await executor.run(blocking_io, 12))

        # Many calls: submit never runs more than `bound` calls ahead.
        started = time.perf_counter()
        futures = [await executor.submit(blocking_io, n) for n in range(100)]
        total = sum(await asyncio.gather(*futures))
        elapsed = time.perf_counter() - started
        print(f"submit: 100 calls, sum={total}, {elapsed:.2f} s")

        # A lazy pipeline: items are pulled only as the pool can take them.
        started = time.perf_counter()
        total = 0
        async for square in executor.map(blocking_io, range(100)):
            total += square
        elapsed = time.perf_counter() - started
        print(f"map: 100 calls, sum={total}, {elapsed:.2f} s")

        print(executor)
        stats = executor.stats()
        print(
            f"peak in flight {stats.peak_in_flight} of bound {stats.bound}; "
            f"{stats.completed} completed, {stats.failed} failed"
        )


if __name__ == "__main__":
    asyncio.run(main())
