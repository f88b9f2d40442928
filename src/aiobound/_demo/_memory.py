"""Resident memory of the current process: now, and its peak since a reset."""

from __future__ import annotations

import sys

import psutil

__all__ = ("PeakMemory",)

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


class PeakMemory:
    """Measure how far resident memory rises above a starting point.

    On Linux, :meth:`start` resets the kernel's high-water mark (``VmHWM``)
    by writing ``5`` to ``/proc/self/clear_refs``, so the peak read at the
    end is exactly the peak of the run. Elsewhere, or when that file is not
    writable, the peak is ``ru_maxrss``, which also counts anything before
    :meth:`start`; the growth reported is then an upper bound.
    """

    __slots__ = ("_baseline", "_exact", "_process")

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._baseline = 0
        self._exact = False

    def current(self) -> int:
        """Return the resident set size now, in bytes."""
        return int(self._process.memory_info().rss)

    def start(self) -> None:
        """Reset the peak (where the OS allows it) and record the baseline."""
        try:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")
            self._exact = True
        except OSError:
            self._exact = False
        self._baseline = self.current()

    @property
    def baseline(self) -> int:
        """Resident set size at :meth:`start`, in bytes."""
        return self._baseline

    @property
    def exact(self) -> bool:
        """Whether the peak is measured from :meth:`start` (Linux) or not."""
        return self._exact

    def peak(self) -> int:
        """Return the peak resident set size, in bytes (see the class doc)."""
        if self._exact:
            with open(_STATUS) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        if sys.platform == "win32":
            return int(getattr(self._process.memory_info(), "peak_wset", 0))
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024

    def growth(self) -> int:
        """Return how far the peak rose above the baseline, in bytes (>= 0)."""
        return max(0, self.peak() - self._baseline)
