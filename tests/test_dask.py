"""A real Dask cluster (LocalCluster, 2 worker processes on 127.0.0.1).

The tests of a dying scheduler start their own: a scheduler and two workers,
each in its own process, so that the scheduler can be killed by its PID.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

distributed = pytest.importorskip(
    "distributed", reason="distributed is not installed (extra 'dask')"
)

import dask  # noqa: E402 - after the skip
from distributed.client import ClosedClientError  # noqa: E402

import dask_calls  # noqa: E402
import workers  # noqa: E402
from aiobound import BoundedLoopExecutor, ClosedError, DeadlineExceeded  # noqa: E402
from aiobound.dask import from_client  # noqa: E402
from conftest import assert_idle  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from distributed import Client

# What a Dask client gives the futures it cancels: its FutureCancelledError
# (older versions: this class itself).
DaskCancelled = concurrent.futures.CancelledError


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """One cluster for the module: two single-threaded worker processes."""
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 3}),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def counter(client: Client) -> Iterator[Client]:
    """Count the tasks the scheduler holds while the test runs."""
    client.run_on_scheduler(dask_calls.install_counter)
    yield client
    client.run_on_scheduler(dask_calls.remove_counter)


def peaks(client: Client) -> tuple[int, int]:
    """The counter's peaks, once every release sent so far has arrived."""
    # Releases travel on the client's message stream to the scheduler, in
    # order; run_on_scheduler does not. A task submitted after them (and
    # awaited) flushes them: then only that task is left.
    flush = client.submit(dask_calls.square, 0, pure=False)
    assert flush.result() == 0
    held, active, samples, now = client.run_on_scheduler(dask_calls.read_counter)
    assert samples > 0
    assert now == 1  # every task of ours was released; the flush is held
    flush.release()
    return held, active


class TestFromClient:
    async def test_results_and_the_default_bound(self, client: Client) -> None:
        async with from_client(client) as executor:
            assert executor.bound == 4  # 2 workers x 1 thread, twice
            assert await executor.run(dask_calls.square, 7) == 49
            results = [r async for r in executor.map(dask_calls.square, range(20))]
            assert results == [x * x for x in range(20)]
            assert_idle(executor)

    @pytest.mark.parametrize("chunksize", [1, 4])
    async def test_the_scheduler_never_holds_more_tasks_than_the_bound(
        self, counter: Client, chunksize: int
    ) -> None:
        async with from_client(counter, bound=3) as executor:
            results = [
                r
                async for r in executor.map(
                    dask_calls.square, range(40), chunksize=chunksize
                )
            ]
            assert results == [x * x for x in range(40)]
            assert executor.stats().peak_in_flight == 3
        held, active = peaks(counter)
        assert 1 <= held <= 3
        assert active <= held

    async def test_a_worker_killed_mid_run_is_retried_by_dask(
        self, client: Client, tmp_path: Path
    ) -> None:
        marker = str(tmp_path / "died")
        async with from_client(client, bound=2) as executor:
            calls = [executor.run(dask_calls.die_once, marker, x) for x in range(6)]
            results = await asyncio.gather(*calls)
            assert results == [x * x for x in range(6)]
            assert_idle(executor)
        assert (tmp_path / "died").exists()  # a worker did die
        client.wait_for_workers(2)  # its nanny restarted it

    async def test_cancelling_a_call_releases_its_task(self, counter: Client) -> None:
        async with from_client(counter, bound=2) as executor:
            fut = await executor.submit(dask_calls.square, 3)
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            assert await executor.run(dask_calls.square, 4) == 16
        assert_idle(executor)
        peaks(counter)  # nothing left on the scheduler

    async def test_a_cancelled_task_is_released_on_the_clients_loop_only(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Dask's Future.release() is not thread-safe, and the executor
        # releases every task on the client's loop when it ends: a
        # cancellation must release it there too, not on the caller's thread.
        release = distributed.Future.release
        released: list[tuple[object, int]] = []

        def recording_release(task: Any) -> None:
            released.append((task.key, threading.get_ident()))
            release(task)

        monkeypatch.setattr(distributed.Future, "release", recording_release)
        async with from_client(client, bound=1) as executor:
            fut = await executor.submit(dask_calls.square, 3)
            pool: Any = executor.executor
            (cfut,) = pool._futures  # keeps the task alive (no release on GC)
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
        threads = [thread for key, thread in released if key == cfut._task.key]
        assert threads  # the executor's own release, once the task ended
        assert len(set(threads)) == 1
        assert threading.get_ident() not in threads

    def test_bad_arguments_are_named(self, client: Client) -> None:
        with pytest.raises(TypeError, match="client"):
            from_client(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="bound"):
            from_client(client, bound=0)


class Held:
    """Both single-threaded workers busy with a ``dask_calls.hold`` task.

    Tasks submitted while they are held either wait in a worker's queue
    (state processing) or are queued on the scheduler: nothing else runs
    until :meth:`release`.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.name = f"aiobound-test-{uuid.uuid4().hex}"
        self.calls: list[asyncio.Future[int]] = []

    async def start(self, executor: BoundedLoopExecutor, workers: int = 2) -> None:
        for index in range(workers):
            self.calls.append(await executor.submit(dask_calls.hold, self.name, index))
        await self.started(range(workers))

    async def started(self, indexes: range) -> None:
        """Wait until the ``hold`` tasks of *indexes* have started."""
        for index in indexes:
            event = distributed.Event(
                f"{self.name}-started-{index}", client=self.client
            )
            assert await asyncio.to_thread(event.wait, 60)

    async def submit(self, executor: BoundedLoopExecutor, indexes: range) -> None:
        """Submit more ``hold`` tasks (they start once released)."""
        for index in indexes:
            self.calls.append(await executor.submit(dask_calls.hold, self.name, index))

    async def release(self) -> None:
        event = distributed.Event(f"{self.name}-go", client=self.client)
        await asyncio.to_thread(event.set)

    def ran(self, index: int) -> bool:
        """Whether the ``hold`` task of *index* started (the events stay)."""
        event = distributed.Event(f"{self.name}-started-{index}", client=self.client)
        return bool(event.is_set())


@contextlib.asynccontextmanager
async def holding(client: Client) -> AsyncIterator[Held]:
    """A :class:`Held`, released on the way out whatever happens.

    Also on a failed assertion: closing the executor would hang otherwise.
    """
    held = Held(client)
    try:
        yield held
    finally:
        await held.release()


class RecordingPool:
    """Records the underlying futures of an executor, in submission order."""

    def __init__(self, executor: BoundedLoopExecutor, mp: pytest.MonkeyPatch) -> None:
        self.made: list[Any] = []
        pool: Any = executor.executor
        submit = pool.submit

        def recording_submit(*args: Any, **kwargs: Any) -> Any:
            cfut = submit(*args, **kwargs)
            self.made.append(cfut)
            return cfut

        mp.setattr(pool, "submit", recording_submit)

    def states(self, client: Client) -> list[str | None]:
        """The scheduler's state of each task, once it has them all."""
        keys = [cfut._task.key for cfut in self.made]
        client.run_on_scheduler(dask_calls.wait_until_known, keys)
        states = client.run_on_scheduler(dask_calls.task_states, keys)
        return [states[key] for key in keys]


def ran(path: str) -> bool:
    """Whether the ``dask_calls.touch`` call for *path* ran."""
    return Path(path).exists()


NOT_GIVEN_TO_A_WORKER = ("waiting", "queued", "no-worker")


class TestCancellation:
    async def test_a_call_cancelled_before_a_worker_got_it_counts_as_cancelled(
        self, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        executor = from_client(client, bound=12)
        recording = RecordingPool(executor, monkeypatch)
        async with executor, holding(client) as held:
            await held.start(executor)
            paths = [str(tmp_path / f"touched-{n}") for n in range(10)]
            touches = [await executor.submit(dask_calls.touch, p) for p in paths]
            states = recording.states(client)[2:]
            queued = [n for n, s in enumerate(states) if s in NOT_GIVEN_TO_A_WORKER]
            assert queued, states  # the scheduler queues tasks beyond its workers
            victim = queued[-1]
            touches[victim].cancel()
            with pytest.raises(asyncio.CancelledError):
                await touches[victim]
            # Its slot is freed once the scheduler has cancelled the task: a
            # call that needs a slot (all 12 are taken) is handed over then.
            # (Awaiting the underlying future is no such signal: wrapped on
            # the loop while the client's thread has marked it cancelled but
            # not yet run its callbacks, it can settle before the executor
            # hears of it.)
            extra_path = str(tmp_path / "touched-extra")
            extra = await asyncio.wait_for(
                executor.submit(dask_calls.touch, extra_path), 60
            )
            assert recording.made[2 + victim].cancelled()
            assert executor.stats().cancelled == 1

            await held.release()
            assert await asyncio.gather(*held.calls) == [0, 1]
            others = [t for n, t in enumerate(touches) if n != victim]
            assert await asyncio.gather(*others) == paths[:victim] + paths[victim + 1 :]
            assert await extra == extra_path
        stats = executor.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (12, 0, 1)
        assert stats.submitted == 13
        assert not ran(paths[victim])  # it never ran
        assert_idle(executor)

    async def test_a_call_a_worker_has_runs_on_and_its_result_arrives(
        self, client: Client, tmp_path: Path
    ) -> None:
        async with from_client(client, bound=4) as executor, holding(client) as held:
            await held.start(executor)
            held.calls[0].cancel()
            with pytest.raises(asyncio.CancelledError):
                await held.calls[0]
            await held.release()
            assert await held.calls[1] == 1
        # The running task ran to the end and kept its slot until then.
        stats = executor.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (2, 0, 0)
        assert_idle(executor)

    async def test_aclose_timeout_cancels_the_calls_no_worker_got(
        self, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        executor = from_client(client, bound=12)
        recording = RecordingPool(executor, monkeypatch)
        async with holding(client) as held:
            await held.start(executor)
            paths = [str(tmp_path / f"touched-{n}") for n in range(10)]
            touches = [await executor.submit(dask_calls.touch, p) for p in paths]
            states = recording.states(client)[2:]
            queued = sum(s in NOT_GIVEN_TO_A_WORKER for s in states)
            assert queued, states

            # The held calls cannot end: aclose gives up. Once closed, cancel()
            # waits for the scheduler's answer, so the queued calls are
            # cancelled (never run) and their callers refused right away, and
            # the message counts them apart from those a worker has.
            running = 12 - queued
            with pytest.raises(
                TimeoutError,
                match=f"{running} calls still running; {queued} calls not yet "
                "started were cancelled",
            ):
                await executor.aclose(timeout=0.01)
            refused = [t for t in touches if t.done()]
            assert len(refused) == queued
            for fut in refused:
                assert isinstance(fut.exception(), ClosedError)
            stats = executor.stats()
            assert (stats.cancelled, stats.in_flight) == (queued, running)

            await held.release()
            assert await asyncio.gather(*held.calls) == [0, 1]  # results still arrive
            outcomes = await asyncio.gather(*touches, return_exceptions=True)
            for path, outcome in zip(paths, outcomes, strict=True):
                if isinstance(outcome, ClosedError):
                    assert not ran(path)  # never ran
                else:
                    assert outcome == path
                    assert ran(path)
        await executor.aclose()
        stats = executor.stats()
        assert stats.cancelled == queued
        assert stats.completed == 12 - queued
        assert stats.failed == 0
        assert_idle(executor)

    async def test_aclose_timeout_does_not_count_calls_their_callers_cancelled(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Issue 29: two callers cancel queued calls and aclose gives up at
        # once, while the scheduler's answers to those callers may still be
        # on their way: they are cancelled calls, not running ones.
        executor = from_client(client, bound=8)
        recording = RecordingPool(executor, monkeypatch)
        async with holding(client) as held:
            await held.start(executor)
            await held.submit(executor, range(2, 8))
            # One task group: the scheduler sends each single-threaded worker
            # the first two (one runs, one waits behind it), then queues the
            # rest (worker-saturation 1.1, once the group outgrows the
            # cluster's threads twice).
            states = recording.states(client)
            assert states == ["processing"] * 4 + ["queued"] * 4, states
            for victim in (6, 7):
                held.calls[victim].cancel()
            with pytest.raises(
                TimeoutError,
                match="4 calls still running; 2 calls not yet started were cancelled",
            ):
                await executor.aclose(timeout=0.001)
            stats = executor.stats()
            assert (stats.cancelled, stats.in_flight) == (4, 4)

            await held.release()
            assert await asyncio.gather(*held.calls[:4]) == [0, 1, 2, 3]
            for fut in held.calls[4:6]:
                with pytest.raises(ClosedError):
                    await fut
            for fut in held.calls[6:]:
                with pytest.raises(asyncio.CancelledError):
                    await fut
        await executor.aclose()
        assert [held.ran(index) for index in range(8)] == [True] * 4 + [False] * 4
        stats = executor.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (4, 0, 4)
        assert_idle(executor)

    async def test_aclose_timeout_does_not_count_a_call_that_ended_as_it_gave_up(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Issue 29, the core's part: while aclose(timeout=...) gives up, it
        # blocks the loop (each cancel() waits for the scheduler's answer); a
        # call that ends meanwhile is done, and its slot is freed at the next
        # turn of the loop. It no longer runs: 1 call runs, not 2.
        executor = from_client(client, bound=2)
        recording = RecordingPool(executor, monkeypatch)
        async with holding(client) as first, holding(client) as second:
            await first.start(executor, workers=1)
            await second.start(executor, workers=1)  # on the other worker
            first_task, second_task = recording.made
            cancel = second_task.cancel

            def cancel_once_the_first_ended() -> bool:
                distributed.Event(f"{first.name}-go", client=client).set()
                concurrent.futures.wait([first_task], timeout=60)
                assert first_task.done()
                return bool(cancel())

            monkeypatch.setattr(second_task, "cancel", cancel_once_the_first_ended)
            with pytest.raises(
                TimeoutError,
                match="1 calls still running; 0 calls not yet started were cancelled",
            ):
                await executor.aclose(timeout=0.001)
            await second.release()
            assert await asyncio.gather(*first.calls, *second.calls) == [0, 0]
        await executor.aclose()
        assert executor.stats().completed == 2
        assert_idle(executor)


# A deadline that the calls submitted in a test reach while the cluster is
# held: long enough to submit them all first.
LIMIT = 2.0


class TestDeadlines:
    async def test_the_function_knows_its_time_left_on_a_worker(
        self, client: Client
    ) -> None:
        async with from_client(client, call_timeout=30) as executor:
            left = await executor.run(workers.time_left)
            assert left is not None
            assert 0 < left <= 30
            assert await executor.with_timeout(None).run(workers.time_left) is None

    async def test_a_running_task_runs_on_and_one_no_worker_got_never_runs(
        self, client: Client, tmp_path: Path
    ) -> None:
        executor = from_client(client, bound=12)
        view = executor.with_timeout(LIMIT)
        async with executor, holding(client) as held:
            held.calls = [
                await view.submit(dask_calls.hold, held.name, n) for n in (0, 1)
            ]
            await held.started(range(2))
            paths = [str(tmp_path / f"touched-{n}") for n in range(8)]
            touches = [await view.submit(dask_calls.touch, p) for p in paths]
            outcomes = await asyncio.gather(
                *held.calls, *touches, return_exceptions=True
            )
            assert all(isinstance(o, DeadlineExceeded) for o in outcomes), outcomes
            stages = [o.stage for o in outcomes if isinstance(o, DeadlineExceeded)]
            assert stages[:2] == ["running", "running"]  # the held ones
            touched = stages[2:]
            assert "queued" in touched, touched  # the scheduler queued some
            await held.release()
        # aclose waited for the tasks a worker had: they ran to the end.
        for path, stage in zip(paths, touched, strict=True):
            assert ran(path) == (stage == "running"), (path, stage)
        stats = executor.stats()
        queued = touched.count("queued")
        assert (stats.deadline_queued, stats.cancelled) == (queued, queued)
        assert stats.deadline_running == stats.abandoned == 10 - queued
        assert stats.completed == 10 - queued
        assert_idle(executor)


class TestClientNotRunning:
    async def test_a_closing_client_refuses_calls_at_once_and_ends_those_it_had(
        self, client: Client, closing_client: tuple[Client, dask_calls.ClosingGate]
    ) -> None:
        # Issue 29: a closing client takes a task and drops it; the executor
        # refuses the call instead, and the calls the client had end.
        second, gate = closing_client
        executor = from_client(second, bound=2)
        async with holding(client) as held:
            in_flight = await executor.submit(dask_calls.hold, held.name, 0)
            await held.started(range(1))
            closed = asyncio.ensure_future(asyncio.to_thread(second.close))
            assert await asyncio.to_thread(gate.entered.wait, 60)
            assert second.status == "closing"  # held there by the gate
            with pytest.raises(ClosedClientError, match="the Dask client is closed"):
                await asyncio.wait_for(executor.run(dask_calls.square, 2), 30)
            assert not in_flight.done()
            gate.open()
            await closed
            with pytest.raises(DaskCancelled):
                await asyncio.wait_for(in_flight, 30)  # a guard against a hang
        await executor.aclose()
        stats = executor.stats()
        assert (stats.submitted, stats.failed) == (2, 2)
        assert_idle(executor)


TESTS = Path(__file__).parent


@contextlib.contextmanager
def own_processes(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A scheduler and two single-threaded workers, each in its own process.

    Yields the scheduler's process and its scheduler file; kills them all on
    the way out.
    """
    scheduler_file = str(tmp_path / "scheduler.json")
    path = [str(TESTS), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}

    def start(cli: str, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", f"distributed.cli.{cli}", *args]
        command += ["--host", "127.0.0.1", "--no-dashboard"]
        command += ["--scheduler-file", scheduler_file]
        return subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    processes = [start("dask_scheduler", "--port", "0")]
    try:
        for _ in range(2):
            processes.append(start("dask_worker", "--no-nanny", "--nthreads", "1"))
        yield processes[0], scheduler_file
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait(30)


@pytest.fixture
def lone_scheduler(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Client]]:
    """A client of :func:`own_processes`' cluster, and its scheduler's process."""
    with (
        own_processes(tmp_path) as (scheduler, scheduler_file),
        distributed.Client(scheduler_file=scheduler_file, timeout=10) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        yield scheduler, client


@pytest.fixture
def closing_client(client: Client) -> Iterator[tuple[Client, dask_calls.ClosingGate]]:
    """A second client of the module's cluster, held "closing" when it closes."""
    assert client.scheduler is not None
    with dask.config.set({"distributed.client.preload": ["dask_calls"]}):
        second = distributed.Client(client.scheduler.address)
    gate = dask_calls.ClosingGate(second)
    try:
        yield second, gate
    finally:
        gate.open()
        second.close()


class TestLostScheduler:
    async def test_every_call_ends_when_the_scheduler_dies(
        self, lone_scheduler: tuple[subprocess.Popen[bytes], Client]
    ) -> None:
        # Issue 29: the client cancels the tasks it had and tries to
        # reconnect; the calls waiting for a slot meanwhile must be refused
        # at once (a client reconnecting, then closing, drops what it takes).
        scheduler, client = lone_scheduler
        executor = from_client(client, bound=2)
        held = Held(client)
        calls = [
            asyncio.ensure_future(executor.run(dask_calls.hold, held.name, index))
            for index in range(6)
        ]
        await held.started(range(2))
        scheduler.kill()
        await asyncio.to_thread(scheduler.wait, 30)
        calls[0].cancel()  # (a no-op if the client has noticed already)
        _, pending = await asyncio.wait(calls, timeout=30)  # a guard against a hang
        assert not pending
        for call in calls[:2]:  # the client's own error, for the tasks it had
            assert call.cancelled() or isinstance(call.exception(), DaskCancelled)
        assert not calls[1].cancelled()
        for call in calls[2:]:
            assert isinstance(call.exception(), ClosedClientError)
        stats = executor.stats()
        assert (stats.submitted, stats.failed) == (6, 6)
        assert_idle(executor)
        await executor.aclose(timeout=2)  # nothing runs: no TimeoutError
        with pytest.raises(ClosedClientError, match="the Dask client"):
            await from_client(client, bound=1).run(dask_calls.square, 1)


class TestGetExecutor:
    async def test_wrapping_client_get_executor_bounds_the_running_tasks(
        self, counter: Client
    ) -> None:
        pool = counter.get_executor(pure=False)
        executor = BoundedLoopExecutor(executor=pool, bound=3)
        async with executor:
            results = [r async for r in executor.map(dask_calls.square, range(30))]
            assert results == [x * x for x in range(30)]
        assert_idle(executor)
        _, active = client_peaks_after_release(counter)
        assert active <= 3


def client_peaks_after_release(client: Client) -> tuple[int, int]:
    """Peaks, once Dask's own executor has let go of its finished tasks."""
    import gc

    gc.collect()  # its futures are released when garbage-collected
    held, active, _, _ = client.run_on_scheduler(dask_calls.read_counter)
    return held, active
