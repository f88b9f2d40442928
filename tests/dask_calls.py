"""Functions, a scheduler plugin and a client preload for the Dask tests.

Dask pickles functions from importable modules by name; the workers (spawned
by their nannies with this process's ``sys.path``) import this module.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from distributed import Scheduler, SchedulerPlugin


def square(x: int) -> int:
    return x * x


def die_once(marker: str, x: int) -> int:
    """Kill the worker running it the first time any worker runs it."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return x * x
    os.close(fd)
    os._exit(1)


# States of a task that is not finished yet.
ACTIVE = frozenset({"waiting", "queued", "no-worker", "processing"})


class TaskCounter(SchedulerPlugin):
    """Samples, at every change on the scheduler, how many tasks it holds.

    ``held`` is every task the scheduler knows (until it forgets it);
    ``active`` those not yet finished (waiting, queued, processing, ...).
    """

    name = "aiobound-task-counter"

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        # Tasks of earlier tests whose release is still on its way when the
        # counter is installed (run_on_scheduler overtakes the client's
        # message stream): not this test's, so not counted.
        self.earlier = set(scheduler.tasks)
        self.peak_held = 0
        self.peak_active = 0
        self.samples = 0

    def ours(self) -> list[Any]:
        """Task states of the tasks made since the counter was installed."""
        earlier = self.earlier
        return [ts for key, ts in self.scheduler.tasks.items() if key not in earlier]

    def _sample(self) -> None:
        tasks = self.ours()
        self.samples += 1
        self.peak_held = max(self.peak_held, len(tasks))
        active = sum(ts.state in ACTIVE for ts in tasks)
        self.peak_active = max(self.peak_active, active)

    def update_graph(self, scheduler: Scheduler, **kwargs: Any) -> None:
        self._sample()

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any
    ) -> None:
        self._sample()


def install_counter(dask_scheduler: Scheduler) -> None:
    dask_scheduler.add_plugin(TaskCounter(dask_scheduler), name=TaskCounter.name)


def read_counter(dask_scheduler: Scheduler) -> tuple[int, int, int, int]:
    counter = dask_scheduler.plugins[TaskCounter.name]
    assert isinstance(counter, TaskCounter)
    now = len(counter.ours())
    return counter.peak_held, counter.peak_active, counter.samples, now


def remove_counter(dask_scheduler: Scheduler) -> None:
    dask_scheduler.remove_plugin(name=TaskCounter.name)


def touch(path: str) -> str:
    """Create the file *path* (it shows that the task ran); return it."""
    with open(path, "x"):
        pass
    return path


def hold(name: str, index: int) -> int:
    """Say that this task started, then wait for the test to let it end.

    Uses Dask's own distributed events (held by the scheduler), so the test
    and the worker process synchronize with no clock: the test waits for
    ``{name}-started-{index}``; the task waits for ``{name}-go``.
    """
    from distributed import Event

    Event(f"{name}-started-{index}").set()
    Event(f"{name}-go").wait()
    return index


def task_states(keys: list[Any], dask_scheduler: Scheduler) -> dict[Any, str | None]:
    """The scheduler's state of each task (None: it does not know the key)."""
    tasks = dask_scheduler.tasks
    return {key: (tasks[key].state if key in tasks else None) for key in keys}


class KeyWaiter(SchedulerPlugin):
    """Sets an event once the scheduler knows every key of a set."""

    def __init__(self, scheduler: Scheduler, keys: list[Any]) -> None:
        self.scheduler = scheduler
        self.keys = set(keys)
        self.known = asyncio.Event()
        self.check()

    def check(self) -> None:
        if all(key in self.scheduler.tasks for key in self.keys):
            self.known.set()

    def update_graph(self, scheduler: Scheduler, **kwargs: Any) -> None:
        self.check()

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any
    ) -> None:
        self.check()


async def wait_until_known(keys: list[Any], dask_scheduler: Scheduler) -> None:
    """Return once the scheduler knows every key (submissions are batched).

    Event-driven: a plugin checks at each graph update and transition.
    """
    waiter = KeyWaiter(dask_scheduler, keys)
    name = f"aiobound-key-waiter-{id(waiter)}"
    dask_scheduler.add_plugin(waiter, name=name)
    try:
        await asyncio.wait_for(waiter.known.wait(), 60)  # a guard against a hang
    finally:
        dask_scheduler.remove_plugin(name=name)


# A client preload: a Client made under dask.config.set({"distributed.client.
# preload": ["dask_calls"]}) runs dask_teardown as it closes, in status
# "closing". A test that registers a gate for the client holds it there.
closing_gates: dict[str, ClosingGate] = {}


class ClosingGate:
    """Holds a closing client in status "closing" until :meth:`open`."""

    def __init__(self, client: Any) -> None:
        self.entered = threading.Event()
        self._left = threading.Event()
        closing_gates[client.id] = self

    def open(self) -> None:
        self._left.set()

    async def hold(self) -> None:
        self.entered.set()
        # A thread of the client's loop waits, so the loop runs on meanwhile.
        await asyncio.to_thread(self._left.wait, 60)  # a guard against a hang


async def dask_teardown(client: Any) -> None:
    gate = closing_gates.pop(client.id, None)
    if gate is not None:
        await gate.hold()
