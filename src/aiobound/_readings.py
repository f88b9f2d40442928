"""What every gate shows of itself: its limits, its load and its waits.

The slot gate, a shared bound's per-executor view and the partitioned gate
keep the same attributes under the same names; these read-only properties
read them, so that each gate states only what it computes differently.
"""

from __future__ import annotations

__all__ = ("GateReadings", "WaitReadings")


class GateReadings:
    """The limits and the load of a gate, read from its attributes."""

    __slots__ = ()

    _max_pending: int | None
    _max_wait: float | None
    _in_use: int
    _waiting: int
    _closed: bool

    @property
    def max_pending(self) -> int | None:
        """Most callers allowed to wait, or ``None`` for no limit."""
        return self._max_pending

    @property
    def max_wait(self) -> float | None:
        """Seconds a caller may wait for a slot, or ``None``."""
        return self._max_wait

    @property
    def in_use(self) -> int:
        """Slots held."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return self._waiting

    @property
    def closed(self) -> bool:
        """Whether the gate was closed."""
        return self._closed


class WaitReadings(GateReadings):
    """:class:`GateReadings`, plus the waits of the callers granted a slot."""

    __slots__ = ()

    _admitted: int
    _wait_total: float
    _wait_max: float
    _wait_recent: float

    @property
    def wait_average(self) -> float:
        """Mean seconds waited per granted slot (immediate grants count 0)."""
        return self._wait_total / self._admitted if self._admitted else 0.0

    @property
    def wait_maximum(self) -> float:
        """Longest wait, in seconds, of any caller that was granted a slot."""
        return self._wait_max

    @property
    def wait_recent(self) -> float:
        """Moving average of the latest waits that ended with a slot.

        Exponentially weighted (the newest counts 1/8), over the callers that
        had to wait and were then granted a slot; immediate grants do not
        count, and the value stays as it was while nobody waits. ``0.0``
        before any wait. Updated in O(1) at each grant.
        """
        return max(self._wait_recent, 0.0)
