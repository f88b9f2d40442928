"""Limit policies, sample by sample on a fake clock (no loop, no threads).

Two drivers feed the policies. :class:`Clock` hands one sample at a time,
as the test says. :class:`Downstream` is a closed loop on the fake clock: it
keeps ``policy.limit`` calls in flight, each taking the latency its model
gives for the calls in flight when it started (times seeded lognormal noise),
and feeds each end to the policy, so a test sees the policy against a
downstream whose capacity moves, sample by sample and reproducibly.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from typing import TYPE_CHECKING, Any

import pytest

from aiobound import AIMD, Gradient, LimitPolicy
from aiobound._limits import _deviations, _sigma, _typical

if TYPE_CHECKING:
    from collections.abc import Callable

S = 0.020  # the downstream's service time in these scripts


class Clock:
    """A fake clock: calls end when the test says, with the latency it says."""

    def __init__(self) -> None:
        self.now = 100.0

    def feed(
        self,
        policy: LimitPolicy,
        n: int,
        latency: float,
        in_flight: int | None = None,
        dropped: bool = False,
        step: float | None = None,
    ) -> int:
        """Feed *n* samples, the clock moving *step* (default latency/limit)."""
        limit = policy.limit
        for _ in range(n):
            self.now += latency / max(1, policy.limit) if step is None else step
            load = policy.limit if in_flight is None else in_flight
            limit = policy.on_sample(self.now, latency, load, dropped)
        return limit

    def window(
        self,
        policy: LimitPolicy,
        n: int,
        latency: float,
        peak: int | None = None,
        dropped: bool = False,
        step: float | None = None,
    ) -> int:
        """Feed the *n* ends of one cohort: *peak* in flight, none after the last.

        The last call reports itself alone in flight, so a window of *n* calls
        closes with it (no straggler of the cohort is still running).
        """
        if n > 1:
            self.feed(policy, n - 1, latency, peak, dropped, step)
        return self.feed(policy, 1, latency, 1, dropped, step)


def thrashing(capacity: Callable[[], int]) -> Callable[[int], float]:
    """Latency of a call started with *n* in flight: ``S`` up to the capacity,
    then every call slower by ``2 (n - C) / C`` (the benchmark's model)."""

    def latency(n: int) -> float:
        c = capacity()
        return S * (1.0 + 2.0 * max(0, n - c) / c)

    return latency


class Downstream:
    """A closed loop on a fake clock that keeps ``policy.limit`` calls in flight."""

    def __init__(
        self,
        policy: LimitPolicy,
        latency: Callable[[int], float],
        *,
        sigma: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.policy = policy
        self.latency = latency
        self.sigma = sigma
        self.random = random.Random(seed)
        self.now = 100.0
        self.running: list[tuple[float, float]] = []  # (end, start), a heap
        self.limits: list[int] = []  # the limit after each sample
        self.samples: list[float] = []  # the latencies fed, in order

    def run(self, calls: int) -> list[int]:
        """Let *calls* calls end; return the limits seen after each."""
        seen: list[int] = []
        mu = -self.sigma * self.sigma / 2  # noise with a mean of 1
        for _ in range(calls):
            while len(self.running) < self.policy.limit:
                n = len(self.running) + 1
                noise = self.random.lognormvariate(mu, self.sigma) if self.sigma else 1
                end = self.now + self.latency(n) * noise
                heapq.heappush(self.running, (end, self.now))
            end, start = heapq.heappop(self.running)
            self.now = end
            in_flight = len(self.running) + 1
            self.samples.append(end - start)
            seen.append(self.policy.on_sample(end, end - start, in_flight, False))
        self.limits += seen
        return seen


def probing(policy: AIMD | Gradient) -> bool:
    """Whether a probe is under way (read through a call: mypy would narrow
    the property after a first assertion, and the next one would be dead)."""
    return policy.probing


def settled(limits: list[int], probe_limit: int = 2) -> list[int]:
    """The limits outside probes (which drop to *probe_limit* for a moment)."""
    return [n for n in limits if n > probe_limit]


class TestWindows:
    """What both policies share: how latency is read (see ``_limits``)."""

    @pytest.mark.parametrize("make", [AIMD, Gradient], ids=["AIMD", "Gradient"])
    def test_noise_alone_does_not_shrink_the_limit(
        self, make: Callable[..., LimitPolicy]
    ) -> None:
        # A downstream that serves 16 at once, every call's time spread with
        # sigma 0.5 (p99 at 2.8x the mean): the limit must stay near 16.
        policy = make(max=16, seed=1)
        down = Downstream(policy, thrashing(lambda: 16), sigma=0.5, seed=7)
        down.run(6000)
        late = settled(down.limits[2000:])
        assert statistics.mean(late) >= 14
        assert min(late) >= 10

    @pytest.mark.parametrize("make", [AIMD, Gradient], ids=["AIMD", "Gradient"])
    @pytest.mark.parametrize("sigma", [0.0, 0.3, 0.5])
    def test_the_limit_follows_the_capacity_down_and_up(
        self, make: Callable[..., LimitPolicy], sigma: float
    ) -> None:
        capacity = [16]
        policy = make(max=32, seed=2)
        down = Downstream(policy, thrashing(lambda: capacity[0]), sigma=sigma, seed=3)
        down.run(4000)
        assert 13 <= statistics.median(settled(down.limits[-1500:])) <= 19
        capacity[0] = 4
        down.run(2500)
        assert 3 <= statistics.median(down.limits[-1000:]) <= 5
        capacity[0] = 16
        down.run(4000)
        assert 13 <= statistics.median(settled(down.limits[-1500:])) <= 19

    def test_a_window_waits_for_the_slow_calls_of_its_cohort(self) -> None:
        # The window fills with the fast ends of its cohort first; the slow
        # calls of the same cohort, still running then, must count too.
        clock = Clock()
        policy = AIMD(initial=10, latency_threshold=1.5 * S)
        t0 = clock.now
        for i in range(10):  # 6 at S, 4 at 2 S; at the tenth end, 9 still run
            latency = S if i < 6 else 2 * S
            policy.on_sample(t0 + latency + i * 1e-4, latency, 10, False)
        assert policy.limit == 10  # no verdict yet
        for i in range(9):  # the nine that started with them and take 4 S
            end = t0 + 4 * S + i * 1e-4
            policy.on_sample(end, end - t0, 9 - i, False)
        # The window's median (of 19) is 2 S: over the threshold. The median
        # of its first ten ends alone was S.
        assert policy.limit == 9

    def test_calls_started_before_a_decrease_are_not_counted(self) -> None:
        clock, policy = Clock(), AIMD(initial=10, backoff=0.5)
        policy.on_sample(clock.now, S, 10, True)  # a drop: 10 -> 5
        assert policy.limit == 5
        # Nine more drops of calls that started before it: ignored.
        for _ in range(9):
            clock.now += 1e-4
            assert policy.on_sample(clock.now, S, 9, True) == 5
        clock.now += S
        assert policy.on_sample(clock.now, S / 2, 5, True) == 2  # started after

    def test_five_calls_far_over_close_the_window_at_once(self) -> None:
        clock, policy = Clock(), AIMD(initial=20, latency_threshold=S, min_samples=50)
        for _ in range(4):
            clock.now += 1e-3
            policy.on_sample(clock.now, 3 * S, 20, False)
        assert policy.limit == 20
        clock.now += 1e-3
        policy.on_sample(clock.now, 3 * S, 20, False)
        assert policy.limit == 18  # the 5th of 50: 20 * 0.9
        # The next window counts from there: four far over close nothing,
        # the fifth does; a call under the line in between starts over.
        clock.now += 1.0
        assert clock.feed(policy, 4, 3 * S, step=1e-3) == 18
        assert clock.feed(policy, 1, 3 * S, step=1e-3) == 16
        clock.now += 1.0
        assert clock.feed(policy, 4, 3 * S, step=1e-3) == 16
        assert clock.feed(policy, 1, S, step=1e-3) == 16
        assert clock.feed(policy, 4, 3 * S, step=1e-3) == 16
        assert clock.feed(policy, 1, 3 * S, step=1e-3) == 14

    def test_a_window_with_one_call_still_running_waits_for_it(self) -> None:
        clock, policy = Clock(), AIMD(initial=10, latency_threshold=1.5 * S)
        clock.feed(policy, 9, S, in_flight=10)
        clock.feed(policy, 1, S, in_flight=2)  # the tenth end: one still runs
        assert policy.limit == 10
        clock.feed(policy, 1, 10 * S, in_flight=1)  # it ends, slow
        assert policy.limit == 11  # the window's median is still S

    def test_windows_grow_with_the_noise(self) -> None:
        def window(sigma: float) -> int:
            policy = Gradient(max=8, seed=1)
            down = Downstream(policy, lambda n: S, sigma=sigma, seed=5)
            down.run(3000)
            return policy._needed()

        quiet, noisy = window(0.0), window(0.5)
        assert quiet == 10  # min_samples
        # 2.5 standard errors of the window's typical latency within ln 1.25
        assert 30 <= noisy <= 60

    def test_a_calmer_downstream_is_not_held_to_the_old_noise(self) -> None:
        # Very noisy calls (sigma 1.5: a loop that stalls 2 ms queries by as
        # much again) make windows of hundreds of calls; then the calls get
        # steady (50 ms queries). The first window of steady calls closes
        # once it measured 32 of them: it does not wait for the hundreds the
        # old noise asked for (at a limit of 1, a minute of calls).
        policy = AIMD(initial=2, max=50, latency_threshold=100.0)
        down = Downstream(policy, lambda n: S, sigma=1.5, seed=4)
        down.run(3000)
        old = policy._needed()
        assert old > 300

        def calls_to_next_window() -> int:
            limit = policy.limit
            for n in range(1, 1000):
                if down.run(1) != [limit]:
                    return n
            return 1000

        calls_to_next_window()  # a window of noisy calls ends
        down.sigma = 0.05
        # Its first calls were still noisy (they started before the change).
        assert calls_to_next_window() <= 64 + policy.limit
        # The noise was measured again: a window is a round of calls, as for
        # a downstream steady all along.
        assert policy._needed() == policy.limit
        assert calls_to_next_window() < old / 4

    def test_a_steady_window_closes_at_its_32nd_call(self) -> None:
        # Windows sized for a noise of 1.5 (hundreds of calls); then a window
        # of equal latencies, each call alone in flight: its noise is looked
        # at once it has 32 calls, found far calmer, and the window closes
        # then, not at its 33rd call nor its hundredth.
        clock, policy = Clock(), AIMD(initial=2, max=50, latency_threshold=100.0)
        noise = random.Random(3)
        while policy._needed() <= 300 or policy._samples:
            clock.feed(policy, 1, S * noise.lognormvariate(0.0, 1.5), in_flight=1)
        counted = []  # the window's calls after each end
        for _ in range(1000):
            clock.feed(policy, 1, S, in_flight=1, step=2 * S)
            counted.append(len(policy._samples))
            if not policy._samples:  # the window closed
                break
        assert counted == [*range(1, 32), 0]
        assert policy._needed() == max(10, policy.limit)

    def test_a_cancelled_straggler_does_not_hold_the_window_forever(self) -> None:
        clock, policy = Clock(), AIMD(initial=4, latency_threshold=S, min_samples=4)
        for _ in range(4):  # the 4th end says 3 others still run: one never ends
            clock.now += 1e-3
            policy.on_sample(clock.now, 2 * S, 4, False)
        for _ in range(2):
            clock.now += S
            policy.on_sample(clock.now, 2 * S, 4, False)
        assert policy.limit == 4
        for _ in range(8):  # calls of the next cohort: the window gives up waiting
            clock.now += S
            policy.on_sample(clock.now, S / 2, 4, False)
        assert policy.limit == 3
        assert policy.latency_short == pytest.approx(2 * S)


class TestNoLoadLatency:
    def probed(self, **kwargs: object) -> tuple[Clock, Gradient]:
        """A policy whose first probe measured a no-load latency of S."""
        clock = Clock()
        options: dict[str, object] = {"initial": 16, "seed": 1, **kwargs}
        policy = Gradient(**options)  # type: ignore[arg-type]
        initial = policy.limit
        clock.window(policy, initial, S, peak=initial)  # the first window: a probe
        assert (probing(policy), policy.limit) == (True, min(initial, 2))
        clock.now += S  # the probe's calls start after it began
        clock.feed(policy, 20, S, in_flight=1)
        assert (probing(policy), policy.limit) == (False, initial)
        assert policy.latency_no_load == pytest.approx(S)
        clock.now += S  # the next calls start after the probe
        return clock, policy

    def test_the_first_window_probes_then_restores_the_limit(self) -> None:
        _, policy = self.probed()
        assert policy.limit == 16  # back where it was, not at a floor

    def test_the_first_probe_measures_at_least_twenty_calls(self) -> None:
        clock, policy = Clock(), Gradient(initial=16, seed=1)
        clock.window(policy, 16, S, peak=16)
        clock.now += S
        clock.feed(policy, 19, S, in_flight=1)
        assert probing(policy)
        assert policy.latency_no_load is None
        clock.feed(policy, 1, S, in_flight=1)
        assert not probing(policy)
        assert policy.latency_no_load == pytest.approx(S)

    def test_noisier_latencies_make_a_longer_first_probe(self) -> None:
        def probe_calls(sigma: float) -> int:
            policy = Gradient(initial=8, seed=1)
            down = Downstream(policy, lambda n: S, sigma=sigma, seed=11)
            while not probing(policy):
                down.run(1)
            calls = 0
            while probing(policy):
                down.run(1)
                calls += 1
            return calls

        assert probe_calls(0.0) <= 21
        assert probe_calls(0.5) >= 60

    def test_the_first_probe_measures_at_most_150_calls(self) -> None:
        # A noise of 1 would want 1,133 calls: the first probe stops at 150
        # of its own (and the one other call of it in flight then).
        policy = Gradient(initial=8, seed=1)
        down = Downstream(policy, lambda n: S, sigma=1.0, seed=11)
        while not probing(policy):
            down.run(1)
        while probing(policy):
            down.run(1)
        assert 150 <= len(policy._pool) <= 151

    def test_once_the_pool_is_full_a_probe_measures_probe_samples(self) -> None:
        # Noisy latencies want a pool of 200 calls: the first probes fill
        # it, then each measures probe_samples (5) calls, not 100 again.
        policy = Gradient(max=8, seed=2, probe_interval=1.0)
        down = Downstream(policy, lambda n: S, sigma=0.5, seed=9)
        lengths: list[int] = []  # calls that ended during each probe
        ended = 0
        for _ in range(40000):
            down.run(1)
            if probing(policy):
                ended += 1
            elif ended:
                lengths.append(ended)
                ended = 0
        assert len(lengths) >= 6
        assert lengths[0] >= 60  # the first probe, at sigma 0.5
        later = lengths[2:]  # each also counts the calls it waited for
        assert statistics.median(later) <= 15  # 5 calls, and up to 8 older
        assert max(later) <= 30  # at worst, one that disagreed: 20 calls

    def test_calls_started_before_a_probe_do_not_count_in_it(self) -> None:
        clock, policy = Clock(), Gradient(initial=16, seed=1)
        clock.window(policy, 16, 5 * S, peak=16)
        assert probing(policy)
        # Calls that started under the old concurrency end slow: ignored.
        for _ in range(30):
            policy.on_sample(clock.now + 0.001, 5 * S, 16, False)
        assert probing(policy)
        assert policy.latency_no_load is None

    def test_the_estimate_is_the_typical_latency_of_a_pool(self) -> None:
        clock, policy = Clock(), Gradient(initial=16, seed=1)
        clock.window(policy, 16, S, peak=16)
        clock.now += 1.0
        # Two freak calls, one fast and one slow, among 20: the middle 80%.
        for latency in [0.0001, 10 * S] + [S] * 18:
            clock.now += 0.001
            policy.on_sample(clock.now, latency, 1, False)
        assert policy.latency_no_load == pytest.approx(S)

    def test_later_probes_join_the_pool(self) -> None:
        clock, policy = self.probed(probe_interval=5.0)
        for _ in range(5):  # five probes of 5 calls, each within the noise
            while not probing(policy):  # 4 in flight: neither quiet nor busy
                clock.feed(policy, 1, S, in_flight=4, step=0.01)
            clock.now += 1.0
            clock.feed(policy, 5, 1.1 * S, in_flight=1)
            assert not probing(policy)
        # 20 calls at S, then 25 at 1.1 S: the pool's typical latency moved
        # most of the way (its middle 23 calls: 9 at S, 14 at 1.1 S).
        assert policy.latency_no_load == pytest.approx(S * 1.1 ** (14 / 23))

    def test_a_probe_that_disagrees_is_extended_and_may_replace_the_pool(
        self,
    ) -> None:
        clock, policy = self.probed(probe_interval=5.0)
        while not probing(policy):
            clock.feed(policy, 1, S, in_flight=4, step=0.01)
        clock.now += 1.0
        # The downstream got slower for good: 5 calls are not enough to say so.
        clock.feed(policy, 5, 3 * S, in_flight=1)
        assert probing(policy)
        assert policy.latency_no_load == pytest.approx(S)
        clock.feed(policy, 15, 3 * S, in_flight=1)
        assert not probing(policy)
        assert policy.latency_no_load == pytest.approx(3 * S)
        assert policy.limit == 16  # the probe does not move the limit

    def test_a_quiet_window_is_a_probe_in_itself(self) -> None:
        clock, policy = Clock(), Gradient(initial=8, seed=1)
        clock.window(policy, 10, S, peak=2)
        assert not probing(policy)
        assert policy.latency_no_load is None  # 10 calls: too few to name it
        clock.now += S
        clock.window(policy, 10, S, peak=2)
        assert not probing(policy)
        assert policy.latency_no_load == pytest.approx(S)

    def test_load_never_ratchets_the_no_load_estimate_up(self) -> None:
        clock, policy = self.probed(probe_interval=1000.0)
        # A long spell of calls 1.2x slower (tolerated, so the limit holds).
        clock.feed(policy, 5000, 1.2 * S, in_flight=policy.max)
        assert policy.latency_no_load == pytest.approx(S)
        assert policy.latency_short == pytest.approx(1.2 * S)

    def test_probes_are_jittered(self) -> None:
        def first_reprobe(seed: int) -> float:
            clock = Clock()
            policy = Gradient(initial=8, seed=seed, probe_interval=5.0)
            clock.window(policy, 10, S, peak=8)
            clock.now += S
            clock.feed(policy, 20, S, in_flight=1)
            start = clock.now
            while not probing(policy):
                clock.feed(policy, 1, S, in_flight=4, step=0.01)
            return clock.now - start

        delays = {round(first_reprobe(seed), 1) for seed in range(5)}
        # 5 s plus up to half of it, seen at the end of a window (0.1 s here)
        assert all(5.0 <= d <= 7.7 for d in delays)
        assert len(delays) > 1  # jittered: not every policy probes together

    def test_probe_limit_is_raised_to_the_floor(self) -> None:
        clock, policy = Clock(), Gradient(min=4, initial=16, seed=1)
        clock.window(policy, 16, S, peak=16)
        assert probing(policy)
        assert policy.limit == 4


class TestAIMD:
    def test_grows_increase_per_window_while_busy(self) -> None:
        clock = Clock()
        policy = AIMD(initial=10, max=100, latency_threshold=2 * S, increase=2)
        clock.window(policy, 10, S)  # one window of 10 calls at limit 10
        assert policy.limit == 12
        assert clock.feed(policy, 1000, S) > 30

    def test_does_not_grow_with_fewer_than_half_in_use(self) -> None:
        clock, policy = Clock(), AIMD(initial=10, latency_threshold=2 * S)
        assert clock.feed(policy, 1000, S, in_flight=4) == 10
        assert clock.feed(policy, 30, S, in_flight=5) == 11  # exactly half: grows

    def test_latency_over_half_the_threshold_stops_the_growth(self) -> None:
        # 1.2 S under a threshold of 1.25 S: over 1.25 S / sqrt(1.25).
        clock, policy = Clock(), AIMD(initial=10, latency_threshold=1.25 * S)
        assert clock.feed(policy, 1000, 1.2 * S) == 10
        assert clock.feed(policy, 100, S) > 10

    def test_one_slow_call_in_a_window_is_no_drop(self) -> None:
        # The noise the old per-call threshold read as overload.
        clock, policy = Clock(), AIMD(initial=10, latency_threshold=1.25 * S)
        for latency in [3 * S] + [S] * 9:
            clock.now += S / 10
            policy.on_sample(clock.now, latency, 10 if latency > S else 1, False)
        assert policy.limit == 11

    def test_a_window_over_the_threshold_backs_off_once(self) -> None:
        clock = Clock()
        policy = AIMD(initial=20, backoff=0.5, latency_threshold=0.05)
        clock.window(policy, 20, 0.1, peak=20, step=0.001)
        assert policy.limit == 10
        # The other calls of that round started before the decrease: ignored.
        for _ in range(19):
            assert policy.on_sample(clock.now, 0.1, 20, False) == 10
        # A window of calls started after it, still slow: the next decrease.
        clock.now += 0.2
        clock.window(policy, 10, 0.1, peak=10, step=0.001)
        assert policy.limit == 5

    def test_a_drop_backs_off_by_at_least_one_and_the_floor_holds(self) -> None:
        clock, policy = Clock(), AIMD(min=3, initial=8, backoff=0.9)
        clock.now += 1.0
        policy.on_sample(clock.now, S, 8, True)
        assert policy.limit == 7  # 8 * 0.9 = 7.2: one slot at least
        for _ in range(10):
            clock.now += 1.0
            policy.on_sample(clock.now, S, 8, True)
        assert policy.limit == 3
        assert policy.drop_on == (TimeoutError,)

    def test_leaves_the_floor_when_latency_recovers(self) -> None:
        clock, policy = Clock(), AIMD(min=1, initial=16, latency_threshold=0.05)
        for _ in range(40):
            clock.now += 1.0
            clock.feed(policy, 10, 0.5, step=0.001)
        assert policy.limit == 1
        clock.now += 1.0
        assert clock.feed(policy, 300, S) >= 8

    def test_without_a_threshold_it_measures_and_a_slowdown_lowers_it(
        self,
    ) -> None:
        # AIMD() reads latency too: a downstream that just slows lowers it.
        capacity = [32]
        policy = AIMD(max=32, seed=4)
        down = Downstream(policy, thrashing(lambda: capacity[0]), seed=4)
        down.run(2000)
        assert policy.latency_no_load == pytest.approx(S)
        assert policy.limit >= 28
        capacity[0] = 4
        down.run(1500)
        assert policy.limit <= 5

    def test_a_backoff_right_after_a_growth_waits_before_trying_again(
        self,
    ) -> None:
        # At capacity 4, the growth to 5 slows calls by half: back to 4, and
        # stay there for eight windows rather than try 5 every other window.
        policy = AIMD(max=8, initial=4, latency_threshold=1.25 * S)
        down = Downstream(policy, thrashing(lambda: 4))
        down.run(3000)
        late = down.limits[-2000:]
        assert statistics.mean(late) < 4.3
        assert min(late) == 4

    def test_latency_short_is_the_typical_latency_of_the_last_window(self) -> None:
        clock, policy = Clock(), AIMD(latency_threshold=1.0, initial=10)
        assert policy.latency_short is None
        clock.window(policy, 10, 0.1)
        assert policy.latency_short == pytest.approx(0.1)
        assert policy.latency_no_load is None  # the threshold was named

    def test_drop_on_names_more_error_classes(self) -> None:
        class Busy(Exception):
            pass

        assert AIMD(drop_on=(Busy,)).drop_on == (TimeoutError, Busy)


class TestGradient:
    def probed(self, **kwargs: object) -> tuple[Clock, Gradient]:
        return TestNoLoadLatency().probed(**kwargs)

    def test_grows_while_latency_stays_near_no_load(self) -> None:
        clock, policy = self.probed()
        assert clock.window(policy, 16, S) == 17
        assert clock.feed(policy, 400, 1.1 * S) > 30  # 1, 2, 4... per window

    def test_latency_over_half_the_tolerance_stops_the_growth(self) -> None:
        # 1.2x no-load: more than sqrt(1.25) (halfway), less than 1.25.
        clock, policy = self.probed(probe_interval=1000.0)
        assert clock.feed(policy, 1000, 1.2 * S) == 16

    def test_does_not_grow_with_fewer_than_half_in_use(self) -> None:
        clock, policy = self.probed()
        assert clock.feed(policy, 500, S, in_flight=7) == 16

    def test_a_slowdown_cuts_to_halfway_by_the_latency_ratio(self) -> None:
        clock, policy = self.probed(probe_interval=1000.0)
        clock.now += 1.0
        clock.window(policy, 16, 2 * S, step=0.001)
        # 16 * sqrt(1.25) / 2: where latency would be halfway (geometrically)
        # between no-load and the tolerance, if it grew with the calls.
        assert policy.limit == int(16 * math.sqrt(1.25) / 2)
        # The calls in flight at the decrease end slow too: no second cut.
        assert clock.feed(policy, 40, 2 * S, step=0.0001) == 8
        # Calls that started after it and are still slow: the next cut.
        clock.now += 1.0
        assert clock.window(policy, 10, 2 * S, step=0.001) == 4

    def test_a_cut_takes_at_most_three_quarters(self) -> None:
        clock, policy = self.probed(probe_interval=1000.0, initial=40, max=40)
        clock.now += 3.0
        clock.window(policy, 40, 100 * S, step=0.001)
        assert policy.limit == 10

    def test_a_growth_that_crossed_the_tolerance_is_stepped_back(self) -> None:
        # Capacity 12: the growth from 12 to 13 costs 1/6 more latency, 14
        # 1/3 (over 1.25): the limit steps back a sixth and holds there.
        policy = Gradient(max=32, initial=12, seed=6, probe_interval=1000.0)
        down = Downstream(policy, thrashing(lambda: 12))
        down.run(4000)
        late = settled(down.limits[-2500:])
        assert 11 <= statistics.mean(late) <= 13.5
        assert max(late) <= 14

    def test_past_the_level_last_cut_it_grows_faster(self) -> None:
        capacity = [4]
        policy = Gradient(max=64, initial=4, seed=1, probe_interval=1000.0)
        down = Downstream(policy, thrashing(lambda: capacity[0]))
        down.run(1500)
        assert policy.limit <= 5
        capacity[0] = 48
        calls = 0
        while policy.limit < 40:
            down.run(1)
            calls += 1
        # A window at limit L takes about 2 L calls (L to fill it, and the
        # L - 1 still running then): +1 a window from 5 to 40 would take
        # about 1,500 calls. Doubling steps (capped at a quarter) take less
        # than two thirds of it.
        assert calls < 1000

    def test_slow_at_the_probe_level_is_the_new_no_load(self) -> None:
        # Slow even with 1 call in flight: the downstream itself got slower,
        # so the limit grows again from there rather than stay at the floor.
        clock, policy = self.probed(min=1, probe_interval=1.0)
        for _ in range(30):
            clock.now += 1.0
            clock.feed(policy, 25, 10 * S, in_flight=1, step=0.01)
        assert policy.latency_no_load == pytest.approx(10 * S)
        clock.feed(policy, 200, 10 * S, step=0.01)
        assert policy.limit > 2

    def test_drops_are_not_read(self) -> None:
        clock, policy = self.probed()
        clock.window(policy, 16, S, dropped=True)
        assert policy.limit == 17


class TestPolicyChecks:
    @pytest.mark.parametrize(
        ("kwargs", "error", "name"),
        [
            ({"min": 0}, ValueError, "min"),
            ({"max": 1.5}, TypeError, "max"),
            ({"min": 5, "max": 4}, ValueError, "max"),
            ({"min": 5, "max": 10, "initial": 2}, ValueError, "initial"),
            ({"initial": True}, TypeError, "initial"),
            ({"tolerance": 1.0}, ValueError, "tolerance"),
            ({"tolerance": "2"}, TypeError, "tolerance"),
            ({"min_samples": 0}, ValueError, "min_samples"),
            ({"probe_interval": float("inf")}, ValueError, "probe_interval"),
            ({"jitter": -0.1}, ValueError, "jitter"),
            ({"jitter": float("inf")}, ValueError, "jitter"),
            ({"jitter": True}, TypeError, "jitter"),
            ({"probe_interval": 0}, ValueError, "probe_interval"),
            ({"probe_limit": 0}, ValueError, "probe_limit"),
            ({"probe_samples": 2.0}, TypeError, "probe_samples"),
            ({"seed": [1]}, TypeError, "seed"),
            ({"seed": 1.5}, TypeError, "seed"),
            ({"seed": "x"}, TypeError, "seed"),
            ({"seed": True}, TypeError, "seed"),
        ],
    )
    def test_checks_name_the_argument(
        self, kwargs: dict[str, object], error: type[Exception], name: str
    ) -> None:
        for policy in (AIMD, Gradient):
            with pytest.raises(error, match=rf"^{name} must"):
                policy(**kwargs)  # type: ignore[arg-type]

    def test_a_bad_seed_is_refused_at_construction_naming_seed(self) -> None:
        with pytest.raises(TypeError, match=r"^seed must be an int or None, got list"):
            Gradient(seed=[1])  # type: ignore[arg-type]
        assert Gradient(seed=0).probing is False
        assert Gradient(seed=None).probing is False

    @pytest.mark.parametrize(
        ("kwargs", "error", "name"),
        [
            ({"backoff": 1.0}, ValueError, "backoff"),
            ({"backoff": 0}, ValueError, "backoff"),
            ({"increase": -1}, ValueError, "increase"),
            ({"latency_threshold": "1"}, TypeError, "latency_threshold"),
            ({"drop_on": (ValueError, 3)}, TypeError, "drop_on"),
            ({"drop_on": ValueError}, TypeError, "drop_on"),
        ],
    )
    def test_aimd_checks(
        self, kwargs: dict[str, object], error: type[Exception], name: str
    ) -> None:
        with pytest.raises(error, match=rf"^{name} must"):
            AIMD(**kwargs)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        policy = Gradient()
        assert (policy.min, policy.max, policy.initial) == (1, 200, 20)
        assert policy.tolerance == AIMD().tolerance == 1.25
        assert AIMD(max=8).initial == 8
        assert AIMD(min=30).initial == 30
        assert AIMD().latency_threshold is None

    @pytest.mark.parametrize("make", [AIMD, Gradient], ids=["AIMD", "Gradient"])
    def test_the_documented_defaults(self, make: type[AIMD | Gradient]) -> None:
        policy = make()
        assert (policy.min, policy.max, policy.limit) == (1, 200, 20)
        assert (policy.min_samples, policy.tolerance) == (10, 1.25)
        assert (policy.probe_interval, policy.jitter) == (10.0, 0.5)
        assert (policy.probe_limit, policy.probe_samples) == (2, 5)

    def test_the_aimd_defaults(self) -> None:
        policy = AIMD()
        assert (policy.increase, policy.backoff) == (1.0, 0.9)
        assert policy.drop_on == (TimeoutError,)

    @pytest.mark.parametrize("make", [AIMD, Gradient], ids=["AIMD", "Gradient"])
    def test_the_smallest_values_are_taken(self, make: type[AIMD | Gradient]) -> None:
        policy = make(
            min=2, max=2, min_samples=1, probe_limit=1, probe_samples=1, jitter=0
        )
        assert (policy.limit, policy.min_samples, policy.jitter) == (2, 1, 0.0)
        assert (policy.probe_limit, policy.probe_samples) == (1, 1)

    def test_attach_caps_at_the_workers_and_only_once(self) -> None:
        policy = AIMD(initial=20)
        assert policy.attach(8) == 8
        assert policy.ceiling == 8
        with pytest.raises(RuntimeError) as raised:
            policy.attach(8)
        assert str(raised.value) == (
            f"{policy!r} already drives an executor's bound: give each "
            "executor its own policy instance"
        )

    @pytest.mark.parametrize("make", [AIMD, Gradient])
    def test_a_limit_of_one(self, make: type[AIMD | Gradient]) -> None:
        policy = make(max=1)
        assert (policy.min, policy.max, policy.limit) == (1, 1, 1)

    @pytest.mark.parametrize("make", [AIMD, Gradient])
    def test_a_zero_latency_reads_as_a_nanosecond(
        self, make: type[AIMD | Gradient]
    ) -> None:
        policy = make(initial=4)
        for _ in range(20):
            assert policy.on_sample(100.0, 0.0, 1, False) in (2, 4)


def test_deviations_are_scaled_for_the_middle_they_are_taken_from() -> None:
    # sqrt(n / (n - 1)): the typical value took a degree of freedom. The
    # typical value of 0, 1, 2, 5 is the mean of 1 and 2.
    scale = math.sqrt(4 / 3)
    assert _deviations([0.0, 1.0, 2.0, 5.0]) == [
        -1.5 * scale,
        -0.5 * scale,
        0.5 * scale,
        3.5 * scale,
    ]


def test_the_noise_is_the_median_absolute_deviation_over_0_6745() -> None:
    assert _sigma([0.6745, -1.349, 0.0]) == pytest.approx(1.0)
    assert _sigma([0.0, 0.0, 0.0, 2.698, -2.698]) == 0.0


def test_the_typical_value_is_the_mean_of_the_middle_half() -> None:
    assert _typical([7.0]) == 7.0
    assert _typical([1.0, 5.0]) == 3.0
    assert _typical([3.0, 1.0, 8.0]) == 4.0  # a quarter of three: none dropped
    assert _typical([4.0, 1.0, 3.0, 2.0]) == 2.5  # the lowest and highest go
    # Eight values: the two lowest and the two highest go.
    assert _typical([9.0, 0.0, 2.0, 3.0, 4.0, 5.0, -7.0, 100.0]) == 3.5
    # Seven values: one goes at each end (a quarter of 7 is 1.75).
    assert _typical([6.0, 1.0, 2.0, 3.0, 4.0, 5.0, 50.0]) == 4.0


def test_a_pause_of_under_a_quarter_of_a_window_is_not_read() -> None:
    # 12 calls of a window, 2 slowed a hundredfold by a pause: the typical
    # latency is that of the others.
    logs = [math.log(S)] * 10 + [math.log(100 * S)] * 2
    assert _typical(logs) == pytest.approx(math.log(S))


def test_the_typical_value_is_tighter_than_the_median() -> None:
    # Over many windows of 50 normal values, the mean of the middle half
    # spreads about 1.10 / sqrt(50), the median 1.25 / sqrt(50).
    rng = random.Random(5)
    typical, median = [], []
    for _ in range(2000):
        values = [rng.gauss(0.0, 1.0) for _ in range(50)]
        typical.append(_typical(values))
        median.append(statistics.median(values))
    assert statistics.pstdev(typical) < 0.93 * statistics.pstdev(median)


# -- each verdict at its edge, and what follows it, window by window -----------
#
# Latencies of 1 s, e s and e**2 s have exact logarithms (0, 1, 2), and so
# does a tolerance of e**2 (its square root is e): a window's latency can sit
# exactly on the edge of a verdict. A no-load latency of 1 s is log 0.

E2 = math.exp(2.0)


def at_one(
    make: type[AIMD | Gradient] = Gradient, **kwargs: object
) -> tuple[Clock, Any]:
    """A policy whose first probe measured a no-load latency of 1 s (for a
    Gradient; an AIMD is given its threshold instead), the clock past it."""
    clock = Clock()
    options: dict[str, object] = {"seed": 1, "probe_interval": 1000.0, **kwargs}
    policy = make(**options)  # type: ignore[arg-type]
    if isinstance(policy, Gradient):
        initial = policy.limit
        clock.window(policy, max(policy.min_samples, initial), 1.0, peak=initial)
        clock.now += 1.0
        clock.feed(policy, 20, 1.0, in_flight=1)
        assert (probing(policy), policy.limit) == (False, initial)
        assert policy.latency_no_load == 1.0
    clock.now += 1.0
    return clock, policy


def next_window(
    clock: Clock, policy: AIMD | Gradient, latency: float, peak: int | None = None
) -> int:
    """One window of calls started after the last change; the limit after it."""
    limit = policy.limit
    n = max(policy.min_samples, limit)
    clock.now += latency
    return clock.window(policy, n, latency, peak=limit if peak is None else peak)


class TestVerdictEdges:
    def test_gradient_at_the_tolerance_stays_and_at_its_root_grows(self) -> None:
        clock, policy = at_one(initial=16, tolerance=E2)
        assert next_window(clock, policy, E2) == 16  # rising, not over
        assert next_window(clock, policy, math.e) == 17  # not rising: grows

    def test_aimd_at_the_threshold_stays_and_at_its_root_grows(self) -> None:
        clock, policy = at_one(AIMD, initial=16, latency_threshold=1.0, tolerance=E2)
        assert next_window(clock, policy, 1.0) == 16  # rising, not over
        assert next_window(clock, policy, math.exp(-0.8)) == 16  # still rising
        assert next_window(clock, policy, 1 / math.e) == 17  # not rising: grows

    def test_gradient_after_a_cut_grows_by_one_to_the_level_then_doubles(
        self,
    ) -> None:
        clock, policy = at_one(initial=16, max=64)
        # 16 * sqrt(1.25) / 2: the latency twice the no-load one.
        assert next_window(clock, policy, 2.0) == 8
        limits = [next_window(clock, policy, 1.0) for _ in range(13)]
        # +1 a window up to 16, the level cut from; then 1, 2, 4... each
        # step at most a quarter of the limit.
        assert limits == [9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 23, 27, 32]
        assert next_window(clock, policy, 1.2) == 32  # rising: the steps restart
        assert next_window(clock, policy, 1.0) == 33

    def test_gradient_steps_stay_under_a_quarter_of_a_small_limit(self) -> None:
        clock, policy = at_one(initial=6)
        assert next_window(clock, policy, 2.0) == 3
        limits = [next_window(clock, policy, 1.0) for _ in range(5)]
        # Past 6, the step is 1, then a quarter of 6 (1.5), not 2.
        assert limits == [4, 5, 6, 7, 8]

    @pytest.mark.parametrize(("initial", "after"), [(12, 10), (5, 5)])
    def test_gradient_steps_back_a_sixth_two_windows_after_a_growth(
        self, initial: int, after: int
    ) -> None:
        clock, policy = at_one(initial=initial)
        assert next_window(clock, policy, 1.0) == initial + 1
        assert next_window(clock, policy, 1.2) == initial + 1  # rising: stays
        # The growth did it: back a sixth (at least one), not halfway.
        assert next_window(clock, policy, 2.0) == after
        # And it holds there 24 windows' worth of calls (24 times
        # max(min_samples, limit)) before growing.
        held = [next_window(clock, policy, 1.0) for _ in range(24)]
        assert held == [after] * 24
        assert next_window(clock, policy, 1.0) == after + 1

    def test_aimd_holds_after_a_drop_two_windows_after_a_growth(self) -> None:
        clock, policy = at_one(AIMD, initial=10, latency_threshold=1.0)
        assert next_window(clock, policy, 0.5) == 11
        assert next_window(clock, policy, 0.5, peak=4) == 11  # few in use
        assert next_window(clock, policy, 0.5, peak=4) == 11
        clock.now += 1.0
        assert clock.feed(policy, 1, 0.5, dropped=True) == 9  # 11 * 0.9
        # The growth did it: no growth for 24 windows' worth of calls.
        assert next_window(clock, policy, 0.5) == 9
        assert next_window(clock, policy, 0.5) == 9


class TestMoreEdges:
    def test_gradient_cuts_to_halfway_from_a_high_limit(self) -> None:
        clock, policy = at_one(initial=40, max=40)
        # 40 * sqrt(1.25) / 2 = 22.4
        assert next_window(clock, policy, 2.0) == 22

    def test_gradient_grows_with_exactly_half_in_use(self) -> None:
        clock, policy = at_one(initial=16)
        assert next_window(clock, policy, 1.0, peak=8) == 17
        assert next_window(clock, policy, 1.0, peak=8) == 17  # 8 of 17: under

    def test_no_growth_at_the_ceiling_is_no_growth(self) -> None:
        # Windows at the ceiling grow nothing: a cut three windows later is
        # no growth's doing, so it goes halfway, not back a sixth.
        clock, policy = at_one(initial=16, max=16)
        for _ in range(3):
            assert next_window(clock, policy, 1.0) == 16
        assert next_window(clock, policy, 2.0) == 8

    def test_a_plain_overload_at_the_floor_changes_nothing_and_goes_on(
        self,
    ) -> None:
        clock, policy = at_one(AIMD, initial=1, latency_threshold=1.0)
        clock.now += 10.0
        assert clock.feed(policy, 5, 3.0, in_flight=1, step=1e-3) == 1
        clock.now += 10.0
        assert clock.feed(policy, 40, 0.5, in_flight=1, step=1e-3) > 1

    def test_a_probe_that_disagrees_carries_on_through_its_extension(
        self,
    ) -> None:
        clock, policy = at_one(initial=16, probe_interval=1.0, jitter=0.0)
        clock.now += 2.0
        next_window(clock, policy, 1.0)  # its end starts the next probe
        assert probing(policy)
        clock.now += 3.0
        clock.feed(policy, 5, 3.0, in_flight=1, step=1e-3)  # 3x the pool
        assert probing(policy)  # not believed yet: measured again
        clock.feed(policy, 14, 3.0, in_flight=2, step=1e-3)
        clock.feed(policy, 1, 3.0, in_flight=2, step=1e-3)  # one still runs
        clock.feed(policy, 1, 1e-3, in_flight=2, step=1e-3)  # the next cohort
        clock.feed(policy, 1, 3.0, in_flight=1, step=1e-3)  # it ends
        assert not probing(policy)
        assert policy.latency_no_load == pytest.approx(3.0)  # the pool replaced


class TestCarriedCalls:
    """A window that changes nothing hands the calls that started after it
    filled up to the next window; a window that changes the limit does not
    (they ran under the old one)."""

    def stay_then_over(
        self, clock: Clock, policy: AIMD | Gradient, latency: float, peak: int
    ) -> int:
        """A window at *latency* (3 calls still running when it filled, and 3
        of the next cohort ending before them), then calls over the
        tolerance: the limit once enough for a window have ended with the
        3 carried ones (fast ones: fewer than a quarter of a window of 16,
        they fall outside its middle half)."""
        limit = policy.limit
        n = max(policy.min_samples, limit)
        clock.now += latency
        clock.feed(policy, n - 1, latency, in_flight=peak, step=0.001)
        clock.feed(policy, 1, latency, in_flight=4, step=0.001)  # 3 still run
        assert policy.limit == limit  # the window is not closed yet
        clock.feed(policy, 3, 0.001, in_flight=8, step=0.001)  # the next cohort
        clock.feed(policy, 3, latency, in_flight=8, step=0.001)  # the 3 end
        assert policy.limit == limit  # it stayed
        clock.now += 2.0
        clock.feed(policy, n - 4, 1.5, in_flight=limit, step=0.001)
        return clock.feed(policy, 1, 1.5, in_flight=1, step=0.001)

    @pytest.mark.parametrize("why", ["few in use", "rising", "held"])
    def test_aimd(self, why: str) -> None:
        clock, policy = at_one(AIMD, initial=10, latency_threshold=1.0, min_samples=16)
        if why == "held":
            assert next_window(clock, policy, 0.5) == 11
            clock.now += 1.0
            assert clock.feed(policy, 1, 0.5, dropped=True) == 9
        limit = policy.limit
        latency = math.exp(-0.05) if why == "rising" else 0.5
        peak = 4 if why == "few in use" else limit
        # Over the threshold once the 3 carried calls and n - 3 more ended.
        assert self.stay_then_over(clock, policy, latency, peak) < limit

    @pytest.mark.parametrize("why", ["few in use", "rising", "held"])
    def test_gradient(self, why: str) -> None:
        clock, policy = at_one(initial=16, min_samples=16)
        if why == "held":
            assert next_window(clock, policy, 1.0) == 17
            assert next_window(clock, policy, 1.5) == 14  # back a sixth, held
        limit = policy.limit
        latency = 1.2 if why == "rising" else 1.0
        peak = 4 if why == "few in use" else limit
        assert self.stay_then_over(clock, policy, latency, peak) < limit


class TestNoLoadPool:
    def test_it_keeps_the_last_200_calls(self) -> None:
        # Windows with one call in flight are probes in themselves: 200 calls
        # of 1 s, then 200 of 1.1 s (within the tolerance: they join).
        clock, policy = at_one(initial=10)
        clock.feed(policy, 180, 1.0, in_flight=1, step=0.5)
        assert policy.latency_no_load == 1.0
        clock.feed(policy, 200, 1.1, in_flight=1, step=0.5)
        assert policy.latency_no_load == pytest.approx(1.1)

    def test_a_probe_is_believed_within_three_standard_errors(self) -> None:
        policy = Gradient(seed=1)
        policy._sigma = 0.5
        policy._probing = True
        assert policy._absorb([0.0] * 100)
        assert policy.latency_no_load == 1.0
        # 5 calls against a pool of 100 at a noise of 0.5: 3 standard errors
        # of their difference are 3 * 1.2533 * 0.5 * sqrt(1/5 + 1/100), 0.862.
        assert policy._absorb([0.85] * 5)
        assert not policy._absorb([0.87] * 5)
        assert policy._needed() == 20  # measured again, on 20 calls

    def test_far_over_is_twice_the_tolerated_latency(self) -> None:
        # No-load 1 s, tolerated 1.25 s: five calls of 2 s in a row are no
        # plain overload, five of 3 s are (over 2.5 s).
        clock, policy = at_one(initial=16, min_samples=50)
        clock.now += 3.0
        assert clock.feed(policy, 5, 2.0, step=1e-3) == 16
        clock.feed(policy, 5, 3.0, step=1e-3)
        assert policy.limit < 16

    def test_a_probe_comes_when_its_time_is_reached(self) -> None:
        clock, policy = at_one(initial=16, probe_interval=1.0, jitter=0.0)
        due = policy._next_probe  # 1 s after the first probe ended
        clock.now = due - 0.5
        clock.feed(policy, 15, 0.25, in_flight=16, step=0.0)
        assert not probing(policy)
        clock.now = due  # the window ends exactly then
        clock.feed(policy, 1, 0.25, in_flight=1, step=0.0)
        assert probing(policy)


class TestNoiseMeasure:
    def test_a_window_of_five_calls_measures_the_noise(self) -> None:
        clock, policy = at_one(AIMD, initial=5, min_samples=5, latency_threshold=10.0)
        for latency in (0.5, 1.0, 2.0, 1.0, 0.5):
            clock.feed(policy, 1, latency, in_flight=5 if latency != 0.5 else 1)
        assert policy._needed() > 100  # a spread of about 1.15

    def test_a_first_probe_at_a_noise_of_0_2_takes_about_45_calls(self) -> None:
        policy = Gradient(seed=1)
        policy._sigma = 0.2
        policy._probing = True
        # 6 standard errors of the median within ln 1.25: (1.2533 * 0.2 * 6
        # / 0.2231) ** 2 calls.
        assert policy._needed() == 46

    def test_after_a_small_backoff_a_half_increase_waits_a_window(self) -> None:
        clock, policy = at_one(
            AIMD, initial=10, latency_threshold=1.0, backoff=0.95, increase=0.5
        )
        assert clock.feed(policy, 1, 0.5, dropped=True) == 9  # at least one off
        assert next_window(clock, policy, 0.5) == 9  # 9.5
        assert next_window(clock, policy, 0.5) == 10

    def test_a_window_spread_under_a_third_starts_the_measure_over(self) -> None:
        policy = Gradient(seed=1)
        policy._sigma = 0.9
        # Their own noise: 0.27 / 0.6745 * 0.6745 = 0.27 (under 0.3, over 0.225).
        d = 0.27 * 0.6745 / math.sqrt(32 / 31)
        samples = [d, -d] * 16
        policy._recheck_noise(samples)
        assert policy._sigma == pytest.approx(0.27)
        policy._sigma = 0.8
        policy._recheck_noise(samples)  # 0.27 is over a third of 0.8: kept
        assert policy._sigma == 0.8
