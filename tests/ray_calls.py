"""Functions for the Ray tests, importable by Ray's worker processes.

Ray pickles functions from importable modules by name; the test session's
Ray puts this folder on its workers' path (``code_search_path``).

Tasks are held with named pipes (FIFOs), which block a worker process in a
plain ``os.read``: unlike ``ray.get`` inside a task, that keeps the task's
CPU, so two held tasks occupy a 2-CPU Ray and every other task waits in
Ray's queue until the test lets them go. No clock is involved.
"""

from __future__ import annotations

import os


def square(x: int) -> int:
    return x * x


def touch(path: str) -> str:
    """Create the file *path* (it shows that the call ran); return it."""
    with open(path, "x"):
        pass
    return path


def die_once(marker: str, x: int) -> int:
    """Kill the worker process running it the first time any worker runs it."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return x * x
    os.close(fd)
    os._exit(1)


def die(x: int) -> int:
    """Kill the worker process running it."""
    os._exit(1)


def hold(started: str, go: str, index: int, done: str | None = None) -> int:
    """Say that this call started, then wait for the test to let it go.

    Writes ``index`` and a newline to the FIFO *started*, then reads one
    byte from the FIFO *go*; if *done* is given, creates that file after
    (it shows that the call ran to its end, uninterrupted).
    """
    fd = os.open(started, os.O_WRONLY)
    try:
        os.write(fd, f"{index}\n".encode())
    finally:
        os.close(fd)
    fd = os.open(go, os.O_RDONLY)
    try:
        os.read(fd, 1)
    finally:
        os.close(fd)
    if done is not None:
        touch(done)
    return index
