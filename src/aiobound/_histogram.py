"""Latency histograms: fixed log-spaced buckets, counted in O(1) per sample.

:class:`Recorder` is the mutable side, owned by the executor (or the gate) and
fed one duration per call on the event loop. Recording a sample is one
``bisect`` on a tuple of 25 floats (done in C), one increment of a list item
and one float addition: no allocation, no branch on the value. The bounds are
the same for every recorder, so histograms of different executors add up.

:class:`LatencyHistogram` is the frozen snapshot that ``stats()`` returns, in
the shape Prometheus and OpenTelemetry take: upper bounds, *cumulative* counts
(the count of samples at or below each bound, the last one for ``+Inf``),
the total count and the sum.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

__all__ = (
    "BOUNDS",
    "RECENT_WEIGHT",
    "LatencyHistogram",
    "Recorder",
)

# The weight of the newest wait in the moving average of recent waits that
# the gates keep (a Retry-After estimate): 1/8.
RECENT_WEIGHT = 0.125


def _bounds() -> tuple[float, ...]:
    """1, 2.5 and 5 of every decade from 1 µs to 50 s, then 100 s."""
    bounds = [
        float(f"{mantissa}e{exponent}")
        for exponent in range(-6, 2)
        for mantissa in ("1", "2.5", "5")
    ]
    bounds.append(100.0)
    return tuple(bounds)


BOUNDS: tuple[float, ...] = _bounds()
"""Upper bounds of the buckets, in seconds (a last ``+Inf`` bucket follows)."""


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """A snapshot of a latency histogram, in seconds.

    The buckets are fixed and log-spaced: 1, 2.5 and 5 of every decade from
    1 µs to 50 s, then 100 s, then ``+Inf``. A sample ``x`` is counted in the
    first bucket whose bound is ``>= x`` (Prometheus' ``le``).

    Attributes:
        bounds: Upper bound of each bucket but the last, in seconds,
            increasing.
        counts: Cumulative counts: ``counts[i]`` samples were at most
            ``bounds[i]``; the last item (one more than ``bounds``) is the
            ``+Inf`` bucket and equals ``count``.
        count: Samples recorded.
        sum: Sum of the samples, in seconds.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float

    @classmethod
    def empty(cls) -> LatencyHistogram:
        """A histogram with no sample (the standard bounds)."""
        return cls(BOUNDS, (0,) * (len(BOUNDS) + 1), 0, 0.0)

    @property
    def mean(self) -> float:
        """Mean of the samples in seconds (0 with none)."""
        return self.sum / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """Estimate the *q*-quantile (``0 <= q <= 1``) in seconds.

        The rank ``q * count`` is located in its bucket and interpolated
        linearly within it, as Prometheus' ``histogram_quantile`` does; the
        first bucket starts at 0. The estimate is off by at most the width
        of that bucket (a factor of 2.5 at worst). A rank in the ``+Inf``
        bucket gives the last finite bound (100 s). With no sample: ``nan``.

        Raises:
            ValueError: *q* is outside ``[0, 1]``.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be between 0 and 1, got {q!r}")
        if not self.count:
            return math.nan
        rank = q * self.count
        counts = self.counts
        # The first bucket whose cumulative count reaches the rank (for rank
        # 0, the first bucket with a sample): it holds at least one sample.
        index = bisect_left(counts, rank) if rank else bisect_right(counts, 0)
        if index >= len(self.bounds):
            return self.bounds[-1]
        lower = self.bounds[index - 1] if index else 0.0
        upper = self.bounds[index]
        below = counts[index - 1] if index else 0
        in_bucket = counts[index] - below
        return lower + (upper - lower) * (rank - below) / in_bucket


class Recorder:
    """The mutable histogram: :meth:`record` one sample in O(1).

    Not thread-safe: one thread (the event loop's) records.
    """

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BOUNDS) + 1)  # per bucket, not cumulative
        self.sum = 0.0

    def record(self, seconds: float) -> None:
        """Count one sample of *seconds*."""
        self.buckets[bisect_left(BOUNDS, seconds)] += 1
        self.sum += seconds

    def snapshot(self, zeros: int = 0) -> LatencyHistogram:
        """Return the histogram, with *zeros* more samples of 0 seconds.

        *zeros* lets a caller count samples known to be 0 (slots granted at
        once) without recording each one on its hot path.
        """
        running = zeros
        cumulative = []
        for n in self.buckets:
            running += n
            cumulative.append(running)
        return LatencyHistogram(BOUNDS, tuple(cumulative), running, self.sum)
