"""The refusal counters add up to the 503s a service sent, over real HTTP.

The example services (FastAPI on uvicorn, aiohttp on its runner), on
127.0.0.1, get a burst many times what they can hold at once (2 slots, 4
places to wait, ``max_wait`` a few service times). Whichever refused each
request (the edge check before the handler, the waiting room being full in
the handler, or ``max_wait``), ``rejected + timed_out + shed_at_edge`` equals
the 503s the client received: in ``stats()``, in the Prometheus scrape and in
OpenTelemetry's refusal counter summed over its reasons; ``completed``
equals the 200s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import pytest
from aiohttp_app import create_app as create_aiohttp_app
from fastapi_app import create_app as create_fastapi_app
from prometheus_client.parser import text_string_to_metric_families

from test_aiohttp import serve as serve_aiohttp
from test_fastapi import serve as serve_fastapi

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BURST = 300  # requests
CONCURRENCY = 100  # at once, each on its own connection
LIMITS: dict[str, Any] = {"workers": 2, "bound": 2, "max_pending": 4, "max_wait": 0.02}
TIMEOUT = 30.0  # a guard against a hang, never a timing assumption
REFUSALS = ("rejected", "timed_out", "shed_at_edge")
REASONS = {"max_pending": "rejected", "max_wait": "timed_out", "edge": "shed_at_edge"}


class Service:
    """A served example, its OpenTelemetry metrics, and a way to flood it."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.url = ""

    @staticmethod
    @contextlib.asynccontextmanager
    async def running(framework: str) -> AsyncIterator[Service]:
        """Serve the example of *framework* on 127.0.0.1 for the block."""
        service = Service(framework)
        if framework == "fastapi":
            app = create_fastapi_app(**LIMITS, meter_provider=service.meter_provider)
            async with serve_fastapi(app) as (_, url):
                service.url = url
                yield service
        else:
            aio_app = create_aiohttp_app(
                **LIMITS, meter_provider=service.meter_provider
            )
            async with serve_aiohttp(aio_app) as server:
                service.url = server.url
                yield service

    async def burst(self) -> collections.Counter[int]:
        """Send BURST requests for 5 ms of work, CONCURRENCY at once."""
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def one() -> int:
                async with http.get(f"{self.url}/work?ms=5") as response:
                    await response.read()
                    return response.status

            statuses = await asyncio.gather(*(one() for _ in range(BURST)))
        return collections.Counter(statuses)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT) as http:
            response = await http.get(path)
            response.raise_for_status()
            return response

    async def scraped(self) -> dict[str, float]:
        """The executor's counters in the Prometheus scrape, by field."""
        text = (await self.get("/metrics")).text
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels == {"executor": "default"} and (
                    sample.name.endswith("_total")
                ):
                    field = sample.name.removeprefix("aiobound_").removesuffix("_total")
                    found[field] = sample.value
        return found

    def refused_by_reason(self) -> dict[str, float]:
        """OpenTelemetry's refusal counter, summed per reason."""
        totals: dict[str, float] = collections.defaultdict(float)
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "aiobound.executor.call.rejected":
                        continue
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint)
                        attributes = point.attributes or {}
                        reason = attributes["aiobound.executor.rejection.reason"]
                        totals[str(reason)] += point.value
        return dict(totals)


@pytest.fixture(params=["fastapi", "aiohttp"])
async def service(request: pytest.FixtureRequest) -> AsyncIterator[Service]:
    async with Service.running(request.param) as running:
        yield running


async def test_the_refusal_counters_add_up_to_the_503s(service: Service) -> None:
    statuses = await service.burst()
    assert set(statuses) <= {200, 503}, statuses
    refused, answered = statuses[503], statuses[200]
    assert refused + answered == BURST
    assert refused > 0  # the burst overloaded the service

    stats = (await service.get("/stats")).json()
    assert sum(stats[field] for field in REFUSALS) == refused
    assert stats["completed"] == answered
    assert stats["shed_at_edge"] > 0  # the edge check refused some

    scraped = await service.scraped()
    assert sum(scraped[field] for field in REFUSALS) == refused
    assert scraped["completed"] == answered
    assert {field: scraped[field] for field in REFUSALS} == {
        field: stats[field] for field in REFUSALS
    }

    by_reason = service.refused_by_reason()
    assert sum(by_reason.values()) == refused
    assert set(by_reason) <= set(REASONS)
    for reason, field in REASONS.items():
        assert by_reason.get(reason, 0) == stats[field], reason
