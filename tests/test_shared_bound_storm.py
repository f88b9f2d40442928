"""Generated storms over one SharedBound: real threads, several event loops.

Hypothesis draws a plan: the bound, and for two event loops (each in its own
thread, with its own BoundedLoopExecutor) and two threads (sharing one
BoundedExecutor) a sequence of calls, cancellations, map runs and early
closes, with random ``max_pending`` and ``max_wait``. The plan then runs for
real, with the schedule left to the OS and the loops, and the invariants are
checked:

* during the run, inside the called function: the number of calls running
  at once, counted under a lock, never exceeds the bound, and neither does
  the shared bound's own ``in_flight``;
* after it: no slot is held and no one waits, anywhere; every executor's
  counts add up; the refusals it counted are the shared bound's; every call
  that ran was counted as completed.

The storm runs with both loops on asyncio, both on uvloop, and one of each.
``nox -s stress`` runs more examples (AIOBOUND_HYPOTHESIS_PROFILE=stress).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import threading
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobound import (
    BoundedExecutor,
    BoundedLoopExecutor,
    ClosedError,
    ExecutorStats,
    OverloadedError,
    SharedBound,
)
from conftest import new_uvloop

if TYPE_CHECKING:
    from collections.abc import Callable

EXAMPLES = 60 if os.environ.get("AIOBOUND_HYPOTHESIS_PROFILE") == "stress" else 15
JOIN_TIMEOUT = 60.0

LOOP_KINDS: dict[str, list[Callable[[], asyncio.AbstractEventLoop]]] = {
    "asyncio": [asyncio.new_event_loop, asyncio.new_event_loop],
}
if new_uvloop is not None:
    LOOP_KINDS["uvloop"] = [new_uvloop, new_uvloop]
    LOOP_KINDS["mixed"] = [asyncio.new_event_loop, new_uvloop]


class Probe:
    """The called function: counts calls running at once, against the bound."""

    def __init__(self, shared: SharedBound) -> None:
        self._shared = shared
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0
        self.violations: list[str] = []

    def __call__(self, size: int) -> int:
        bound = self._shared.bound
        with self._lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
            if self.running > bound:
                self.violations.append(f"{self.running} calls running, bound {bound}")
            in_flight = self._shared.in_flight
            if in_flight > bound:
                self.violations.append(f"in_flight {in_flight} > bound {bound}")
        try:
            return sum(range(size))
        finally:
            with self._lock:
                self.running -= 1


@dataclasses.dataclass
class Actor:
    max_pending: int | None
    max_wait: float | None
    ops: list[tuple[str, int]]
    close_early: bool


OPS = st.tuples(
    st.sampled_from(["call", "call", "call", "cancel", "yield", "map"]),
    st.integers(0, 2000),
)
ACTORS = st.builds(
    Actor,
    max_pending=st.sampled_from([None, None, 0, 1, 4]),
    max_wait=st.sampled_from([None, None, 0.0005, 0.05]),
    ops=st.lists(OPS, min_size=1, max_size=16),
    close_early=st.booleans(),
)

FINE = (OverloadedError, ClosedError, asyncio.CancelledError)


async def loop_actor(
    actor: Actor, pool: concurrent.futures.Executor, shared: SharedBound, probe: Probe
) -> ExecutorStats:
    ex = BoundedLoopExecutor(
        executor=pool,
        bound=shared,
        max_pending=actor.max_pending,
        max_wait=actor.max_wait,
    )
    tasks: list[asyncio.Task[Any]] = []

    async def cancel_after(task: asyncio.Task[Any], turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()

    helpers = []
    for kind, size in actor.ops:
        if kind == "yield":
            await asyncio.sleep(0)
        elif kind == "map":
            tasks.append(asyncio.create_task(collect(ex, probe, size % 20)))
        else:
            task = asyncio.create_task(ex.run(probe, size))
            tasks.append(task)
            if kind == "cancel":
                helpers.append(asyncio.create_task(cancel_after(task, size % 4)))
    if actor.close_early:
        await ex.aclose()
    results = await asyncio.gather(*tasks, *helpers, return_exceptions=True)
    for result in results:
        assert result is None or isinstance(result, (int, *FINE)), result
    await ex.aclose()
    return ex.stats()


async def collect(ex: BoundedLoopExecutor, probe: Probe, count: int) -> int:
    total = 0
    async for value in ex.map(probe, range(count)):
        total += value
    return total


def sync_actor(actor: Actor, ex: BoundedExecutor, probe: Probe) -> None:
    futures: list[concurrent.futures.Future[int]] = []
    for kind, size in actor.ops:
        try:
            if kind == "map":
                total = sum(ex.map(probe, range(size % 20)))
                assert total == sum(sum(range(i)) for i in range(size % 20))
            elif kind != "yield":  # call or cancel
                future = ex.submit(probe, size)
                futures.append(future)
                if kind == "cancel":
                    future.cancel()
        except (OverloadedError, ClosedError):  # noqa: PERF203 - refusals are expected
            pass
    if actor.close_early:
        ex.shutdown(wait=False, cancel_futures=True)
    for future in futures:
        # The other thread's early shutdown may cancel calls not started.
        try:
            assert future.result(JOIN_TIMEOUT) >= 0
        except concurrent.futures.CancelledError:  # noqa: PERF203
            assert future.cancelled()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def run_loop(
    factory: Callable[[], asyncio.AbstractEventLoop], coro: Any
) -> ExecutorStats:
    loop = factory()
    try:
        return loop.run_until_complete(coro)  # type: ignore[no-any-return]
    finally:
        loop.close()


@pytest.mark.parametrize("loops", sorted(LOOP_KINDS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    bound=st.integers(1, 4),
    loop_actors=st.lists(ACTORS, min_size=2, max_size=2),
    thread_actors=st.lists(ACTORS, min_size=2, max_size=2),
    sync_limits=st.tuples(
        st.sampled_from([None, 0, 1]), st.sampled_from([None, 0.0005, 0.05])
    ),
)
def test_storm_keeps_the_bound_and_the_accounts(
    loops: str,
    bound: int,
    loop_actors: list[Actor],
    thread_actors: list[Actor],
    sync_limits: tuple[int | None, float | None],
) -> None:
    shared = SharedBound(bound)
    probe = Probe(shared)
    pool = concurrent.futures.ThreadPoolExecutor(8)
    sync = BoundedExecutor(
        executor=pool, bound=shared, max_pending=sync_limits[0], max_wait=sync_limits[1]
    )
    try:
        started = [
            in_thread(
                lambda f=factory, a=actor: run_loop(  # type: ignore[misc]
                    f, loop_actor(a, pool, shared, probe)
                )
            )
            for factory, actor in zip(LOOP_KINDS[loops], loop_actors, strict=True)
        ]
        started += [
            in_thread(lambda a=actor: sync_actor(a, sync, probe))  # type: ignore[misc]
            for actor in thread_actors
        ]
        for thread, _ in started:
            thread.join(JOIN_TIMEOUT)
            assert not thread.is_alive(), "deadlock: an actor never finished"
        outcomes = [box[0] for _, box in started]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        sync.shutdown(wait=True)
    finally:
        pool.shutdown(wait=True)

    assert probe.violations == []
    assert probe.peak <= bound
    totals = shared.stats()
    assert (totals.in_flight, totals.waiting) == (0, 0), totals
    assert totals.peak_in_flight <= bound
    every = [*outcomes[:2], sync.stats()]
    for stats in every:
        assert (stats.in_flight, stats.waiting) == (0, 0), stats
        assert stats.submitted == stats.completed + stats.failed + stats.cancelled
        assert stats.failed == 0, stats
        assert stats.peak_in_flight <= bound
    assert totals.rejected == sum(s.rejected for s in every)
    assert totals.timed_out == sum(s.timed_out for s in every)
    assert probe.calls == sum(s.completed for s in every)
