"""Limit policies, sample by sample on a fake clock (no loop, no threads)."""

from __future__ import annotations

import pytest

from aiobound import AIMD, Gradient, LimitPolicy

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


class TestAIMD:
    def test_grows_about_increase_per_round_when_busy(self) -> None:
        clock, policy = Clock(), AIMD(initial=10, max=100)
        clock.feed(policy, 10, S)  # one round: 10 calls at limit 10
        assert policy.limit == 10  # 10 + 1/10 + 1/10.1 + ... just short of 11
        clock.feed(policy, 1, S)
        assert policy.limit == 11
        assert clock.feed(policy, 200, S) > 20

    def test_does_not_grow_with_fewer_than_half_in_use(self) -> None:
        clock, policy = Clock(), AIMD(initial=10)
        assert clock.feed(policy, 1000, S, in_flight=4) == 10
        assert clock.feed(policy, 10, S, in_flight=5) == 10  # exactly half: grows
        assert policy._limit > 10.0

    def test_latency_over_threshold_backs_off_once_per_round(self) -> None:
        clock, policy = Clock(), AIMD(initial=20, backoff=0.5, latency_threshold=0.05)
        policy.on_sample(clock.now, 0.1, 20, False)
        assert policy.limit == 10
        # The other calls of that round started before the decrease: ignored.
        clock.now += 0.01
        for _ in range(19):
            assert policy.on_sample(clock.now, 0.1, 20, False) == 10
        # A call started after the decrease and still slow: the next decrease.
        clock.now += 0.2
        assert policy.on_sample(clock.now, 0.1, 10, False) == 5

    def test_a_drop_backs_off_and_the_floor_holds(self) -> None:
        clock, policy = Clock(), AIMD(min=3, initial=8, backoff=0.5)
        for _ in range(10):
            clock.now += 1.0
            policy.on_sample(clock.now, S, 8, True)
        assert policy.limit == 3
        assert policy.drop_on == (TimeoutError,)

    def test_leaves_the_floor_when_latency_recovers(self) -> None:
        clock, policy = Clock(), AIMD(min=1, initial=16, latency_threshold=0.05)
        for _ in range(40):
            clock.now += 1.0
            policy.on_sample(clock.now, 0.5, 16, False)
        assert policy.limit == 1
        assert clock.feed(policy, 100, S) >= 8

    def test_latency_short_is_a_weighted_mean(self) -> None:
        clock, policy = Clock(), AIMD()
        assert policy.latency_short is None
        clock.feed(policy, 1, 0.1)
        assert policy.latency_short == pytest.approx(0.1)
        clock.feed(policy, 1, 0.2)
        assert policy.latency_short == pytest.approx(0.11)
        assert policy.latency_no_load is None

    def test_drop_on_names_more_error_classes(self) -> None:
        class Busy(Exception):
            pass

        assert AIMD(drop_on=(Busy,)).drop_on == (TimeoutError, Busy)


class TestGradient:
    def probed(self, **kwargs: object) -> tuple[Clock, Gradient]:
        """A policy whose first probe measured a no-load latency of S."""
        clock = Clock()
        options: dict[str, object] = {"initial": 16, "seed": 1, **kwargs}
        policy = Gradient(**options)  # type: ignore[arg-type]
        clock.feed(policy, 16, S, in_flight=16)  # the first window: a probe
        assert (policy.probing, policy.limit) == (True, 2)
        clock.now += S  # the probe's calls start after it began
        clock.feed(policy, 5, S, in_flight=2)
        assert (policy.probing, policy.limit) == (False, 16)
        assert policy.latency_no_load == pytest.approx(S)
        return clock, policy

    def test_the_first_window_probes_then_restores_the_limit(self) -> None:
        _, policy = self.probed()
        assert policy.limit == 16  # back where it was, not at a floor

    def test_calls_started_before_a_probe_do_not_count_in_it(self) -> None:
        clock, policy = Clock(), Gradient(initial=16, seed=1)
        clock.feed(policy, 16, 5 * S, in_flight=16)
        assert policy.probing
        # Calls that started under the old concurrency end slow: ignored.
        for _ in range(14):
            policy.on_sample(clock.now + 0.001, 5 * S, 16, False)
        assert policy.probing
        assert policy.latency_no_load is None

    def test_grows_while_latency_stays_near_no_load(self) -> None:
        clock, policy = self.probed()
        assert clock.feed(policy, 16, S) == 17  # + 1 per window
        assert clock.feed(policy, 200, 1.2 * S) > 24

    def test_does_not_grow_with_fewer_than_half_in_use(self) -> None:
        clock, policy = self.probed()
        assert clock.feed(policy, 500, S, in_flight=7) == 16

    def test_shrinks_by_the_latency_ratio_once_per_round(self) -> None:
        clock, policy = self.probed(tolerance=1.5)
        clock.feed(policy, 16, 3 * S, step=0.001)
        assert policy.limit == 8  # 16 * max(0.5, 1.5 * S / (3 * S))
        # The calls in flight at the decrease end slow too: no second cut.
        assert clock.feed(policy, 40, 3 * S, step=0.0001) == 8
        # Calls that started after it and are still slow: the next cut.
        clock.now += 1.0
        assert clock.feed(policy, 10, 3 * S, step=0.001) == 4

    def test_leaves_the_floor_when_latency_recovers(self) -> None:
        clock, policy = self.probed(min=2, probe_limit=1, probe_interval=1000.0)
        for _ in range(10):
            clock.now += 1.0
            clock.feed(policy, 10, 10 * S, step=0.001)
        assert policy.limit == 2
        assert policy.latency_no_load == pytest.approx(S)
        clock.now += 1.0
        assert clock.feed(policy, 300, S) >= 16

    def test_slow_at_the_probe_level_is_the_new_no_load(self) -> None:
        # Slow even with 2 calls in flight: the downstream itself got slower,
        # so the limit grows again from there rather than stay at 2.
        clock, policy = self.probed(min=1, probe_interval=1000.0)
        for _ in range(10):
            clock.now += 1.0
            clock.feed(policy, 10, 10 * S, step=0.001)
        assert policy.latency_no_load == pytest.approx(10 * S)
        assert policy.limit > 2

    def test_load_never_ratchets_the_no_load_estimate_up(self) -> None:
        clock, policy = self.probed(probe_interval=1000.0)
        # A long spell of calls 1.4x slower (tolerated, so the limit holds).
        clock.feed(policy, 5000, 1.4 * S, in_flight=policy.max)
        assert policy.latency_no_load == pytest.approx(S)
        assert policy.latency_short == pytest.approx(1.4 * S)

    def test_one_fast_call_does_not_fix_the_estimate(self) -> None:
        clock, policy = Clock(), Gradient(initial=16, seed=1, probe_interval=5.0)
        clock.feed(policy, 16, S, in_flight=16)
        clock.now += S
        for latency in (0.0001, S, S, S, S):  # one freak fast call
            clock.now += 0.001
            policy.on_sample(clock.now, latency, 2, False)
        assert policy.latency_no_load == pytest.approx(S)  # the median

    def test_the_estimate_is_reprobed_with_jitter_and_may_rise(self) -> None:
        def next_probe(seed: int) -> float:
            clock, policy = Clock(), Gradient(initial=8, seed=seed, probe_interval=5.0)
            clock.feed(policy, 10, S, in_flight=8)
            clock.now += S
            clock.feed(policy, 5, S, in_flight=2)
            start = clock.now
            while not policy.probing:
                clock.feed(policy, 1, 1.2 * S, in_flight=8, step=0.01)
            # The downstream got slower for good: the probe learns it.
            clock.now += 1.0
            clock.feed(policy, 5, 1.2 * S, in_flight=2)
            assert policy.latency_no_load == pytest.approx(1.2 * S)
            assert policy.limit >= 8
            return clock.now - 1.0 - start

        delays = {round(next_probe(seed), 2) for seed in range(5)}
        assert all(5.0 <= d <= 7.6 for d in delays)
        assert len(delays) > 1  # jittered: not every policy probes together

    def test_a_quiet_window_is_a_probe_in_itself(self) -> None:
        clock, policy = Clock(), Gradient(initial=8, seed=1)
        clock.feed(policy, 10, S, in_flight=2)
        assert not policy.probing
        assert policy.latency_no_load == pytest.approx(S)

    def test_probe_limit_is_raised_to_the_floor(self) -> None:
        clock, policy = Clock(), Gradient(min=4, initial=16, seed=1)
        clock.feed(policy, 16, S, in_flight=16)
        assert policy.probing
        assert policy.limit == 4


class TestPolicyChecks:
    @pytest.mark.parametrize(
        ("kwargs", "error", "name"),
        [
            ({"min": 0}, ValueError, "min"),
            ({"max": 1.5}, TypeError, "max"),
            ({"min": 5, "max": 4}, ValueError, "max"),
            ({"min": 5, "max": 10, "initial": 2}, ValueError, "initial"),
            ({"initial": True}, TypeError, "initial"),
        ],
    )
    def test_range_checks_name_the_argument(
        self, kwargs: dict[str, object], error: type[Exception], name: str
    ) -> None:
        for policy in (AIMD, Gradient):
            with pytest.raises(error, match=name):
                policy(**kwargs)  # type: ignore[arg-type]

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
        with pytest.raises(error, match=name):
            AIMD(**kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("kwargs", "error", "name"),
        [
            ({"tolerance": 0.9}, ValueError, "tolerance"),
            ({"min_samples": 0}, ValueError, "min_samples"),
            ({"probe_interval": float("inf")}, ValueError, "probe_interval"),
            ({"jitter": -0.1}, ValueError, "jitter"),
            ({"probe_limit": 0}, ValueError, "probe_limit"),
            ({"probe_samples": 2.0}, TypeError, "probe_samples"),
            ({"seed": [1]}, TypeError, "seed"),
            ({"seed": 1.5}, TypeError, "seed"),
            ({"seed": "x"}, TypeError, "seed"),
            ({"seed": True}, TypeError, "seed"),
        ],
    )
    def test_gradient_checks(
        self, kwargs: dict[str, object], error: type[Exception], name: str
    ) -> None:
        with pytest.raises(error, match=name):
            Gradient(**kwargs)  # type: ignore[arg-type]

    def test_a_bad_seed_is_refused_at_construction_naming_seed(self) -> None:
        with pytest.raises(TypeError, match=r"^seed must be an int or None, got list"):
            Gradient(seed=[1])  # type: ignore[arg-type]
        assert Gradient(seed=0).probing is False
        assert Gradient(seed=None).probing is False

    def test_defaults(self) -> None:
        policy = Gradient()
        assert (policy.min, policy.max, policy.initial) == (1, 200, 20)
        assert AIMD(max=8).initial == 8
        assert AIMD(min=30).initial == 30

    def test_attach_caps_at_the_workers_and_only_once(self) -> None:
        policy = AIMD(initial=20)
        assert policy.attach(8) == 8
        assert policy.ceiling == 8
        with pytest.raises(RuntimeError, match="its own policy"):
            policy.attach(8)
