"""One case of the demo, run in a child process of its own.

Run as ``python -m aiobound._demo._case CASE --calls N --workers W
--duration S --loop LOOP``. It prints JSON lines on stdout: ``progress``
events about ten times a second while the calls run, then one ``result``
event. Each case gets a fresh process so that its peak memory is its own.

The cases re-run the article's experiment on an asyncio loop:

* ``unbounded``: ``loop.run_in_executor`` for every call, then ``gather``:
  the producer never waits, so every pending call sits in the pool's queue;
* ``bound=workers`` and ``bound=2x``: ``await executor.submit(...)`` on a
  :class:`~aiobound.BoundedLoopExecutor` wrapping the same kind of pool.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
import threading
import time

from aiobound import BoundedLoopExecutor

from ._memory import PeakMemory

__all__ = ("CASES", "main")

CASES = ("unbounded", "bound=workers", "bound=2x")

_SAMPLE_EVERY = 0.02  # seconds between samples for the plot
_REPORT_EVERY = 5  # samples between two progress events


class Probe:
    """Counters shared by the producer, the workers and the sampler.

    ``submitted`` and ``max_ahead`` are written on the loop's thread only;
    ``finished`` and ``busy`` by the workers, under ``lock``.
    """

    __slots__ = (
        "busy",
        "duration",
        "finished",
        "lock",
        "max_ahead",
        "producer_done",
        "submitted",
    )

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.lock = threading.Lock()
        self.submitted = 0
        self.finished = 0
        self.busy = 0.0
        self.max_ahead = 0
        self.producer_done = 0.0

    def work(self) -> None:
        """The blocking call: sleep ``duration`` seconds, then count it."""
        started = time.perf_counter()
        time.sleep(self.duration)
        elapsed = time.perf_counter() - started
        with self.lock:
            self.finished += 1
            self.busy += elapsed

    def note_submitted(self) -> None:
        """Count one submission and how far the producer now runs ahead."""
        self.submitted += 1
        ahead = self.submitted - self.finished
        if ahead > self.max_ahead:
            self.max_ahead = ahead


def _emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Sampler(threading.Thread):
    """Sample RSS and the producer's lead; report progress now and then."""

    def __init__(self, probe: Probe, memory: PeakMemory, started: float) -> None:
        super().__init__(name="aiobound-demo-sampler", daemon=True)
        self._probe = probe
        self._memory = memory
        self._t0 = started
        self._stop_event = threading.Event()
        self.samples: list[tuple[float, int, int]] = []

    def run(self) -> None:
        """Sample until :meth:`stop` is called."""
        count = 0
        while not self._stop_event.wait(_SAMPLE_EVERY):
            sample = self.sample()
            count += 1
            if count % _REPORT_EVERY == 0:
                t, growth, _ = sample
                _emit(
                    {
                        "event": "progress",
                        "t": t,
                        "done": self._probe.finished,
                        "submitted": self._probe.submitted,
                        "rss": self._memory.baseline + growth,
                        "rss_growth": growth,
                    }
                )

    def sample(self) -> tuple[float, int, int]:
        """Record and return ``(seconds, rss growth, submitted - finished)``."""
        probe = self._probe
        sample = (
            time.perf_counter() - self._t0,
            self._memory.current() - self._memory.baseline,
            probe.submitted - probe.finished,
        )
        self.samples.append(sample)
        return sample

    def stop(self) -> None:
        """Stop sampling, take a last sample and wait for the thread."""
        self._stop_event.set()
        self.join()
        self.sample()


async def _unbounded(
    probe: Probe, pool: concurrent.futures.ThreadPoolExecutor, calls: int
) -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = []
    for _ in range(calls):
        futures.append(loop.run_in_executor(pool, probe.work))
        probe.note_submitted()
    probe.producer_done = time.perf_counter()
    await asyncio.gather(*futures)


async def _bounded(
    probe: Probe,
    pool: concurrent.futures.ThreadPoolExecutor,
    calls: int,
    bound: int,
) -> None:
    executor = BoundedLoopExecutor(executor=pool, bound=bound)
    async with executor:  # leaving waits for every call in flight
        for _ in range(calls):
            # The future settles on its own (work() never raises); like the
            # article's loop, the producer does not keep it.
            _future = await executor.submit(probe.work)
            probe.note_submitted()
        probe.producer_done = time.perf_counter()


def _bound_for(case: str, workers: int) -> int | None:
    if case == "unbounded":
        return None
    return workers if case == "bound=workers" else 2 * workers


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def run_case(
    case: str, *, calls: int, workers: int, duration: float, loop_name: str
) -> dict[str, object]:
    """Run one case in this process and return its result event.

    Args:
        case: One of :data:`CASES`.
        calls: Number of blocking calls.
        workers: Threads in the pool.
        duration: Seconds each call blocks.
        loop_name: ``"asyncio"`` or ``"uvloop"``.

    Returns:
        The ``result`` event: timings, utilization, memory, samples.
    """
    bound = _bound_for(case, workers)
    probe = Probe(duration)
    memory = PeakMemory()
    loop = _new_loop(loop_name)
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        memory.start()
        started = time.perf_counter()
        sampler = Sampler(probe, memory, started)
        sampler.sample()  # the starting point: nothing submitted, no growth
        sampler.start()
        loop.run_until_complete(
            _unbounded(probe, pool, calls)
            if bound is None
            else _bounded(probe, pool, calls, bound)
        )
        wall = time.perf_counter() - started
        sampler.stop()
        growth = memory.growth()
    finally:
        pool.shutdown()
        loop.close()
    ideal = calls * duration / workers
    return {
        "event": "result",
        "case": case,
        "bound": bound,
        "calls": calls,
        "completed": probe.finished,
        "submitted": probe.submitted,
        "workers": workers,
        "duration": duration,
        "loop": loop_name,
        "wall_s": wall,
        "ideal_s": ideal,
        "busy_s": probe.busy,
        "utilization": probe.busy / (workers * wall) if wall > 0 else 0.0,
        "peak_rss_growth": growth,
        "peak_rss_exact": memory.exact,
        "max_ahead": probe.max_ahead,
        "producer_done_s": probe.producer_done - started,
        "samples": sampler.samples,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the case, print its result as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m aiobound._demo._case")
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    _emit(
        run_case(
            args.case,
            calls=args.calls,
            workers=args.workers,
            duration=args.duration,
            loop_name=args.loop,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
