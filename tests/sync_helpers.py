"""Helpers for the tests of BoundedExecutor and SharedBound: threads, latches."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

# Guard against a hang in a broken test; a passing test never waits this long
# (2 s in the mutation session, as conftest's GATE_TIMEOUT).
TIMEOUT = 2.0 if os.environ.get("AIOBOUND_HYPOTHESIS_PROFILE") == "mutants" else 30.0


def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Spin (yielding the GIL) until *predicate* holds; fail after TIMEOUT.

    Polls a state the code under test publishes (a waiter count, say); it
    never sleeps a fixed time in the hope that something has happened.
    """
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0)


class Latch:
    """A blocking function for worker threads: counts starts, waits to open.

    ``running`` and ``peak`` count calls inside the function at once, under
    a lock: the in-flight counter that a bound must never let exceed it.
    """

    def __init__(self) -> None:
        self._opened = threading.Event()
        self._lock = threading.Lock()
        self.started: list[Any] = []
        self.running = 0
        self.peak = 0

    def __call__(self, value: T) -> T:
        with self._lock:
            self.started.append(value)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if not self._opened.wait(TIMEOUT):
                raise TimeoutError("the test never opened this latch")
            return value
        finally:
            with self._lock:
                self.running -= 1

    def wait_started(self, count: int) -> None:
        until(lambda: len(self.started) >= count, f"{count} calls to start")

    def open(self) -> None:
        self._opened.set()


class Runner(threading.Thread):
    """Run ``fn()`` in a thread; keep its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> Any:
        """Join; return the result or raise the exception of ``fn``."""
        self.join(TIMEOUT)
        assert not self.is_alive(), "the thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def started(fn: Callable[[], Any]) -> Runner:
    runner = Runner(fn)
    runner.start()
    return runner
