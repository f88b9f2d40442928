"""Generated schedules under a limit policy: the bound moves on every call's end.

Hypothesis drives an executor whose ``bound=`` is a policy, through
submissions, completions, failures (timeouts count as drops), cancellations
(waiting and submitted) and close, on a :class:`ManualExecutor`, and checks
after every step: never more calls in the pool than the bound at their
admission, calls handed over in arrival order, the policy's limit is the
gate's bound and within its floor and ceiling, and every submitted call
accounted for exactly once. The policy is one that answers the limits
hypothesis picks, or a real ``AIMD`` or ``Gradient`` with windows of one call
(so that every end can move the limit, probes included). Profiles as in
``test_stateful.py`` (``nox -s stress`` runs many more).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiobound import AIMD, BoundedLoopExecutor, ClosedError, Gradient, LimitPolicy
from conftest import ManualExecutor, new_uvloop

STRESS = os.environ.get("AIOBOUND_HYPOTHESIS_PROFILE") == "stress"
SETTINGS = settings(
    max_examples=1000 if STRESS else 40,
    stateful_step_count=40 if STRESS else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Chosen(LimitPolicy):
    """Answers, at each sample, the next limit hypothesis queued (or keeps)."""

    def __init__(self) -> None:
        super().__init__(1, 6, 2)
        self.answers: list[int] = []
        self.samples = 0

    @property
    def latency_short(self) -> float | None:
        return None

    def on_sample(
        self, now: float, latency: float, in_flight: int, dropped: bool
    ) -> int:
        self.samples += 1
        if self.answers:
            self._set(self.answers.pop(0))
        return self.limit


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def real_aimd() -> LimitPolicy:
    return AIMD(min=1, max=6, initial=2, min_samples=1, probe_samples=1, seed=1)


def real_gradient() -> LimitPolicy:
    return Gradient(min=1, max=6, initial=3, min_samples=1, probe_samples=1, seed=1)


class AdaptiveMachine(RuleBasedStateMachine):
    loop_factory: Any = asyncio.new_event_loop
    make_policy: Any = Chosen

    def __init__(self) -> None:
        super().__init__()
        self.loop = type(self).loop_factory()
        self.policy = type(self).make_policy()
        self.manual = ManualExecutor(cap=lambda: self.executor.bound)
        self.executor = BoundedLoopExecutor(executor=self.manual, bound=self.policy)
        self.tasks: list[asyncio.Task[Any]] = []
        self.next_tag = 0
        self.closing: asyncio.Task[None] | None = None

    def step(self) -> None:
        self.loop.run_until_complete(_settle())

    def pending(self) -> list[int]:
        return sorted(t for t in self.manual.pending if isinstance(t, int))

    @rule(n=st.integers(1, 4))
    def arrive(self, n: int) -> None:
        async def call(tag: int) -> Any:
            future = await self.executor.submit(abs, tag)
            return await future

        for _ in range(n):
            self.tasks.append(self.loop.create_task(call(self.next_tag)))
            self.next_tag += 1
        self.step()

    @precondition(lambda self: isinstance(self.policy, Chosen))
    @rule(limits=st.lists(st.integers(1, 6), min_size=1, max_size=3))
    def choose_limits(self, limits: list[int]) -> None:
        assert isinstance(self.policy, Chosen)
        self.policy.answers.extend(limits)

    @precondition(lambda self: self.manual.pending)
    @rule(data=st.data(), how=st.sampled_from(["ok", "timeout", "error", "cancel"]))
    def end_a_call(self, data: st.DataObject, how: str) -> None:
        tag = data.draw(st.sampled_from(self.pending()))
        future = self.manual.by_tag[tag]
        if how == "ok":
            future.set_result(tag)
        elif how == "timeout":
            future.set_exception(TimeoutError())
        elif how == "error":
            future.set_exception(ValueError())
        else:
            future.cancel()
        self.step()

    @precondition(lambda self: any(not t.done() for t in self.tasks))
    @rule(data=st.data())
    def cancel_a_caller(self, data: st.DataObject) -> None:
        live = [t for t in self.tasks if not t.done()]
        data.draw(st.sampled_from(live)).cancel()
        self.step()

    @precondition(lambda self: self.closing is None)
    @rule()
    def close(self) -> None:
        self.closing = self.loop.create_task(self.executor.aclose())
        self.step()

    @invariant()
    def never_over_the_bound_at_admission(self) -> None:
        assert self.manual.violations == []

    @invariant()
    def handed_over_in_arrival_order(self) -> None:
        log = [tag for tag in self.manual.submit_log if isinstance(tag, int)]
        assert log == self.manual.submit_log
        assert log == sorted(log)

    @invariant()
    def the_bound_is_the_policys_limit(self) -> None:
        policy = self.policy
        if not self.executor.closed:
            assert self.executor.bound == policy.limit
        assert policy.min <= policy.limit <= policy.ceiling

    @invariant()
    def every_call_accounted_for(self) -> None:
        stats = self.executor.stats()
        running = len(self.manual.pending)
        assert stats.submitted == (
            stats.completed + stats.failed + stats.cancelled + running
        )
        assert stats.in_flight >= running
        assert stats.waiting <= sum(1 for t in self.tasks if not t.done())

    def teardown(self) -> None:
        for tag in self.pending():
            self.manual.by_tag[tag].set_result(tag)
        for task in self.tasks:
            task.cancel()

        async def drain() -> None:
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.executor.aclose()

        self.loop.run_until_complete(drain())
        stats = self.executor.stats()
        assert (stats.in_flight, stats.waiting) == (0, 0)
        assert stats.submitted == stats.completed + stats.failed + stats.cancelled
        for task in self.tasks:
            if not task.cancelled() and task.exception() is not None:
                error = task.exception()
                assert isinstance(error, (ClosedError, TimeoutError, ValueError)), error
        self.loop.close()


TestAdaptiveOnAsyncio = AdaptiveMachine.TestCase
TestAdaptiveOnAsyncio.settings = SETTINGS


class AIMDMachine(AdaptiveMachine):
    make_policy = real_aimd


class GradientMachine(AdaptiveMachine):
    make_policy = real_gradient


TestAIMDOnAsyncio = AIMDMachine.TestCase
TestAIMDOnAsyncio.settings = SETTINGS
TestGradientOnAsyncio = GradientMachine.TestCase
TestGradientOnAsyncio.settings = SETTINGS

if new_uvloop is not None:

    class UvloopAdaptive(AdaptiveMachine):
        loop_factory = new_uvloop

    class UvloopAIMD(AIMDMachine):
        loop_factory = new_uvloop

    class UvloopGradient(GradientMachine):
        loop_factory = new_uvloop

    TestAdaptiveOnUvloop = UvloopAdaptive.TestCase
    TestAdaptiveOnUvloop.settings = SETTINGS
    TestAIMDOnUvloop = UvloopAIMD.TestCase
    TestAIMDOnUvloop.settings = SETTINGS
    TestGradientOnUvloop = UvloopGradient.TestCase
    TestGradientOnUvloop.settings = SETTINGS
else:  # pragma: no cover - uvloop is in the test group
    pytestmark = pytest.mark.skip("uvloop missing")
