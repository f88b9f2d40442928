"""Module-level functions for the process-pool tests of issue 5 (importable
by worker processes, which unpickle them by name)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading


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
