"""Observers: the life of each call, told to whoever asked (tracing, metrics).

An executor without an observer never reaches this module: each lane of the
call path (:mod:`aiobound._calls`) holds ``None`` instead of an
:class:`Observed`, and an unobserved call pays one ``is None`` test per step.

:class:`CallObserver` is the public base class; :class:`Observed` is the
call path's side: it tells the observer each step and keeps the token of
each call from its hand-over until it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import ClosedError, DeadlineExceeded, OverloadedError
from ._stats import COMPLETED, FAILED

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    from collections.abc import Callable

__all__ = ("CallObserver", "Observed")


class CallObserver:
    """Told of each call of an executor: subclass it and override the hooks.

    Give one to :meth:`BoundedLoopExecutor.add_observer`. Every hook runs on
    the executor's event loop, synchronously, on the call's path: keep it
    short and never block. The default hooks do nothing.

    A call goes through :meth:`arrived`, then either :meth:`refused` (it never
    got a slot) or :meth:`handing_over` and, once it ended, :meth:`ended`.
    An item of ``map`` (a chunk, when chunking) starts at
    :meth:`handing_over`, where :meth:`arrived` is called just before. A
    request that the edge check refuses before it becomes a call is told to
    :meth:`refused_at_edge` alone.

    On an executor made with ``partitions=``, every call of every partition
    goes through the same hooks, except that :meth:`arrived_in` is called
    instead of :meth:`arrived`, with the call's partition name (its default
    calls :meth:`arrived`, so an observer that does not care about
    partitions overrides :meth:`arrived` alone).
    """

    def arrived(self) -> object:
        """A caller entered ``submit`` or ``run``, before any wait for a slot.

        Runs in the caller's :mod:`contextvars` context. Returns a token that
        is passed to the other hooks for this call. An exception propagates
        to the caller.
        """
        return None

    def arrived_in(self, partition: str) -> object:
        """:meth:`arrived`, for a call of the partition named *partition*.

        Called instead of :meth:`arrived` on an executor made with
        ``partitions=``: *partition* is the name given to
        :meth:`~aiobound.BoundedLoopExecutor.partition`, or ``"default"`` for
        a call made on the executor itself. The default returns
        ``self.arrived()``.
        """
        return self.arrived()

    def refused(self, token: object, reason: str, error: BaseException) -> None:
        """The call ended without a slot; *error* is what the caller gets.

        *reason*: ``"max_pending"`` or ``"max_wait"`` (an
        :class:`OverloadedError`), ``"deadline"`` (a
        :class:`~aiobound.DeadlineExceeded`: its deadline passed while it
        waited), ``"closed"`` (a :class:`ClosedError`), or ``"cancelled"``
        (the caller was cancelled, or interrupted otherwise, while it waited
        for a slot or a turn).
        """

    def deadline_exceeded(self, token: object, stage: str) -> None:
        """A call handed over missed its deadline; its caller was released.

        *stage*: ``"queued"`` (it was cancelled and never runs: :meth:`ended`
        follows at once, ``"cancelled"``), ``"running"`` (it runs on in its
        worker, abandoned by its caller, holding its slot: :meth:`ended`
        follows when it ends) or ``"stopped"`` (it was running, and a pool
        that can stop a call stopped it). An exception propagates to the
        loop's exception handler.
        """

    def refused_at_edge(self, partition: str | None) -> None:
        """A request was refused before it became a call (no token).

        Called by :meth:`~aiobound.BoundedLoopExecutor.shed_at_edge` (the web
        integrations' edge check) when it refuses: a call arriving then
        would have been refused at once. *partition* is the partition's name
        on an executor made with ``partitions=`` (``"default"`` for the
        executor's own calls), else ``None``. An exception propagates to the
        caller of ``shed_at_edge``.
        """

    def handing_over(
        self,
        token: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The call holds its slot and is about to be handed to the pool.

        Returns the call to hand over, ``(fn, args, kwargs)`` unchanged or
        wrapped (a wrapper sent to a process pool must be picklable: a
        function defined at the top level of a module). An exception counts
        as the pool refusing the call: the slot is freed, :meth:`ended`
        reports ``"failed"``, and the caller gets the exception.
        """
        return fn, args, kwargs

    def ended(self, token: object, outcome: str, error: BaseException | None) -> None:
        """The call handed over has ended in the pool; its slot is free.

        *outcome*: ``"completed"``, ``"failed"`` (*error* is what ``fn``
        raised, or what refused the hand-over) or ``"cancelled"`` (it never
        ran). An exception is reported to the loop's exception handler.
        """


class Observed:
    """The call path's side of one :class:`CallObserver`.

    The lanes call it at each step of an observed call: :meth:`arrived`,
    :meth:`refused`, :meth:`handing_over`, then :meth:`track` once the pool
    took the call (or :meth:`failed` if it did not) and :meth:`ended`. It
    keeps each call's token from its hand-over until it ends.
    """

    __slots__ = ("_calls", "observer")

    def __init__(self, observer: CallObserver) -> None:
        self.observer = observer
        self._calls: dict[concurrent.futures.Future[Any], object] = {}

    def arrived(self, partition: str | None) -> object:
        """Tell the observer a call arrived, in *partition* if it has one."""
        if partition is None:
            return self.observer.arrived()
        return self.observer.arrived_in(partition)

    def refused(self, token: object, error: BaseException, at_once: bool) -> None:
        """The call ended without a slot: say why."""
        if isinstance(error, OverloadedError):
            reason = "max_pending" if at_once else "max_wait"
        elif isinstance(error, DeadlineExceeded):
            reason = "deadline"
        elif isinstance(error, ClosedError):
            reason = "closed"
        else:
            reason = "cancelled"
        self.observer.refused(token, reason, error)

    def handing_over(
        self,
        token: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The call to hand over, as the observer wraps it."""
        return self.observer.handing_over(token, fn, args, kwargs)

    def failed(self, token: object, error: BaseException) -> None:
        """The hand-over failed (the observer or the pool refused the call)."""
        self.observer.ended(token, "failed", error)

    def track(self, cfut: concurrent.futures.Future[Any], token: object) -> None:
        """The pool took the call: remember its token until it ends."""
        self._calls[cfut] = token

    def deadline_exceeded(self, token: object, stage: str) -> None:
        """Tell the observer a call handed over missed its deadline."""
        self.observer.deadline_exceeded(token, stage)

    def refused_at_edge(self, partition: str | None) -> None:
        """Tell the observer a request was refused at the edge."""
        self.observer.refused_at_edge(partition)

    def ended(
        self,
        cfut: concurrent.futures.Future[Any],
        outcome: int,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        """On the loop, once a call ended and its slot was freed."""
        try:
            token = self._calls.pop(cfut)
        except KeyError:
            return  # handed over before the observer was added
        try:
            if outcome == COMPLETED:
                self.observer.ended(token, "completed", None)
            elif outcome == FAILED:
                self.observer.ended(token, "failed", cfut.exception())
            else:
                self.observer.ended(token, "cancelled", None)
        except Exception as exc:
            if loop is not None:
                loop.call_exception_handler(
                    {"message": "CallObserver.ended raised", "exception": exc}
                )
