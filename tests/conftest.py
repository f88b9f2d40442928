"""Shared fixtures: event loops, gates for worker threads, executors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import pytest

from aiobound import BoundedLoopExecutor

if TYPE_CHECKING:
    from pytest_asyncio.plugin import LoopFactory

new_uvloop: Callable[[], asyncio.AbstractEventLoop] | None
try:
    import uvloop

    new_uvloop = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is in the test group
    new_uvloop = None

P = ParamSpec("P")
T = TypeVar("T")

# How long a worker thread waits on a gate before giving up. Only a guard
# against a hang in a broken test; a passing test never waits this long. The
# mutation session (nox -s mutants) makes it short: a mutant that hangs a
# test then costs 2 s instead of 30, and a passing test waits milliseconds.
MUTANTS = os.environ.get("AIOBOUND_HYPOTHESIS_PROFILE") == "mutants"
GATE_TIMEOUT = 2.0 if MUTANTS else 30.0


class _PerThreadClass(type):
    """Metaclass of a stand-in class: calling it, and ``isinstance`` checks
    against it, go to the class that ``_choose()`` picks for the calling thread.
    """

    _choose: Callable[[], type]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._choose()(*args, **kwargs)

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, cls._choose())

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, cls._choose())


@contextlib.contextmanager
def _patch_for_this_thread(target: object, name: str, new: Any) -> Iterator[None]:
    """Set ``target.name`` to *new* for the calling thread only, meanwhile.

    Other threads keep seeing the original (a class stays a class for them,
    for ``isinstance`` too). Replaces ``_patch_object`` of
    ``backports.asyncio.runner``: see :func:`_confine_backport_runner_patches`.
    """
    original = getattr(target, name)
    owner = threading.get_ident()

    def choose() -> Any:
        return new if threading.get_ident() == owner else original

    def call_chosen(*args: Any, **kwargs: Any) -> Any:
        return choose()(*args, **kwargs)

    stand_in: object = call_chosen
    if isinstance(original, type):
        stand_in = _PerThreadClass(
            original.__name__, (), {"_choose": staticmethod(choose)}
        )
    setattr(target, name, stand_in)
    try:
        yield
    finally:
        setattr(target, name, original)


def _confine_backport_runner_patches() -> None:
    """Keep pytest-asyncio's runner, on Python 3.10, out of other threads.

    Before 3.11 pytest-asyncio uses ``backports.asyncio.runner``, whose
    ``Runner.run`` sets ``asyncio.tasks.Task`` (to a pure-Python Task) and
    ``contextvars.copy_context`` (to return the runner's context) for the
    whole process while it creates each test's task. A thread running an
    event loop of its own at that moment, such as a Dask client's, gets a
    Task that tornado refuses as a future (``assert is_future``), which kills
    the coroutine that yielded it (Dask's ``BatchedSend``: the client never
    sends the scheduler anything again), or a callback that runs in the
    runner's context while the test's task is in it (``cannot enter
    context``), and is lost. Confining the patches to the runner's thread
    keeps what the runner itself gets and leaves other threads alone.
    """
    backport: Any = importlib.import_module("backports.asyncio.runner.runner")
    if not callable(getattr(backport, "_patch_object", None)):
        raise RuntimeError(
            "backports.asyncio.runner changed: conftest.py can no longer keep "
            "its Runner.run from patching asyncio for every thread; revisit "
            "_confine_backport_runner_patches"
        )
    backport._patch_object = _patch_for_this_thread


if sys.version_info < (3, 11):
    _confine_backport_runner_patches()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, LoopFactory]:
    """Run every async test on the default loop and on uvloop."""
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if new_uvloop is not None:
        factories["uvloop"] = new_uvloop
    return factories


class Gate(Generic[T]):
    """A blocking function for worker threads, controlled from the test.

    Each call reports that it started (on the loop, through an asyncio.Event
    and a counter), then blocks until :meth:`open` is called, then returns
    its argument or raises ``error``.
    """

    def __init__(self, error: BaseException | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._opened = threading.Event()
        self._lock = threading.Lock()
        self._error = error
        self.calls: list[object] = []  # arguments of calls that started
        self.finished = 0
        self.running = 0
        self.peak_running = 0
        self._started_events: list[tuple[int, asyncio.Event]] = []

    def __call__(self, value: T) -> T:
        with self._lock:
            self.calls.append(value)
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            count = len(self.calls)
        self._notify(count)
        try:
            if not self._opened.wait(GATE_TIMEOUT):
                raise TimeoutError("the test never opened this gate")
            if self._error is not None:
                raise self._error
            return value
        finally:
            with self._lock:
                self.running -= 1
                self.finished += 1

    def _notify(self, count: int) -> None:
        with contextlib.suppress(RuntimeError):  # the test's loop is gone
            self._loop.call_soon_threadsafe(self._wake, count)

    def _wake(self, count: int) -> None:
        for wanted, event in self._started_events:
            if count >= wanted:
                event.set()

    async def started(self, count: int = 1) -> None:
        """Wait until at least ``count`` calls have started."""
        with self._lock:
            if len(self.calls) >= count:
                return
            event = asyncio.Event()
            self._started_events.append((count, event))
        await event.wait()

    def open(self) -> None:
        """Let every blocked and future call through."""
        self._opened.set()


class Arrivals:
    """Counts requests that reached a handler; lets the test wait for N."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def arrive(self) -> None:
        self.count += 1
        for wanted, event in self._waiters:
            if self.count >= wanted:
                event.set()

    async def reached(self, count: int) -> None:
        """Wait until at least ``count`` requests have arrived."""
        if self.count >= count:
            return
        event = asyncio.Event()
        self._waiters.append((count, event))
        await event.wait()


class GateFactory:
    """Makes gates and opens all of them at teardown (pool threads are
    joined at interpreter exit, so a forgotten gate would hang it)."""

    def __init__(self) -> None:
        self._gates: list[Gate[Any]] = []

    def __call__(self, error: BaseException | None = None) -> Gate[Any]:
        gate: Gate[Any] = Gate(error)
        self._gates.append(gate)
        return gate

    def open_all(self) -> None:
        for gate in self._gates:
            gate.open()


@pytest.fixture
def make_gate() -> Iterator[GateFactory]:
    factory = GateFactory()
    yield factory
    factory.open_all()


class CountingExecutor(concurrent.futures.Executor):
    """Wraps a thread pool and records how many calls were in it at once.

    ``in_pool`` counts calls submitted and not finished (queued or running),
    which is exactly what ``bound`` limits.
    """

    def __init__(self, max_workers: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers)
        self._lock = threading.Lock()
        self.in_pool = 0
        self.peak_in_pool = 0
        self.submits = 0

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        with self._lock:
            self.in_pool += 1
            self.submits += 1
            self.peak_in_pool = max(self.peak_in_pool, self.in_pool)
        fut = self._pool.submit(fn, *args, **kwargs)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self.in_pool -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class FailingExecutor(concurrent.futures.Executor):
    """An executor whose submit always raises the given error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        raise self.error


class SubmitRefused(RuntimeError):
    """What ManualExecutor.submit raises for a call marked to be refused."""


class ManualExecutor(concurrent.futures.Executor):
    """Runs nothing: returns futures the test completes by hand.

    Completing one on the loop's thread settles the call at once, inside the
    test's own step, which lets a test order a slot's release exactly against
    others. Each call is known by its first positional argument, its *tag*.

    Args:
        cap: Most calls allowed in it at once (say, the bound); a submission
            beyond it is recorded in ``violations``. ``None``: no check.
    """

    def __init__(self, cap: Callable[[], int] | None = None) -> None:
        self._cap = cap
        self.futures: list[concurrent.futures.Future[Any]] = []  # in order
        self.by_tag: dict[object, concurrent.futures.Future[Any]] = {}
        self.pending: set[object] = set()  # tags whose future is not done
        self.submit_log: list[object] = []  # every submit, refused ones too
        self.refuse: set[object] = set()  # tags whose submit raises
        self.violations: list[str] = []

    @property
    def submits(self) -> int:
        """Calls submitted, refused ones included."""
        return len(self.submit_log)

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        tag = args[0] if args else None
        self.submit_log.append(tag)
        if tag in self.refuse:
            raise SubmitRefused(f"call {tag} refused by the executor")
        if self._cap is not None and len(self.pending) + 1 > self._cap():
            self.violations.append(
                f"call {tag} submitted with {len(self.pending)} in the pool, "
                f"cap {self._cap()}"
            )
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.futures.append(future)
        self.by_tag[tag] = future
        self.pending.add(tag)
        future.add_done_callback(lambda _: self.pending.discard(tag))
        return future


ExecutorFactory = Callable[..., BoundedLoopExecutor]


@pytest.fixture
async def make_executor(make_gate: GateFactory) -> AsyncIterator[ExecutorFactory]:
    """Build executors; each is closed at teardown after opening all gates."""
    made: list[BoundedLoopExecutor] = []
    pools: list[concurrent.futures.Executor] = []

    def factory(*, shut_down_pool: bool = True, **kwargs: Any) -> BoundedLoopExecutor:
        """Make an executor; a pool passed as ``executor=`` is shut down at
        teardown unless ``shut_down_pool=False`` (for shared fixtures)."""
        executor = BoundedLoopExecutor(**kwargs)
        made.append(executor)
        if "executor" in kwargs and shut_down_pool:
            pools.append(kwargs["executor"])
        return executor

    yield factory
    make_gate.open_all()
    for executor in made:
        # Bounded, so that a test that failed with calls left pending in a
        # hand-completed executor errors at teardown instead of hanging
        # (pytest-timeout does not watch teardown after a failure): calls
        # not started are cancelled; running ones make this raise.
        await executor.aclose(timeout=GATE_TIMEOUT)
    for pool in pools:
        pool.shutdown(wait=True)


async def settle() -> None:
    """Let every callback and task that is ready run, a few loop turns deep.

    Deterministic: it waits for no clock and no thread, it only lets tasks
    created just before take their first steps (e.g. reach a slot's queue).
    """
    for _ in range(5):
        await asyncio.sleep(0)


def assert_idle(executor: BoundedLoopExecutor) -> None:
    """No slot taken, nobody waiting, every submitted call accounted for."""
    stats = executor.stats()
    assert stats.in_flight == 0, stats
    assert stats.waiting == 0, stats
    assert stats.submitted == stats.completed + stats.failed + stats.cancelled, stats
