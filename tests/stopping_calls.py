"""Module-level functions for the kill_on_timeout tests (importable by worker
processes, which unpickle them by name).

``install`` is the pool's initializer: the semaphore, event and value reach
each worker as it starts (again in a worker that replaces a stopped one),
the only way to pass them to a process.
"""

from __future__ import annotations

import os
import time
from typing import Any

_started: Any = None
_gate: Any = None
_last_pid: Any = None

# How long a held call waits for its gate: only a guard against a hang in a
# broken test (as conftest.GATE_TIMEOUT).
GATE_TIMEOUT = 30.0


def install(started: Any, gate: Any, last_pid: Any) -> None:
    global _started, _gate, _last_pid
    _started, _gate, _last_pid = started, gate, last_pid


def _begin() -> None:
    _last_pid.value = os.getpid()
    _started.release()


def sleep_long(seconds: float) -> int:
    """Say it started (its pid in last_pid), then sleep *seconds*."""
    _begin()
    time.sleep(seconds)
    return os.getpid()


def held() -> int:
    """Say it started, wait for the gate, return this worker's pid."""
    _begin()
    _gate.wait(GATE_TIMEOUT)
    return os.getpid()


def pid() -> int:
    return os.getpid()
