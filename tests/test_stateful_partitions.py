"""Generated schedules over partitions: shares of a fixed or adaptive bound.

Hypothesis drives an executor with three partitions (two declared, and the
``"default"`` one of calls made on the executor itself), a per-partition
``max_pending`` (the executor's, or the batch's own through a
:class:`~aiobound.Share`), optionally a borrowing ceiling on the batch
partition, and either a fixed bound it resizes or a limit policy whose
limits it picks, through submissions to each partition, completions,
failures, cancellations (waiting and submitted), resizes and close, on a
:class:`ManualExecutor`. After every step it checks: never more calls in the
pool than the bound at their admission, nor more calls of a partition than
its ceiling at theirs; FIFO within each partition; no slot idle while anyone
of a partition below its ceiling waits; each slot freed goes to the oldest
waiter of a partition below its guarantee, else to the oldest waiter of a
partition below its ceiling; each partition's guarantee is ``ceil(share x
bound)`` (at least 1) and its ceiling ``floor(max_share x bound)`` (at least
the guarantee); each partition's ``max_pending``; and every call accounted
for exactly once, per partition and in total.

An observer is added to some executors, before the first call or at a
step chosen by hypothesis (callers waiting, calls running). After every step
it must have been told exactly once of each call not yet handed over when it
came, as the machine expects: arrived in the call's partition, then refused
(with its reason) or handed over and, once it ended, ended with its outcome;
and per partition, since it came, calls arrived = handed over + refused +
still waiting, refusals by reason and endings by outcome equal to the
partition's counters in ``stats()``, calls handed over and not ended equal
to its ``in_flight``.
Profiles as in ``test_stateful.py`` (``nox -s stress`` runs many more).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiobound import (
    BoundedLoopExecutor,
    CallObserver,
    ClosedError,
    LimitPolicy,
    OverloadedError,
    Partition,
    Share,
)
from aiobound._partitions import ceiling_slots, guaranteed_slots
from conftest import ManualExecutor, new_uvloop

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiobound import PartitionStats

STRESS = os.environ.get("AIOBOUND_HYPOTHESIS_PROFILE") == "stress"
SETTINGS = settings(
    max_examples=1000 if STRESS else 30,
    stateful_step_count=40 if STRESS else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SHARES: dict[str, float | Share] = {"interactive": 0.5, "batch": 0.25}
# The batch capped at half the bound, with a waiting room of its own.
CAPPED: dict[str, float | Share] = {
    "interactive": 0.5,
    "batch": Share(0.25, max_share=0.5, max_pending=2),
}
NAMES = ("interactive", "batch", "default")
MAX_PENDING = 3


class Chosen(LimitPolicy):
    """Answers, at each sample, the next limit hypothesis queued (or keeps)."""

    def __init__(self) -> None:
        super().__init__(1, 6, 3)
        self.answers: list[int] = []

    @property
    def latency_short(self) -> float | None:
        return None

    def on_sample(
        self, now: float, latency: float, in_flight: int, dropped: bool
    ) -> int:
        if self.answers:
            self._set(self.answers.pop(0))
        return self.limit


# The tag of the call a task makes, set in the task's own context: the
# observer reads it in arrived_in (which runs in the caller's context).
TAG: contextvars.ContextVar[int] = contextvars.ContextVar("TAG")
OUTCOMES = ("completed", "failed", "cancelled")
REASONS = ("max_pending", "max_wait", "closed", "cancelled")


class Watching(CallObserver):
    """Records each call's life by its tag, and anything reported out of turn.

    The token of a call is its tag. ``errors`` lists every report that breaks
    a call's life (arrived, then refused once or handed over once and ended
    at most once).
    """

    def __init__(self) -> None:
        self.arrivals: dict[int, str] = {}  # tag -> partition
        self.handed: set[int] = set()
        self.refusals: dict[int, str] = {}  # tag -> reason
        self.endings: dict[int, str] = {}  # tag -> outcome
        self.errors: list[str] = []

    def arrived(self) -> object:
        self.errors.append(f"arrived() without a partition, tag {TAG.get(None)}")
        return None

    def arrived_in(self, partition: str) -> object:
        tag = TAG.get()
        if tag in self.arrivals:
            self.errors.append(f"{tag} arrived twice")
        self.arrivals[tag] = partition
        return tag

    def refused(self, token: object, reason: str, error: BaseException) -> None:
        assert isinstance(token, int)
        if token not in self.arrivals or token in self.handed:
            self.errors.append(f"{token} refused out of turn")
        if token in self.refusals:
            self.errors.append(f"{token} refused twice")
        self.refusals[token] = reason

    def handing_over(
        self,
        token: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        assert isinstance(token, int)
        if args != (token,):
            self.errors.append(f"{token} handed over with {args}")
        if token not in self.arrivals or token in self.refusals:
            self.errors.append(f"{token} handed over out of turn")
        if token in self.handed:
            self.errors.append(f"{token} handed over twice")
        self.handed.add(token)
        return fn, args, kwargs

    def ended(self, token: object, outcome: str, error: BaseException | None) -> None:
        assert isinstance(token, int)
        if token not in self.handed:
            self.errors.append(f"{token} ended without a hand-over")
        if token in self.endings:
            self.errors.append(f"{token} ended twice")
        if (outcome == "failed") != isinstance(error, ValueError):
            self.errors.append(f"{token} ended {outcome} with {error!r}")
        self.endings[token] = outcome


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class PartitionsMachine(RuleBasedStateMachine):
    loop_factory: Any = asyncio.new_event_loop

    def __init__(self) -> None:
        super().__init__()
        self.loop = type(self).loop_factory()
        self.policy: Chosen | None = None
        self.manual = ManualExecutor(cap=lambda: self.executor.bound)
        self.shares = SHARES
        self.executor = self.build()
        self.tasks: list[asyncio.Task[Any]] = []
        self.partition_of: dict[int, str] = {}
        self.next_tag = 0
        self.closing: asyncio.Task[None] | None = None
        # The observer, once added: whether it is to be added by a rule, and
        # what the executor had done before it was added.
        self.watching: Watching | None = None
        self.watch_later = False
        self.watched_from = 0  # the first tag to arrive under the observer
        self.unwatched: set[int] = set()  # tags handed over before it
        self.running_unwatched: set[int] = set()  # of those, running then
        self.baseline: dict[str, PartitionStats] = {}

    def step(self) -> None:
        self.loop.run_until_complete(_settle())

    def pending(self) -> list[int]:
        return sorted(t for t in self.manual.pending if isinstance(t, int))

    def build(self) -> BoundedLoopExecutor:
        return BoundedLoopExecutor(
            executor=self.manual,
            bound=3 if self.policy is None else self.policy,
            max_pending=MAX_PENDING,
            partitions=self.shares,
        )

    @initialize(
        adaptive=st.booleans(),
        capped=st.booleans(),
        observer=st.sampled_from(["none", "first", "later"]),
    )
    def configure(self, adaptive: bool, capped: bool, observer: str) -> None:
        if adaptive:
            self.policy = Chosen()
        if capped:
            self.shares = CAPPED
        self.executor = self.build()
        if observer == "first":
            self.watch()
        self.watch_later = observer == "later"

    def watch(self) -> None:
        self.watching = Watching()
        self.executor.add_observer(self.watching)
        self.watched_from = self.next_tag
        self.unwatched = {t for t in self.manual.submit_log if isinstance(t, int)}
        self.running_unwatched = set(self.pending())
        self.baseline = self.executor.stats().partitions

    @precondition(lambda self: self.watch_later and self.watching is None)
    @rule()
    def add_the_observer(self) -> None:
        """Added mid-run: running calls are never reported, waiting callers
        from their hand-over on."""
        self.watch()

    def check_admissions_within_ceilings(self, logged: int) -> None:
        """Each partition given a call in this step is within its ceiling.

        Within one step a partition's calls only end before its admissions,
        so its count after the step is its count at its last admission.
        """
        stats = self.executor.stats()
        handed = self.manual.submit_log[logged:]
        for name in {self.partition_of[t] for t in handed if isinstance(t, int)}:
            part = stats.partitions[name]
            assert part.in_flight <= part.ceiling, name

    @rule(name=st.sampled_from(NAMES), n=st.integers(1, 4))
    def arrive(self, name: str, n: int) -> None:
        target: BoundedLoopExecutor | Partition = (
            self.executor if name == "default" else self.executor.partition(name)
        )

        async def call(tag: int) -> Any:
            TAG.set(tag)
            future = await target.submit(abs, tag)
            return await future

        logged = len(self.manual.submit_log)
        for _ in range(n):
            self.partition_of[self.next_tag] = name
            self.tasks.append(self.loop.create_task(call(self.next_tag)))
            self.next_tag += 1
        self.step()
        self.check_admissions_within_ceilings(logged)

    @precondition(lambda self: self.policy is not None)
    @rule(limits=st.lists(st.integers(1, 6), min_size=1, max_size=3))
    def choose_limits(self, limits: list[int]) -> None:
        assert self.policy is not None
        self.policy.answers.extend(limits)

    @precondition(lambda self: self.policy is None and self.closing is None)
    @rule(bound=st.integers(1, 6))
    def resize(self, bound: int) -> None:
        logged = len(self.manual.submit_log)
        self.executor.resize(bound)
        self.step()
        self.check_admissions_within_ceilings(logged)

    def waiting_tags(self) -> list[int]:
        """Tags of the callers waiting for a slot, oldest first."""
        submitted = set(self.manual.submit_log)
        return [
            tag
            for tag, task in zip(range(self.next_tag), self.tasks, strict=True)
            if tag not in submitted and not task.done()
        ]

    @precondition(lambda self: self.manual.pending)
    @rule(data=st.data(), how=st.sampled_from(["ok", "error", "cancel"]))
    def end_a_call(self, data: st.DataObject, how: str) -> None:
        tag = data.draw(st.sampled_from(self.pending()))
        before = self.executor.stats()
        waiting = self.waiting_tags()
        logged = len(self.manual.submit_log)
        future = self.manual.by_tag[tag]
        if how == "ok":
            future.set_result(tag)
        elif how == "error":
            future.set_exception(ValueError())
        else:
            future.cancel()
        self.step()
        handed = self.manual.submit_log[logged:]
        if before.closed:
            assert handed == []
            return
        # Replay the gate's rule: the policy's new bound (set at the sample,
        # before the release) hands out the slots it adds, then the freed
        # slot is handed on unless over the bound. Each goes to the oldest
        # waiter of a partition below its guarantee, else to the oldest
        # waiter of a partition below its ceiling; a capped partition's
        # waiters are skipped.
        after = self.executor.stats()
        bound = after.bound
        held = {name: before.partitions[name].in_flight for name in NAMES}
        in_use = before.in_flight
        expected: list[int] = []

        def pick() -> bool:
            parts = after.partitions
            eligible = [
                t
                for t in waiting
                if held[self.partition_of[t]] < parts[self.partition_of[t]].ceiling
            ]
            below = [
                t
                for t in eligible
                if held[self.partition_of[t]] < parts[self.partition_of[t]].guaranteed
            ]
            if not eligible:
                return False
            chosen = below[0] if below else eligible[0]
            waiting.remove(chosen)
            held[self.partition_of[chosen]] += 1
            expected.append(chosen)
            return True

        if bound != before.bound:
            while in_use < bound and pick():
                in_use += 1
        held[self.partition_of[tag]] -= 1
        if in_use <= bound:
            pick()
        assert handed == expected
        self.check_admissions_within_ceilings(logged)

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
    def fifo_within_each_partition(self) -> None:
        log = [tag for tag in self.manual.submit_log if isinstance(tag, int)]
        for name in NAMES:
            mine = [tag for tag in log if self.partition_of[tag] == name]
            assert mine == sorted(mine), name

    @invariant()
    def no_slot_idle_while_anyone_below_a_ceiling_waits(self) -> None:
        stats = self.executor.stats()
        if any(
            p.waiting and p.in_flight < p.ceiling for p in stats.partitions.values()
        ):
            assert stats.in_flight >= stats.bound
        if self.shares is SHARES and stats.waiting:  # no ceiling: anyone
            assert stats.in_flight >= stats.bound

    @invariant()
    def guarantees_and_ceilings_follow_the_bound(self) -> None:
        stats = self.executor.stats()
        for name, value in self.shares.items():
            share = value if isinstance(value, Share) else Share(value)
            part = stats.partitions[name]
            assert part.guaranteed == guaranteed_slots(share.share, stats.bound)
            assert part.ceiling == ceiling_slots(
                share.max_share, share.share, stats.bound
            )
            assert part.max_share == share.max_share
        assert stats.partitions["default"].ceiling == stats.bound
        if self.policy is not None and not stats.closed:
            assert stats.bound == self.policy.limit

    @invariant()
    def every_call_accounted_for_per_partition_and_in_total(self) -> None:
        stats = self.executor.stats()
        parts = stats.partitions
        assert set(parts) == set(NAMES)
        for field in (
            "in_flight",
            "waiting",
            "submitted",
            "completed",
            "failed",
            "cancelled",
            "rejected",
        ):
            assert getattr(stats, field) == sum(
                getattr(p, field) for p in parts.values()
            ), field
        for name in NAMES:
            part = parts[name]
            running = sum(1 for t in self.pending() if self.partition_of[t] == name)
            assert part.submitted == (
                part.completed + part.failed + part.cancelled + running
            ), name
            assert part.in_flight >= running, name
            assert part.waiting <= (part.max_pending or 0), name
            assert part.max_pending == (
                2 if self.shares is CAPPED and name == "batch" else MAX_PENDING
            ), name
        assert stats.in_flight <= max(stats.peak_in_flight, stats.bound)

    def expected_report(self, tag: int) -> tuple[str | None, str | None]:
        """What the observer must have said of *tag*: (refused, ended).

        ``None`` for neither yet; raises LookupError when *tag* must not
        have been reported at all.
        """
        if tag in self.unwatched:
            raise LookupError(tag)
        if tag in self.manual.by_tag:  # handed over
            outcome = self.outcome_of(tag)
            return None, None if outcome == "running" else outcome
        if tag < self.watched_from:  # waited unobserved, never handed over
            raise LookupError(tag)
        task = self.tasks[tag]
        if not task.done():
            return None, None
        if task.cancelled():
            return "cancelled", None
        error = task.exception()
        if isinstance(error, ClosedError):
            return "closed", None
        assert isinstance(error, OverloadedError), error
        return "max_pending", None

    @invariant()
    def the_observer_saw_each_call_once_in_its_partition(self) -> None:
        watching = self.watching
        if watching is None:
            return
        assert watching.errors == []
        reported = (
            watching.arrivals.keys()
            | watching.refusals.keys()
            | watching.endings.keys()
        )
        for tag in range(self.next_tag):
            try:
                refused, ended = self.expected_report(tag)
            except LookupError:
                assert tag not in reported, tag
                continue
            assert watching.arrivals.get(tag) == self.partition_of[tag], tag
            assert watching.refusals.get(tag) == refused, tag
            assert watching.endings.get(tag) == ended, tag
            assert (tag in watching.handed) == (tag in self.manual.by_tag), tag

    @invariant()
    def the_observer_agrees_with_the_stats_per_partition(self) -> None:
        """Arrived = handed over + refused + waiting, and ended per outcome,
        against each partition's counters since the observer came."""
        watching = self.watching
        if watching is None:
            return
        parts = self.executor.stats().partitions
        for name in NAMES:
            now, then = parts[name], self.baseline[name]
            mine = {t for t, p in watching.arrivals.items() if p == name}
            refused = Counter(
                watching.refusals[t] for t in mine & watching.refusals.keys()
            )
            ended = Counter(watching.endings[t] for t in mine & watching.endings.keys())
            # Calls the observer does not see: running when it came (by how
            # they ended since), and waiting when it came and still waiting.
            unseen = Counter(
                self.outcome_of(t)
                for t in self.running_unwatched
                if self.partition_of[t] == name
            )
            still_waiting_unseen = sum(
                1
                for t in range(self.watched_from)
                if self.partition_of[t] == name
                and t not in self.manual.by_tag
                and not self.tasks[t].done()
            )
            assert set(refused) <= set(REASONS), refused
            assert refused["max_pending"] == now.rejected - then.rejected, name
            assert refused["max_wait"] == now.timed_out - then.timed_out, name
            assert len(mine) == (
                now.submitted
                - then.submitted
                + sum(refused.values())
                + now.waiting
                - still_waiting_unseen
            ), name
            for outcome in OUTCOMES:
                assert ended[outcome] + unseen[outcome] == (
                    getattr(now, outcome) - getattr(then, outcome)
                ), (name, outcome)
            running = len(mine & watching.handed) - sum(ended.values())
            assert running + unseen["running"] == now.in_flight, name

    def outcome_of(self, tag: int) -> str:
        """How the call handed over with *tag* ended, or ``"running"``."""
        future = self.manual.by_tag[tag]
        if not future.done():
            return "running"
        if future.cancelled():
            return "cancelled"
        return "completed" if future.exception() is None else "failed"

    def teardown(self) -> None:
        for tag in self.pending():
            self.manual.by_tag[tag].set_result(tag)
        for task in self.tasks:
            task.cancel()

        async def drain() -> None:
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.executor.aclose()

        self.loop.run_until_complete(drain())
        if self.watching is not None:
            self.the_observer_saw_each_call_once_in_its_partition()
            self.the_observer_agrees_with_the_stats_per_partition()
            watching = self.watching
            assert watching.handed == watching.endings.keys()
            assert watching.arrivals.keys() == (
                watching.refusals.keys() | watching.endings.keys()
            )
            assert not watching.refusals.keys() & watching.endings.keys()
        stats = self.executor.stats()
        assert (stats.in_flight, stats.waiting) == (0, 0)
        assert stats.submitted == stats.completed + stats.failed + stats.cancelled
        for part in stats.partitions.values():
            assert (part.in_flight, part.waiting) == (0, 0)
            assert part.submitted == part.completed + part.failed + part.cancelled
        for task in self.tasks:
            if not task.cancelled() and task.exception() is not None:
                error = task.exception()
                assert isinstance(error, (ClosedError, OverloadedError, ValueError)), (
                    error
                )
        self.loop.close()


TestPartitionsOnAsyncio = PartitionsMachine.TestCase
TestPartitionsOnAsyncio.settings = SETTINGS

if new_uvloop is not None:

    class UvloopPartitions(PartitionsMachine):
        loop_factory = new_uvloop

    TestPartitionsOnUvloop = UvloopPartitions.TestCase
    TestPartitionsOnUvloop.settings = SETTINGS
else:  # pragma: no cover - uvloop is in the test group
    pytestmark = pytest.mark.skip("uvloop missing")
