"""A process pool that can stop one running call: pebble's, as an executor.

``ProcessPoolExecutor`` cannot stop a call once a worker has taken it: the
only way is to kill the worker, and a pool whose worker was killed is broken,
failing every call it had. pebble's ``ProcessPool`` (the optional ``pebble``
extra) can: cancelling the future of a running call terminates that one
worker and starts another, and the other calls go on.
:class:`StoppingPool` wraps it in the ``concurrent.futures.Executor`` shape
the rest of aiobound expects, for ``BoundedLoopExecutor.process(...,
kill_on_timeout=True)``.

What pebble does, and what this adds:

* ``schedule()`` queues a call; pebble passes it at once to a pipe its
  workers read. Its future is ``running()`` once a worker has acknowledged
  it. ``cancel()`` succeeds until the call has ended: a call not taken is
  skipped; a running call's worker is terminated (pebble checks every 0.1
  s; SIGTERM, then SIGKILL after 3 s) and replaced. A call a worker takes
  from the pipe after it was cancelled starts, and its worker is stopped in
  the same way.
* A worker that dies fails only its own call (``pebble.ProcessExpired``) and
  is replaced by the pool; the pool itself breaks only when its own threads
  fail (then ``schedule()`` raises, turned here into ``BrokenProcessPool`` so
  that the owner replaces the pool) or when its workers die with no call
  running (a failing initializer).
* A pool that breaks may leave calls that nobody will end (queued and not yet
  passed to a worker). A watchdog thread, alive from the first call to the
  shutdown, fails them with ``BrokenProcessPool``, so that nothing waits for
  them for ever; so does :meth:`StoppingPool.shutdown`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from concurrent.futures import InvalidStateError
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.context import BaseContext

    import pebble

__all__ = ("PEBBLE_MISSING", "StoppingPool", "import_pebble")

T = TypeVar("T")

PEBBLE_MISSING = (
    "kill_on_timeout=True needs pebble (its ProcessPool can stop one running "
    "call): pip install 'aiobound[pebble]'"
)

# How often the watchdog looks at the pool's health.
_WATCH_INTERVAL = 0.1


def import_pebble() -> Any:
    """Import pebble, or raise an ``ImportError`` that names the extra."""
    try:
        import pebble
    except ImportError as exc:
        raise ImportError(PEBBLE_MISSING, name="pebble") from exc
    return pebble


class StoppingPool(concurrent.futures.Executor):
    """pebble's ``ProcessPool`` as an executor whose running calls can be stopped.

    Args:
        workers: Worker processes.
        context: The multiprocessing context the workers start with.
        initializer: Called with ``*initargs`` in each worker as it starts
            (again in each worker that replaces a stopped one).
        initargs: Arguments for ``initializer``.

    Raises:
        ImportError: pebble is not installed (the message names the extra).
    """

    def __init__(
        self,
        workers: int,
        context: BaseContext,
        initializer: Callable[..., object] | None,
        initargs: tuple[object, ...],
    ) -> None:
        module = import_pebble()
        self._pool: pebble.ProcessPool = module.ProcessPool(
            max_workers=workers,
            initializer=initializer,
            initargs=initargs,
            context=context,
        )
        self._workers = workers
        self._mp_context = context
        self._lock = threading.Lock()
        # Futures of calls not ended yet: the watchdog and the shutdown end
        # those a broken or stopped pool leaves.
        self._calls: set[concurrent.futures.Future[Any]] = set()
        self._closed = False
        self._stopped = threading.Event()  # ends the watchdog
        self._joining = threading.Lock()  # held by the shutdown that joins
        self._joined = False
        self._watchdog: threading.Thread | None = None

    @property
    def workers(self) -> int:
        """Worker processes."""
        return self._workers

    def __repr__(self) -> str:
        state = "shut down" if self._closed else "open"
        return (
            f"<{type(self).__name__} (pebble) workers={self._workers} "
            f"calls={len(self._calls)} {state}>"
        )

    def schedule(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args, **kwargs)`` (pebble's ``schedule``); return its future.

        Raises:
            RuntimeError: the pool was shut down.
            BrokenProcessPool: the pool stopped working.
        """
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        try:
            future: concurrent.futures.Future[T] = self._pool.schedule(
                fn, args=args, kwargs=kwargs
            )
        except RuntimeError as exc:
            if self._closed:  # shut down meanwhile, by another thread
                raise RuntimeError(
                    "cannot schedule new futures after shutdown"
                ) from exc
            raise BrokenProcessPool(
                f"the process pool stopped working ({exc}): a new one is needed"
            ) from exc
        with self._lock:
            self._calls.add(future)
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="aiobound-pebble-watchdog", daemon=True
                )
                self._watchdog.start()
        future.add_done_callback(self._forget)
        return future

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """``schedule(fn, args, kwargs)``, in ``Executor.submit``'s shape."""
        return self.schedule(fn, args, kwargs)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._calls.discard(future)

    def _fail_left(self, why: str) -> None:
        """End every call not ended with ``BrokenProcessPool(why)``."""
        with self._lock:
            left = list(self._calls)
        for future in left:
            with contextlib.suppress(InvalidStateError):  # ended meanwhile
                future.set_exception(BrokenProcessPool(why))

    def _watch(self) -> None:
        """Until the shutdown: if the pool breaks, end the calls it left."""
        while not self._stopped.wait(_WATCH_INTERVAL):
            if not self._pool.active and not self._closed:
                self._fail_left(
                    "the process pool stopped working before this call ended"
                )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; then stop the workers once the calls have ended.

        With ``cancel_futures``, every call not ended is cancelled, running
        ones included (their workers are terminated). Without ``wait``, the
        workers are stopped by a thread once the calls have ended. A call
        the pool leaves unended then fails with ``BrokenProcessPool``.
        """
        with self._lock:
            self._closed = True
            calls = list(self._calls)
        if cancel_futures:
            for future in calls:
                future.cancel()
        self._pool.close()  # type: ignore[no-untyped-call]
        if wait:
            self._join()
        else:
            threading.Thread(
                target=self._join, name="aiobound-pebble-shutdown", daemon=True
            ).start()

    def _join(self) -> None:
        """Wait for the calls, stop the workers (once; a second caller waits)."""
        with self._joining:
            if self._joined:
                return
            try:
                self._pool.join()
            finally:
                self._joined = True
                self._stopped.set()
                self._fail_left("the process pool was shut down before this call ended")
