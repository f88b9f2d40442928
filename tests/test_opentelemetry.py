"""aiobound.opentelemetry with the real SDK: in-memory spans and metrics.

Thread pools, process pools and a real Dask cluster: the span of each call is
a child of the caller's span, and spans made inside ``fn`` (in a thread, in a
worker process, on a Dask worker) are children of the call's span.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

import otel_calls
from aiobound import BoundedLoopExecutor, ClosedError, OverloadedError
from aiobound.opentelemetry import instrument
from conftest import settle

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import ExecutorFactory, GateFactory


class Telemetry:
    """A tracer provider and a meter provider of the SDK, kept in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("test")

    def instrument(self, executor: BoundedLoopExecutor, name: str = "x") -> None:
        instrument(
            executor,
            name=name,
            meter_provider=self.meter_provider,
            tracer_provider=self.tracer_provider,
        )

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def value(self, metric: str, **attributes: str) -> float | None:
        wanted = {"aiobound.executor.name": "x", **attributes}
        for point in self.points(metric):
            if dict(point.attributes) == wanted:
                return float(point.value)
        return None

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


def ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_import_aiobound_imports_no_opentelemetry() -> None:
    code = (
        "import sys, aiobound; "
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class TestThreadPool:
    async def test_the_context_copy_carries_the_callers_span(
        self, make_executor: ExecutorFactory, otel: Telemetry
    ) -> None:
        # Not instrumented: the worker thread runs in a copy of the caller's
        # contextvars context, which holds the current span.
        executor = make_executor(max_workers=1)
        with otel.tracer.start_as_current_span("request") as request:
            seen = await executor.run(otel_calls.current_span_ids)
        context = request.get_span_context()
        assert seen == (context.trace_id, context.span_id)

    async def test_request_call_and_worker_spans_nest(
        self, make_executor: ExecutorFactory, otel: Telemetry
    ) -> None:
        executor = make_executor(max_workers=2)
        otel.instrument(executor)

        def work(x: int) -> int:
            with otel.tracer.start_as_current_span("work"):
                return x * x

        with otel.tracer.start_as_current_span("request"):
            assert await executor.run(work, 7) == 49
        [request] = otel.finished("request")
        [call] = otel.finished("aiobound.call")
        [worked] = otel.finished("work")
        assert ids(call)[0] == ids(request)[0] == ids(worked)[0]
        assert parent_id(call) == ids(request)[1]
        assert parent_id(worked) == ids(call)[1]
        assert [e.name for e in call.events] == ["handed over"]
        assert call.attributes is not None
        assert call.attributes["aiobound.executor.name"] == "x"
        assert call.status.status_code == StatusCode.UNSET
        assert otel.value("aiobound.executor.call.completed") == 1

    async def test_the_call_span_is_current_without_a_context_copy(
        self, make_executor: ExecutorFactory, otel: Telemetry
    ) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        executor = make_executor(executor=pool, bound=1, copy_context=False)
        otel.instrument(executor)
        with otel.tracer.start_as_current_span("request"):
            seen = await executor.run(otel_calls.current_span_ids)
        [call] = otel.finished("aiobound.call")
        assert seen == ids(call)

    async def test_a_failed_call_records_its_exception(
        self, make_executor: ExecutorFactory, otel: Telemetry
    ) -> None:
        executor = make_executor(max_workers=1)
        otel.instrument(executor)
        with pytest.raises(ValueError, match="bad 3"):
            await executor.run(otel_calls.fail, 3)
        [call] = otel.finished("aiobound.call")
        assert call.status.status_code == StatusCode.ERROR
        assert [e.name for e in call.events] == ["handed over", "exception"]
        assert call.attributes is not None
        assert call.attributes["error.type"] == "ValueError"
        assert (
            otel.value(
                "aiobound.executor.call.completed", **{"error.type": "ValueError"}
            )
            == 1
        )
        assert otel.value("aiobound.executor.call.completed") is None

    async def test_refusals_are_counted_by_reason(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        otel: Telemetry,
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=1, bound=1, max_pending=1, max_wait=0.01)
        otel.instrument(executor)
        running = await executor.submit(gate, 1)
        await gate.started()
        with pytest.raises(OverloadedError, match="max_wait"):
            await executor.run(gate, 2)  # waits 10 ms, then refused
        waiter = asyncio.create_task(executor.run(gate, 3))
        await settle()
        with pytest.raises(OverloadedError, match="max_pending"):
            await executor.run(gate, 4)  # one already waits: refused at once
        waiter.cancel()  # cancelled while waiting: not a refusal
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.open()
        assert await running == 1
        await executor.aclose()
        with pytest.raises(ClosedError):
            await executor.run(gate, 5)
        reason = "aiobound.executor.rejection.reason"
        rejected = "aiobound.executor.call.rejected"
        assert otel.value(rejected, **{reason: "max_wait"}) == 1
        assert otel.value(rejected, **{reason: "max_pending"}) == 1
        assert otel.value(rejected, **{reason: "closed"}) == 1
        assert len(otel.points(rejected)) == 3
        calls = otel.finished("aiobound.call")
        assert len(calls) == 5
        refused = [s for s in calls if s.status.status_code == StatusCode.ERROR]
        assert sorted(str(s.attributes[reason]) for s in refused) == [  # type: ignore[index]
            "closed",
            "max_pending",
            "max_wait",
        ]

    async def test_a_request_shed_at_the_edge_is_a_refusal_without_a_span(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        otel: Telemetry,
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=1, bound=1, max_pending=0)
        otel.instrument(executor)
        running = await executor.submit(gate, 1)
        assert executor.shed_at_edge()
        assert executor.shed_at_edge()
        gate.open()
        assert await running == 1
        assert not executor.shed_at_edge()
        reason = "aiobound.executor.rejection.reason"
        rejected = "aiobound.executor.call.rejected"
        assert otel.value(rejected, **{reason: "edge"}) == 2
        assert len(otel.points(rejected)) == 1
        assert len(otel.finished("aiobound.call")) == 1  # the call, not the sheds

    async def test_a_partition_shed_at_the_edge_names_its_partition(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        otel: Telemetry,
    ) -> None:
        gate = make_gate()
        executor = make_executor(
            max_workers=2, bound=2, max_pending=0, partitions={"batch": 0.5}
        )
        otel.instrument(executor)
        batch = executor.partition("batch")
        held = [await batch.submit(gate, 0), await executor.submit(gate, 1)]
        assert batch.shed_at_edge()
        assert executor.shed_at_edge()
        gate.open()
        await asyncio.gather(*held)
        rejected = "aiobound.executor.call.rejected"
        for partition in ("batch", "default"):
            attributes = {
                "aiobound.executor.partition": partition,
                "aiobound.executor.rejection.reason": "edge",
            }
            assert otel.value(rejected, **attributes) == 1

    async def test_gauges_and_histograms(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        otel: Telemetry,
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=1, bound=1, max_pending=4)
        otel.instrument(executor)
        running = await executor.submit(gate, 1)
        await gate.started()
        waiter = asyncio.create_task(executor.run(gate, 2))
        await settle()
        assert otel.value("aiobound.executor.call.in_flight") == 1
        assert otel.value("aiobound.executor.call.limit") == 1
        assert otel.value("aiobound.executor.queue.size") == 1
        assert otel.value("aiobound.executor.queue.capacity") == 4
        gate.open()
        assert await running == 1
        assert await waiter == 2
        assert otel.value("aiobound.executor.call.in_flight") == 0
        assert otel.value("aiobound.executor.queue.size") == 0
        for name in ("call.wait.duration", "call.duration"):
            [point] = otel.points(f"aiobound.executor.{name}")
            assert point.count == 2
            assert point.sum > 0
            assert list(point.explicit_bounds) == list(
                executor.stats().queue_wait.bounds
            )

    async def test_no_capacity_when_unbounded(
        self, make_executor: ExecutorFactory, otel: Telemetry
    ) -> None:
        executor = make_executor(max_workers=1)
        otel.instrument(executor)
        assert otel.value("aiobound.executor.call.limit") == 2
        assert otel.points("aiobound.executor.queue.capacity") == []

    async def test_map_items_get_spans(
        self, make_executor: ExecutorFactory, otel: Telemetry
    ) -> None:
        executor = make_executor(max_workers=2)
        otel.instrument(executor)
        with otel.tracer.start_as_current_span("request"):
            results = [r async for r in executor.map(abs, [-1, -2, -3])]
        assert results == [1, 2, 3]
        assert len(otel.finished("aiobound.call")) == 3
        assert otel.value("aiobound.executor.call.completed") == 3

    async def test_partitioned_calls_carry_their_partition(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        otel: Telemetry,
    ) -> None:
        gate = make_gate()
        executor = make_executor(
            max_workers=1, bound=1, max_pending=0, partitions={"batch": 0.5}
        )
        otel.instrument(executor)
        batch = executor.partition("batch")
        assert [r async for r in batch.map(abs, [-1, -2])] == [1, 2]
        running = await executor.submit(gate, 3)
        with pytest.raises(OverloadedError, match="'batch'"):
            await batch.run(abs, -4)
        gate.open()
        assert await running == 3
        spans = otel.finished("aiobound.call")
        assert len(spans) == 4
        seen = [
            dict(s.attributes or {}).get("aiobound.executor.partition") for s in spans
        ]
        assert sorted(map(str, seen)) == ["batch", "batch", "batch", "default"]
        partition = "aiobound.executor.partition"
        completed = "aiobound.executor.call.completed"
        assert otel.value(completed, **{partition: "batch"}) == 2
        assert otel.value(completed, **{partition: "default"}) == 1
        assert otel.value(completed) is None  # every point names its partition
        rejected = {
            partition: "batch",
            "aiobound.executor.rejection.reason": "max_pending",
        }
        assert otel.value("aiobound.executor.call.rejected", **rejected) == 1

    async def test_unpartitioned_calls_carry_no_partition(
        self, make_executor: ExecutorFactory, otel: Telemetry
    ) -> None:
        executor = make_executor(max_workers=1)
        otel.instrument(executor)
        assert await executor.run(abs, -1) == 1
        [call] = otel.finished("aiobound.call")
        assert "aiobound.executor.partition" not in dict(call.attributes or {})

    async def test_instrumenting_twice_is_refused(
        self, make_executor: ExecutorFactory, otel: Telemetry
    ) -> None:
        executor = make_executor(max_workers=1)
        otel.instrument(executor)
        with pytest.raises(RuntimeError, match="already has an observer"):
            otel.instrument(executor)
        with pytest.raises(TypeError, match="BoundedLoopExecutor"):
            instrument(object())  # type: ignore[arg-type]


class TestProcessPool:
    async def test_the_worker_span_joins_the_call_span(self, otel: Telemetry) -> None:
        async with BoundedLoopExecutor.process(max_workers=1) as executor:
            otel.instrument(executor)
            with otel.tracer.start_as_current_span("request"):
                trace_id, _, parent, result = await executor.run(
                    otel_calls.worker_span, 6
                )
            with pytest.raises(ValueError, match="bad 1"):
                await executor.run(otel_calls.fail, 1)
        assert result == 36
        [request] = otel.finished("request")
        first, failed = otel.finished("aiobound.call")
        assert trace_id == ids(request)[0] == ids(first)[0]
        assert parent_id(first) == ids(request)[1]
        assert parent == ids(first)[1]
        assert failed.status.status_code == StatusCode.ERROR
        assert otel.value("aiobound.executor.call.completed") == 1


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A real cluster: one single-threaded worker process on 127.0.0.1."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


class TestDask:
    async def test_the_worker_span_joins_the_call_span(
        self, dask_client: Any, otel: Telemetry
    ) -> None:
        from aiobound.dask import from_client

        async with from_client(dask_client) as executor:
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


class TestDeadlines:
    async def test_misses_are_counted_by_stage_not_as_refusals(
        self,
        make_executor: ExecutorFactory,
        make_gate: GateFactory,
        otel: Telemetry,
    ) -> None:
        from aiobound import DeadlineExceeded

        gate = make_gate()
        executor = make_executor(max_workers=1, bound=1)
        otel.instrument(executor)
        view = executor.with_timeout(0.05)
        with pytest.raises(DeadlineExceeded):
            await view.run(gate, 1)  # running: abandoned, its slot held
        with pytest.raises(DeadlineExceeded):
            await view.run(gate, 2)  # waiting: the slot is still held
        gate.open()
        await executor.aclose()
        stage = "aiobound.executor.deadline.stage"
        missed = "aiobound.executor.call.deadline_exceeded"
        assert otel.value(missed, **{stage: "running"}) == 1
        assert otel.value(missed, **{stage: "waiting"}) == 1
        assert otel.points("aiobound.executor.call.rejected") == []
        calls = otel.finished("aiobound.call")
        assert sorted(str(s.attributes[stage]) for s in calls) == [  # type: ignore[index]
            "running",
            "waiting",
        ]
        assert all(s.status.status_code == StatusCode.ERROR for s in calls)
