"""A real Dask cluster (LocalCluster, 2 worker processes on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pytest

distributed = pytest.importorskip(
    "distributed", reason="distributed is not installed (extra 'dask')"
)

import dask  # noqa: E402 - after the skip

import dask_calls  # noqa: E402
from aiobound import BoundedLoopExecutor  # noqa: E402
from aiobound.dask import from_client  # noqa: E402
from conftest import assert_idle  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from distributed import Client


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
        assert len(threads) == 2  # the cancellation's and the executor's own
        assert len(set(threads)) == 1
        assert threading.get_ident() not in threads

    def test_bad_arguments_are_named(self, client: Client) -> None:
        with pytest.raises(TypeError, match="client"):
            from_client(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="bound"):
            from_client(client, bound=0)


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
