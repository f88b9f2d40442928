"""Limit policies: a bound that tunes itself from the calls' own latencies.

A policy is a pure object: no loop, no thread, no clock of its own. The
executor feeds it one sample per call that ended (the time now, the call's
own latency measured from its hand-off to the pool, how many calls were in
flight, whether the call counts as a drop) and resizes its gate to the limit
the policy answers. Tests feed it samples on a fake clock.

Both policies read latency the same way (:class:`_Watch`), because a real
downstream's latency is noisy: one call's time spreads around its mean
(lognormally, for most services), so a rule that reacts to single calls reads
the spread as overload and gives capacity away. What they share:

* **Windows of calls, not single calls.** Latencies are compared per window:
  the calls that *started* after the window opened, closed once enough of
  them ended *and* the ones still running when that count was reached ended
  too (else a window would keep the fast calls of its cohort and drop its
  slow ones). A window's latency is its *typical* latency: the geometric
  mean of the middle half of its calls' latencies (the interquartile mean of
  their logarithms; Envoy's adaptive concurrency takes a window's
  percentile). A pause of the whole process slows the calls in flight at
  that moment; when they are fewer than a quarter of the window (a noisy
  downstream's windows are several rounds of calls) they fall outside that
  middle half and read as no overload. And it is a tighter estimate than the
  median: with lognormal noise of log-spread sigma, a standard error of
  about 1.10 sigma / sqrt(n) against 1.25 sigma / sqrt(n). A window holds at
  least ``max(min_samples, limit)`` calls (about one round), and more when
  latencies are noisy: enough that 2.5 standard errors of a median would fit
  within the tolerance (the typical latency's errors fit with room to
  spare). The noise is measured as the spread of each window's calls around
  its typical latency. A window whose own calls spread less than a third as
  much (looked at once it has 32, 64, 128... calls) starts that measure over
  from its calls: a downstream that got steadier is not held to windows
  sized for its old noise (hundreds of calls, minutes at a low limit).
* **A no-load latency measured, not guessed.** *Probes* lower the limit to
  ``probe_limit`` until a cohort of calls started under it has ended; their
  latencies join a pool (the last 200 such calls), whose typical latency
  is the no-load estimate. The first probe takes between 20 and 150 calls (more
  when noisier: six standard errors of the estimate must fit within the
  tolerance, as it shifts every window's verdict), later ones
  ``probe_samples`` or what the pool still lacks. A probe that disagrees
  with the pool by more than the noise explains is extended to 20 calls,
  and if it still disagrees, replaces the pool (the downstream changed). A
  window with at most ``probe_limit`` calls in flight is a probe in itself.
  Probes come every ``probe_interval`` seconds plus a random jitter, so that
  processes sharing a downstream do not probe in step.
* **Three verdicts per window**, as TCP Vegas has a band: over the tolerated
  latency, the limit shrinks; over half of it (geometrically: the square
  root of ``tolerance`` over no-load), latency is rising and the limit
  stays; under it, the limit grows, but only while at least half of it is
  in use (no evidence, no growth: a limit of 100 that never sees more than
  10 calls has learned nothing about 100).
* **A growth that crossed the tolerance is taken back**: when the limit
  shrinks within two windows of a growth, the growth did it, and the limit
  stays below that level for 24 times ``max(min_samples, limit)`` calls (24
  windows of a steady downstream, fewer of a noisy one's longer windows)
  before it tries again, so that it does not run past the downstream's
  capacity every other window.
* **One decision per window**, and calls that started before a change of the
  limit are not counted after it (they ran under the old concurrency).
* **A plain overload answers fast**: five calls in a row of the same window
  each over twice the tolerated latency close the window at once (noise
  almost never does that), so a collapsing downstream is not handed a whole
  window of calls more.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING

from ._checks import check_int

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ("AIMD", "Gradient", "LimitPolicy")

# Standard errors of a window's typical latency that must fit in the tolerance.
_WINDOW_Z = 2.5
# Standard errors of the no-load estimate that must fit in the tolerance: the
# estimate biases every window, so it must be several times tighter.
_POOL_Z = 6.0
# Windows and probes are sized for the standard error of a median of n
# normal values, 1.2533 sigma / sqrt(n); the typical latency's (an
# interquartile mean, about 1.10 sigma / sqrt(n)) then fits with room to spare.
_MEDIAN_SE = 1.2533
_POOL_MAX = 200  # no-load samples kept
_FIRST_MIN = 20  # fewest calls of a first (or re-taken) no-load measurement
_FIRST_MAX = 150  # most calls of one probe
_WINDOW_MAX = 2000  # most calls of one window, whatever the noise
_FAST_RUN = 5  # calls in a row over twice the tolerance that close a window
# Quiet windows' worth of calls (max(min_samples, limit) each) to wait below
# a level whose reach was undone. Counted in calls, not windows: a noisy
# downstream's longer windows must not make the wait longer.
_HOLD = 24
_RECENT = 2  # windows after a growth in which a slowdown is the growth's doing
_SPREAD_MAX = 512  # deviations kept to measure the noise
_RECHECK_FROM = 32  # a window's own noise is looked at from this many calls
_LOG_FLOOR = math.log(1e-9)  # a zero latency (fake clocks) reads as 1 ns


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number > 0, got {value!r}")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_fraction(name: str, value: object) -> float:
    value = _check_positive(name, value)
    if value >= 1.0:
        raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value!r}")
    return value


def _check_tolerance(value: object) -> float:
    tolerance = _check_positive("tolerance", value)
    if tolerance <= 1.0:
        raise ValueError(f"tolerance must be a number > 1, got {value!r}")
    return tolerance


def _check_seed(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(
            f"seed must be an int or None, got {type(value).__name__} {value!r}"
        )
    return value


def _check_range(lo: object, hi: object, initial: object) -> tuple[int, int, int]:
    lo = check_int("min", lo, 1)
    hi = check_int("max", hi, 1)
    if hi < lo:
        raise ValueError(f"max must be >= min, got min={lo}, max={hi}")
    if initial is None:
        initial = max(lo, min(hi, 20))
    initial = check_int("initial", initial, 1)
    if not lo <= initial <= hi:
        raise ValueError(
            f"initial must be between min and max, got min={lo}, initial={initial}, "
            f"max={hi}"
        )
    return lo, hi, initial


def _log(latency: float) -> float:
    return math.log(latency) if latency > 1e-9 else _LOG_FLOOR


def _deviations(values: list[float]) -> list[float]:
    """How far each of a window's (log) latencies falls from its typical one.

    Scaled up for the degree of freedom the typical value took.
    """
    n = len(values)
    middle = _typical(values)
    scale = math.sqrt(n / (n - 1))
    return [(x - middle) * scale for x in values]


def _sigma(deviations: Iterable[float]) -> float:
    """The noise's standard deviation, from deviations around a window's middle.

    The median absolute deviation of normal noise is 0.6745 sigma.
    """
    ordered = sorted(abs(d) for d in deviations)
    return ordered[len(ordered) // 2] / 0.6745


def _typical(values: list[float]) -> float:
    """The mean of the middle half of *values*: a window's typical (log) latency.

    Not a plain mean: a pause of the whole process (a garbage collection,
    a busy machine) slows every call in flight at that moment, and when
    those are fewer than a quarter of the values they fall outside the
    middle half. Not the median: its estimate of the middle of normal
    noise spreads 1.25 / 1.10 times wider from n values (it needs 1.3 times
    the values for the same precision). Of one to three values, their mean
    (a quarter of three is no value to drop).
    """
    ordered = sorted(values)
    n = len(ordered)
    k = n // 4
    middle = ordered[k : n - k]
    return sum(middle) / len(middle)


class LimitPolicy(ABC):
    """A rule that sets the bound from the samples of the calls that end.

    Pass an instance as ``bound=`` to :class:`~aiobound.BoundedLoopExecutor`;
    one instance serves one executor (it holds that executor's state).
    Subclasses are pure: every method takes the time as an argument.

    Attributes:
        min: The floor of the limit.
        max: The ceiling of the limit.
        initial: The limit before any sample.
    """

    __slots__ = ("_attached", "_cap", "_limit", "drop_on", "initial", "max", "min")

    def __init__(self, min: int, max: int, initial: int | None) -> None:
        self.min, self.max, self.initial = _check_range(min, max, initial)
        # Exception classes whose failures the executor reports as drops.
        self.drop_on: tuple[type[BaseException], ...] = (TimeoutError,)
        self._limit = float(self.initial)
        self._cap = self.max
        self._attached = False

    @property
    def limit(self) -> int:
        """The current limit, between ``min`` and ``max``."""
        return int(self._limit)

    @property
    def ceiling(self) -> int:
        """``max``, lowered by :meth:`attach` to the pool's worker count."""
        return self._cap

    def attach(self, workers: int | None) -> int:
        """Bind the policy to one executor; return the limit to start with.

        *workers*, when known, caps the limit: more calls than workers would
        wait in the pool's own queue, and that wait would read as latency.

        Raises:
            RuntimeError: the policy already serves an executor.
        """
        if self._attached:
            raise RuntimeError(
                f"{self!r} already drives an executor's bound: give each "
                "executor its own policy instance"
            )
        self._attached = True
        if workers is not None:
            self._cap = max(self.min, min(self.max, workers))
            self._limit = min(self._limit, float(self._cap))
        return self.limit

    def _set(self, value: float) -> None:
        self._limit = max(float(self.min), min(float(self._cap), value))

    @abstractmethod
    def on_sample(
        self, now: float, latency: float, in_flight: int, dropped: bool
    ) -> int:
        """Take one ended call into account; return the limit to use now.

        Args:
            now: The time the call's end was seen (any monotonic clock, in
                seconds, the same for every sample).
            latency: The call's own latency in seconds (from its hand-off to
                the pool to its end; never its wait for a slot).
            in_flight: Calls in flight when it ended, itself included.
            dropped: The call failed in a way that signals overload (a
                timeout, or an error class the policy was told of).
        """

    @property
    @abstractmethod
    def latency_short(self) -> float | None:
        """The policy's recent latency estimate in seconds, or None before any."""

    @property
    def latency_no_load(self) -> float | None:
        """The latency estimate with no queueing, if the policy keeps one."""
        return None


class _Watch(LimitPolicy):
    """Windows, probes and the no-load pool; subclasses decide at a window's end.

    See the module's docstring for the rules. A subclass implements
    :meth:`_decide` (a full window's verdict) and may override
    :meth:`_on_drop`. Whether probes run at all is :attr:`_probes`.
    """

    __slots__ = (
        "_base",
        "_cohort_from",
        "_cut",
        "_far",
        "_first",
        "_hold",
        "_later",
        "_ltol",
        "_next_probe",
        "_peak",
        "_pending",
        "_pool",
        "_probes",
        "_probing",
        "_random",
        "_resume",
        "_run",
        "_samples",
        "_short",
        "_sigma",
        "_since_growth",
        "_spread",
        "_suspect",
        "_window_calls",
        "jitter",
        "min_samples",
        "probe_interval",
        "probe_limit",
        "probe_samples",
        "tolerance",
    )

    def __init__(
        self,
        min: int,
        max: int,
        initial: int | None,
        *,
        tolerance: object,
        min_samples: object,
        probe_interval: object,
        jitter: object,
        probe_limit: object,
        probe_samples: object,
        seed: object,
    ) -> None:
        super().__init__(min, max, initial)
        self.tolerance = _check_tolerance(tolerance)
        self.min_samples = check_int("min_samples", min_samples, 1)
        self.probe_interval = _check_positive("probe_interval", probe_interval)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
            raise TypeError(f"jitter must be a number >= 0, got {jitter!r}")
        if not 0.0 <= jitter < math.inf:
            raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")
        self.jitter = float(jitter)
        self.probe_limit = check_int("probe_limit", probe_limit, 1)
        self.probe_samples = check_int("probe_samples", probe_samples, 1)
        self._random = random.Random(_check_seed(seed))
        self._ltol = math.log(self.tolerance)
        self._probes = True
        self._pool: deque[float] = deque(maxlen=_POOL_MAX)
        self._spread: deque[float] = deque(maxlen=_SPREAD_MAX)
        self._base: float | None = None
        self._sigma = 0.0
        self._short: float | None = None
        self._far = math.inf  # a call over this (log) is far over the tolerance
        self._next_probe = -math.inf  # the first window ends in a probe
        self._probing = False
        self._first = True  # the next no-load measurement starts from scratch
        self._suspect = False  # the probe under way disagreed with the pool
        self._resume = self._limit
        self._since_growth = _RECENT + 1
        self._hold = 0  # calls to wait before the limit may grow again
        self._window_calls = 0  # calls of the window being decided
        # The window (or probe) under way: calls started at or after
        # _cohort_from; once enough ended, _cut is set and _pending counts the
        # calls still running then; _later holds the next cohort's early ends.
        self._cohort_from = -math.inf
        self._samples: list[float] = []
        self._peak = 0
        self._cut: float | None = None
        self._pending = 0
        self._later: list[tuple[float, int]] = []
        self._run = 0

    # -- what the executor and stats read ------------------------------------

    @property
    def latency_short(self) -> float | None:
        """Typical own latency of the last full window, or None before one.

        Typical: the geometric mean of the middle half of the window's
        latencies (see the module's rules); near their median.
        """
        return None if self._short is None else math.exp(self._short)

    @property
    def latency_no_load(self) -> float | None:
        """The no-load latency estimate in seconds, or None until measured."""
        return None if self._base is None else math.exp(self._base)

    @property
    def probing(self) -> bool:
        """Whether a probe of the no-load latency is under way."""
        return self._probing

    # -- samples -------------------------------------------------------------

    def on_sample(
        self, now: float, latency: float, in_flight: int, dropped: bool
    ) -> int:
        """See :meth:`LimitPolicy.on_sample`."""
        started = now - latency
        if (
            dropped
            and started >= self._cohort_from
            and not self._probing
            and self._on_drop(now)
        ):
            return int(self._limit)
        cut = self._cut
        if cut is not None and started < cut:
            # One of the calls still running when the window filled up.
            self._pending -= 1
            if started >= self._cohort_from:
                self._samples.append(_log(latency))
            if self._pending <= 0:
                self._close(now)
            return int(self._limit)
        if started < self._cohort_from:
            return int(self._limit)  # ran before the last change
        x = _log(latency)
        if cut is not None:
            self._later.append((x, in_flight))
            if len(self._later) >= 2 * max(4, int(self._limit)):
                self._close(now)  # a straggler that never reports (cancelled)
            return int(self._limit)
        samples = self._samples
        samples.append(x)
        n = len(samples)
        if n >= _RECHECK_FROM and n & (n - 1) == 0:
            self._recheck_noise(samples)
        if in_flight > self._peak:
            self._peak = in_flight
        if x > self._far and not self._probing:
            self._run += 1
            if self._run >= _FAST_RUN:
                self._close(now)
                return int(self._limit)
        else:
            self._run = 0
        if n >= self._needed():
            self._cut = now
            self._pending = in_flight - 1
            if self._pending <= 0:
                self._close(now)
        return int(self._limit)

    def _needed(self) -> int:
        """Calls a window (or the probe under way) must see."""
        sigma = self._sigma
        if self._probing:
            want = math.ceil((_MEDIAN_SE * sigma * _POOL_Z / self._ltol) ** 2)
            want = min(_POOL_MAX, want)  # more would never be kept
            if self._first:
                return min(_FIRST_MAX, max(_FIRST_MIN, want))
            if self._suspect:
                return _FIRST_MIN
            return min(_FIRST_MAX, max(self.probe_samples, want - len(self._pool)))
        want = math.ceil((_MEDIAN_SE * sigma * _WINDOW_Z / self._ltol) ** 2)
        return min(_WINDOW_MAX, max(self.min_samples, int(self._limit), want))

    def _open(self, now: float) -> None:
        """Start a new window (or probe) with the calls that start from *now*."""
        self._cohort_from = now
        self._samples = []
        self._peak = 0
        self._cut = None
        self._pending = 0
        self._later = []
        self._run = 0

    def _carry(self) -> None:
        """Start the next window with the calls that started after the cut."""
        assert self._cut is not None
        later = self._later
        self._cohort_from = self._cut
        self._samples = [x for x, _ in later]
        self._peak = max((n for _, n in later), default=0)
        self._cut = None
        self._pending = 0
        self._later = []
        self._run = 0

    def _note_spread(self, values: list[float]) -> None:
        """Measure the noise: how far calls fall from their window's middle."""
        if len(values) < 5:
            return
        self._spread.extend(_deviations(values))
        self._sigma = _sigma(self._spread)

    def _recheck_noise(self, samples: list[float]) -> None:
        """Start the noise's measure over if *samples* spread under a third of it.

        The window (or probe) under way then needs only as many calls as
        its own noise asks for; at its close its calls are the measure.
        """
        own = _sigma(_deviations(samples))
        if own < self._sigma / 3:
            self._spread.clear()
            self._sigma = own

    def _close(self, now: float) -> None:
        samples = self._samples
        # Never empty: a window is cut once it has min_samples calls, and
        # closed early only by one of its own calls.
        assert samples
        self._note_spread(samples)
        if self._probing:
            if self._absorb(samples):
                self._end_probe(now)
            else:  # disagrees with the pool: measure more before believing it
                self._cut = None
                self._pending = 0
                self._later = []
            return
        typical = _typical(samples)
        self._short = typical
        self._window_calls = len(samples)
        if self._probes and self._peak <= self.probe_limit:
            # At most probe_limit calls in flight: a probe in itself.
            if not self._absorb(samples):
                self._start_probe(now)
                return
            if self._base is None:  # too few yet: wait for more of them
                self._carry_or_open(now)
                return
            self._schedule_probe(now)
        if self._probes and (self._base is None or now >= self._next_probe):
            self._start_probe(now)
            return
        self._since_growth += 1
        if self._decide(typical, self._peak):
            self._open(now)
        else:
            self._carry_or_open(now)

    def _carry_or_open(self, now: float) -> None:
        if self._cut is None:  # closed early: no calls of a next window yet
            self._open(now)
        else:
            self._carry()

    # -- the no-load latency ---------------------------------------------------

    def _absorb(self, samples: list[float]) -> bool:
        """Add no-load *samples* to the pool; False if they need a second look."""
        pool = self._pool
        if self._base is not None:
            typical = _typical(samples)
            spread = math.sqrt(1 / len(samples) + 1 / len(pool))
            error = _MEDIAN_SE * self._sigma * spread
            if abs(typical - self._base) > max(self._ltol, 3.0 * error):
                if len(samples) < _FIRST_MIN and not self._first:
                    self._suspect = True  # measure more before believing it
                    return False
                pool.clear()  # the downstream changed: start over
        elif len(pool) + len(samples) < _FIRST_MIN:
            pool.extend(samples)  # too few yet to name an estimate
            return True
        self._first = self._suspect = False
        pool.extend(samples)
        self._base = _typical(list(pool))
        self._far = self._base + self._ltol + math.log(2.0)
        return True

    def _start_probe(self, now: float) -> None:
        self._probing = True
        self._resume = self._limit
        self._limit = float(max(self.min, min(self.probe_limit, self._cap)))
        self._open(now)

    def _end_probe(self, now: float) -> None:
        # A probe measures at least _FIRST_MIN calls until the pool names
        # an estimate: it never ends without one.
        assert self._base is not None
        self._probing = False
        self._set(self._resume)  # back where it was: the floor is no probe level
        self._schedule_probe(now)
        self._open(now)

    def _schedule_probe(self, now: float) -> None:
        spread = self._random.random() * self.jitter
        self._next_probe = now + self.probe_interval * (1.0 + spread)

    # -- decisions -------------------------------------------------------------

    def _on_drop(self, now: float) -> bool:
        """A call of the current window was a drop; True if the limit changed."""
        return False

    @abstractmethod
    def _decide(self, typical: float, peak: int) -> bool:
        """A window ended with this *typical* (log) latency; True if changed."""

    def _grow_to(self, value: float) -> bool:
        before = int(self._limit)
        self._set(value)
        if int(self._limit) == before:
            return False
        self._since_growth = 0
        return True

    def _shrink_to(self, value: float, *, recent: bool) -> bool:
        """Lower the limit to *value* (at least one slot); hold if *recent*."""
        before = int(self._limit)
        self._set(min(value, before - 1.0))
        quiet_window = max(self.min_samples, int(self._limit))
        self._hold = _HOLD * quiet_window if recent else 0
        self._since_growth = _RECENT + 1
        return int(self._limit) != before


class AIMD(_Watch):
    """Additive increase, multiplicative decrease.

    A *drop* multiplies the limit by ``backoff`` (taking at least one slot
    off), once per window: drops of calls that started before the last
    decrease are ignored. A drop is a call that raised ``TimeoutError`` or
    one of ``drop_on``, or a window whose typical own latency is over the
    threshold: ``latency_threshold`` if given, else ``tolerance`` times the
    no-load latency, which the policy then measures with probes. A window
    without a drop in which at least half of the limit was in use adds
    ``increase`` (a window is about one round of calls, more when latencies
    are noisy), unless its latency is over the threshold divided by the
    square root of ``tolerance``: rising, it stays. The module's rules say
    how windows and probes are made.

    Without ``latency_threshold`` it assumes, as :class:`Gradient` does,
    that latency rises with the calls in flight once the downstream is past
    its capacity, and that the latency with few calls in flight (measured)
    is the healthy one. With it, it assumes only that a healthy downstream
    answers under that latency: name it when you know it (the latency of a
    query on a healthy database, say), and leave it out when you do not.

    Args:
        min: Floor of the limit (default 1).
        max: Ceiling of the limit (default 200; lowered to the pool's worker
            count when it is known).
        initial: Limit before any sample (default ``min(max, 20)``, raised
            to ``min``).
        increase: Added per window of calls without a drop (default 1).
        backoff: Factor applied on a drop, between 0 and 1 (default 0.9).
        latency_threshold: Seconds of typical own latency over which a
            window counts as a drop (default ``None``: ``tolerance`` times
            the measured no-load latency). The limit grows until calls come
            near it, so calls run at about this latency: pass about 1.25
            times a call's latency on the healthy downstream, not the worst
            latency you accept.
        drop_on: Exception classes that count as drops besides
            ``TimeoutError`` (default none).
        tolerance: How far above the no-load latency the typical one may go,
            above 1 (default 1.25); with ``latency_threshold``, only the
            width of the band under it where the limit stays.
        min_samples: Fewest calls in a window (default 10).
        probe_interval: Seconds between probes of the no-load latency
            (default 10; no probes with ``latency_threshold``).
        jitter: Extra random delay of a probe, as a fraction of
            ``probe_interval`` (default 0.5).
        probe_limit: The limit during a probe (default 2, raised to ``min``).
        probe_samples: Fewest calls measured by a probe after the first
            (default 5).
        seed: Seed of the jitter's random numbers, an int (default:
            unseeded).

    Measures: ``latency_short`` is the typical own latency of the last window;
    ``latency_no_load`` the no-load estimate (None with ``latency_threshold``).
    """

    __slots__ = ("_threshold", "backoff", "increase", "latency_threshold")

    def __init__(
        self,
        *,
        min: int = 1,
        max: int = 200,
        initial: int | None = None,
        increase: float = 1.0,
        backoff: float = 0.9,
        latency_threshold: float | None = None,
        drop_on: tuple[type[BaseException], ...] = (),
        tolerance: float = 1.25,
        min_samples: int = 10,
        probe_interval: float = 10.0,
        jitter: float = 0.5,
        probe_limit: int = 2,
        probe_samples: int = 5,
        seed: int | None = None,
    ) -> None:
        drop_classes: object = drop_on
        super().__init__(
            min,
            max,
            initial,
            tolerance=tolerance,
            min_samples=min_samples,
            probe_interval=probe_interval,
            jitter=jitter,
            probe_limit=probe_limit,
            probe_samples=probe_samples,
            seed=seed,
        )
        self.increase = _check_positive("increase", increase)
        self.backoff = _check_fraction("backoff", backoff)
        self.latency_threshold = (
            None
            if latency_threshold is None
            else _check_positive("latency_threshold", latency_threshold)
        )
        if not isinstance(drop_classes, tuple) or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in drop_classes
        ):
            raise TypeError(
                f"drop_on must be a tuple of exception classes, got {drop_on!r}"
            )
        self.drop_on = (TimeoutError, *drop_on)
        self._threshold: float | None = None
        if self.latency_threshold is not None:
            self._probes = False  # the caller named the threshold
            self._threshold = math.log(self.latency_threshold)
            self._far = self._threshold + math.log(2.0)

    def __repr__(self) -> str:
        return (
            f"AIMD(min={self.min}, max={self.max}, limit={self.limit}, "
            f"latency_threshold={self.latency_threshold})"
        )

    def _recent(self) -> bool:
        return self._since_growth <= _RECENT

    def _back_off(self) -> bool:
        limit = float(int(self._limit))
        return self._shrink_to(limit * self.backoff, recent=self._recent())

    def _on_drop(self, now: float) -> bool:
        self._back_off()
        self._open(now)
        return True

    def _decide(self, typical: float, peak: int) -> bool:
        threshold = self._threshold
        if threshold is None:
            assert self._base is not None
            threshold = self._base + self._ltol
        if typical > threshold:
            return self._back_off()
        if 2 * peak < self._limit:
            return False
        if self._hold > 0:
            self._hold -= self._window_calls
            return False
        if typical > threshold - self._ltol / 2:
            return False  # rising, still under the threshold: stay
        return self._grow_to(self._limit + self.increase)


class Gradient(_Watch):
    """Latency gradient: keep the calls' latency near its no-load value.

    At each window's end its typical own latency (``latency_short``) is
    compared with the no-load estimate (``latency_no_load``), both measured
    as the module's rules say (windows sized to the noise, probes pooled):

    * above ``tolerance`` times it, the limit is cut to where the latency
      would be halfway (geometrically) between the two if it grew in
      proportion to the calls in flight, by at most three quarters; within
      two windows of a growth, the growth did it: the limit only steps back
      by a sixth (at least one slot) and stays below that level for 24
      times ``max(min_samples, limit)`` calls before it tries again;
    * above the square root of ``tolerance`` times it, latency is rising: the
      limit stays;
    * otherwise, if at least half of the limit was in use in the window, it
      grows by 1 while under the level last cut from, and once past it by
      1, 2, 4... (at most a quarter of the limit) per window, so that a
      downstream that got faster is followed in a few windows.

    It assumes that latency rises with the calls in flight once the
    downstream is past its capacity, and that the latency with few calls in
    flight (measured by the probes) is the healthy one. Errors are not read:
    a timeout shows in the latency itself.

    Args:
        min: Floor of the limit (default 1).
        max: Ceiling of the limit (default 200; lowered to the pool's worker
            count when it is known).
        initial: Limit before any sample (default ``min(max, 20)``, raised
            to ``min``).
        tolerance: How far above the no-load latency the typical one may go
            before the limit shrinks, above 1 (default 1.25).
        min_samples: Fewest calls in a window (default 10).
        probe_interval: Seconds between probes (default 10).
        jitter: Extra random delay of a probe, as a fraction of
            ``probe_interval`` (default 0.5).
        probe_limit: The limit during a probe (default 2, raised to
            ``min``). It is not the floor: after a probe the limit returns
            to where it was, never to ``min``.
        probe_samples: Fewest calls measured by a probe after the first
            (default 5).
        seed: Seed of the jitter's random numbers, an int (default:
            unseeded).

    Measures: ``latency_short`` is the typical own latency of the last
    window; ``latency_no_load`` the no-load estimate.
    """

    __slots__ = ("_failed", "_step")

    def __init__(
        self,
        *,
        min: int = 1,
        max: int = 200,
        initial: int | None = None,
        tolerance: float = 1.25,
        min_samples: int = 10,
        probe_interval: float = 10.0,
        jitter: float = 0.5,
        probe_limit: int = 2,
        probe_samples: int = 5,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            min,
            max,
            initial,
            tolerance=tolerance,
            min_samples=min_samples,
            probe_interval=probe_interval,
            jitter=jitter,
            probe_limit=probe_limit,
            probe_samples=probe_samples,
            seed=seed,
        )
        self._failed: int | None = None  # the level last cut from
        self._step = 1.0

    def __repr__(self) -> str:
        return (
            f"Gradient(min={self.min}, max={self.max}, limit={self.limit}, "
            f"tolerance={self.tolerance})"
        )

    def on_sample(
        self, now: float, latency: float, in_flight: int, dropped: bool
    ) -> int:
        """See :meth:`LimitPolicy.on_sample`.

        *dropped* is not used: a timeout shows in the latency itself.
        """
        return super().on_sample(now, latency, in_flight, False)

    def _decide(self, typical: float, peak: int) -> bool:
        assert self._base is not None
        excess = typical - self._base
        ltol = self._ltol
        limit = float(int(self._limit))
        if excess > ltol:
            target = limit * max(0.25, math.exp(ltol / 2 - excess))
            recent = self._since_growth <= _RECENT
            if recent:
                target = max(target, limit - max(1.0, limit / 6))
            self._failed = int(limit)
            self._step = 1.0
            return self._shrink_to(target, recent=recent)
        if 2 * peak < self._limit:
            return False
        if self._hold > 0:
            self._hold -= self._window_calls
            return False
        if excess > ltol / 2:
            self._step = 1.0
            return False  # rising, still under the tolerance: stay
        failed = self._failed
        if failed is not None and limit >= failed:
            self._failed = failed = None
        if failed is not None:
            return self._grow_to(limit + 1.0)
        step = self._step
        self._step = min(2.0 * step, max(1.0, limit / 4))
        return self._grow_to(limit + step)
