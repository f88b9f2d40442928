"""aiobound against the alternatives, side by side, interleaved, in one run.

Usage::

    python benchmarks/bench.py            # full run (about 15 minutes on 2 cores)
    python benchmarks/bench.py --quick    # tiny sizes, one repetition
    nox -s bench [-- --quick]

Every measurement is one fresh process (``benchmarks/cases.py``), so one case's
garbage cannot slow the next and peak memory is its own. Each repetition runs
every job of every workload once, in an order shuffled per repetition (fixed
seed), so drift in the machine's load spreads over all cases. Figures are
medians over repetitions; ratios are taken within a repetition (paired), then
their median is reported.

Workloads (full sizes):

* ``noop``: 200,000 no-op calls, 10 threads, bound 20 (per-call overhead);
  every alternative;
* ``sleep``: 5,000 calls of ``time.sleep(0.01)``, 10 threads, bound 10 (1x)
  and 20 (2x); utilization against a plain ``ThreadPoolExecutor.map``
  (the unbounded cases and anyio, whose limiter is its thread count, once;
  aiometer and aiojobs at 2x);
* ``rss``: 1,000,000 no-op calls, raw and the bounded cases (peak RSS
  growth), one repetition unless ``--rss-reps`` says otherwise;
* ``process``: 10,000 no-op calls to a 2-process pool, bound 4 (``map``
  chunks items automatically there; ``map_chunksize_1`` does not).

Each on the default asyncio loop and on uvloop. The figures and the targets
of issue #3 are printed as Markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

HERE = Path(__file__).resolve().parent
LOOPS = ("asyncio", "uvloop")
MB = 1_000_000


@dataclass(frozen=True)
class Job:
    """One measurement: a case of a workload on a loop, at a size."""

    workload: str
    case: str
    loop: str
    calls: int
    workers: int
    bound: int
    label: str

    def command(self) -> list[str]:
        """Return the command line that runs this job in a fresh process."""
        return [
            sys.executable,
            str(HERE / "cases.py"),
            self.workload,
            self.case,
            f"--loop={self.loop}",
            f"--calls={self.calls}",
            f"--workers={self.workers}",
            f"--bound={self.bound}",
        ]


def plan(quick: bool, loops: tuple[str, ...]) -> dict[str, list[Job]]:
    """Return the jobs of one repetition, by workload.

    Args:
        quick: Use tiny sizes (for development) instead of the full ones.
        loops: Event loops to run every async case on.
    """
    noop_calls, sleep_calls, rss_calls, process_calls = (
        (5_000, 200, 20_000, 500) if quick else (200_000, 5_000, 1_000_000, 10_000)
    )
    jobs: dict[str, list[Job]] = {w: [] for w in ("noop", "sleep", "rss", "process")}
    for loop in loops:
        for case in (
            "raw",
            "to_thread",
            "recipe",
            "anyio",
            "aiometer",
            "aiojobs",
            "submit",
            "map",
            "map_unordered",
        ):
            jobs["noop"].append(Job("noop", case, loop, noop_calls, 10, 20, case))
        sleep_bounds = {
            "raw": [(20, "")],
            "to_thread": [(20, "")],
            "anyio": [(10, "")],
            "aiometer": [(20, " 2x")],
            "aiojobs": [(20, " 2x")],
        }
        for case in (*sleep_bounds, "recipe", "submit", "map"):
            for bound, suffix in sleep_bounds.get(case, [(10, " 1x"), (20, " 2x")]):
                jobs["sleep"].append(
                    Job("sleep", case, loop, sleep_calls, 10, bound, case + suffix)
                )
        for case in ("raw", "recipe", "submit", "map"):
            jobs["rss"].append(Job("rss", case, loop, rss_calls, 10, 20, case))
        for case in (
            "raw",
            "recipe",
            "aiometer",
            "aiojobs",
            "submit",
            "map",
            "map_chunksize_1",
        ):
            jobs["process"].append(
                Job("process", case, loop, process_calls, 2, 4, case)
            )
        # A window deep enough to cover the pool's round trip for a no-op call.
        for case in ("submit", "map_chunksize_1"):
            jobs["process"].append(
                Job("process", case, loop, process_calls, 2, 16, case + " b16")
            )
    # The synchronous ceilings use no loop: once per repetition.
    jobs["sleep"].append(Job("sleep", "sync", "-", sleep_calls, 10, 10, "sync map"))
    jobs["noop"].append(
        Job("noop", "sync_window", "-", noop_calls, 10, 20, "sync window")
    )
    return jobs


def run_job(job: Job) -> dict[str, Any]:
    """Run *job* in a fresh interpreter and return its figures."""
    loop = "asyncio" if job.loop == "-" else job.loop
    command = job.command()
    command[4] = f"--loop={loop}"
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{job} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["loop"] = job.loop
    result["label"] = job.label
    return result


Key = tuple[str, str, str]  # workload, label, loop


def _by_key(records: list[dict[str, Any]]) -> dict[Key, dict[int, dict[str, Any]]]:
    out: dict[Key, dict[int, dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r["workload"], r["label"], r["loop"]), {})[r["rep"]] = r
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def paired_ratio(
    table: dict[Key, dict[int, dict[str, Any]]], key: Key, ref: Key, field: str
) -> float | None:
    """Median over repetitions of ``key[field] / ref[field]``, paired by rep."""
    mine, theirs = table.get(key, {}), table.get(ref, {})
    return _median(
        [
            mine[r][field] / theirs[r][field]
            for r in mine
            if r in theirs and theirs[r][field]
        ]
    )


def _fmt_load(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else " ".join(f"{x:.2f}" for x in load)


def _fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _fmt_bytes(size: float) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB"
    if size < 1024**3:
        return f"{size / 1024**2:.1f} MiB"
    return f"{size / 1024**3:.2f} GiB"


_ORDER = (
    "sync map",
    "sync window",
    "raw",
    "to_thread",
    "anyio",
    "aiometer",
    "aiojobs",
    "recipe",
    "submit",
    "map",
    "map_unordered",
    "map_chunksize_1",
)


def _rank(label: str) -> tuple[int, str]:
    """Sort key: alternatives first, then aiobound; 1x before 2x."""
    case = label.split(" 1x")[0].split(" 2x")[0]
    return (_ORDER.index(case) if case in _ORDER else len(_ORDER), label)


def _recipe_label(label: str) -> str:
    for suffix in (" 1x", " 2x"):
        if label.endswith(suffix):
            return "recipe" + suffix
    return "recipe"


def summarize(records: list[dict[str, Any]], loops: tuple[str, ...]) -> str:
    """Return Markdown tables of medians and paired ratios, one per workload."""
    table = _by_key(records)
    lines: list[str] = []
    titles = {
        "noop": "no-op calls, 10 threads, bound 20",
        "sleep": "10 ms sleeps, 10 threads",
        "rss": "no-op calls, 10 threads (bound 20 where bounded): memory",
        "process": "no-op calls, process pool of 2, bound 4 (b16: bound 16)",
    }
    for workload, title in titles.items():
        keys = [k for k in table if k[0] == workload]
        if not keys:
            continue
        calls = next(iter(table[keys[0]].values()))["calls"]
        lines += [
            f"**{workload}**: {calls:,} {title}",
            "",
            "| case | loop | calls/s | us/call | vs raw | vs recipe | vs ceiling "
            "| loop CPU us/call | CPU us/call | peak RSS growth | utilization |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for key in sorted(keys, key=lambda k: (_rank(k[1]), k[2])):
            _, label, loop = key
            runs = list(table[key].values())
            rate = statistics.median(r["calls_per_s"] for r in runs)
            rss = statistics.median(r["peak_rss_growth"] for r in runs)
            loop_cpu = statistics.median(r["loop_cpu_us_per_call"] for r in runs)
            cpu = statistics.median(r["cpu_us_per_call"] for r in runs)
            raw = (workload, "raw", loop)
            recipe = (workload, _recipe_label(label), loop)
            ceiling = (workload, "sync window", "-")
            util = ""
            if workload == "sleep":
                util = f"{statistics.median(r['utilization'] for r in runs):.1%}"
            lines.append(
                f"| {label} | {loop} | {rate:,.0f} | {1e6 / rate:.1f} "
                f"| {_fmt_ratio(paired_ratio(table, key, raw, 'calls_per_s'))} "
                f"| {_fmt_ratio(paired_ratio(table, key, recipe, 'calls_per_s'))} "
                f"| {_fmt_ratio(paired_ratio(table, key, ceiling, 'calls_per_s'))} "
                f"| {loop_cpu:.1f} | {cpu:.1f} | {_fmt_bytes(rss)} | {util} |"
            )
        lines.append("")
    lines += targets(table, loops)
    lines += ["", "**Overview** (medians; asyncio / uvloop)", "", overview(records)]
    return "\n".join(lines)


_NAMES = {
    "raw": "`loop.run_in_executor`, all at once",
    "to_thread": "`asyncio.to_thread`, all at once",
    "anyio": "anyio `to_thread.run_sync` + `CapacityLimiter`",
    "aiometer": "aiometer `amap(max_at_once=)`",
    "aiojobs": "aiojobs `Scheduler(limit=)`",
    "recipe": "hand-written semaphore recipe",
    "submit": "aiobound `submit` (window of futures)",
    "map": "aiobound `map` (process pool: automatic chunks)",
    "map_chunksize_1": "aiobound `map(chunksize=1)`",
}


def overview(records: list[dict[str, Any]]) -> str:
    """Return one compact Markdown table across the workloads (for README)."""
    table = _by_key(records)

    def median(key: Key, field: str) -> float | None:
        runs = table.get(key)
        return statistics.median(r[field] for r in runs.values()) if runs else None

    def pair(values: Sequence[float | None], fmt: str) -> str:
        shown = ["-" if v is None else format(v, fmt) for v in values]
        return " / ".join(shown) if any(v is not None for v in values) else "-"

    def size(workload: str) -> str:
        for key, runs in table.items():
            if key[0] == workload:
                calls = int(next(iter(runs.values()))["calls"])
                return f"{calls // 1000:,}k" if calls < 1_000_000 else "1M"
        return "?"

    lines = [
        "| | no-op calls/s, asyncio / uvloop | vs recipe | vs raw "
        f"| peak RSS growth, {size('noop')} calls | peak RSS growth, "
        f"{size('rss')} calls (asyncio) | utilization, 10 ms calls (2x) "
        "| process pool calls/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for case, name in _NAMES.items():
        noop = [("noop", case, loop) for loop in LOOPS]
        sleep_label = case if case in ("raw", "to_thread", "anyio") else case + " 2x"
        util = [median(("sleep", sleep_label, loop), "utilization") for loop in LOOPS]
        rates = (median(noop[0], "calls_per_s"), median(noop[1], "calls_per_s"))
        vs_recipe = tuple(
            paired_ratio(table, k, ("noop", "recipe", k[2]), "calls_per_s")
            for k in noop
        )
        vs_raw = tuple(
            paired_ratio(table, k, ("noop", "raw", k[2]), "calls_per_s") for k in noop
        )
        rss_small = median(noop[0], "peak_rss_growth")
        rss_big = median(("rss", case, "asyncio"), "peak_rss_growth")
        process = tuple(
            median(("process", case, loop), "calls_per_s") for loop in LOOPS
        )
        lines.append(
            f"| {name} | {pair(rates, ',.0f')} | {pair(vs_recipe, '.2f')} "
            f"| {pair(vs_raw, '.2f')} "
            f"| {'-' if rss_small is None else _fmt_bytes(rss_small)} "
            f"| {'-' if rss_big is None else _fmt_bytes(rss_big)} "
            f"| {pair((util[0], util[1]), '.1%')} | {pair(process, ',.0f')} |"
        )
    return "\n".join(lines)


def _ok(passed: bool | None) -> str:
    if passed is None:
        return ""
    return "met" if passed else "**missed**"


def targets(
    table: dict[Key, dict[int, dict[str, Any]]], loops: tuple[str, ...]
) -> list[str]:
    """Return the Markdown lines checking issue #3's targets.

    Speed targets are judged on throughput (wall time), as the issue states
    them; the ratio of loop-thread CPU per call is shown beside it because
    it is much steadier on a busy 2-core machine.
    """
    lines = [
        "**Targets** (medians of ratios paired within a repetition)",
        "",
        "| target | throughput ratio | loop CPU ratio | |",
        "|---|--:|--:|---|",
    ]

    def speed(name: str, key: Key, ref: Key, threshold: float) -> None:
        wall = paired_ratio(table, key, ref, "calls_per_s")
        # CPU per call: ref over key, so that > 1 means key is cheaper.
        cpu = paired_ratio(table, ref, key, "loop_cpu_us_per_call")
        if wall is None:
            return
        lines.append(
            f"| {name} | {wall:.2f} | {'' if cpu is None else f'{cpu:.2f}'} "
            f"| {_ok(wall >= threshold)} |"
        )

    ceiling: Key = ("noop", "sync window", "-")
    for loop in loops:
        noop = {
            c: ("noop", c, loop) for c in ("recipe", "submit", "map", "map_unordered")
        }
        speed(
            f"submit / recipe, {loop} (>= 0.95)", noop["submit"], noop["recipe"], 0.95
        )
        floor = 0.6 if loop == "asyncio" else 0.7
        speed(
            f"submit / sync window, {loop} (>= {floor})",
            noop["submit"],
            ceiling,
            floor,
        )
        speed(f"map / submit, {loop} (>= 1.00)", noop["map"], noop["submit"], 1.0)
        speed(
            f"map(ordered=False) / submit, {loop} (>= 1.00)",
            noop["map_unordered"],
            noop["submit"],
            1.0,
        )
        process = {
            c: ("process", c, loop) for c in ("raw", "submit", "map_chunksize_1")
        }
        for case in ("submit", "map_chunksize_1", "submit b16", "map_chunksize_1 b16"):
            speed(
                f"process pool, {case} / raw, {loop} (>= 1.00)",
                ("process", case, loop),
                process["raw"],
                1.0,
            )
        for other in ("aiometer", "aiojobs", "anyio"):
            speed(
                f"map / {other}, {loop} (> 1)", noop["map"], ("noop", other, loop), 1.0
            )
    if "uvloop" in loops and "asyncio" in loops:
        for case in ("submit", "map"):
            speed(
                f"{case}, uvloop / asyncio (> 1)",
                ("noop", case, "uvloop"),
                ("noop", case, "asyncio"),
                1.0,
            )
    for loop in loops:
        for case in ("submit", "map"):
            runs = table.get(("rss", case, loop), {})
            if runs:
                growth = max(x["peak_rss_growth"] for x in runs.values())
                calls = next(iter(runs.values()))["calls"]
                lines.append(
                    f"| peak RSS growth, {calls:,} calls, {case}, {loop} (<= 2 MB) "
                    f"| {growth / MB:.2f} MB | | {_ok(growth <= 2 * MB)} |"
                )
    for loop in loops:
        for case in ("submit", "map", "recipe"):
            for mult in ("2x", "1x"):
                r = paired_ratio(
                    table,
                    ("sleep", f"{case} {mult}", loop),
                    ("sleep", "sync map", "-"),
                    "utilization",
                )
                if r is None:
                    continue
                judged = mult == "2x" and case != "recipe"
                lines.append(
                    f"| utilization / sync map, {case} {mult}, {loop}"
                    f"{' (>= 0.99)' if judged else ''} | {r:.3f} | "
                    f"| {_ok(r >= 0.99) if judged else ''} |"
                )
    return lines


def code_version() -> str:
    """Return the commit and a hash of the library's source, as tested."""
    package = HERE.parent / "src" / "aiobound"
    tested = [
        path
        for path in sorted(package.glob("*.py"))
        if path.name not in ("cli.py", "__main__.py")  # the demo's, unused here
    ]
    digest = hashlib.sha256()
    for path in [*tested, package / "_demo" / "_memory.py"]:
        digest.update(path.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", ""
    return f"{commit}{'+dirty' if dirty else ''} src sha256 {digest.hexdigest()[:12]}"


def machine() -> str:
    """Describe the machine and interpreter in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 rep")
    parser.add_argument("--reps", type=int, default=None, help="default: 3 (quick: 1)")
    parser.add_argument("--rss-reps", type=int, default=1, help="default: 1")
    parser.add_argument(
        "--workloads",
        default="noop,sleep,rss,process",
        help="comma-separated subset of noop,sleep,rss,process",
    )
    parser.add_argument(
        "--loops", default=",".join(LOOPS), help="default: asyncio,uvloop"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated subset of the cases (default: all), e.g. "
        "sync_window,submit,map,map_unordered",
    )
    parser.add_argument("--json", metavar="FILE", help="also save the records")
    parser.add_argument("--markdown", metavar="FILE", help="also save the tables")
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        help="print the tables of a run saved with --json, without running",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print(
            saved["header"]
            + "\n\n"
            + summarize(saved["records"], tuple(saved["loops"]))
        )
        return 0
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    loops = tuple(args.loops.split(","))
    wanted = args.workloads.split(",")
    jobs = {w: js for w, js in plan(args.quick, loops).items() if w in wanted}
    if args.cases:
        keep = set(args.cases.split(","))
        jobs = {w: [j for j in js if j.case in keep] for w, js in jobs.items()}
    version = code_version()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"machine: {machine()}", file=sys.stderr)
    print(f"code: {version}", file=sys.stderr)
    print(f"load average before: {_fmt_load(load)}", file=sys.stderr)
    rng = random.Random(3)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for rep in range(reps):
        todo = [
            j for w, js in jobs.items() if w != "rss" or rep < args.rss_reps for j in js
        ]
        rng.shuffle(todo)
        for n, job in enumerate(todo, 1):
            result = run_job(job)
            result["rep"] = rep
            records.append(result)
            print(
                f"[rep {rep + 1}/{reps} {n:>2}/{len(todo)}] {job.workload:<7} "
                f"{job.label:<10} {job.loop:<7} "
                f"{result['calls_per_s']:>10,.0f} calls/s "
                f"{_fmt_bytes(result['peak_rss_growth']):>10}",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - started
    changed = code_version() != version
    if changed:
        print(
            "WARNING: the library's source changed during the run; the figures "
            "mix versions of the code. Run again.",
            file=sys.stderr,
        )
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    header = (
        f"Machine: {machine()}. Code: {version}"
        f"{' (CHANGED DURING THE RUN)' if changed else ''}. "
        f"{reps} repetition(s), interleaved; took {elapsed / 60:.1f} min; "
        f"load average before {_fmt_load(load)}, after {_fmt_load(load_after)}."
    )
    text = header + "\n\n" + summarize(records, loops)
    print(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"header": header, "loops": loops, "records": records}, indent=1)
        )
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
