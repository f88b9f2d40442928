"""Prometheus: export executors' ``stats()`` through prometheus-client.

Install with ``pip install 'aiobound[prometheus]'``. :class:`ExecutorCollector`
is a custom collector: prometheus-client calls its ``collect()`` at each
scrape, and it reads ``stats()`` (O(1)) of every executor it tracks, so
nothing has to be updated on the request path. Register it once and track
the executor while the app runs::

    collector = ExecutorCollector()
    REGISTRY.register(collector)
    ...
    collector.track("default", executor)    # at startup
    collector.untrack("default")            # at shutdown

Exposed metrics (label ``executor``, the name given to :meth:`track`):

* gauges ``aiobound_bound``, ``aiobound_in_flight``, ``aiobound_waiting``,
  ``aiobound_max_pending``, ``aiobound_max_wait_seconds`` and
  ``aiobound_max_per_second`` (each absent when unlimited),
  ``aiobound_peak_in_flight``, ``aiobound_queue_wait_avg_seconds`` and
  ``aiobound_queue_wait_max_seconds`` (since the executor was created, as
  ``stats()`` reports them), ``aiobound_queued`` (calls handed to the pool
  and not started there: its own queue), ``aiobound_closed`` (0 or 1),
  ``aiobound_latency_short_seconds`` and ``aiobound_latency_no_load_seconds``
  (a limit policy's estimates; absent without one);
* counters ``aiobound_submitted_total``, ``aiobound_completed_total``,
  ``aiobound_failed_total``, ``aiobound_cancelled_total``,
  ``aiobound_rejected_total`` (refused at once: ``max_pending`` callers
  already waited), ``aiobound_timed_out_total`` (refused after waiting
  ``max_wait``), ``aiobound_shed_at_edge_total`` (requests the web
  integrations' edge check refused before they became calls; the three
  refusal counters add up to every 503 sent for load),
  ``aiobound_rate_limited_total`` (calls that waited for
  their ``max_per_second`` turn) and ``aiobound_pool_restarts_total`` (an
  owned process pool replaced after it broke);
* histograms ``aiobound_queue_wait_seconds`` (each call's wait for its slot)
  and ``aiobound_run_time_seconds`` (each call's time from hand-off to the
  pool until its end), as ``_bucket`` (cumulative, label ``le``), ``_count``
  and ``_sum`` series, with the fixed buckets of
  :class:`~aiobound.LatencyHistogram`; ``histogram_quantile()`` gives their
  quantiles.

With ``partitions=`` (see :meth:`~aiobound.BoundedLoopExecutor.partition`),
each partition's stats are exported too, under the same names with
``partition_`` after the namespace and the labels ``executor`` and
``partition``: gauges ``aiobound_partition_share``,
``aiobound_partition_guaranteed``, ``aiobound_partition_max_share``,
``aiobound_partition_ceiling``, ``aiobound_partition_in_flight``,
``aiobound_partition_waiting``, ``aiobound_partition_max_pending``,
``aiobound_partition_max_wait_seconds``, ``aiobound_partition_peak_in_flight``,
``aiobound_partition_queue_wait_avg_seconds`` and
``aiobound_partition_queue_wait_max_seconds``; counters
``aiobound_partition_submitted_total``, ``..._completed_total``,
``..._failed_total``, ``..._cancelled_total``, ``..._rejected_total``,
``..._timed_out_total`` and ``..._shed_at_edge_total``; histograms
``aiobound_partition_queue_wait_seconds`` and
``aiobound_partition_run_time_seconds``. The executor's own metrics stay
the totals over its partitions.

Every field of :class:`~aiobound.ExecutorStats` is exported (the tests check
it field by field); :data:`UNEXPORTED_FIELDS` would name a field that is not
a number, and is empty.

The exposition itself is prometheus-client's (``make_asgi_app``,
``make_aiohttp_handler``, ``start_http_server``, ``generate_latest``). A scrape
served on the event loop sees a consistent snapshot; one served from
prometheus-client's own thread reads each counter atomically, but the
counters of one executor may be a few calls apart.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from prometheus_client.metrics_core import Metric

    from aiobound import (
        BoundedLoopExecutor,
        ExecutorStats,
        LatencyHistogram,
        PartitionStats,
    )

__all__ = ("UNEXPORTED_FIELDS", "ExecutorCollector")

UNEXPORTED_FIELDS: tuple[str, ...] = ()
"""Fields of ``ExecutorStats`` with no metric: only ones that are not numbers
(a Prometheus sample is a number). None today; ``closed`` is exported as 0/1,
and ``partitions`` as the ``aiobound_partition_*`` metrics."""

# (metric name after the namespace, ExecutorStats field, help text)
_GAUGES = (
    ("bound", "bound", "Most calls submitted to the pool and unfinished at once."),
    ("in_flight", "in_flight", "Calls submitted to the pool and not finished there."),
    ("waiting", "waiting", "Coroutines waiting for a slot."),
    ("max_pending", "max_pending", "Most coroutines allowed to wait for a slot."),
    ("max_wait_seconds", "max_wait", "Longest a coroutine may wait for a slot."),
    ("max_per_second", "max_per_second", "Most calls started per second."),
    ("peak_in_flight", "peak_in_flight", "Highest in_flight since creation."),
    (
        "queue_wait_avg_seconds",
        "queue_wait_avg",
        "Mean wait for a slot of the calls granted one, since creation.",
    ),
    (
        "queue_wait_max_seconds",
        "queue_wait_max",
        "Longest wait for a slot of a call granted one, since creation.",
    ),
    ("closed", "closed", "1 once the executor was closed, else 0."),
    ("queued", "queued", "Calls handed to the pool that have not started there."),
    (
        "latency_short_seconds",
        "latency_short",
        "The limit policy's recent estimate of the calls' own latency.",
    ),
    (
        "latency_no_load_seconds",
        "latency_no_load",
        "The limit policy's estimate of the calls' own latency with no load.",
    ),
)
_COUNTERS = (
    ("submitted", "submitted", "Calls handed to the pool."),
    ("completed", "completed", "Calls that returned a value."),
    ("failed", "failed", "Calls that raised, or that the pool refused."),
    (
        "cancelled",
        "cancelled",
        "Calls cancelled before they started, or stopped while running.",
    ),
    (
        "rejected",
        "rejected",
        "Calls refused at once with OverloadedError: max_pending already wait.",
    ),
    (
        "timed_out",
        "timed_out",
        "Calls refused with OverloadedError after waiting max_wait for a slot.",
    ),
    (
        "shed_at_edge",
        "shed_at_edge",
        "Requests refused by the edge check before they became calls.",
    ),
    (
        "deadline_waiting",
        "deadline_waiting",
        "Calls whose deadline passed while they waited for a slot.",
    ),
    (
        "deadline_queued",
        "deadline_queued",
        "Calls whose deadline passed while queued in the pool (cancelled).",
    ),
    (
        "deadline_running",
        "deadline_running",
        "Calls whose deadline passed while they ran.",
    ),
    (
        "abandoned",
        "abandoned",
        "Calls left running by their caller at their deadline.",
    ),
    (
        "rate_limited",
        "rate_limited",
        "Calls that waited for their turn under max_per_second.",
    ),
    (
        "pool_restarts",
        "pool_restarts",
        "Times an owned process pool was replaced after it broke.",
    ),
)
_HISTOGRAMS = (
    (
        "queue_wait_seconds",
        "queue_wait",
        "Wait for a slot of each call granted one (0 when granted at once).",
    ),
    (
        "run_time_seconds",
        "run_time",
        "Time of each call from its hand-off to the pool until its end.",
    ),
)


# Each partition's stats (PartitionStats), labels executor and partition.
_PARTITION_GAUGES = (
    ("share", "share", "The partition's declared share of the bound."),
    ("guaranteed", "guaranteed", "Slots guaranteed to the partition under contention."),
    (
        "max_share",
        "max_share",
        "The partition's borrowing ceiling, a share of the bound.",
    ),
    ("ceiling", "ceiling", "Most slots the partition may hold, even when others idle."),
    ("in_flight", "in_flight", "The partition's calls holding a slot."),
    ("waiting", "waiting", "The partition's coroutines waiting for a slot."),
    ("max_pending", "max_pending", "Most coroutines allowed to wait, per partition."),
    ("max_wait_seconds", "max_wait", "Longest a coroutine may wait, per partition."),
    ("peak_in_flight", "peak_in_flight", "Highest in_flight of the partition."),
    (
        "queue_wait_avg_seconds",
        "queue_wait_avg",
        "Mean wait for a slot of the partition's calls granted one.",
    ),
    (
        "queue_wait_max_seconds",
        "queue_wait_max",
        "Longest wait for a slot of a partition's call granted one.",
    ),
)
_PARTITION_COUNTERS = (
    ("submitted", "submitted", "The partition's calls handed to the pool."),
    ("completed", "completed", "The partition's calls that returned a value."),
    ("failed", "failed", "The partition's calls that raised or were refused."),
    (
        "cancelled",
        "cancelled",
        "The partition's calls cancelled before starting, or stopped while running.",
    ),
    ("rejected", "rejected", "The partition's callers refused at once (max_pending)."),
    ("timed_out", "timed_out", "The partition's callers refused after max_wait."),
    ("shed_at_edge", "shed_at_edge", "The partition's requests shed at the edge."),
    (
        "deadline_waiting",
        "deadline_waiting",
        "The partition's calls past their deadline while waiting for a slot.",
    ),
    (
        "deadline_queued",
        "deadline_queued",
        "The partition's calls past their deadline while queued in the pool.",
    ),
    (
        "deadline_running",
        "deadline_running",
        "The partition's calls past their deadline while running.",
    ),
    ("abandoned", "abandoned", "The partition's calls left running at their deadline."),
)
_PARTITION_HISTOGRAMS = (
    ("queue_wait_seconds", "queue_wait", "Wait for a slot of the partition's calls."),
    ("run_time_seconds", "run_time", "Time of the partition's calls in the pool."),
)


class ExecutorCollector:
    """A prometheus-client collector for one or more executors.

    Args:
        executors: Executors to track from the start, by name (the value of
            the ``executor`` label).
        namespace: Prefix of every metric name.

    Tracking is thread-safe: the registry may collect from another thread
    (``start_http_server``) while the event loop tracks and untracks.
    """

    def __init__(
        self,
        executors: Mapping[str, BoundedLoopExecutor] | None = None,
        *,
        namespace: str = "aiobound",
    ) -> None:
        self._namespace = namespace
        self._lock = threading.Lock()
        self._executors: dict[str, BoundedLoopExecutor] = dict(executors or {})

    def track(self, name: str, executor: BoundedLoopExecutor) -> None:
        """Export *executor*'s stats with the label ``executor=name``.

        Tracking another executor under a name already in use replaces it
        (an app restarted in the same process, say).
        """
        with self._lock:
            self._executors[name] = executor

    def untrack(self, name: str) -> None:
        """Stop exporting the executor tracked as *name*; no error if none."""
        with self._lock:
            self._executors.pop(name, None)

    def describe(self) -> list[Metric]:
        """Return the metric families without samples.

        The registry calls this once, at registration, to learn the names
        (and refuse duplicates) without reading any executor.
        """
        gauges, counters, histograms = self._families()
        p_gauges, p_counters, p_histograms = self._partition_families()
        families: list[Metric] = []
        for group in (gauges, counters, histograms, p_gauges, p_counters):
            families += [family for _, family in group]
        return families + [family for _, family in p_histograms]

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family, with one sample per tracked executor."""
        with self._lock:
            snapshot = [(name, ex.stats()) for name, ex in self._executors.items()]
        gauges, counters, histograms = self._families()
        p_gauges, p_counters, p_histograms = self._partition_families()
        for name, stats in snapshot:
            for partition, part in stats.partitions.items():
                labels = [name, partition]
                for field, gauge in p_gauges:
                    value = _value(part, field)
                    if value is not None:
                        gauge.add_metric(labels, value)
                for field, counter in p_counters:
                    counter.add_metric(labels, float(getattr(part, field)))
                for field, family in p_histograms:
                    part_histogram: LatencyHistogram = getattr(part, field)
                    family.add_metric(
                        labels, _buckets(part_histogram), part_histogram.sum
                    )
            for field, gauge in gauges:
                value = _value(stats, field)
                if value is not None:
                    gauge.add_metric([name], value)
            for field, counter in counters:
                value = _value(stats, field)
                if value is not None:
                    counter.add_metric([name], value)
            for field, family in histograms:
                histogram: LatencyHistogram = getattr(stats, field)
                family.add_metric([name], _buckets(histogram), histogram.sum)
        for _, gauge in gauges:
            yield gauge
        for _, counter in counters:
            yield counter
        for _, family in histograms:
            yield family
        for _, gauge in p_gauges:
            yield gauge
        for _, counter in p_counters:
            yield counter
        for _, family in p_histograms:
            yield family

    def _partition_families(
        self,
    ) -> tuple[
        list[tuple[str, GaugeMetricFamily]],
        list[tuple[str, CounterMetricFamily]],
        list[tuple[str, HistogramMetricFamily]],
    ]:
        prefix = self._namespace + "_partition_"
        labels = ["executor", "partition"]
        gauges = [
            (field, GaugeMetricFamily(prefix + name, doc, labels=labels))
            for name, field, doc in _PARTITION_GAUGES
        ]
        counters = [
            (field, CounterMetricFamily(prefix + name, doc, labels=labels))
            for name, field, doc in _PARTITION_COUNTERS
        ]
        histograms = [
            (field, HistogramMetricFamily(prefix + name, doc, labels=labels))
            for name, field, doc in _PARTITION_HISTOGRAMS
        ]
        return gauges, counters, histograms

    def _families(
        self,
    ) -> tuple[
        list[tuple[str, GaugeMetricFamily]],
        list[tuple[str, CounterMetricFamily]],
        list[tuple[str, HistogramMetricFamily]],
    ]:
        prefix = self._namespace + "_"
        labels = ["executor"]
        gauges = [
            (field, GaugeMetricFamily(prefix + name, doc, labels=labels))
            for name, field, doc in _GAUGES
        ]
        counters = [
            (field, CounterMetricFamily(prefix + name, doc, labels=labels))
            for name, field, doc in _COUNTERS
        ]
        histograms = [
            (field, HistogramMetricFamily(prefix + name, doc, labels=labels))
            for name, field, doc in _HISTOGRAMS
        ]
        return gauges, counters, histograms


def _buckets(histogram: LatencyHistogram) -> list[tuple[str, float]]:
    """``(le, cumulative count)`` pairs of *histogram*, ``+Inf`` last."""
    bounds = [repr(bound) for bound in histogram.bounds]
    bounds.append("+Inf")
    return [(le, float(n)) for le, n in zip(bounds, histogram.counts, strict=True)]


def _value(stats: ExecutorStats | PartitionStats, field: str) -> float | None:
    """Return the field of *stats* as a sample value (None: no sample)."""
    value: float | None = getattr(stats, field)
    if value is None:
        return None
    return float(value)
