"""Limit policies: a bound that tunes itself from the calls' own latencies.

A policy is a pure object: no loop, no thread, no clock of its own. The
executor feeds it one sample per call that ended (the time now, the call's
own latency measured from its hand-off to the pool, how many calls were in
flight, whether the call counts as a drop) and resizes its gate to the limit
the policy answers. Tests feed it samples on a fake clock.

Two rules hold for every policy here:

* **No evidence, no growth.** The limit grows only while at least half of it
  is in use: a limit of 100 that never sees more than 10 calls has learned
  nothing about 100.
* **One decrease per round.** After a decrease, samples of calls that started
  before it (they ran under the old, higher concurrency) cannot cause
  another; without this rule the calls still in flight after a slowdown cut
  the limit again and again, down to the floor.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod

from ._checks import check_int

__all__ = ("AIMD", "Gradient", "LimitPolicy")


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


class AIMD(LimitPolicy):
    """Additive increase, multiplicative decrease.

    Each call that is not a drop adds ``increase / limit`` to the limit (so
    about ``increase`` per round of calls), but only while at least half of
    the limit is in use. A drop multiplies the limit by ``backoff``, once per
    round: drops of calls that started before the last decrease are ignored.

    A drop is a call that raised ``TimeoutError`` or one of ``drop_on``, or
    whose own latency exceeded ``latency_threshold``.

    Args:
        min: Floor of the limit (default 1).
        max: Ceiling of the limit (default 200; lowered to the pool's worker
            count when it is known).
        initial: Limit before any sample (default ``min(max, 20)``, raised
            to ``min``).
        increase: Added per round of calls without a drop (default 1).
        backoff: Factor applied on a drop, between 0 and 1 (default 0.9).
        latency_threshold: Seconds of own latency above which a call counts
            as a drop (default ``None``: latency never does). The limit
            grows until calls pass it, so calls run at about this latency:
            pass about 1.25 times a call's latency on the healthy downstream,
            not the worst latency you accept.
        drop_on: Exception classes that count as drops besides
            ``TimeoutError`` (default none).

    Measures: ``latency_short`` is an exponentially weighted mean of the
    calls' own latencies (weight 0.1 per sample).
    """

    __slots__ = (
        "_ewma",
        "_last_decrease",
        "backoff",
        "increase",
        "latency_threshold",
    )

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
    ) -> None:
        drop_classes: object = drop_on
        super().__init__(min, max, initial)
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
        self._ewma: float | None = None
        self._last_decrease = -math.inf

    def __repr__(self) -> str:
        return (
            f"AIMD(min={self.min}, max={self.max}, limit={self.limit}, "
            f"latency_threshold={self.latency_threshold})"
        )

    @property
    def latency_short(self) -> float | None:
        """Exponentially weighted mean of the own latencies, or None before any."""
        return self._ewma

    def on_sample(
        self, now: float, latency: float, in_flight: int, dropped: bool
    ) -> int:
        """See :meth:`LimitPolicy.on_sample`."""
        ewma = self._ewma
        self._ewma = latency if ewma is None else ewma + 0.1 * (latency - ewma)
        threshold = self.latency_threshold
        if dropped or (threshold is not None and latency > threshold):
            if now - latency >= self._last_decrease:
                self._set(self._limit * self.backoff)
                self._last_decrease = now
        elif 2 * in_flight >= self._limit:
            self._set(self._limit + self.increase / self._limit)
        return int(self._limit)


class Gradient(LimitPolicy):
    """Latency gradient: keep the calls' latency near its no-load value.

    Samples are taken in windows of at least ``max(min_samples, limit)``
    calls (about one round). At each window's end its median own latency (the
    short-term estimate) is compared with the no-load estimate:

    * above ``tolerance`` times it, the limit is multiplied by their ratio
      (at most halved); calls that started before a decrease are left out
      of the windows, so one slowdown causes one decrease per round;
    * otherwise, if at least half of the limit was in use in the window, it
      grows by 1.

    The no-load estimate comes from *probes*: every ``probe_interval``
    seconds (plus a random jitter of up to ``jitter`` times it) the limit
    drops to ``probe_limit`` until ``probe_samples`` calls started under it
    have ended; their median is the new estimate, and the limit returns to
    its value before the probe. Between probes a window whose median is lower
    lowers the estimate (so it may only fall under load, never ratchet up);
    a window where at most ``probe_limit`` calls were in flight is a probe
    in itself and sets it. The first window starts with a probe. A median
    of several calls, renewed at every probe, means one unusually fast call
    never fixes the estimate for good.

    Args:
        min: Floor of the limit (default 1).
        max: Ceiling of the limit (default 200; lowered to the pool's worker
            count when it is known).
        initial: Limit before any sample (default ``min(max, 20)``, raised
            to ``min``).
        tolerance: How far above the no-load latency the short-term one may
            go before the limit shrinks (default 1.25).
        min_samples: Fewest calls in a window (default 10).
        probe_interval: Seconds between probes (default 10).
        jitter: Extra random delay of a probe, as a fraction of
            ``probe_interval`` (default 0.5).
        probe_limit: The limit during a probe (default 2, raised to
            ``min``). It is not the floor: after a probe the limit returns
            to where it was, never to ``min``.
        probe_samples: Calls measured by a probe (default 5).
        seed: Seed of the jitter's random numbers, an int (default:
            unseeded).

    Measures: ``latency_short`` is the median own latency of the last window;
    ``latency_no_load`` the no-load estimate.
    """

    __slots__ = (
        "_base",
        "_last_decrease",
        "_next_probe",
        "_probe_from",
        "_probe_seen",
        "_probing",
        "_random",
        "_resume",
        "_short",
        "_window",
        "_window_peak",
        "jitter",
        "min_samples",
        "probe_interval",
        "probe_limit",
        "probe_samples",
        "tolerance",
    )

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
        super().__init__(min, max, initial)
        self.tolerance = _check_positive("tolerance", tolerance)
        if self.tolerance < 1.0:
            raise ValueError(f"tolerance must be >= 1, got {tolerance!r}")
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
        self._base: float | None = None
        self._short: float | None = None
        self._last_decrease = -math.inf
        self._next_probe = -math.inf  # the first window ends in a probe
        self._probing = False
        self._probe_from = 0.0
        self._probe_seen: list[float] = []
        self._resume = self._limit
        self._window: list[float] = []
        self._window_peak = 0

    def __repr__(self) -> str:
        return (
            f"Gradient(min={self.min}, max={self.max}, limit={self.limit}, "
            f"tolerance={self.tolerance})"
        )

    @property
    def latency_short(self) -> float | None:
        """Median own latency of the last full window, or None before one."""
        return self._short

    @property
    def latency_no_load(self) -> float | None:
        """The no-load latency estimate in seconds, or None until measured."""
        return self._base

    @property
    def probing(self) -> bool:
        """Whether a probe of the no-load latency is under way."""
        return self._probing

    def on_sample(
        self, now: float, latency: float, in_flight: int, dropped: bool
    ) -> int:
        """See :meth:`LimitPolicy.on_sample`.

        *dropped* is not used: a timeout shows in the latency itself.
        """
        if self._probing:
            self._probe_sample(now, latency)
            return int(self._limit)
        if now - latency < self._last_decrease:
            return int(self._limit)  # ran before the last decrease
        window = self._window
        window.append(latency)
        if in_flight > self._window_peak:
            self._window_peak = in_flight
        if len(window) >= max(self.min_samples, int(self._limit)):
            self._end_window(now)
        return int(self._limit)

    def _probe_sample(self, now: float, latency: float) -> None:
        if now - latency < self._probe_from:
            return  # started before the probe, at a higher concurrency
        seen = self._probe_seen
        seen.append(latency)
        if len(seen) < self.probe_samples:
            return
        seen.sort()
        self._base = seen[len(seen) // 2]
        self._probing = False
        self._set(self._resume)  # back where it was: the floor is no probe level
        self._schedule_probe(now)
        self._reset_window()

    def _schedule_probe(self, now: float) -> None:
        spread = self._random.random() * self.jitter
        self._next_probe = now + self.probe_interval * (1.0 + spread)

    def _reset_window(self) -> None:
        self._window = []
        self._window_peak = 0

    def _end_window(self, now: float) -> None:
        window = sorted(self._window)
        short = window[len(window) // 2]
        peak = self._window_peak
        self._reset_window()
        self._short = short
        if now >= self._next_probe or self._base is None:
            if peak <= self.probe_limit:
                self._base = short  # this window was a probe in itself
                self._schedule_probe(now)
            else:
                self._start_probe(now)
                return
        base = self._base
        if peak <= self.probe_limit or short < base:
            self._base = base = short
        if short > self.tolerance * base:
            self._set(self._limit * max(0.5, self.tolerance * base / short))
            self._last_decrease = now
        elif 2 * peak >= self._limit:
            self._set(self._limit + 1.0)

    def _start_probe(self, now: float) -> None:
        self._probing = True
        self._probe_from = now
        self._probe_seen = []
        self._resume = self._limit
        self._limit = float(max(self.min, min(self.probe_limit, self._cap)))
