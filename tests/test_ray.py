"""A real local Ray (``ray.init(num_cpus=2)``, on 127.0.0.1) under aiobound.

Without ``ray`` the tests are skipped with the reason, except under CI
(``CI=true``), where they fail: the test group installs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Ray binds to the machine's network address unless told it is not a
# cluster: keep every one of its sockets on 127.0.0.1, and send no usage
# statistics. Read when ray is first imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

try:
    import ray
except ImportError:  # pragma: no cover - ray is in the test group
    reason = "ray is not installed (extra 'ray': pip install -e '.[ray]')"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

import otel_calls
import ray_calls
import workers
from aiobound import BoundedLoopExecutor, ClosedError, DeadlineExceeded
from aiobound.ray import (
    RayExecutor,
    from_ray,
    from_ray_sync,
)
from conftest import assert_idle

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"
CPUS = 2


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray for all the Ray tests: 2 CPUs, no dashboard, 127.0.0.1.

    Module-scoped (every test that uses Ray is here): its processes are
    gone before the rest of the suite runs.
    """
    ray.init(
        num_cpus=CPUS,
        include_dashboard=False,
        log_to_driver=False,
        job_config=ray.job_config.JobConfig(
            code_search_path=[str(TESTS), str(EXAMPLES)]
        ),
    )
    try:
        yield
    finally:
        ray.shutdown()


def ran(path: str) -> bool:
    """Whether the file a call makes (``touch``, ``hold``'s *done*) exists."""
    return Path(path).exists()


class RecordingPool:
    """Records the futures of an executor's Ray pool, in submission order.

    At each submission it counts, from the driver, the tasks of this
    executor that Ray reports unfinished (``ray.wait`` with no timeout):
    ``peak_unfinished`` is the most there ever were.
    """

    def __init__(self, executor: Any, mp: pytest.MonkeyPatch) -> None:
        self.made: list[Any] = []
        self.unfinished: list[Any] = []
        self.peak_unfinished = 0
        pool: RayExecutor = executor.executor
        submit = pool.submit

        def recording_submit(*args: Any, **kwargs: Any) -> Any:
            cfut = submit(*args, **kwargs)
            self.made.append(cfut)
            ref = cfut._ref  # type: ignore[attr-defined]
            if ref is not None:  # None: Ray already reported its end
                self.unfinished.append(ref)
            _, self.unfinished = ray.wait(
                self.unfinished,
                num_returns=len(self.unfinished),
                timeout=0,
                fetch_local=False,
            )
            self.peak_unfinished = max(self.peak_unfinished, len(self.unfinished))
            return cfut

        mp.setattr(pool, "submit", recording_submit)


class Held:
    """Calls of ``ray_calls.hold``, each blocking a worker until let go.

    Two of them occupy the 2-CPU Ray: every task submitted after them waits
    in Ray's queue (no worker is free) until :meth:`release`.
    """

    def __init__(self, tmp: Path) -> None:
        self.started = str(tmp / "started.fifo")
        self.go = str(tmp / "go.fifo")
        os.mkfifo(self.started)
        os.mkfifo(self.go)
        # Both ends stay open here, so that no open() in a task blocks and
        # the test's read never sees the end of the stream.
        self._started_fd = os.open(self.started, os.O_RDWR)
        self._go_fd = os.open(self.go, os.O_RDWR)
        self._buffer = b""
        self.calls: list[asyncio.Future[int]] = []
        self.done: list[str] = []

    async def start(self, executor: BoundedLoopExecutor, count: int = CPUS) -> None:
        """Submit *count* held calls and wait until each has started."""
        base = len(self.calls)
        for index in range(base, base + count):
            done = str(Path(self.go).parent / f"held-done-{index}")
            self.done.append(done)
            call = await executor.submit(
                ray_calls.hold, self.started, self.go, index, done
            )
            self.calls.append(call)
        seen = {await self.next_started() for _ in range(count)}
        assert seen == set(range(base, base + count))

    async def next_started(self) -> int:
        while b"\n" not in self._buffer:
            chunk = await asyncio.wait_for(
                asyncio.to_thread(os.read, self._started_fd, 64), 60
            )  # a guard against a hang
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return int(line)

    def release(self, count: int = 64) -> None:
        os.write(self._go_fd, b"x" * count)

    def close(self) -> None:
        os.close(self._started_fd)
        os.close(self._go_fd)


@contextlib.asynccontextmanager
async def holding(tmp: Path) -> AsyncIterator[Held]:
    """A :class:`Held`, released on the way out whatever happens."""
    held = Held(tmp)
    try:
        yield held
    finally:
        held.release()
        await asyncio.gather(*held.calls, return_exceptions=True)
        held.close()


class TestFromRay:
    async def test_results_and_the_default_bound(self) -> None:
        async with from_ray() as executor:
            assert executor.bound == 2 * CPUS
            assert await executor.run(ray_calls.square, 7) == 49
            results = [r async for r in executor.map(ray_calls.square, range(20))]
            assert results == [x * x for x in range(20)]
            assert_idle(executor)

    async def test_keyword_arguments_and_object_refs_reach_fn(self) -> None:
        async with from_ray(bound=2) as executor:
            assert await executor.run(divmod, 17, 5) == (3, 2)
            assert await executor.run(int, "ff", base=16) == 255
            ref: Any = ray.put(6)  # Ray passes its value to fn
            assert await executor.run(ray_calls.square, ref) == 36

    @pytest.mark.parametrize("chunksize", [1, 4])
    async def test_ray_never_has_more_unfinished_tasks_than_the_bound(
        self, chunksize: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        executor = from_ray(bound=3)
        recording = RecordingPool(executor, monkeypatch)
        async with executor:
            results = [
                r
                async for r in executor.map(
                    ray_calls.square, range(40), chunksize=chunksize
                )
            ]
        assert results == [x * x for x in range(40)]
        assert len(recording.made) == -(-40 // chunksize)
        # Counted by Ray: at every submission, its tasks not yet finished.
        assert recording.peak_unfinished == 3
        assert executor.stats().peak_in_flight == 3
        assert_idle(executor)

    async def test_a_chunked_map_over_a_long_source_reads_a_bounded_window(
        self,
    ) -> None:
        pulled = 0
        most_ahead = 0

        def source() -> Iterator[int]:
            nonlocal pulled
            for item in range(200_000):
                pulled += 1
                yield item

        count = total = 0
        async with from_ray(bound=4) as executor:
            async for value in executor.map(
                ray_calls.square, source(), chunksize=2_000
            ):
                count += 1
                total += value
                most_ahead = max(most_ahead, pulled - count)
        assert count == 200_000
        assert total == sum(x * x for x in range(200_000))
        # The driver never held more items than bound x chunksize.
        assert most_ahead <= 4 * 2_000
        assert executor.stats().submitted == 100
        assert_idle(executor)

    async def test_a_worker_killed_mid_call_is_retried_by_ray(
        self, tmp_path: Path
    ) -> None:
        marker = str(tmp_path / "died")
        async with from_ray(bound=2) as executor:
            calls = [executor.run(ray_calls.die_once, marker, x) for x in range(4)]
            assert await asyncio.gather(*calls) == [x * x for x in range(4)]
            assert_idle(executor)
        assert ran(marker)  # a worker did die

    async def test_a_dead_worker_reaches_the_caller_as_ray_reports_it(self) -> None:
        async with from_ray(bound=2, options={"max_retries": 0}) as executor:
            with pytest.raises(ray.exceptions.WorkerCrashedError):
                await executor.run(ray_calls.die, 1)
            assert await executor.run(ray_calls.square, 3) == 9
        stats = executor.stats()
        assert (stats.completed, stats.failed) == (1, 1)
        assert_idle(executor)

    async def test_fn_errors_arrive_as_ray_reports_them(self) -> None:
        async with from_ray(bound=2) as executor:
            with pytest.raises(ValueError, match="invalid literal") as caught:
                await executor.run(int, "x")
            assert isinstance(caught.value, ray.exceptions.RayTaskError)
        assert executor.stats().failed == 1

    async def test_what_cannot_be_serialized_is_named(self) -> None:
        async with from_ray(bound=2) as executor:
            lock: Any = threading.Lock()
            with pytest.raises(TypeError, match=r"argument 1 \(<unlocked"):
                await executor.run(divmod, 1, lock)
            with pytest.raises(TypeError, match="keyword argument 'base'"):
                await executor.run(int, "1", base=lock)
            assert_idle(executor)

    def test_bad_arguments_are_named(self) -> None:
        with pytest.raises(ValueError, match="bound"):
            from_ray(bound=0)
        with pytest.raises(TypeError, match="options"):
            from_ray(options=[("num_cpus", 1)])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="num_returns"):
            from_ray(options={"num_returns": 2})
        with pytest.raises(ValueError, match="bound is required"):
            from_ray(options={"num_cpus": 0})
        assert from_ray(options={"num_cpus": 2}).bound == 2


class TestCancellation:
    async def test_a_call_cancelled_before_it_started_never_runs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        executor = from_ray(bound=6)
        recording = RecordingPool(executor, monkeypatch)
        async with executor, holding(tmp_path) as held:
            await held.start(executor)
            paths = [str(tmp_path / f"touched-{n}") for n in range(4)]
            touches = [await executor.submit(ray_calls.touch, p) for p in paths]
            touches[1].cancel()
            with pytest.raises(asyncio.CancelledError):
                await touches[1]
            # Ray had not handed it to a worker: cancelled at once, its slot
            # free for another call right away.
            assert recording.made[3].cancelled()
            assert executor.would_admit_now()
            extra = await executor.submit(ray_calls.square, 5)
            held.release()
            assert await asyncio.gather(*held.calls) == [0, 1]
            assert await extra == 25
            for n in (0, 2, 3):
                assert await touches[n] == paths[n]
        stats = executor.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (6, 0, 1)
        assert not ran(paths[1])  # it never ran
        assert_idle(executor)

    async def test_a_started_call_runs_to_the_end_and_counts_as_it_ends(
        self, tmp_path: Path
    ) -> None:
        # ray.cancel() interrupts a running task; aiobound's must not be.
        async with from_ray(bound=4) as executor, holding(tmp_path) as held:
            await held.start(executor)
            held.calls[0].cancel()
            with pytest.raises(asyncio.CancelledError):
                await held.calls[0]
            assert executor.stats().in_flight == 2  # it keeps its slot
            held.release()
            assert await held.calls[1] == 1
        assert ran(held.done[0])  # ran to the end, uninterrupted
        stats = executor.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (2, 0, 0)
        assert_idle(executor)

    async def test_aclose_timeout_counts_the_cancelled_and_the_running_calls(
        self, tmp_path: Path
    ) -> None:
        executor = from_ray(bound=8)
        async with holding(tmp_path) as held:
            await held.start(executor)
            paths = [str(tmp_path / f"touched-{n}") for n in range(6)]
            touches = [await executor.submit(ray_calls.touch, p) for p in paths]
            touches[0].cancel()  # a caller's own cancellation first
            with pytest.raises(asyncio.CancelledError):
                await touches[0]
            with pytest.raises(
                TimeoutError,
                match="2 calls still running; 5 calls not yet started were cancelled",
            ):
                await executor.aclose(timeout=0.01)
            for fut in touches[1:]:
                assert isinstance(fut.exception(), ClosedError)
            stats = executor.stats()
            assert (stats.cancelled, stats.in_flight) == (6, 2)
            held.release()
            assert await asyncio.gather(*held.calls) == [0, 1]  # results arrive
        await executor.aclose()
        assert not any(ran(p) for p in paths)  # none of them ran
        stats = executor.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (2, 0, 6)
        assert_idle(executor)


# A deadline that the calls submitted in a test reach while Ray is held:
# long enough to submit them all first.
LIMIT = 2.0


class TestDeadlines:
    async def test_the_function_knows_its_time_left_on_a_worker(self) -> None:
        async with from_ray(bound=2, call_timeout=30) as executor:
            left = await executor.run(workers.time_left)
            assert left is not None
            assert 0 < left <= 30
            assert await executor.with_timeout(None).run(workers.time_left) is None

    async def test_a_running_call_runs_on_and_one_not_started_never_runs(
        self, tmp_path: Path
    ) -> None:
        executor = from_ray(bound=8)
        view = executor.with_timeout(LIMIT)
        async with executor, holding(tmp_path) as held:
            for index in range(CPUS):
                done = str(tmp_path / f"held-done-{index}")
                held.done.append(done)
                held.calls.append(
                    await view.submit(
                        ray_calls.hold, held.started, held.go, index, done
                    )
                )
            assert {await held.next_started() for _ in range(CPUS)} == {0, 1}
            paths = [str(tmp_path / f"touched-{n}") for n in range(4)]
            touches = [await view.submit(ray_calls.touch, p) for p in paths]
            outcomes = await asyncio.gather(
                *held.calls, *touches, return_exceptions=True
            )
            assert all(isinstance(o, DeadlineExceeded) for o in outcomes), outcomes
            stages = [o.stage for o in outcomes if isinstance(o, DeadlineExceeded)]
            assert stages == ["running"] * CPUS + ["queued"] * 4
            stats = executor.stats()
            assert (stats.in_flight, stats.cancelled) == (CPUS, 4)
            held.release()
        assert all(ran(done) for done in held.done)  # ran on, to the end
        assert not any(ran(p) for p in paths)  # never ran
        stats = executor.stats()
        assert (stats.deadline_running, stats.abandoned) == (CPUS, CPUS)
        assert (stats.deadline_queued, stats.completed) == (4, CPUS)
        assert_idle(executor)

    def test_the_synchronous_executor_keeps_them_too(self, tmp_path: Path) -> None:
        held = Held(tmp_path)
        executor = from_ray_sync(bound=4, call_timeout=LIMIT)
        try:
            calls = [
                executor.submit(ray_calls.hold, held.started, held.go, index)
                for index in range(CPUS)
            ]
            lines = b""
            while lines.count(b"\n") < CPUS:  # both workers are held
                lines += os.read(held._started_fd, 64)
            path = str(tmp_path / "touched")
            queued = executor.submit(ray_calls.touch, path)
            expected: list[tuple[concurrent.futures.Future[Any], str]] = [
                *((call, "running") for call in calls),
                (queued, "queued"),
            ]
            for call, stage in expected:
                with pytest.raises(DeadlineExceeded) as info:
                    call.result(timeout=60)
                assert info.value.stage == stage
        finally:
            held.release()
            held.close()
        executor.shutdown()
        assert not ran(path)
        stats = executor.stats()
        assert (stats.deadline_running, stats.abandoned) == (CPUS, CPUS)
        assert (stats.deadline_queued, stats.cancelled, stats.in_flight) == (1, 1, 0)


class TestSynchronous:
    def test_from_ray_sync_bounds_a_blocking_map(self) -> None:
        with from_ray_sync(bound=3) as executor:
            assert executor.bound == 3
            assert executor.submit(ray_calls.square, 4).result() == 16
            assert list(executor.map(ray_calls.square, range(30))) == [
                x * x for x in range(30)
            ]
            stats = executor.stats()
        assert stats.peak_in_flight == 3
        assert stats.completed == 31

    def test_shutdown_cancel_futures_cancels_the_calls_not_started(
        self, tmp_path: Path
    ) -> None:
        held = Held(tmp_path)
        executor = from_ray_sync(bound=4)
        try:
            calls = [
                executor.submit(ray_calls.hold, held.started, held.go, index)
                for index in range(CPUS)
            ]
            lines = b""
            while lines.count(b"\n") < CPUS:  # both workers are held
                lines += os.read(held._started_fd, 64)
            path = str(tmp_path / "touched")
            queued = executor.submit(ray_calls.touch, path)
            executor.shutdown(wait=False, cancel_futures=True)
            # Cancelled, and seen so by concurrent.futures.wait (a guard of
            # 30 s against a hang; it returns as soon as the future ends).
            done, _ = concurrent.futures.wait([queued], timeout=30)
            assert done == {queued}
            assert queued.cancelled()
        finally:
            held.release()
            held.close()
        assert [call.result(timeout=60) for call in calls] == [0, 1]
        executor.shutdown()
        assert not ran(path)  # it never ran
        stats = executor.stats()
        assert (stats.completed, stats.cancelled, stats.in_flight) == (2, 1, 0)


class TestTelemetry:
    async def test_spans_made_in_fn_join_the_callers_trace(self) -> None:
        from test_opentelemetry import Telemetry, ids, parent_id

        otel = Telemetry()
        try:
            async with from_ray(bound=2) as executor:
                otel.instrument(executor)
                with otel.tracer.start_as_current_span("request"):
                    trace_id, _, parent, result = await executor.run(
                        otel_calls.worker_span, 5
                    )
            assert result == 25
            [request] = otel.finished("request")
            [call] = otel.finished("aiobound.call")
            assert trace_id == ids(request)[0] == ids(call)[0]
            assert parent == ids(call)[1]
            assert parent_id(call) == ids(request)[1]
            assert otel.value("aiobound.executor.call.completed") == 1
        finally:
            otel.shutdown()


def test_a_ray_shut_down_refuses_calls_and_ends_those_in_flight(
    tmp_path: Path,
) -> None:
    # Its own process and Ray: ray.shutdown() would end the session's.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(EXAMPLES)])}
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import ray_shutdown; ray_shutdown.main()",
            str(tmp_path),
        ],
        check=True,
        env=env,
        timeout=120,
    )


def test_the_example_streams_through_ray() -> None:
    import ray_cluster

    asyncio.run(ray_cluster.stream(items=20_000, chunksize=500, bound=4))


def test_import_aiobound_imports_no_ray() -> None:
    code = "import sys, aiobound; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
