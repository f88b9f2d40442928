"""ExecutorCollector: executors' stats as Prometheus metrics."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aiobound import (
    ExecutorStats,
    LatencyHistogram,
    OverloadedError,
    PartitionStats,
    Share,
)
from aiobound.prometheus import UNEXPORTED_FIELDS, ExecutorCollector

if TYPE_CHECKING:
    from aiobound import BoundedLoopExecutor
    from conftest import ExecutorFactory, GateFactory


class StubExecutor:
    """Stands in for an executor: the collector only calls stats()."""

    def __init__(self, stats: ExecutorStats) -> None:
        self._stats = stats

    def stats(self) -> ExecutorStats:
        return self._stats


HISTOGRAM_FIELDS = {"queue_wait", "run_time"}


def distinct_partition_stats(start: int) -> tuple[PartitionStats, dict[str, float]]:
    """PartitionStats whose fields have values no other field has, and the
    sample each field must yield."""
    values: dict[str, float | LatencyHistogram] = {}
    expected: dict[str, float] = {}
    for n, f in enumerate(dataclasses.fields(PartitionStats)):
        values[f.name] = float(start + n)
        expected[f.name] = float(start + n)
        if f.name in HISTOGRAM_FIELDS:
            values[f.name] = only_in_inf(start + n)
    return PartitionStats(**values), expected  # type: ignore[arg-type]


def only_in_inf(n: int) -> LatencyHistogram:
    """A histogram of *n* samples summing to *n*, all above the last bound."""
    empty = LatencyHistogram.empty()
    return LatencyHistogram(empty.bounds, (0,) * len(empty.bounds) + (n,), n, float(n))


def sample(registry: CollectorRegistry, name: str, executor: str) -> float | None:
    return registry.get_sample_value(name, {"executor": executor})


class TestCollector:
    async def test_metrics_follow_stats(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=1, bound=1, max_pending=0)
        registry = CollectorRegistry()
        registry.register(ExecutorCollector({"db": executor}))
        assert sample(registry, "aiobound_bound", "db") == 1
        assert sample(registry, "aiobound_max_pending", "db") == 0
        assert sample(registry, "aiobound_submitted_total", "db") == 0

        running = await executor.submit(gate, 1)
        await gate.started(1)
        with pytest.raises(OverloadedError):
            await executor.run(gate, 2)
        assert sample(registry, "aiobound_in_flight", "db") == 1
        assert sample(registry, "aiobound_rejected_total", "db") == 1
        assert sample(registry, "aiobound_submitted_total", "db") == 1

        gate.open()
        assert await running == 1
        await executor.aclose()
        assert sample(registry, "aiobound_in_flight", "db") == 0
        assert sample(registry, "aiobound_completed_total", "db") == 1
        assert sample(registry, "aiobound_peak_in_flight", "db") == 1
        assert sample(registry, "aiobound_failed_total", "db") == 0
        assert sample(registry, "aiobound_cancelled_total", "db") == 0
        assert sample(registry, "aiobound_closed", "db") == 1

    async def test_unlimited_settings_have_no_sample(
        self, make_executor: ExecutorFactory
    ) -> None:
        registry = CollectorRegistry()
        registry.register(ExecutorCollector({"x": make_executor(max_workers=1)}))
        assert sample(registry, "aiobound_max_pending", "x") is None
        assert sample(registry, "aiobound_max_wait_seconds", "x") is None
        assert sample(registry, "aiobound_max_per_second", "x") is None
        assert sample(registry, "aiobound_bound", "x") == 2
        assert sample(registry, "aiobound_queue_wait_max_seconds", "x") == 0

    async def test_max_wait_refusals_are_counted_apart(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=1, bound=1, max_wait=0.01)
        registry = CollectorRegistry()
        registry.register(ExecutorCollector({"db": executor}))
        running = await executor.submit(gate, 1)
        await gate.started()
        with pytest.raises(OverloadedError, match="max_wait"):
            await executor.run(gate, 2)  # the slot stays taken: it times out
        assert sample(registry, "aiobound_timed_out_total", "db") == 1
        assert sample(registry, "aiobound_rejected_total", "db") == 0
        assert sample(registry, "aiobound_max_wait_seconds", "db") == 0.01
        assert sample(registry, "aiobound_waiting", "db") == 0
        gate.open()
        assert await running == 1

    def test_each_stats_field_is_exported_under_its_name(self) -> None:
        values: dict[str, float | bool | LatencyHistogram] = {
            f.name: float(n + 1)
            for n, f in enumerate(dataclasses.fields(ExecutorStats))
        }
        values["closed"] = True
        for name in HISTOGRAM_FIELDS:
            values[name] = only_in_inf(7)
        values["partitions"] = {}  # type: ignore[assignment]
        stats = ExecutorStats(**values)  # type: ignore[arg-type]
        registry = CollectorRegistry()
        stub = cast("BoundedLoopExecutor", StubExecutor(stats))
        registry.register(ExecutorCollector({"s": stub}))
        exported = {
            "bound": "aiobound_bound",
            "in_flight": "aiobound_in_flight",
            "waiting": "aiobound_waiting",
            "max_pending": "aiobound_max_pending",
            "max_wait": "aiobound_max_wait_seconds",
            "max_per_second": "aiobound_max_per_second",
            "peak_in_flight": "aiobound_peak_in_flight",
            "queue_wait_avg": "aiobound_queue_wait_avg_seconds",
            "queue_wait_max": "aiobound_queue_wait_max_seconds",
            "closed": "aiobound_closed",
            "submitted": "aiobound_submitted_total",
            "completed": "aiobound_completed_total",
            "failed": "aiobound_failed_total",
            "cancelled": "aiobound_cancelled_total",
            "rejected": "aiobound_rejected_total",
            "timed_out": "aiobound_timed_out_total",
            "rate_limited": "aiobound_rate_limited_total",
            "pool_restarts": "aiobound_pool_restarts_total",
        }
        for field, name in exported.items():
            assert sample(registry, name, "s") == float(values[field]), field  # type: ignore[arg-type]
        for field, name in {
            "queue_wait": "aiobound_queue_wait_seconds",
            "run_time": "aiobound_run_time_seconds",
        }.items():
            assert sample(registry, name + "_count", "s") == 7, field
            assert sample(registry, name + "_sum", "s") == 7, field

    def test_every_stats_field_has_a_metric(self) -> None:
        # Each field gets a value no other field has; each value must come
        # out as a sample. A field added to ExecutorStats without a metric
        # fails here until it is exported (or, if it is not a number,
        # listed in UNEXPORTED_FIELDS).
        fields = dataclasses.fields(ExecutorStats)
        values: dict[str, object] = {}
        expected: dict[str, float] = {}  # a sample each field must yield
        for n, f in enumerate(fields):
            values[f.name] = True if f.name == "closed" else 100 + n
            expected[f.name] = 1.0 if f.name == "closed" else 100.0 + n
            if f.name in HISTOGRAM_FIELDS:
                values[f.name] = only_in_inf(100 + n)  # its _count and _sum
        # The partitions: each of their fields under the partition label.
        part, part_expected = distinct_partition_stats(500)
        values["partitions"] = {"p": part}
        stats = ExecutorStats(**values)  # type: ignore[arg-type]
        registry = CollectorRegistry()
        stub = cast("BoundedLoopExecutor", StubExecutor(stats))
        registry.register(ExecutorCollector({"s": stub}))
        samples = {
            s.value
            for family in registry.collect()
            for s in family.samples
            if s.labels == {"executor": "s"}
        }
        missing = [
            f.name
            for f in fields
            if f.name not in UNEXPORTED_FIELDS
            and f.name != "partitions"
            and expected[f.name] not in samples
        ]
        assert missing == []
        part_samples = {
            s.value
            for family in registry.collect()
            for s in family.samples
            if s.labels == {"executor": "s", "partition": "p"}
        }
        assert [
            name for name, value in part_expected.items() if value not in part_samples
        ] == []
        for name in UNEXPORTED_FIELDS:
            assert not isinstance(getattr(stats, name), (int, float)), name

    async def test_track_untrack_and_labels(
        self, make_executor: ExecutorFactory
    ) -> None:
        collector = ExecutorCollector(namespace="svc")
        registry = CollectorRegistry()
        registry.register(collector)
        assert sample(registry, "svc_bound", "a") is None

        collector.track("a", make_executor(max_workers=1))
        collector.track("b", make_executor(max_workers=3))
        assert sample(registry, "svc_bound", "a") == 2
        assert sample(registry, "svc_bound", "b") == 6

        collector.track("a", make_executor(max_workers=2))  # replaces
        assert sample(registry, "svc_bound", "a") == 4
        collector.untrack("a")
        collector.untrack("never-tracked")
        assert sample(registry, "svc_bound", "a") is None
        assert sample(registry, "svc_bound", "b") == 6

    async def test_exposition_is_valid_and_typed(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=2, max_pending=5)
        await executor.run(abs, -3)
        registry = CollectorRegistry()
        registry.register(ExecutorCollector({"default": executor}))
        text = generate_latest(registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["aiobound_completed"].type == "counter"
        assert families["aiobound_in_flight"].type == "gauge"
        [completed] = families["aiobound_completed"].samples
        assert completed.name == "aiobound_completed_total"
        assert completed.labels == {"executor": "default"}
        assert completed.value == 1

    async def test_latency_histograms_are_exported_as_histograms(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(max_workers=1)
        for i in range(3):
            await executor.run(abs, -i)
        registry = CollectorRegistry()
        registry.register(ExecutorCollector({"h": executor}))
        text = generate_latest(registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name, field in [
            ("aiobound_queue_wait_seconds", "queue_wait"),
            ("aiobound_run_time_seconds", "run_time"),
        ]:
            family = families[name]
            assert family.type == "histogram"
            histogram: LatencyHistogram = getattr(executor.stats(), field)
            buckets = [s for s in family.samples if s.name == name + "_bucket"]
            assert [s.labels["le"] for s in buckets][-1] == "+Inf"
            assert [float(s.labels["le"]) for s in buckets[:-1]] == list(
                histogram.bounds
            )
            assert [s.value for s in buckets] == list(histogram.counts)
            [count] = [s for s in family.samples if s.name == name + "_count"]
            [total] = [s for s in family.samples if s.name == name + "_sum"]
            assert count.value == histogram.count == 3
            assert total.value == histogram.sum

    def test_names_are_registered_without_reading_executors(self) -> None:
        registry = CollectorRegistry()
        registry.register(ExecutorCollector())
        with pytest.raises(ValueError, match="aiobound_bound"):
            registry.register(ExecutorCollector())
        registry.register(ExecutorCollector(namespace="other"))

    async def test_collect_from_another_thread(
        self, make_executor: ExecutorFactory
    ) -> None:
        # start_http_server scrapes from its own thread.
        registry = CollectorRegistry()
        registry.register(ExecutorCollector({"t": make_executor(max_workers=1)}))
        text = await asyncio.to_thread(generate_latest, registry)
        assert b'aiobound_bound{executor="t"} 2.0' in text


class TestPartitions:
    async def test_partition_metrics_carry_a_partition_label(
        self, make_executor: ExecutorFactory
    ) -> None:
        executor = make_executor(
            max_workers=2,
            partitions={
                "interactive": 0.75,
                "batch": Share(0.25, max_share=0.5, max_pending=7),
            },
        )
        await executor.partition("batch").run(abs, -1)
        await executor.partition("batch").run(abs, -2)
        await executor.run(abs, -3)
        registry = CollectorRegistry()
        registry.register(ExecutorCollector({"e": executor}))

        def part(name: str, partition: str) -> float | None:
            return registry.get_sample_value(
                name, {"executor": "e", "partition": partition}
            )

        assert part("aiobound_partition_completed_total", "batch") == 2
        assert part("aiobound_partition_completed_total", "interactive") == 0
        assert part("aiobound_partition_completed_total", "default") == 1
        assert part("aiobound_partition_guaranteed", "interactive") == 3
        assert part("aiobound_partition_share", "batch") == 0.25
        assert part("aiobound_partition_run_time_seconds_count", "batch") == 2
        assert part("aiobound_partition_max_pending", "batch") == 7
        assert part("aiobound_partition_max_pending", "interactive") is None
        assert part("aiobound_partition_max_share", "batch") == 0.5
        assert part("aiobound_partition_ceiling", "batch") == 2
        assert part("aiobound_partition_ceiling", "interactive") == 4
        assert sample(registry, "aiobound_completed_total", "e") == 3
