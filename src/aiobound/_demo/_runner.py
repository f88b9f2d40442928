"""Start one child process per case and collect what it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("CaseError", "Options", "Progress", "run_in_child", "title")


@dataclass(frozen=True, slots=True)
class Options:
    """The size of the experiment, shared by every case.

    Attributes:
        calls: Number of blocking calls per case.
        workers: Threads in the pool.
        duration: Seconds each call blocks.
        loop: ``"asyncio"`` or ``"uvloop"``.
    """

    calls: int
    workers: int
    duration: float
    loop: str


def title(options: Options) -> str:
    """Name the run in one line, for the progress display, table and plot."""
    return (
        f"{options.calls:,} calls of {options.duration * 1000:g} ms, "
        f"{options.workers} workers, {options.loop} loop"
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report from a running case.

    Attributes:
        t: Seconds since the case started.
        done: Calls finished.
        submitted: Calls handed to the pool.
        rss: Resident set size now, in bytes.
        rss_growth: How far ``rss`` is above where the case started.
    """

    t: float
    done: int
    submitted: int
    rss: int
    rss_growth: int


class CaseError(RuntimeError):
    """A case's child process failed; the message carries its stderr."""


def run_in_child(
    case: str, options: Options, on_progress: Callable[[Progress], None]
) -> dict[str, Any]:
    """Run *case* in a fresh interpreter and return its result event.

    Args:
        case: One of :data:`aiobound._demo._case.CASES`.
        options: The size of the run and the loop to use.
        on_progress: Called with each progress report, in this process.

    Returns:
        The child's ``result`` event, decoded from JSON.

    Raises:
        CaseError: the child exited with an error or reported no result.
    """
    command = [
        sys.executable,
        "-m",
        "aiobound._demo._case",
        case,
        f"--calls={options.calls}",
        f"--workers={options.workers}",
        f"--duration={options.duration}",
        f"--loop={options.loop}",
    ]
    result: dict[str, Any] | None = None
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        for line in child.stdout:
            event = json.loads(line)
            if event["event"] == "progress":
                on_progress(
                    Progress(
                        t=event["t"],
                        done=event["done"],
                        submitted=event["submitted"],
                        rss=event["rss"],
                        rss_growth=event["rss_growth"],
                    )
                )
            elif event["event"] == "result":
                result = event
        errors = child.stderr.read()
    if child.returncode != 0 or result is None:
        raise CaseError(
            f"case {case!r} failed (exit code {child.returncode}):\n{errors}"
        )
    return result
