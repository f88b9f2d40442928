"""Module-level functions for the process-pool tests (importable by worker
processes, which unpickle them by name)."""

from __future__ import annotations

import os
import threading
from typing import Any


def add(x: int, *, y: int = 0) -> int:
    return x + y


def wrong_type(x: object) -> None:
    raise TypeError(f"fn itself rejects {x!r}")


def die_on(x: int) -> int:
    if x < 0:
        os._exit(1)
    return x


def die_when(event: threading.Event) -> None:
    """Wait for a manager's Event (a proxy), then kill this worker."""
    event.wait()
    os._exit(1)


# -- calls held in the worker on a multiprocessing Event ----------------------
# install_gate is the pool's initializer: the Event, Semaphore and Value reach
# each worker as it starts (the only way to pass them to a process).

_gate: Any = None
_started: Any = None
_runs: Any = None

# How long a held call waits for its gate: only a guard against a hang in a
# broken test (as conftest.GATE_TIMEOUT).
GATE_TIMEOUT = 30.0


def install_gate(gate: Any, started: Any, runs: Any) -> None:
    global _gate, _started, _runs
    _gate, _started, _runs = gate, started, runs


def held(n: int) -> int:
    """Count the run, say it started, wait for the gate, return *n*."""
    with _runs.get_lock():
        _runs.value += 1
    _started.release()
    _gate.wait(GATE_TIMEOUT)
    return n


# -- objects that do not pickle, or count their pickling ----------------------


class Unsendable:
    """Cannot be pickled, and its repr raises too."""

    def __reduce__(self) -> Any:
        raise TypeError("Unsendable objects cannot be pickled")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class Counted:
    """Picklable; counts how often it is pickled in this process."""

    pickled = 0

    def __reduce__(self) -> Any:
        type(self).pickled += 1
        return (Counted, ())


def return_a_lock(_: object) -> threading.Lock:
    return threading.Lock()


def failing_initializer() -> None:
    raise ValueError("no database here")
