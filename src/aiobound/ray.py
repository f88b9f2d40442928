"""Backpressure against a Ray cluster (extra ``ray``).

``import aiobound`` never imports this module, so the core stays standard
library only. :func:`from_ray` builds a :class:`~aiobound.BoundedLoopExecutor`
(and :func:`from_ray_sync` a :class:`~aiobound.BoundedExecutor`) whose calls
are Ray tasks, on the Ray this process is connected to (a local one started
by ``ray.init()``, or a cluster joined with ``ray.init(address=...)``). At
most ``bound`` tasks of its making are submitted and unfinished at once, so a
producer streaming millions of items never floods Ray's scheduler and object
store: this is the ``ray.wait`` loop that Ray's documentation teaches
("limit the number of pending tasks"), with the rest of aiobound's contract.

:class:`RayExecutor` is the ``concurrent.futures.Executor`` underneath: each
call is one task (the function and its arguments are sent as Ray sends any
task's; object refs among the arguments are resolved by Ray as usual), and
its future's ``cancel()`` asks Ray to cancel the task (``ray.cancel``,
``force=False``, ``recursive=False``) and never interrupts a call that has
started: see :class:`RayExecutor` for how, and for what is counted as what.

Workers import what they run: a function is pickled by reference when its
module is importable, so the workers need the modules of the functions you
submit, and ``aiobound`` itself (each task runs aiobound's task function,
which also makes ``map(..., chunksize=N)`` work).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import ray
from ray import cloudpickle
from ray.exceptions import TaskCancelledError

from aiobound import BoundedExecutor, BoundedLoopExecutor
from aiobound._deadlines import wall_clock_deadline

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType

__all__ = ("RayDisconnectedError", "RayExecutor", "from_ray", "from_ray_sync")

P = ParamSpec("P")
T = TypeVar("T")

# Once the executor in front is closed, how long cancel() waits for Ray to
# confirm the cancellation of the calls still unfinished (all of them at
# once, on the first such cancel()). A task that has not started is
# cancelled by the owner at once or by its worker within a round trip; one
# that has started never confirms (it runs on), so this is also how long a
# timed-out aclose() waits longer when calls are still running.
_CANCEL_ANSWER_WAIT = 0.5
# While calls are in flight, how often a watchdog thread checks that Ray is
# still connected: ray.shutdown() drops every task's outcome without a word
# (their futures would never end), so the watchdog ends them itself.
_WATCH_INTERVAL = 0.25
# Options of a task that this executor sets itself.
_RESERVED_OPTIONS = frozenset({"num_returns"})
# How long before its deadline a call counts as past it: the timer that
# marks the deadline may fire that much early (uvloop's run in milliseconds).
_EARLY = 0.005


class RayDisconnectedError(RuntimeError):
    """Ray is not connected in this process, or no longer the same Ray.

    Raised at once by ``submit`` (and by :func:`from_ray`) when
    ``ray.init()`` was never called, ``ray.shutdown()`` was, or Ray was
    initialized again since the executor was made: an executor is tied to
    the Ray session it was made in. A call in flight when Ray is shut down
    ends with this error: Ray drops the outcome of every task it had.
    """


# -- in the worker -------------------------------------------------------------

# The id of the Ray task whose call has started in this worker process (its
# fn runs, or ran), and the SIGINT handler that was in place before ours.
_started_task: str | None = None
_previous_handler: Any = None


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    """Ray's ``ray.cancel`` of the running task: ignored once fn has started.

    ``ray.cancel(force=False)`` interrupts a running task (it raises
    ``KeyboardInterrupt`` in it, through this handler). A call whose fn has
    started runs to the end instead; until then (and for tasks that are not
    aiobound's) the previous handler runs, so the task ends cancelled with
    fn never called.
    """
    started = _started_task
    if started is not None and ray.get_runtime_context().get_task_id() == started:
        return
    previous = _previous_handler
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        raise KeyboardInterrupt


def _run_call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """The Ray task of one call: from here on, cancellation leaves it alone.

    Ray runs normal tasks in the worker's main thread, where the handler is
    installed (once per worker process). A ``TaskCancelledError`` raised by
    fn itself (from a task it waited for) is wrapped, so that every
    ``TaskCancelledError`` of a call means that fn never started.
    """
    global _started_task, _previous_handler
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGINT)
        if current is not _on_interrupt:
            _previous_handler = current
            signal.signal(signal.SIGINT, _on_interrupt)
        _started_task = ray.get_runtime_context().get_task_id()
    try:
        return fn(*args, **kwargs)
    except TaskCancelledError as exc:
        raise RuntimeError(
            f"the call raised TaskCancelledError (a task it waited for was "
            f"cancelled): {exc}"
        ) from exc


# -- in the driver ---------------------------------------------------------------


def _session() -> tuple[str, str] | None:
    """The Ray session this process is connected to (``None``: none)."""
    if not ray.is_initialized():
        return None
    try:
        context = ray.get_runtime_context()
        return context.get_job_id(), context.get_node_id()
    except Exception:  # shut down meanwhile, on another thread
        return None


def _not_connected(made_in: tuple[str, str] | None) -> RayDisconnectedError:
    if not ray.is_initialized():
        return RayDisconnectedError(
            "Ray is not connected in this process (ray.init() was not called, "
            "or ray.shutdown() was): the call is refused"
        )
    return RayDisconnectedError(
        "Ray was shut down and initialized again since this executor was made "
        f"(job and node {made_in} then, {_session()} now): the call is "
        "refused; make a new executor"
    )


def _lost() -> RayDisconnectedError:
    return RayDisconnectedError(
        "Ray was shut down (or initialized again) while this call was in "
        "flight: Ray dropped the outcome of its task"
    )


def _check_options(options: object) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            "options must be a mapping of ray.remote options or None, got "
            f"{type(options).__name__}"
        )
    for key in options:
        if not isinstance(key, str):
            raise TypeError(f"options keys must be str, got {key!r}")
        if key in _RESERVED_OPTIONS:
            raise ValueError(
                f"options may not set {key!r}: each call is one task with one result"
            )
    return dict(options)


class _TaskFuture(concurrent.futures.Future[T]):
    """The future of one call's Ray task.

    It stays pending until Ray reports the outcome, then ends with the
    task's result or error, or cancelled when Ray cancelled the task before
    fn started. Whoever first learns the outcome (Ray's callback thread, a
    ``cancel()``, the watchdog) *claims* the future and ends it, outside the
    executor's lock.

    ``running()`` is false, except for a call with a deadline once that has
    passed: then the first ``running()`` asks Ray to cancel the task
    (:meth:`_decide`) and says whether Ray had already handed it to a
    worker (it could not cancel it at once); a task it cancelled at once
    keeps its outcome for the next ``cancel()``, which ends it cancelled.
    This is what the executor in front asks at the deadline.
    """

    def __init__(
        self, owner: RayExecutor, ref: ray.ObjectRef[T], due: float | None = None
    ) -> None:
        super().__init__()
        self._owner = owner
        self._ref: ray.ObjectRef[T] | None = ref  # dropped once claimed
        # The call's deadline (time.time()), if it has one; once it passed,
        # whether Ray had handed the task to a worker (None: not asked yet).
        self._due = due
        self._handed: bool | None = None
        # Guarded by the owner's lock: whether someone ended (or is ending)
        # the future; whether a cancel() is under way; the outcome Ray
        # reported meanwhile, left to that cancel() to deliver.
        self._claimed = False
        self._cancelling = False
        self._held = False  # a closing batch holds its outcome for cancel()
        self._deferred: concurrent.futures.Future[T] | None = None

    def cancel(self) -> bool:
        """Have Ray cancel the task if fn has not started; never interrupt it.

        Returns ``True`` (and the future is cancelled) when Ray has already
        cancelled the task when ``cancel()`` returns: it never runs. A call
        whose task Ray has not cancelled yet returns ``False``; it ends
        cancelled later if Ray does, or with its outcome. Once the executor
        in front is closed, ``cancel()`` first waits for Ray's answers (at
        most 0.5 s for all the calls then unfinished together), so that the
        calls still running are told apart from those cancelled.
        Thread-safe; asking twice is harmless.
        """
        return self._owner._cancel(self)

    def running(self) -> bool:
        """Whether Ray had handed the task to a worker at its deadline.

        ``False`` before the deadline (and for a call without one).
        """
        due = self._due
        if due is None or time.time() < due - _EARLY or self.done():
            return False
        return self._decide()

    def _decide(self) -> bool:
        """At the deadline: ask Ray to cancel the task; whether a worker has it.

        A task Ray had not handed to a worker is cancelled at once by its
        owner (this process): its outcome is held for the next
        :meth:`cancel`. Asked once.
        """
        handed = self._handed
        if handed is not None:
            return handed
        owner = self._owner
        with owner._lock:
            ref = self._ref
            if self._claimed or ref is None:
                return False
            self._held = True  # a cancellation ends it, not Ray's thread
        try:
            ray.cancel(ref, force=False, recursive=False)
            handed = not ray.wait([ref], timeout=0, fetch_local=False)[0]
        except Exception:  # Ray could not be asked: it is left to run
            handed = True
        if handed:
            with owner._lock:
                self._held = False
                deferred = self._deferred
                self._deferred = None
                mine = deferred is not None and self._unclaimed()
                if mine:
                    self._claimed = True
                    owner._pending.discard(self)
            if mine:  # it ended meanwhile: its outcome goes out as usual
                assert deferred is not None
                self._ref = None
                _set_outcome(self, deferred)
        self._handed = handed
        return handed

    def _unclaimed(self) -> bool:
        """Under the owner's lock: whether nobody ended or is ending it."""
        return not self._claimed

    def _end_cancelled(self) -> None:
        """Cancel for good (fn never started); runs the done callbacks.

        Then moves the future on to the state an executor's worker gives a
        cancelled future it takes (``set_running_or_notify_cancel``):
        ``concurrent.futures.wait`` and ``as_completed`` count only that one
        as done.
        """
        if concurrent.futures.Future.cancel(self):
            self.set_running_or_notify_cancel()


class RayExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls are Ray tasks.

    ``submit(fn, *args, **kwargs)`` starts one task that runs
    ``fn(*args, **kwargs)`` (through aiobound's task function, so the workers
    need ``aiobound`` importable) and returns a future that ends with the
    task's result, or its error as Ray reports it (``RayTaskError``
    subclasses that are also instances of fn's exception class;
    ``WorkerCrashedError`` when its worker died and Ray's retries, set by
    ``max_retries``, ran out). It never runs more tasks than it is given:
    put it under :func:`from_ray` or :func:`from_ray_sync` for a bound.

    Cancellation (``future.cancel()``) asks Ray to cancel the task
    (``ray.cancel(ref, force=False, recursive=False)``):

    * A task that has not started (waiting for its arguments, a worker, or
      in its worker's queue) never runs: the future ends cancelled (at once
      when Ray had not handed the task to a worker yet, else when the worker
      answers).
    * Ray interrupts a *running* task with ``KeyboardInterrupt``; aiobound's
      task function does not let it reach fn: a call whose fn has started
      runs to the end, and its future ends with its outcome. (Between the
      worker taking the task and fn starting, the interrupt still cancels
      it, and fn never starts.) A ``TaskCancelledError`` that fn itself
      raises reaches the caller as the ``__cause__`` of a ``RuntimeError``,
      so a cancelled future always means that fn never started.
    * A task cancelled while Ray waits to retry it after its worker died
      ends cancelled, though fn may have run in part on the dead worker.

    A call with a deadline (aiobound's ``call_timeout=`` or
    ``with_timeout()``) carries it to its worker as a :func:`time.time`
    instant (for :func:`~aiobound.remaining`). At the deadline, the
    executor in front asks its future whether it runs: Ray is then asked to
    cancel the task, and it "runs" if Ray had already handed it to a worker
    (it could not cancel it at once); if not, Ray has cancelled it and it
    never runs.

    If ``ray.shutdown()`` is called (or Ray is initialized again) while
    calls are in flight, Ray drops their outcomes without a word: a
    watchdog thread, alive while calls are in flight, ends them with
    :class:`RayDisconnectedError` within a quarter of a second. Once Ray is
    gone, ``submit`` refuses at once with the same error (it never lets
    ``ray.remote`` start a new local Ray, as Ray does by default).

    Args:
        options: ``ray.remote`` options for every task (``num_cpus``,
            ``max_retries``, ``resources``, ``runtime_env``, ...), checked
            by Ray here; ``num_returns`` is refused.

    Raises:
        RayDisconnectedError: Ray is not connected in this process.
        TypeError, ValueError: *options* is not a dict of valid options.
    """

    def __init__(self, *, options: Mapping[str, Any] | None = None) -> None:
        checked = _check_options(options)
        session = _session()
        if session is None:
            raise _not_connected(None)
        remote = ray.remote(_run_call)
        self._remote = remote.options(**checked) if checked else remote
        self._options = checked
        self._session = session
        self._lock = threading.Lock()
        self._pending: set[_TaskFuture[Any]] = set()
        self._shutdown = False
        self._watchdog: threading.Thread | None = None
        # Once closed: whether the calls then unfinished were all asked to
        # cancel (and answered, or given up on), as one batch.
        self._close_batch_done = False
        # The executor in front (from_ray and from_ray_sync set it).
        self._front: Callable[[], BoundedLoopExecutor | BoundedExecutor | None] = (
            lambda: None
        )

    @property
    def options(self) -> dict[str, Any]:
        """The ``ray.remote`` options of every task (a copy)."""
        return dict(self._options)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "open"
        return (
            f"<{type(self).__name__} pending={len(self._pending)} "
            f"options={self._options!r} {state}>"
        )

    # -- submission -------------------------------------------------------------

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Start ``fn(*args, **kwargs)`` as one Ray task; return its future.

        Raises:
            RuntimeError: the executor was shut down.
            RayDisconnectedError: Ray is not connected, or not the same Ray.
            TypeError: fn or an argument cannot be serialized (the message
                names which).
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        if _session() != self._session:
            raise _not_connected(self._session)
        try:
            ref: ray.ObjectRef[T] = self._remote.remote(fn, *args, **kwargs)
        except TypeError as exc:
            raise _explain_serialization(exc, fn, args, kwargs) from exc
        cfut: _TaskFuture[T] = _TaskFuture(self, ref, wall_clock_deadline(fn, args))
        with self._lock:
            self._pending.add(cfut)
            if self._watchdog is None:
                self._start_watchdog()
        ref.future().add_done_callback(functools.partial(self._task_ended, cfut))
        return cfut

    def _claim(self, cfut: _TaskFuture[Any]) -> bool:
        """Whether the caller is the one to end *cfut* (only one ever is)."""
        with self._lock:
            if cfut._claimed:
                return False
            cfut._claimed = True
            self._pending.discard(cfut)
        cfut._ref = None
        return True

    def _task_ended(
        self, cfut: _TaskFuture[Any], done: concurrent.futures.Future[Any]
    ) -> None:
        """In Ray's thread: the task ended; give its future the outcome.

        While a ``cancel()`` of the same future runs (or one is due, see
        :meth:`_cancel`), the outcome is left to it, so that a future
        cancelled there ends in ``cancel()``'s thread.
        """
        with self._lock:
            if cfut._claimed:
                return
            if cfut._cancelling or cfut._held:
                cfut._deferred = done
                return
        if self._claim(cfut):
            _set_outcome(cfut, done)

    # -- cancellation -------------------------------------------------------------

    def _closing(self) -> bool:
        """Whether the executor in front was closed (or this one shut down)."""
        front = self._front()
        return self._shutdown or (front is not None and front.closed)

    def _cancel(self, cfut: _TaskFuture[Any]) -> bool:
        """:meth:`_TaskFuture.cancel`.

        Once the executor in front is closed, the first ``cancel()`` asks Ray
        to cancel every call still unfinished and waits (at most
        ``_CANCEL_ANSWER_WAIT``) for the answers, the others' included: a
        closing executor cancels them all, one after the other (an async
        front in one step of its loop). On an event loop, the outcomes of
        the others are held until their own ``cancel()`` in that step (or
        until the step ends), so that each ends in its ``cancel()`` and
        is counted as cancelled there.
        """
        if _session() != self._session:
            # Ray is gone: the task's outcome can never come.
            if self._claim(cfut):
                cfut.set_exception(_lost())
            return False
        loop = _running_loop()
        with self._lock:
            ref = cfut._ref
            if cfut._claimed or ref is None or cfut._cancelling:
                return False
            cfut._cancelling = True
            refs = [ref]
            held: list[_TaskFuture[Any]] = []
            batch = self._closing() and not self._close_batch_done
            if batch:
                self._close_batch_done = True
                for other in self._pending:
                    if other is not cfut and other._ref is not None:
                        refs.append(other._ref)
                        if loop is not None and not other._cancelling:
                            other._held = True
                            held.append(other)
        if held:
            assert loop is not None
            loop.call_soon(self._release, held)
        ready = False
        try:
            for each in refs:
                ray.cancel(each, force=False, recursive=False)
            if batch:
                ray.wait(
                    refs,
                    num_returns=len(refs),
                    timeout=_CANCEL_ANSWER_WAIT,
                    fetch_local=False,
                )
            ready = bool(ray.wait([ref], timeout=0, fetch_local=False)[0])
        except Exception:
            # Ray could not be asked (shutting down, say): the task is left
            # to run, or to be ended by the watchdog.
            ready = False
        finally:
            with self._lock:
                cfut._cancelling = cfut._held = False
                deferred = cfut._deferred
                cfut._deferred = None
                # (The watchdog may have claimed it meanwhile.)
                mine = (ready or deferred is not None) and cfut._unclaimed()
                if mine:
                    cfut._claimed = True
                    self._pending.discard(cfut)
        if not mine:
            return False  # not cancelled yet: running, or Ray answers later
        cfut._ref = None
        # Ray has the outcome: end the future here, in the caller's thread,
        # so that its done callbacks (an executor's accounting) run now.
        try:
            value = deferred.result() if deferred is not None else ray.get(ref)
        except TaskCancelledError:
            cfut._end_cancelled()
            return True
        except BaseException as exc:
            cfut.set_exception(exc if deferred is not None else _as_reported(exc))
        else:
            cfut.set_result(value)
        return False

    def _release(self, held: list[_TaskFuture[Any]]) -> None:
        """On the loop, after a closing step: deliver outcomes still held."""
        for cfut in held:
            with self._lock:
                if not cfut._held:
                    continue  # its own cancel() came
                cfut._held = False
                deferred = cfut._deferred
                cfut._deferred = None
                mine = deferred is not None and cfut._unclaimed()
                if mine:
                    cfut._claimed = True
                    self._pending.discard(cfut)
            if mine:
                assert deferred is not None
                cfut._ref = None
                _set_outcome(cfut, deferred)

    # -- the watchdog -------------------------------------------------------------

    def _start_watchdog(self) -> None:
        """Under the lock: watch Ray's connection while calls are in flight."""
        thread = threading.Thread(
            target=self._watch, name="aiobound-ray-watchdog", daemon=True
        )
        self._watchdog = thread
        thread.start()

    def _watch(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._watchdog = None
                    return
            if _session() != self._session:
                self._end_all_lost()
                continue
            time.sleep(_WATCH_INTERVAL)

    def _end_all_lost(self) -> None:
        with self._lock:
            pending = list(self._pending)
        for cfut in pending:
            if self._claim(cfut):
                cfut.set_exception(_lost())

    # -- shutting down --------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; cancel those not started if asked; wait if asked.

        Ray itself is left running (``ray.shutdown()`` is the application's).
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for cfut in pending:
                cfut.cancel()
        if wait:
            concurrent.futures.wait(pending)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _as_reported(exc: BaseException) -> BaseException:
    """A task's error as ``ObjectRef.future()`` reports it."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause: BaseException = exc.as_instanceof_cause()
        return cause
    return exc


def _set_outcome(cfut: _TaskFuture[Any], done: concurrent.futures.Future[Any]) -> None:
    try:
        value = done.result()
    except TaskCancelledError:
        cfut._end_cancelled()
    except BaseException as exc:
        cfut.set_exception(exc)
    else:
        cfut.set_result(value)


def _explain_serialization(
    error: TypeError,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> TypeError:
    """Name the part of a call that Ray could not serialize, if one fails alone."""
    parts: Iterable[tuple[str, object]] = (
        ("fn", fn),
        *((f"argument {index}", arg) for index, arg in enumerate(args)),
        *((f"keyword argument {name!r}", arg) for name, arg in kwargs.items()),
    )
    for what, part in parts:
        failure = _serialization_error(part)
        if failure is not None:
            return TypeError(
                f"the call cannot be sent to Ray: {what} ({_short_repr(part)}) "
                f"cannot be serialized: {failure}"
            )
    return error


def _serialization_error(obj: object) -> Exception | None:
    """Why Ray's pickler refuses *obj* (``None``: it does not)."""
    try:
        cloudpickle.dumps(obj)
    except Exception as exc:
        return exc
    return None


def _short_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= 80 else text[:77] + "..."


def _default_bound(options: Mapping[str, Any]) -> int:
    """Twice the tasks the cluster's CPUs can run at once, now."""
    cpus = float(ray.cluster_resources().get("CPU", 0))
    per_task = options.get("num_cpus", 1)
    if not isinstance(per_task, (int, float)) or per_task <= 0 or cpus <= 0:
        raise ValueError(
            "bound is required when the tasks' CPU count is not known "
            f"(cluster CPUs={cpus:g}, num_cpus={per_task!r}); the default is "
            "twice the tasks the cluster's CPUs can run at once"
        )
    return max(1, 2 * int(cpus // per_task))


def from_ray(
    *,
    bound: int | None = None,
    max_pending: int | None = None,
    max_wait: float | None = None,
    max_per_second: float | None = None,
    burst: int | None = None,
    options: Mapping[str, Any] | None = None,
    call_timeout: float | None = None,
) -> BoundedLoopExecutor:
    """Return a :class:`~aiobound.BoundedLoopExecutor` whose calls are Ray tasks.

    Each call (or each chunk of ``map(..., chunksize=N)``) is one task on
    the Ray this process is connected to; at most ``bound`` tasks of this
    executor are submitted and unfinished at once, and a task's slot is
    freed only when Ray reports its end. A task costs about a millisecond
    of Ray's overhead, so send short calls in chunks.

    A task that fails because its worker died is retried by Ray (up to its
    ``max_retries``, 3 by default for tasks), then its error, as Ray reports
    it (``WorkerCrashedError``), reaches the caller; nothing hangs.

    Cancellation (a caller cancelling its call, or
    :meth:`~aiobound.BoundedLoopExecutor.aclose` giving up after its
    ``timeout``) asks Ray to cancel the task and never interrupts a call
    whose fn has started (see :class:`RayExecutor`). A task that has not
    started never runs: it counts as ``cancelled`` in ``stats()``, its
    caller sees the cancellation (after ``aclose(timeout=...)``:
    :class:`~aiobound.ClosedError`). A started call runs to the end, keeps
    its slot until then, and counts as it ends. A caller cancelling its
    call does not wait for Ray: a task Ray had not handed to a worker yet is
    cancelled at once; otherwise the slot is freed when the worker answers.
    Once the executor is closed, the first cancellation asks Ray to cancel
    every call then unfinished and waits for its answers (at most 0.5 s, the
    event loop with it), so that the ``TimeoutError`` of ``aclose(timeout=)``
    counts the cancelled and the running calls apart; a call whose worker
    has not answered within that time counts as running (it still ends
    cancelled, and counts so, when the answer comes).
    :meth:`~aiobound.BoundedLoopExecutor.aclose` without a timeout waits for
    the calls in flight and leaves Ray running.

    Deadlines (``call_timeout=``, or a view from
    :meth:`~aiobound.BoundedLoopExecutor.with_timeout`): the deadline travels
    with the task as a :func:`time.time` instant, where
    :func:`~aiobound.remaining` reads it (off by the difference between the
    clocks). At the deadline the caller gets
    :class:`~aiobound.DeadlineExceeded`, and Ray is asked to cancel the task:
    a task Ray had not handed to a worker is cancelled at once and never
    runs (stage ``"queued"``; its slot is freed, it counts in
    ``stats().cancelled``); one a worker has counts as running (stage
    ``"running"``, ``stats().abandoned``) and keeps its slot until it ends:
    if its fn has started it runs to the end, as on a thread pool; if not,
    the worker cancels it and it never runs (then it counts in
    ``stats().cancelled`` too, when the worker answers). Nothing blocks.

    If Ray is shut down while calls are in flight, they end with
    :class:`RayDisconnectedError` (within a quarter of a second) and
    ``aclose()`` returns; further calls are refused at once with that error.

    Args:
        bound: Most tasks at once. Default: twice the tasks the cluster's
            CPUs can run at once, at the time of the call (``2 x CPUs``, or
            ``2 x CPUs // num_cpus`` with ``options={"num_cpus": ...}``).
        max_pending: As in :class:`~aiobound.BoundedLoopExecutor`.
        max_wait: As in :class:`~aiobound.BoundedLoopExecutor`.
        max_per_second: As in :class:`~aiobound.BoundedLoopExecutor`.
        burst: As in :class:`~aiobound.BoundedLoopExecutor`.
        options: ``ray.remote`` options for every task (see
            :class:`RayExecutor`).
        call_timeout: As in :class:`~aiobound.BoundedLoopExecutor` (see
            above).

    Raises:
        RayDisconnectedError: Ray is not connected in this process
            (``ray.init()`` first).
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range, an option is invalid, or
            the default bound cannot be computed (no CPUs, or
            ``num_cpus=0``).
    """
    pool = RayExecutor(options=options)
    if bound is None:
        bound = _default_bound(pool._options)
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


def from_ray_sync(
    *,
    bound: int | None = None,
    max_pending: int | None = None,
    max_wait: float | None = None,
    options: Mapping[str, Any] | None = None,
    call_timeout: float | None = None,
) -> BoundedExecutor:
    """Return a :class:`~aiobound.BoundedExecutor` whose calls are Ray tasks.

    The synchronous twin of :func:`from_ray`, for threads: ``submit`` blocks
    the calling thread until a slot is free, ``map`` is lazy and bounded.
    The same defaults, cancellation, deadlines (``call_timeout=``,
    :meth:`~aiobound.BoundedExecutor.with_timeout`) and errors as
    :func:`from_ray`; ``shutdown(cancel_futures=True)`` cancels the calls
    not started.

    Raises:
        RayDisconnectedError, TypeError, ValueError: as :func:`from_ray`.
    """
    pool = RayExecutor(options=options)
    if bound is None:
        bound = _default_bound(pool._options)
    executor = BoundedExecutor(
        executor=pool,
        bound=bound,
        max_pending=max_pending,
        max_wait=max_wait,
        call_timeout=call_timeout,
    )
    pool._front = weakref.ref(executor)
    return executor
