"""Sources, functions and errors shared by the map and chunked-map tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


class Boom(Exception):
    """An error raised on purpose by a test's function or source."""


def double(x: int) -> int:
    return 2 * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise Boom(f"item {x}")
    return x


class Source:
    """A sync iterable that records how many items were pulled.

    ``n=None`` never ends; ``fail_after=k`` raises :class:`Boom` instead of
    the k-th item.
    """

    def __init__(self, n: int | None, fail_after: int | None = None) -> None:
        self.n = n
        self.fail_after = fail_after
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        i = 0
        while self.n is None or i < self.n:
            if i == self.fail_after:
                raise Boom("source")
            self.pulled += 1
            yield i
            i += 1


async def agen(
    n: int | None, pulled: list[int] | None = None, fail_after: int | None = None
) -> AsyncIterator[int]:
    """An async source of ``0, 1, ...`` (``n=None``: endless); records each
    item it yields in *pulled*; raises :class:`Boom` instead of item
    ``fail_after``."""
    i = 0
    while n is None or i < n:
        if i == fail_after:
            raise Boom("source")
        if pulled is not None:
            pulled.append(i)
        yield i
        i += 1
