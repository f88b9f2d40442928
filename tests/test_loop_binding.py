"""An executor binds to the first loop that uses it."""

from __future__ import annotations

import asyncio

import pytest

from aiobound import BoundedLoopExecutor


def double(x: int) -> int:
    return 2 * x


def test_created_outside_a_loop_then_used_inside_one() -> None:
    executor = BoundedLoopExecutor(max_workers=1)  # no running loop here

    async def use() -> int:
        async with executor:
            return await executor.run(double, 21)

    assert asyncio.run(use()) == 42


def test_use_from_a_second_loop_raises_a_clear_error() -> None:
    executor = BoundedLoopExecutor(max_workers=1)

    async def use() -> int:
        return await executor.run(double, 1)

    assert asyncio.run(use()) == 2
    with pytest.raises(RuntimeError, match="bound to a different event loop"):
        asyncio.run(use())

    async def close() -> None:
        await executor.aclose()

    with pytest.raises(RuntimeError, match="bound to a different event loop"):
        asyncio.run(close())
    executor.executor.shutdown()


def test_map_from_a_second_loop_raises_a_clear_error() -> None:
    executor = BoundedLoopExecutor(max_workers=1)

    async def consume() -> list[int]:
        return [x async for x in executor.map(double, range(3))]

    assert asyncio.run(consume()) == [0, 2, 4]
    with pytest.raises(RuntimeError, match="bound to a different event loop"):
        asyncio.run(consume())
    executor.executor.shutdown()
