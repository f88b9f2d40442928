"""The executor's admission questions and the edge check's pieces, no HTTP.

``would_admit_now()``, ``can_admit()`` and ``queue_wait_recent`` are what the
web integrations' edge check reads: O(1), no slot taken. The HTTP behaviour
is in ``test_edge_fastapi.py`` and ``test_edge_aiohttp.py``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from aiobound import BoundedLoopExecutor
from aiobound import _waiting as waiting_module
from aiobound._http import EdgeCheck, retry_after_for, route_path
from aiobound._slots import SlotGate
from conftest import settle
from workers import identity

if TYPE_CHECKING:
    from conftest import ExecutorFactory, GateFactory


def answers(executor: BoundedLoopExecutor) -> tuple[bool, bool]:
    return executor.would_admit_now(), executor.can_admit()


class TestAdmissionQuestions:
    async def test_each_state_of_the_gate(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_pending=1)
        gate = make_gate()
        assert answers(executor) == (True, True)
        running = await executor.submit(gate, 0)
        # Slot taken, room empty: a new call would wait, and may.
        assert answers(executor) == (False, True)
        waiter = asyncio.create_task(executor.run(identity, 1))
        await settle()
        # Room full: a new call would be refused at once.
        assert answers(executor) == (False, False)
        before = executor.stats()
        assert (before.in_flight, before.waiting, before.rejected) == (1, 1, 0)
        gate.open()
        await asyncio.gather(running, waiter)
        assert answers(executor) == (True, True)
        await executor.aclose()
        assert answers(executor) == (False, False)

    async def test_asking_takes_no_slot(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1, max_pending=0)
        for _ in range(3):
            assert answers(executor) == (True, True)
        stats = executor.stats()
        assert (stats.in_flight, stats.waiting, stats.submitted) == (0, 0, 0)
        gate = make_gate()
        running = await executor.submit(gate, 0)
        # max_pending=0: never wait, so nothing can be admitted now.
        assert answers(executor) == (False, False)
        gate.open()
        await running

    async def test_a_waiting_rate_turn_is_not_admission_now(
        self, make_executor: ExecutorFactory
    ) -> None:
        # One start per 1000 s: after the first, the next turn is far off.
        executor = make_executor(max_workers=2, max_per_second=0.001)
        assert answers(executor) == (True, True)
        await executor.run(identity, 1)
        assert executor.stats().in_flight == 0
        assert answers(executor) == (False, True)


class FakeTime:
    """Stands in for the ``time`` module inside ``aiobound._slots``."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class TestRecentQueueWait:
    async def test_it_is_a_moving_average_of_granted_waits(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clock = FakeTime()
        monkeypatch.setattr(waiting_module, "time", clock)
        gate = SlotGate(1, None)
        gate.bind(asyncio.get_running_loop())
        await gate.acquire()  # at once: does not count
        assert gate.wait_recent == 0.0

        async def wait_then_release(waited: float) -> None:
            waiter = asyncio.create_task(gate.acquire())
            await settle()
            clock.now += waited
            gate.release()  # handed to the waiter
            await waiter

        await wait_then_release(2.0)
        assert gate.wait_recent == 2.0  # the first wait sets it
        await wait_then_release(10.0)
        assert gate.wait_recent == pytest.approx(2.0 + (10.0 - 2.0) / 8)
        gate.release()
        await gate.acquire()  # at once again: unchanged
        assert gate.wait_recent == pytest.approx(3.0)

    async def test_the_executor_reports_it(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        executor = make_executor(max_workers=1, bound=1)
        assert executor.queue_wait_recent == 0.0
        await executor.run(identity, 0)
        assert executor.queue_wait_recent == 0.0  # no wait yet
        gate = make_gate()
        running = await executor.submit(gate, 0)
        waiter = asyncio.create_task(executor.run(identity, 1))
        await settle()
        gate.open()
        await asyncio.gather(running, waiter)
        assert executor.queue_wait_recent > 0.0
        assert executor.queue_wait_recent == executor.stats().queue_wait_max


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("wait", "expected"),
        [
            (0.0, 1),
            (0.25, 1),
            (1.0, 1),
            (1.01, 2),
            (4.5, 5),
            (29.5, 30),
            (1e9, 30),
        ],
    )
    def test_the_wait_rounded_up_within_bounds(
        self, wait: float, expected: int
    ) -> None:
        assert retry_after_for(wait, 1, 30) == expected

    def test_a_zero_minimum_answers_zero_before_any_wait(self) -> None:
        assert retry_after_for(0.0, 0, 5) == 0
        assert retry_after_for(0.001, 0, 5) == 1


def build(body: bytes, seconds: int) -> tuple[bytes, int]:
    return body, seconds


class TestEdgeCheck:
    @pytest.mark.parametrize(
        ("path", "covered"),
        [
            ("/work", True),
            ("/work/", True),
            ("/work/deep/er", True),
            ("/workers", False),
            ("/file", True),
            ("/file/README.md", True),
            ("/filed", False),
            ("/", False),
            ("/stats", False),
        ],
    )
    def test_prefixes_cover_whole_segments(self, path: str, covered: bool) -> None:
        check = EdgeCheck(("/work", "/file/"), 1, 30, build)
        assert check.covers(path) is covered

    def test_the_root_covers_every_path(self) -> None:
        check = EdgeCheck(["/"], 1, 30, build)
        assert all(check.covers(p) for p in ("/", "/a", "/a/b", ""))

    @pytest.mark.parametrize(
        ("path", "root_path", "route"),
        [
            ("/work", "", "/work"),
            ("/api/work", "/api", "/work"),
            ("/api/sub/work/1", "/api/sub", "/work/1"),
            ("/api", "/api", ""),
            ("/api/", "/api", "/"),
            # Not under root_path (an older Mount that shortened the path,
            # or another segment): the path stays whole, as Starlette keeps it.
            ("/apis/work", "/api", "/apis/work"),
            ("/work", "/api", "/work"),
        ],
    )
    def test_the_route_path_is_the_routers(
        self, path: str, root_path: str, route: str
    ) -> None:
        from starlette._utils import get_route_path

        assert route_path(path, root_path) == route
        # The rule is Starlette's own (its router uses get_route_path).
        assert get_route_path({"path": path, "root_path": root_path}) == route

    async def test_answers_are_built_once_per_retry_after(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        built: list[tuple[bytes, int]] = []

        def counting(body: bytes, seconds: int) -> tuple[bytes, int]:
            built.append((body, seconds))
            return body, seconds

        check = EdgeCheck(["/"], 2, 30, counting)
        executor = make_executor(max_workers=1, bound=1, max_pending=0)
        assert check.refusal(executor) is None
        gate = make_gate()
        running = await executor.submit(gate, 0)
        first = check.refusal(executor)
        assert first == (b'{"detail":"Service overloaded; retry later"}', 2)
        assert check.refusal(executor) is first
        assert len(built) == 1
        gate.open()
        await running
        await executor.aclose()
        assert check.refusal(executor) == (
            b'{"detail":"Service shutting down; retry later"}',
            2,
        )

    @pytest.mark.parametrize(
        ("paths", "lowest", "highest", "error", "match"),
        [
            ("/work", 1, 30, TypeError, "paths"),
            ([b"/work"], 1, 30, TypeError, "paths"),
            (None, 1, 30, TypeError, "paths"),
            ([], 1, 30, ValueError, "paths"),
            (["work"], 1, 30, ValueError, "paths"),
            (["/work"], -1, 30, ValueError, "min_retry_after"),
            (["/work"], 1, 1.5, TypeError, "max_retry_after"),
            (["/work"], True, 30, TypeError, "min_retry_after"),
            (["/work"], 5, 4, ValueError, "min_retry_after=5"),
        ],
    )
    def test_bad_arguments_are_named(
        self,
        paths: object,
        lowest: object,
        highest: object,
        error: type[Exception],
        match: str,
    ) -> None:
        with pytest.raises(error, match=match):
            EdgeCheck(paths, lowest, highest, build)
