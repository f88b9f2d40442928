"""Latency histograms: the buckets, the quantile estimate, and stats()."""

from __future__ import annotations

import asyncio
import itertools
import math
from bisect import bisect_left
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiobound import LatencyHistogram
from aiobound._histogram import BOUNDS, Recorder
from conftest import settle

if TYPE_CHECKING:
    from conftest import ExecutorFactory, GateFactory


def histogram_of(*samples: float) -> LatencyHistogram:
    recorder = Recorder()
    for sample in samples:
        recorder.record(sample)
    return recorder.snapshot()


class TestBuckets:
    def test_bounds_are_log_spaced_from_a_microsecond_to_100_seconds(self) -> None:
        assert BOUNDS[0] == 1e-6
        assert BOUNDS[-1] == 100.0
        ratios = [b / a for a, b in itertools.pairwise(BOUNDS)]
        assert all(2.0 <= r <= 2.5 + 1e-9 for r in ratios)

    def test_a_sample_on_a_bound_counts_in_that_bucket(self) -> None:
        # Prometheus' le: "less than or equal".
        histogram = histogram_of(1e-3, 1.0000001e-3)
        i = BOUNDS.index(1e-3)
        assert histogram.counts[i] == 1
        assert histogram.counts[i + 1] == 2

    def test_counts_are_cumulative_with_inf_last(self) -> None:
        histogram = histogram_of(0.0, 2e-6, 0.3, 1000.0)
        assert len(histogram.counts) == len(histogram.bounds) + 1
        assert histogram.counts[0] == 1  # 0 s
        assert histogram.counts[-2] == 3  # all but the 1000 s sample
        assert histogram.counts[-1] == histogram.count == 4
        assert list(histogram.counts) == sorted(histogram.counts)
        assert histogram.sum == pytest.approx(1000.300002)

    def test_zeros_are_added_to_the_first_bucket(self) -> None:
        recorder = Recorder()
        recorder.record(0.01)
        histogram = recorder.snapshot(zeros=3)
        assert histogram.count == 4
        assert histogram.counts[0] == 3
        assert histogram.sum == 0.01

    def test_empty(self) -> None:
        empty = LatencyHistogram.empty()
        assert empty.count == 0
        assert set(empty.counts) == {0}
        assert math.isnan(empty.quantile(0.5))
        assert empty.mean == 0.0


class TestQuantile:
    def test_interpolates_within_the_bucket(self) -> None:
        # 10 samples in (0.1, 0.25]: the median is halfway through it.
        histogram = histogram_of(*[0.2] * 10)
        assert histogram.quantile(0.5) == pytest.approx(0.175)
        assert histogram.quantile(1.0) == pytest.approx(0.25)
        assert histogram.quantile(0.0) == pytest.approx(0.1)

    def test_p99_of_a_tail(self) -> None:
        # 99 fast calls (~3 ms) and one slow (~2 s): p99 stays in the fast
        # bucket, p99.9 lands in the slow one.
        histogram = histogram_of(*[0.003] * 99, 2.0)
        assert 0.0025 < histogram.quantile(0.99) <= 0.005
        assert 1.0 < histogram.quantile(0.999) <= 2.5

    def test_beyond_the_last_bound(self) -> None:
        assert histogram_of(500.0).quantile(0.5) == 100.0

    @pytest.mark.parametrize("q", [-0.1, 1.5, math.nan])
    def test_q_out_of_range_is_refused(self, q: float) -> None:
        with pytest.raises(ValueError, match="q must be between 0 and 1"):
            histogram_of(1.0).quantile(q)

    @given(
        st.lists(st.floats(min_value=0.0, max_value=99.0), min_size=1, max_size=50),
        st.floats(min_value=0.0, max_value=1.0),
    )
    def test_estimate_is_within_the_true_quantiles_bucket(
        self, samples: list[float], q: float
    ) -> None:
        histogram = histogram_of(*samples)
        estimate = histogram.quantile(q)
        ordered = sorted(samples)
        # The sample of rank ceil(q * n) (at least 1) is the true quantile;
        # the estimate is within the bounds of its bucket.
        true = ordered[max(math.ceil(q * len(ordered)), 1) - 1]
        i = bisect_left(BOUNDS, true)
        lower = BOUNDS[i - 1] if i else 0.0
        assert lower <= estimate <= BOUNDS[i]


class TestStats:
    async def test_waits_are_recorded_with_immediate_grants_as_zero(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=1, bound=1)
        assert executor.stats().queue_wait.count == 0
        first = await executor.submit(gate, 1)  # granted at once
        second = asyncio.create_task(executor.run(gate, 2))
        await gate.started(1)
        await settle()
        assert executor.stats().waiting == 1
        gate.open()
        assert await first == 1
        assert await second == 2
        stats = executor.stats()
        wait = stats.queue_wait
        assert wait.count == 2
        assert wait.counts[0] >= 1  # the immediate grant, at 0 s
        assert wait.sum == pytest.approx(stats.queue_wait_avg * 2)
        # The longest wait is in the bucket the histogram counted it in.
        i = bisect_left(wait.bounds, stats.queue_wait_max)
        assert wait.counts[i] - (wait.counts[i - 1] if i else 0) >= 1
        assert wait.sum >= stats.queue_wait_max > 0

    async def test_run_time_counts_calls_that_ran(
        self, make_executor: ExecutorFactory, make_gate: GateFactory
    ) -> None:
        gate = make_gate()
        executor = make_executor(max_workers=1, bound=2)
        running = await executor.submit(gate, 1)
        await gate.started(1)
        queued = await executor.submit(gate, 2)
        queued.cancel()  # never runs: not in the run-time histogram
        failing = await executor.submit(divmod, 1, 0)
        gate.open()
        assert await running == 1
        with pytest.raises(ZeroDivisionError):
            await failing
        await executor.aclose()
        stats = executor.stats()
        assert stats.cancelled == 1
        assert stats.run_time.count == stats.completed + stats.failed == 2
        assert stats.run_time.sum > 0
