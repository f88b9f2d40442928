"""A Ray shut down under an executor, run in a process of its own.

``python -c "import ray_shutdown; ray_shutdown.main()" TMPDIR`` (from
``tests/test_ray.py``): ``ray.shutdown()`` ends the process's Ray, so this
cannot share the test session's. Any failure raises (exit status 1).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray

import ray_calls
from aiobound.ray import RayDisconnectedError, from_ray


def expect_disconnected(what: str, error: object) -> None:
    if not isinstance(error, RayDisconnectedError):
        raise AssertionError(f"{what}: expected RayDisconnectedError, got {error!r}")


async def scenario(tmp: Path) -> None:
    started = str(tmp / "started.fifo")
    go = str(tmp / "go.fifo")
    os.mkfifo(started)
    os.mkfifo(go)
    started_fd = os.open(started, os.O_RDWR)
    go_fd = os.open(go, os.O_RDWR)  # never written: the held calls never end
    executor = from_ray(bound=4)
    assert await executor.run(ray_calls.square, 2) == 4
    calls = [
        await executor.submit(ray_calls.hold, started, go, index) for index in range(2)
    ]
    queued = await executor.submit(ray_calls.square, 3)  # no CPU left for it
    for _ in range(2):
        line = await asyncio.wait_for(asyncio.to_thread(os.read, started_fd, 2), 60)
        assert line.endswith(b"\n"), line
    ray.shutdown()  # drops every task's outcome

    # Every call handed to Ray ends, with an error that says what happened.
    outcomes = await asyncio.wait_for(  # a guard against a hang
        asyncio.gather(*calls, queued, return_exceptions=True), 30
    )
    for outcome in outcomes:
        expect_disconnected("a call in flight", outcome)

    # A Ray that is gone refuses at once, and is not started again (a bare
    # ray.remote() would start a new local Ray).
    try:
        await executor.run(ray_calls.square, 2)
    except RayDisconnectedError as exc:
        expect_disconnected("submit after ray.shutdown()", exc)
    else:
        raise AssertionError("a call was accepted after ray.shutdown()")
    try:
        from_ray(bound=2)
    except RayDisconnectedError as exc:
        expect_disconnected("from_ray after ray.shutdown()", exc)
    else:
        raise AssertionError("from_ray() accepted a Ray that was shut down")
    assert not ray.is_initialized()

    await asyncio.wait_for(executor.aclose(), 30)  # it returns
    stats = executor.stats()
    assert (stats.in_flight, stats.submitted) == (0, 5), stats
    # Failed: the 3 calls lost in flight, and the one refused.
    assert (stats.completed, stats.failed) == (1, 4), stats
    os.close(started_fd)
    os.close(go_fd)


async def refused_before_any_init() -> None:
    try:
        from_ray()
    except RayDisconnectedError as exc:
        expect_disconnected("from_ray before ray.init", exc)
    else:
        raise AssertionError("from_ray() accepted a process without Ray")
    assert not ray.is_initialized()  # and did not start one


def main() -> None:
    tmp = Path(sys.argv[1])
    asyncio.run(refused_before_any_init())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    asyncio.run(scenario(tmp))
