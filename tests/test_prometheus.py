"""ExecutorCollector: executors' stats as Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aiobound import OverloadedError
from aiobound.prometheus import ExecutorCollector

if TYPE_CHECKING:
    from conftest import ExecutorFactory, GateFactory


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

    async def test_unlimited_max_pending_has_no_sample(
        self, make_executor: ExecutorFactory
    ) -> None:
        registry = CollectorRegistry()
        registry.register(ExecutorCollector({"x": make_executor(max_workers=1)}))
        assert sample(registry, "aiobound_max_pending", "x") is None
        assert sample(registry, "aiobound_bound", "x") == 2

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
