"""Backpressure against a Dask cluster (extra ``dask``).

``import aiobound`` never imports this module, so the core stays standard
library only. :func:`from_client` builds a :class:`BoundedLoopExecutor` that
submits to a ``distributed.Client``: at most ``bound`` tasks of its making
exist on the scheduler at once, so a producer streaming millions of items
never floods the scheduler (or the client) with futures.

``BoundedLoopExecutor(executor=client.get_executor(), bound=...)`` works
too, and bounds the tasks the scheduler is *running*; but Dask's own executor
lets go of a finished task only when Python garbage-collects its future, so
the scheduler may briefly hold a few finished tasks beyond the bound. The
executor made here releases each task explicitly, before its slot is freed.

Workers import what they run: a function is pickled by reference when its
module is importable, so the workers need the modules of the functions you
submit, and for ``map(..., chunksize=N)`` with N > 1 they need ``aiobound``
itself (each task then calls aiobound's chunk runner, pickled by reference).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from distributed import Client
from distributed.client import ClosedClientError

from aiobound import BoundedLoopExecutor
from aiobound._deadlines import wall_clock_deadline

if TYPE_CHECKING:
    from collections.abc import Callable

    from distributed import Future as DaskFuture
    from tornado.ioloop import IOLoop

__all__ = ("from_client",)

P = ParamSpec("P")
T = TypeVar("T")

# How often, and how far apart, to ask the scheduler again about a task it
# does not know yet: the question travels on its own connection and can
# overtake the submission, which the client batches (every few ms).
_UNKNOWN_RETRIES = 200
_UNKNOWN_RETRY_DELAY = 0.005
# Longest that cancel() blocks, once the executor is closed, for the
# scheduler's answer, and that one question to the scheduler may take (a
# guard against an unresponsive scheduler: the task is then left to run, and
# may still be cancelled when the answer comes).
_CANCEL_ANSWER_TIMEOUT = 10.0
# The client states in which a task it accepted is either sent to the
# scheduler or, if the client gives up, cancelled by the client itself.
_LISTENING = ("running", "connecting")
# At a call's deadline, longest that the event loop waits for the scheduler
# to say whether a worker has the task (else it counts as started).
_DEADLINE_ANSWER_TIMEOUT = 1.0
# How long before its deadline a call counts as past it: the loop's timer
# may fire that much early (uvloop's run in milliseconds).
_EARLY = 0.005


def from_client(
    client: Client,
    /,
    *,
    bound: int | None = None,
    max_pending: int | None = None,
    max_wait: float | None = None,
    max_per_second: float | None = None,
    burst: int | None = None,
    call_timeout: float | None = None,
) -> BoundedLoopExecutor:
    """Return a :class:`BoundedLoopExecutor` that runs calls on *client*'s cluster.

    Each call becomes one task (``pure=False``: equal calls are not merged).
    The task is released on the scheduler before its slot is freed, so the
    scheduler never holds more than ``bound`` tasks made by this executor.
    ``map(..., chunksize=N)`` sends N items per task, which pays off when
    calls are short (a task costs about a millisecond of scheduling); the
    workers must then be able to import ``aiobound`` (the chunk runner is
    pickled by reference), as they must import the functions you submit.

    A worker that dies is Dask's business: its tasks are retried on other
    workers (up to ``distributed.scheduler.allowed-failures`` times), then
    fail with ``KilledWorker``, which reaches the caller.

    So is a scheduler that dies, or a client that closes: the client cancels
    the tasks it had, and their callers get its ``FutureCancelledError``
    (``distributed.client.ClosedClientError`` for a task it took as it began
    to close). A call made while the client is not running (reconnecting to
    a lost scheduler, closing, closed), which the client would take and
    drop, is refused at once with ``ClosedClientError``, and its slot is
    freed; a client that reconnects takes calls again. Nothing waits for a
    scheduler that is gone: once the client has noticed the loss, every
    call has ended and :meth:`~BoundedLoopExecutor.aclose` returns.

    Cancellation (a caller cancelling its call, or
    :meth:`~BoundedLoopExecutor.aclose` giving up after its ``timeout``) asks
    the scheduler, in one atomic step on its loop, to cancel the task *if no
    worker has been given it yet* (task state waiting, queued or no-worker).
    Such a task never runs: it counts as ``cancelled`` in ``stats()`` and its
    caller sees the cancellation (after ``aclose(timeout=...)``:
    :class:`ClosedError`). A task already handed to a worker (state
    processing) counts as started, even if it still waits in the worker's
    queue (the scheduler cannot tell), and Dask cannot interrupt a running
    task: it runs to the end, keeps its slot until then, and its result or
    error still reaches its caller (if the caller still waits). A task
    waiting to be retried after its worker died counts as not started,
    although it may have run in part on the dead worker.

    A caller cancelling its call does not wait: the answer comes a moment
    later, and only then is the slot of a cancelled task freed (on the
    caller's event loop, in the step that ends the task). When the executor
    is closed (``aclose(timeout=...)``), each cancellation waits for the
    scheduler's answer, one round trip per unfinished call (the event loop
    waits with it, at most 10 s each), and so does a cancellation a caller
    asked just before whose answer has not come: the ``TimeoutError``
    counts exactly the calls it cancelled, leaves out those their callers
    cancelled (they count in ``stats().cancelled``), and counts as running
    every call a worker had when it gave up, as on a thread pool. If the
    scheduler cannot be asked (``distributed.scheduler.pickle`` is off, the
    client is not running, the connection failed), the task is left to run.
    :meth:`~BoundedLoopExecutor.aclose` without a timeout waits for the
    calls in flight and leaves the client open.

    Deadlines (``call_timeout=``, or a view from
    :meth:`~BoundedLoopExecutor.with_timeout`): the deadline travels with
    the task as a :func:`time.time` instant, where
    :func:`~aiobound.remaining` reads it (off by the difference between the
    worker's clock and this machine's). At the deadline the caller gets
    :class:`~aiobound.DeadlineExceeded`, and the scheduler is asked, in the
    same atomic step as a cancellation, to cancel the task if no worker has
    it: then it never runs (stage ``"queued"``; its slot is freed, it counts
    in ``stats().cancelled``); else it counts as started (stage
    ``"running"``, ``stats().abandoned``), runs to the end on its worker and
    keeps its slot until then, as on a thread pool. The event loop waits for
    that answer (one round trip to the scheduler, at most 1 s; without an
    answer the task counts as started), once per call that reaches its
    deadline unfinished.

    Args:
        client: A synchronous ``distributed.Client`` (made without
            ``asynchronous=True``); this executor does not close it.
        bound: Most tasks at once. Default: twice the cluster's threads
            at the time of the call (``client.nthreads()``).
        max_pending: As in :class:`BoundedLoopExecutor`.
        max_wait: As in :class:`BoundedLoopExecutor`.
        max_per_second: As in :class:`BoundedLoopExecutor`.
        burst: As in :class:`BoundedLoopExecutor`.
        call_timeout: As in :class:`BoundedLoopExecutor` (see above).

    Raises:
        TypeError: *client* is not a synchronous ``distributed.Client``, or
            another argument has the wrong type.
        ValueError: an argument is out of range, or the cluster has no
            workers and ``bound`` is not given.
    """
    if not isinstance(client, Client):
        raise TypeError(
            f"client must be a distributed.Client, got {type(client).__name__} "
            f"{client!r}"
        )
    if client.asynchronous:
        raise TypeError(
            "client must be a synchronous distributed.Client (not "
            "asynchronous=True); with an asynchronous one, use "
            "BoundedLoopExecutor(executor=client.get_executor(), bound=...)"
        )
    if bound is None:
        threads = sum(client.nthreads().values())
        if not threads:
            raise ValueError(
                "bound is required when the cluster has no workers yet "
                "(the default is twice its threads)"
            )
        bound = 2 * threads
    pool = _ClientExecutor(client)
    # BoundedLoopExecutor checks bound (and the rest) and names it.
    executor = BoundedLoopExecutor(
        executor=pool,
        bound=bound,
        max_pending=max_pending,
        max_wait=max_wait,
        max_per_second=max_per_second,
        burst=burst,
        call_timeout=call_timeout,
    )
    pool._front = weakref.ref(executor)
    return executor


class _TaskFuture(concurrent.futures.Future[T]):
    """The future of one Dask task.

    It stays pending until Dask reports the outcome, and then is completed
    on the client's loop, after the task was released on the scheduler, so
    the slot is freed after the task is gone. When the scheduler cancelled
    the task before any worker got it, it ends cancelled (``cancelled()`` is
    true), on the event loop of whoever asked (so the executor in front
    frees the slot in that same step) or on the thread that waits for the
    answer; otherwise with the task's result or error, or with
    ``ClosedClientError`` if the client closes first.

    ``running()`` is false, except for a call with a deadline once that has
    passed: then the first ``running()`` (or ``cancel()``) asks the
    scheduler to cancel the task if no worker has it, waits for the answer
    (:meth:`_decide`), and from then on ``running()`` says whether a worker
    had it and ``cancel()`` whether it was cancelled (ending it cancelled:
    the answer alone does not, so that the executor in front can tell its
    caller first). This is what the executor in front asks at the deadline.
    """

    def __init__(
        self, owner: _ClientExecutor, task: DaskFuture[T], due: float | None = None
    ) -> None:
        super().__init__()
        self._owner = owner
        self._task = task
        # The call's deadline (time.time()), if it has one; once it passed,
        # whether the scheduler cancelled the task (None: not asked yet).
        self._due = due
        self._decided: bool | None = None
        # Set on the client's loop only.
        self._outcome_known = False
        self._decision: asyncio.Future[bool] | None = None
        # Guarded by the owner's lock.
        self._cancel_asked = False
        self._answered: threading.Event | None = None  # made when asked
        self._answer: bool | None = None  # the scheduler cancelled the task
        self._cancel_loop: asyncio.AbstractEventLoop | None = None  # the asker's
        self._waiting = 0  # threads waiting in cancel(): they end it cancelled

    def cancel(self) -> bool:
        """Have the scheduler cancel the task if no worker has it yet.

        Once the executor is closed (``aclose(timeout=...)`` giving up on
        the calls in flight), it waits for the scheduler's answer, one round
        trip (at most 10 s), also when the cancellation was asked before
        (by the call's caller): if the scheduler cancelled the task, this
        future is cancelled before ``cancel()`` returns. It returns ``True``
        only if this very call asked and the task was cancelled (it never
        runs); ``False`` if a worker has it (it runs on) or if it was asked
        before. Otherwise (a caller cancelling its call) it returns
        ``False`` at once without blocking, and the future ends cancelled a
        moment later, on the caller's event loop, if the scheduler cancelled
        the task; or with the task's outcome. Thread-safe; asking twice is
        asking once.
        """
        if self._past_due():
            return self._decide() and self._end_cancelled()
        owner = self._owner
        waits = owner._closing() and not owner._on_client_loop()
        asked = self._ask_once(waits)
        if asked is None:
            return False
        first, answered = asked
        if not waits:
            return False
        cancelled = self._wait_for_answer(answered, _CANCEL_ANSWER_TIMEOUT)
        # Ended here, on this thread, so that its done callbacks (the
        # executor's settle) run before cancel() returns.
        return cancelled and self._end_cancelled() and first

    def _ask_once(self, waits: bool) -> tuple[bool, threading.Event] | None:
        """Ask the scheduler to cancel the task, once for all askers.

        Returns ``None`` if the future has ended, else whether this was the
        first asking and the event set at the answer. With *waits*, the
        caller counts as waiting for it (``_answer`` then leaves the ending
        to the waiters) until :meth:`_wait_for_answer`.
        """
        owner = self._owner
        with owner._lock:
            if self.done():
                return None
            first = not self._cancel_asked
            if first:
                self._cancel_asked = True
                self._answered = threading.Event()
                self._cancel_loop = _running_loop()
            answered = self._answered
            assert answered is not None
            if waits:
                self._waiting += 1
        if first:
            owner._ask_to_cancel(self)
        return first, answered

    def _wait_for_answer(self, answered: threading.Event, timeout: float) -> bool:
        """Wait (at most *timeout*) for the answer; whether it was cancelled."""
        try:
            answered.wait(timeout)
        finally:
            with self._owner._lock:
                self._waiting -= 1
                cancelled = bool(self._answer)
        return cancelled

    def _end_cancelled(self) -> bool:
        """Cancel for good (the task never ran); runs the done callbacks.

        Returns whether the future is cancelled (not if it had ended).
        """
        return concurrent.futures.Future.cancel(self)

    def running(self) -> bool:
        """Whether a worker had the task at its deadline (false before it)."""
        if not self._past_due() or self.done():
            return False
        return not self._decide()

    def _past_due(self) -> bool:
        due = self._due
        return due is not None and time.time() >= due - _EARLY

    def _decide(self) -> bool:
        """At the deadline: whether the scheduler cancelled the task (once).

        Asks it, as :meth:`cancel` does, and waits for the answer (at most
        ``_DEADLINE_ANSWER_TIMEOUT``; none: ``False``, the task counts as
        started). A ``True`` answer does not end the future: the next
        ``cancel()`` does.
        """
        decided = self._decided
        if decided is not None:
            return decided
        asked = self._ask_once(waits=True)
        if asked is None:
            return False
        cancelled = self._wait_for_answer(asked[1], _DEADLINE_ANSWER_TIMEOUT)
        self._decided = cancelled
        return cancelled


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _not_running(
    client: Client, *, taken: bool = False, cause: BaseException | None = None
) -> Exception:
    """The error for a call that *client*, not running, refuses (or dropped).

    With a *cause* (the client's loop cancelled the call's follower) while
    the client still runs, it says just that.
    """
    status = client.status
    if status == "running" and cause is not None:
        error = RuntimeError(f"the Dask task was cancelled: {cause!r}")
        error.__cause__ = cause
        return error
    if status in ("closing", "closed"):
        state = "is closed"
    elif status == "connecting":
        state = "lost its scheduler and is closed unless it reconnects"
    else:
        state = "is not running"
    fate = "dropped the call it had taken" if taken else "cannot take the call"
    return ClosedClientError(
        f"the Dask client {state} (status {status!r}): it {fate}; {client!r}"
    )


def _make_scheduler_canceller() -> Callable[..., str]:
    """Return the function run on the scheduler to cancel a task not started.

    It is made inside a function so that it is pickled by value: the
    scheduler needs no aiobound to run it. It runs on the scheduler's event
    loop in one step, so no transition can slip between the look and the
    cancellation.
    """

    def cancel_if_not_started(key: Any, client_id: str, dask_scheduler: Any) -> str:
        ts = dask_scheduler.tasks.get(key)
        if ts is None:
            return "unknown"
        if ts.state not in ("released", "waiting", "queued", "no-worker"):
            return "started"
        reason = "cancelled by aiobound before any worker got it"
        try:
            dask_scheduler.stimulus_cancel(
                [key], client_id, force=False, reason=reason, msg=reason
            )
        except TypeError:  # older distributed: no reason/msg
            dask_scheduler.stimulus_cancel([key], client_id, False)
        return "cancelled"

    return cancel_if_not_started


class _ClientExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures`` executor over a ``distributed.Client``.

    Unlike ``client.get_executor()``, it releases each task on the scheduler
    *before* completing the task's future: the release and the next
    submission go to the scheduler in that order.
    """

    def __init__(self, client: Client) -> None:
        loop = client.loop
        if loop is None:
            raise ValueError(f"client has no event loop (is it closed?): {client!r}")
        self._client = client
        self._loop: IOLoop = loop
        # Tornado's IOLoop runs on an asyncio loop (tornado >= 5).
        self._asyncio_loop: asyncio.AbstractEventLoop = loop.asyncio_loop  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self._futures: set[_TaskFuture[Any]] = set()
        self._shutdown = False
        self._canceller = _make_scheduler_canceller()
        # The BoundedLoopExecutor in front, set by from_client.
        self._front: Callable[[], BoundedLoopExecutor | None] = lambda: None

    def _closing(self) -> bool:
        """Whether the executor in front was closed (or this one shut down)."""
        front = self._front()
        return self._shutdown or (front is not None and front.closed)

    def _on_client_loop(self) -> bool:
        return _running_loop() is self._asyncio_loop

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Submit ``fn(*args, **kwargs)`` as one task.

        Raises:
            ClosedClientError: the client is not running (closed, closing,
                or reconnecting to a lost scheduler).
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        client = self._client
        if client.status != "running":
            # A closing client would accept the task and drop it.
            raise _not_running(client)
        # Keyword arguments travel inside the call, where they cannot clash
        # with Client.submit's own (key=, workers=, priority=, ...).
        call: Callable[..., T] = functools.partial(fn, **kwargs) if kwargs else fn
        task: DaskFuture[T] = client.submit(call, *args, pure=False)
        cfut = _TaskFuture(self, task, wall_clock_deadline(fn, args))
        with self._lock:
            self._futures.add(cfut)
        cfut.add_done_callback(self._forget)
        if not self._soon(self._follow, task, cfut):
            task.release()
            _end_with(cfut, (False, _not_running(client, taken=True)))
        return cfut

    def _soon(self, fn: Callable[..., Any], /, *args: Any) -> bool:
        """Run ``fn(*args)`` on the client's loop; ``False`` if it has stopped.

        (The loop of a closed synchronous client stops, and then drops the
        callbacks it is given.)
        """
        if not self._asyncio_loop.is_running():
            return False
        self._loop.add_callback(fn, *args)
        return True

    def _forget(self, cfut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(cfut)  # type: ignore[arg-type,unused-ignore]

    async def _follow(self, task: DaskFuture[T], cfut: _TaskFuture[T]) -> None:
        """On the client's loop: wait for the task, release it, then report."""
        client = self._client
        if client.status not in _LISTENING:
            # Taken as the client began to close: the client drops it.
            task.release()
            _end_with(cfut, (False, _not_running(client, taken=True)))
            return
        try:
            result = await client.gather(task, asynchronous=True)
        except asyncio.CancelledError as exc:
            # The client's loop is stopping (the client was closed): nobody
            # else will end the call.
            _end_with(cfut, (False, _not_running(client, taken=True, cause=exc)))
            raise
        except BaseException as exc:
            outcome: tuple[bool, Any] | None = (False, exc)
        else:
            outcome = (True, result)
        cfut._outcome_known = True
        try:
            # The answer to a cancellation asked, unless the client lost its
            # scheduler (no answer may come; the task is lost with it).
            decision = cfut._decision
            if decision is not None and client.status == "running" and await decision:
                outcome = None  # cancelled before it started: _answer ends it
        except asyncio.CancelledError as exc:
            _end_with(cfut, (False, _not_running(client, taken=True, cause=exc)))
            raise
        finally:
            try:
                # release() queues its message to the scheduler ahead of the
                # callback below; the slot, and the next submission, come after.
                task.release()
            finally:
                if outcome is not None:
                    self._loop.add_callback(_end_with, cfut, outcome)

    def _ask_to_cancel(self, cfut: _TaskFuture[Any]) -> None:
        """Have the client's loop ask the scheduler to cancel *cfut*'s task."""
        if self._client.status != "running" or not self._soon(
            self._cancel_if_not_started, cfut
        ):
            self._answer(cfut, False)  # no scheduler to ask: it is left to run

    async def _cancel_if_not_started(self, cfut: _TaskFuture[Any]) -> None:
        """On the client's loop: have the scheduler cancel the task if it can.

        :meth:`_follow` waits for the same answer before it reports the
        task's outcome, so a task cancelled here ends cancelled, whichever
        of the two messages from the scheduler (the answer, the cancellation
        report) arrives first.
        """
        if cfut._outcome_known:
            self._answer(cfut, False)  # finished already: its outcome is on its way
            return
        decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        cfut._decision = decision
        cancelled = False
        try:
            cancelled = await self._ask_scheduler(cfut)
        except Exception:
            # The scheduler could not be asked (pickling of functions
            # disabled, connection lost, no answer): the task is left to run.
            cancelled = False
        finally:
            decision.set_result(cancelled)
            self._answer(cfut, cancelled)

    def _answer(self, cfut: _TaskFuture[Any], cancelled: bool) -> None:
        """Record the scheduler's answer; end *cfut* cancelled if it is yes.

        A thread waiting in :meth:`_TaskFuture.cancel` ends it itself;
        otherwise it is ended on the event loop of whoever asked, so that
        the executor in front frees the slot in that same step, not one
        hop later (``aclose(timeout=...)`` counts the slots still taken).
        """
        with self._lock:
            cfut._answer = cancelled
            waited_on = cfut._waiting > 0
            loop = cfut._cancel_loop
        answered = cfut._answered
        assert answered is not None
        answered.set()
        if not cancelled or waited_on:
            return
        if loop is not None:
            try:
                loop.call_soon_threadsafe(cfut._end_cancelled)
            except RuntimeError:  # that loop is closed
                pass
            else:
                return
        cfut._end_cancelled()

    async def _ask_scheduler(self, cfut: _TaskFuture[Any]) -> bool:
        key = cfut._task.key
        client = self._client
        for _ in range(_UNKNOWN_RETRIES):
            if client.status != "running":
                return False
            answer = await asyncio.wait_for(
                client.run_on_scheduler(
                    self._canceller, key, client.id, asynchronous=True
                ),
                _CANCEL_ANSWER_TIMEOUT,
            )
            if answer != "unknown":
                return bool(answer == "cancelled")
            if cfut._outcome_known:
                return False
            # The submission has not reached the scheduler yet.
            await asyncio.sleep(_UNKNOWN_RETRY_DELAY)
        return False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; cancel those not started if asked; wait if asked."""
        with self._lock:
            self._shutdown = True
            pending = list(self._futures)
        if cancel_futures:
            for cfut in pending:
                cfut.cancel()
        if wait:
            concurrent.futures.wait(pending)


def _end_with(cfut: _TaskFuture[Any], outcome: tuple[bool, Any]) -> None:
    """Complete *cfut* with ``(True, result)`` or ``(False, error)``.

    Unless it has ended already (cancelled, or ended because the client
    closed).
    """
    ok, value = outcome
    if not ok and isinstance(value, asyncio.CancelledError):
        # concurrent.futures would treat it as a cancellation marker.
        error = RuntimeError(f"the Dask task was cancelled: {value!r}")
        error.__cause__ = value
        value = error
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if ok:
            cfut.set_result(value)
        else:
            cfut.set_exception(value)
