"""The policies of ``benchmarks/adaptive.py`` on a fake clock, over many seeds.

Usage::

    python benchmarks/adaptive_sim.py                    # noise 0, 0.3, 0.5; 40 seeds
    python benchmarks/adaptive_sim.py --noise 0.5 --seeds 100
    nox -s adaptive_sim [-- --noise 0.5]

``benchmarks/adaptive.py`` runs the policies against real threads and a real
loop, which is the measure that counts, but one run of it is one draw of the
noise: at the most noise its per-phase goodput moves by several hundredths
from run to run, and a change to a policy cannot be judged on a few runs.
This script models the same case on a simulated clock, with no threads and
no loop, so that it runs each policy over many seeds in seconds:

* arrivals on a fixed schedule of 1,200 calls/s (open loop), each waiting
  for a slot at most 50 ms (``max_wait``), then shed;
* a downstream that serves every call inside it at the same speed (processor
  sharing): ``1 / (1 + 2 (n - C) / C)`` of full speed with ``n`` calls inside
  past its capacity ``C``, full speed up to it; each call needs ``S`` (20 ms)
  of work times lognormal noise with a mean of 1;
* ``C`` = 16, 4, 16, 8 for 10 s each; every figure from 2 s after a change;
* the policy fed each call's end (time, own latency, calls in flight), its
  limit applied at once; the oracle is a fixed bound set to ``C`` at each
  change.

What it leaves out is what the real benchmark has on top: the pool's and the
loop's overhead, the scheduler's jitter, garbage collection. Its goodputs are
therefore higher than the real ones (the oracle reaches 1.00 of ``C / S``
here, about 0.94 in the real benchmark); compare policies with it, and read
the real benchmark for the figures.

Reported per policy, noise and phase, over the seeds: goodput as a fraction
of ``C / S`` (median and lowest), how many seeds fell under 0.85, and the own
p99 over the oracle's with the same seed (median and highest).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import heapq
import math
import random
import statistics

from adaptive import CAPACITIES, GOODPUT_TARGET, WORKERS, S  # the same case

from aiobound import AIMD, Gradient, LimitPolicy

PHASE = 10.0  # adaptive.py's defaults of --phase, --settle and --rate
SETTLE = 2.0
RATE = 1.5 * max(CAPACITIES) / S
MAX_WAIT = 0.05  # adaptive.py's max_wait
POLICIES = {"AIMD()": AIMD, "Gradient()": Gradient}

# Per phase: (C, goodput / (C / S), own p99 in seconds).
Phase = tuple[int, float, float]


def speed(inside: int, capacity: int) -> float:
    return 1.0 / (1.0 + 2.0 * max(0, inside - capacity) / capacity)


def simulate(policy: LimitPolicy | None, sigma: float, seed: int) -> list[Phase]:
    """One run of the four phases; *policy* None is the oracle."""
    noise = random.Random(seed)
    mu = -sigma * sigma / 2  # a mean of 1
    limit = CAPACITIES[0] if policy is None else policy.attach(WORKERS)
    total = PHASE * len(CAPACITIES)
    now = done = 0.0  # done: the work every call inside has received so far
    arrivals = 0
    running: list[tuple[float, float, float]] = []  # (done at its end, start, arrival)
    waiting: collections.deque[tuple[float, float]] = collections.deque()
    ends: list[tuple[float, float, float]] = []  # (arrival, end, own latency)
    while True:
        phase = min(len(CAPACITIES) - 1, int(now / PHASE))
        capacity = CAPACITIES[phase]
        rate = speed(len(running), capacity)
        next_arrival = arrivals / RATE if arrivals / RATE < total else math.inf
        next_end = now + (running[0][0] - done) / rate if running else math.inf
        next_shed = waiting[0][0] + MAX_WAIT if waiting else math.inf
        next_change = (phase + 1) * PHASE if now < total else math.inf
        at = min(next_arrival, next_end, next_shed, next_change)
        if at == math.inf:
            break
        done += (at - now) * rate
        now = at
        if at == next_change and policy is None and at < total:
            limit = CAPACITIES[phase + 1]
        if at == next_end:
            _, start, arrived = heapq.heappop(running)
            ends.append((arrived, now, now - start))
            if policy is not None:
                limit = policy.on_sample(now, now - start, len(running) + 1, False)
        elif at == next_shed:
            waiting.popleft()
        elif at == next_arrival:
            work = S * (noise.lognormvariate(mu, sigma) if sigma else 1.0)
            waiting.append((now, work))
            arrivals += 1
        while waiting and len(running) < limit:
            arrived, work = waiting.popleft()
            heapq.heappush(running, (done + work, now, arrived))
    phases = []
    for index, capacity in enumerate(CAPACITIES):
        lo, hi = index * PHASE + SETTLE, (index + 1) * PHASE
        ended = [e for e in ends if lo <= e[1] < hi]
        own = sorted(e[2] for e in ended if e[0] >= lo)
        p99 = own[min(len(own) - 1, int(0.99 * len(own)))]
        phases.append((capacity, len(ended) / (hi - lo) / (capacity / S), p99))
    return phases


def one_seed(name: str, sigma: float, seed: int) -> list[Phase]:
    policy = None if name == "oracle" else POLICIES[name](seed=seed)
    return simulate(policy, sigma, seed)


def cases(
    name: str, sigma: float, seeds: range
) -> tuple[list[str], list[float], range]:
    """The arguments of :func:`one_seed` for every seed, as ``map`` takes them."""
    return [name] * len(seeds), [sigma] * len(seeds), seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.3, 0.5])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--only", nargs="*", default=None, choices=POLICIES)
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds takes a number >= 1")
    names = args.only or list(POLICIES)
    seeds = range(args.seeds)
    print(
        "| noise | policy | C | goodput of C/S: median | lowest "
        f"| seeds under {GOODPUT_TARGET} | p99 / oracle: median | highest |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with concurrent.futures.ProcessPoolExecutor() as pool:
        for sigma in args.noise:
            oracle = list(pool.map(one_seed, *cases("oracle", sigma, seeds)))
            for name in names:
                runs = list(pool.map(one_seed, *cases(name, sigma, seeds)))
                for index, capacity in enumerate(CAPACITIES):
                    goodput = [run[index][1] for run in runs]
                    ratio = [
                        run[index][2] / ref[index][2]
                        for run, ref in zip(runs, oracle, strict=True)
                    ]
                    under = sum(g < GOODPUT_TARGET for g in goodput)
                    print(
                        f"| {sigma} | {name} | {capacity} "
                        f"| {statistics.median(goodput):.2f} | {min(goodput):.2f} "
                        f"| {under} of {len(seeds)} | {statistics.median(ratio):.2f} "
                        f"| {max(ratio):.2f} |"
                    )


if __name__ == "__main__":
    main()
