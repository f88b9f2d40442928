"""Helpers for the tests of the example services' batch partition.

The example's blocking work is replaced by :class:`Gates`, which tells
requests apart by their ``ms``; the tests read ``/stats`` until the app
publishes the state they wait for (:func:`until`), and see which gated
request a freed slot went to (:func:`first_started`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from conftest import Gate, GateFactory

# Reads of /stats allowed while waiting for a state the app publishes: a
# guard against a hang in a broken test (each round trip lets the server run).
POLLS = 1000


class Gates:
    """The example's ``work``, blocking on the gate of its ``ms`` value.

    Requests are told apart by their ``ms``: ``gates[ms]`` is made on the
    loop beforehand, and every call with that ``ms`` blocks on it until the
    test opens it.
    """

    def __init__(self, make_gate: GateFactory, *ms: int) -> None:
        self.by_ms: dict[int, Gate[float]] = {m: make_gate() for m in ms}

    def __getitem__(self, ms: int) -> Gate[float]:
        return self.by_ms[ms]

    def __call__(self, seconds: float) -> float:
        return self.by_ms[round(seconds * 1000)](seconds)


async def until(
    read_stats: Callable[[], Awaitable[Any]],
    what: str,
    predicate: Callable[[Any], bool],
) -> Any:
    """Read the stats until *predicate* holds of them; return them.

    Polls a state the app publishes (its waiter count); never sleeps.
    """
    stats: Any = None
    for _ in range(POLLS):
        stats = await read_stats()
        if predicate(stats):
            return stats
    raise AssertionError(f"never saw {what}: {stats}")


def waiting(count: int, *tasks: asyncio.Task[Any]) -> Callable[[Any], bool]:
    """Whether *count* requests wait for a slot, or one of *tasks* is done."""
    return lambda stats: stats["waiting"] == count or any(t.done() for t in tasks)


async def first_started(*gates: Gate[float]) -> Gate[float]:
    """The first of *gates* to see a call start."""
    tasks = {asyncio.create_task(gate.started()): gate for gate in gates}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return tasks[done.pop()]
