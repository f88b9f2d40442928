"""Completions hammered from many threads while callers cancel and submit.

Four cases, each bounded in count, run on asyncio and on uvloop:

* futures completed by hand: eight threads take the pool's futures in random
  batches, mark some running and finish them later (from another thread),
  finish others at once, with a value or an exception, while the loop keeps
  submitting and cancels callers at random points (waiting for a slot, call
  queued, call running);
* a real thread pool with twice ``bound`` workers, whose calls block on
  :class:`threading.Event` objects that several threads release in random
  order; a counter inside the called function checks the bound;
* rounds in which eight threads complete one future each at the same
  instant (a :class:`threading.Barrier`), with nothing after them: a
  completion that arrives while a drain runs and is neither drained in that
  batch nor schedules the next would never be delivered, and its round
  would hang;
* the same, made certain: a thread completes a call while the drain
  settles another (a future that runs a hook when the drain reads it).

Then: every caller got exactly one outcome, the one its call ended with (or
its cancellation); every slot was returned; ``submitted == completed +
failed + cancelled`` and each counter equals what the threads did; the
bound was never exceeded; the loop reported no error (a future set twice, a
drain that raised). The thread switch interval is made tiny meanwhile, so
that the threads interleave with the loop's drains as often as possible.

Synchronisation is by events, barriers and queues only; the one timeout,
``HANG_GUARD``, turns a lost completion into a failure instead of a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import random
import sys
import threading
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pytest

from aiobound import BoundedLoopExecutor
from conftest import GATE_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

P = ParamSpec("P")
T = TypeVar("T")

# More of everything under the stress profile (``nox -s stress``).
STRESS = os.environ.get("AIOBOUND_HYPOTHESIS_PROFILE") == "stress"
THREADS = 8
CALLERS = 3000 if STRESS else 400
ROUNDS = 3000 if STRESS else 150
# Only a guard against a hang: a passing storm never waits this long.
HANG_GUARD = 30.0
SEEDS = [pytest.param(seed, id=f"seed{seed}") for seed in (1, 2, 3)]


class CallFailed(Exception):
    """What a call of the storm fails with."""


def value_of(tag: int) -> int:
    return tag * 10


def never_run(tag: int) -> int:
    """Stand-in for the submitted function; the hand-completed pool never runs it."""
    raise AssertionError(f"call {tag} was run for real")


@pytest.fixture(autouse=True)
def switch_threads_often() -> Iterator[None]:
    """Let threads interleave with the loop at (nearly) every bytecode."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@contextlib.contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """Collect what the running loop's exception handler receives."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)


_STOP: Any = object()  # tells a worker thread to end


def take_batch(source: queue.SimpleQueue[Any], rng: random.Random) -> list[Any]:
    """Block for one item, then take up to 7 more queued ones; shuffle them."""
    batch = [source.get()]
    while len(batch) < 8 and (item := get_nowait(source)) is not _EMPTY:
        batch.append(item)
    rng.shuffle(batch)
    return batch


_EMPTY: Any = object()  # nothing queued


def get_nowait(source: queue.SimpleQueue[Any]) -> Any:
    try:
        return source.get_nowait()
    except queue.Empty:
        return _EMPTY


def work_through(
    source: queue.SimpleQueue[Any], seed: int, handle: Callable[[Any], None]
) -> None:
    """Thread body: handle items in random batches until a stop item."""
    rng = random.Random(seed)
    while True:
        batch = take_batch(source, rng)
        stops = sum(item is _STOP for item in batch)
        for item in batch:
            if item is not _STOP:
                handle(item)
        if stops:
            for _ in range(stops - 1):  # not ours: for the other threads
                source.put(_STOP)
            return


def start_threads(
    source: queue.SimpleQueue[Any], seed: int, handle: Callable[[Any], None]
) -> list[threading.Thread]:
    threads = [
        threading.Thread(
            target=work_through, args=(source, seed * 100 + i, handle), daemon=True
        )
        for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    return threads


def start_threads_for(
    inbox: queue.SimpleQueue[Any], seed: int, handle: Callable[[Any], None]
) -> list[threading.Thread]:
    """One thread working through its own inbox."""
    thread = threading.Thread(
        target=work_through, args=(inbox, seed, handle), daemon=True
    )
    thread.start()
    return [thread]


def stop_threads(
    source: queue.SimpleQueue[Any], threads: list[threading.Thread]
) -> None:
    for _ in threads:
        source.put(_STOP)
    for thread in threads:
        thread.join(GATE_TIMEOUT)
        assert not thread.is_alive(), "a storm thread did not stop"


class HandCompletedPool(concurrent.futures.Executor):
    """Runs nothing: queues each call's future for the completing threads.

    A thread that takes a future either finishes it at once, or marks it
    running and queues it again, to be finished by whichever thread takes it
    next. A future cancelled by its caller before it was marked running is
    skipped. What each call ended with is recorded.
    """

    def __init__(self, seed: int) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.futures: list[concurrent.futures.Future[Any]] = []
        # Calls not ended. Counted from the futures' state, not from a done
        # callback: a completing thread may still be running the callbacks
        # of a finished future when the loop, told by a callback added
        # after it finished, has freed its slot and submitted the next call.
        self._not_ended: list[concurrent.futures.Future[Any]] = []
        self.peak_in_pool = 0
        self.ended: dict[int, str] = {}  # tag -> "value" | "error"

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        tag = args[0]
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            self.futures.append(future)
            not_ended = [f for f in self._not_ended if not f.done()]
            not_ended.append(future)
            self._not_ended = not_ended
            self.peak_in_pool = max(self.peak_in_pool, len(not_ended))
        self.queue.put(("queued", tag, future))
        return future

    def handle(self, item: tuple[str, int, concurrent.futures.Future[Any]]) -> None:
        """In a completing thread: start, finish, or start now and finish later."""
        state, tag, future = item
        with self._lock:
            draw = self._rng.random()
        if state == "queued":
            if not future.set_running_or_notify_cancel():
                return  # its caller cancelled it: it never runs
            if draw < 0.4:  # runs on; another thread will end it
                self.queue.put(("running", tag, future))
                return
        if draw < 0.8:
            self.ended[tag] = "value"
            future.set_result(value_of(tag))
        else:
            self.ended[tag] = "error"
            future.set_exception(CallFailed(tag))


async def storm_of_callers(
    executor: BoundedLoopExecutor, fn: Callable[[int], int], seed: int
) -> tuple[dict[int, asyncio.Task[int]], set[int]]:
    """Submit CALLERS callers, cancelling random ones as they go.

    Returns every caller's task, and the tags of those cancelled.
    """
    rng = random.Random(seed)
    tasks: dict[int, asyncio.Task[int]] = {}
    cancelled: set[int] = set()
    for tag in range(CALLERS):
        tasks[tag] = asyncio.ensure_future(executor.run(fn, tag))
        if rng.random() < 0.3:
            victim = rng.randrange(tag + 1)
            if not tasks[victim].done():
                tasks[victim].cancel()
                cancelled.add(victim)
        if rng.random() < 0.5:
            await asyncio.sleep(0)  # let drains and woken callers run
    return tasks, cancelled


async def every_caller_gets_an_outcome(tasks: dict[int, asyncio.Task[int]]) -> None:
    _, pending = await asyncio.wait(tasks.values(), timeout=HANG_GUARD)
    assert not pending, (
        f"{len(pending)} callers never got an outcome: a completion was not delivered"
    )


def check_outcomes(
    tasks: dict[int, asyncio.Task[int]], cancelled: set[int], ended: dict[int, str]
) -> None:
    """Each caller got the outcome its call ended with, or its cancellation."""
    for tag, task in tasks.items():
        if task.cancelled():
            assert tag in cancelled, f"caller {tag} was cancelled by nobody"
            continue
        error = task.exception()
        if error is None:
            assert task.result() == value_of(tag), tag
            assert ended[tag] == "value", tag
        else:
            assert isinstance(error, CallFailed), (tag, error)
            assert error.args == (tag,)
            assert ended[tag] == "error", tag


@pytest.mark.parametrize("seed", SEEDS)
async def test_hand_completed_calls_from_many_threads_while_callers_cancel(
    seed: int,
) -> None:
    bound = 1 + seed * 2  # 3, 5, 7
    pool = HandCompletedPool(seed)
    executor = BoundedLoopExecutor(executor=pool, bound=bound)
    threads = start_threads(pool.queue, seed, pool.handle)
    try:
        with loop_errors() as errors:
            tasks, cancelled = await storm_of_callers(executor, never_run, seed)
            await every_caller_gets_an_outcome(tasks)
            # Calls whose caller was cancelled while they ran end later.
            await asyncio.wait_for(executor.aclose(), HANG_GUARD)
    finally:
        stop_threads(pool.queue, threads)
    assert not errors, errors
    check_outcomes(tasks, cancelled, pool.ended)
    stats = executor.stats()
    assert (stats.in_flight, stats.waiting) == (0, 0), stats
    assert all(f.done() for f in pool.futures)
    assert stats.submitted == len(pool.futures), stats
    assert stats.submitted == stats.completed + stats.failed + stats.cancelled, stats
    values = sum(how == "value" for how in pool.ended.values())
    assert stats.completed == values, (stats, values)
    assert stats.failed == len(pool.ended) - values, stats
    assert stats.cancelled == sum(f.cancelled() for f in pool.futures), stats
    assert pool.peak_in_pool <= bound, (pool.peak_in_pool, bound)
    assert cancelled, "the storm cancelled nobody"


class Releasers:
    """Threads that let blocked calls go on, in random order."""

    def __init__(self, seed: int) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.threads = start_threads(self.queue, seed, self._release)

    @staticmethod
    def _release(event: threading.Event) -> None:
        event.set()

    def hold(self) -> None:
        """In a call: block until a releasing thread lets this call go on."""
        event = threading.Event()
        self.queue.put(event)
        if not event.wait(GATE_TIMEOUT):
            raise TimeoutError("no releasing thread let this call go on")

    def stop(self) -> None:
        stop_threads(self.queue, self.threads)


@pytest.mark.parametrize("seed", SEEDS)
async def test_thread_pool_calls_released_in_random_order_while_callers_cancel(
    seed: int,
) -> None:
    bound = 1 + seed * 2
    lock = threading.Lock()
    started: set[int] = set()
    ended: dict[int, str] = {}
    running = 0
    peak_running = 0
    releasers = Releasers(seed)

    def call(tag: int) -> int:
        nonlocal running, peak_running
        with lock:
            started.add(tag)
            running += 1
            peak_running = max(peak_running, running)
        try:
            releasers.hold()
            with lock:
                ended[tag] = "error" if tag % 5 == 0 else "value"
            if tag % 5 == 0:
                raise CallFailed(tag)
            return value_of(tag)
        finally:
            with lock:
                running -= 1

    # Twice as many workers as the bound: only the bound keeps them idle.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2 * bound)
    executor = BoundedLoopExecutor(executor=pool, bound=bound)
    try:
        with loop_errors() as errors:
            tasks, cancelled = await storm_of_callers(executor, call, seed)
            await every_caller_gets_an_outcome(tasks)
            await asyncio.wait_for(executor.aclose(), HANG_GUARD)
    finally:
        releasers.stop()
        pool.shutdown(wait=True)
    assert not errors, errors
    check_outcomes(tasks, cancelled, ended)
    stats = executor.stats()
    assert (stats.in_flight, stats.waiting) == (0, 0), stats
    assert stats.submitted == stats.completed + stats.failed + stats.cancelled, stats
    # Every call that started ended and was counted; the others never ran.
    assert stats.completed + stats.failed == len(started) == len(ended), stats
    assert stats.failed == sum(how == "error" for how in ended.values()), stats
    assert peak_running <= bound, (peak_running, bound)
    assert cancelled, "the storm cancelled nobody"


@pytest.mark.parametrize("seed", SEEDS)
async def test_simultaneous_completions_with_nothing_after_them_are_delivered(
    seed: int,
) -> None:
    rng = random.Random(seed)
    pool = HandCompletedPool(seed)  # its queue stays unused: we complete here
    executor = BoundedLoopExecutor(executor=pool, bound=THREADS)
    barrier = threading.Barrier(THREADS)
    inboxes: list[queue.SimpleQueue[Any]] = [
        queue.SimpleQueue() for _ in range(THREADS)
    ]

    def finish(item: tuple[concurrent.futures.Future[int], int]) -> None:
        future, value = item
        assert future.set_running_or_notify_cancel()
        barrier.wait(GATE_TIMEOUT)  # all eight at the same instant
        future.set_result(value)

    threads = [
        thread
        for inbox, i in zip(inboxes, range(THREADS), strict=True)
        for thread in start_threads_for(inbox, seed * 100 + i, finish)
    ]
    try:
        with loop_errors() as errors:
            for round_ in range(ROUNDS):
                tags = range(round_ * THREADS, (round_ + 1) * THREADS)
                futures = [await executor.submit(never_run, tag) for tag in tags]
                for inbox, tag in zip(inboxes, tags, strict=True):
                    inbox.put((pool.futures[tag], value_of(tag)))
                # Nothing else will complete: each must arrive by itself.
                _, pending = await asyncio.wait(futures, timeout=HANG_GUARD)
                assert not pending, f"round {round_}: a completion was not delivered"
                assert [f.result() for f in futures] == [value_of(t) for t in tags]
                if rng.random() < 0.5:
                    await asyncio.sleep(0)
            await executor.aclose()
    finally:
        for inbox in inboxes:
            inbox.put(_STOP)
        for thread in threads:
            thread.join(GATE_TIMEOUT)
    assert not errors, errors
    stats = executor.stats()
    assert (stats.in_flight, stats.completed) == (0, ROUNDS * THREADS), stats


class ReadHookFuture(concurrent.futures.Future[int]):
    """A future that runs ``on_read`` (once) when its outcome is first read.

    Not a plain future, so the loop's drain reads it through
    :meth:`exception`: the hook runs inside the drain, on the loop's thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self.on_read: Callable[[], None] | None = None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        hook, self.on_read = self.on_read, None
        if hook is not None:
            hook()
        return super().exception(timeout)


class ReadHookPool(concurrent.futures.Executor):
    """Runs nothing: hands out :class:`ReadHookFuture` objects, in order."""

    def __init__(self) -> None:
        self.futures: list[ReadHookFuture] = []

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future = ReadHookFuture()
        self.futures.append(future)
        return future  # type: ignore[return-value]


def in_a_thread(action: Callable[[], None]) -> None:
    """Run *action* in another thread and wait for it."""
    thread = threading.Thread(target=action)
    thread.start()
    thread.join(GATE_TIMEOUT)
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("batch", "during"),
    [pytest.param(n, k, id=f"{k + 1}-of-{n}") for n in (1, 2, 4) for k in range(n)],
)
async def test_a_completion_arriving_while_a_drain_runs_is_delivered(
    batch: int, during: int
) -> None:
    """One batch of ``batch`` completions is drained; while the drain settles
    call ``during``, another thread completes one more call. It must be
    delivered: taken by that drain, or by one it schedules."""
    pool = ReadHookPool()
    executor = BoundedLoopExecutor(executor=pool, bound=batch + 1)
    with loop_errors() as errors:
        futures = [await executor.submit(never_run, tag) for tag in range(batch)]
        late = await executor.submit(never_run, batch)
        for future in pool.futures:
            assert future.set_running_or_notify_cancel()
        pool.futures[during].on_read = lambda: in_a_thread(
            lambda: pool.futures[batch].set_result(value_of(batch))
        )

        def finish_batch() -> None:
            for tag in range(batch):
                pool.futures[tag].set_result(value_of(tag))

        # The loop is not running meanwhile: the batch is drained at once.
        in_a_thread(finish_batch)
        _, pending = await asyncio.wait([*futures, late], timeout=HANG_GUARD)
        assert not pending, "the completion that arrived during the drain was lost"
        assert pool.futures[during].on_read is None  # the hook ran
        assert [f.result() for f in futures] == [value_of(t) for t in range(batch)]
        assert late.result() == value_of(batch)
        await executor.aclose()
    assert not errors, errors
    stats = executor.stats()
    assert (stats.in_flight, stats.completed) == (0, batch + 1), stats
