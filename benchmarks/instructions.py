"""Instructions per call, counted by valgrind: a yardstick that load cannot bend.

Wall-clock figures on a shared 2-core machine swing by 2x from one run to the
next; the number of instructions a case executes does not. This runs one case
of ``benchmarks/cases.py`` under ``valgrind --tool=callgrind`` at two sizes
and prints the difference per call (start-up cancels out). It counts the
instructions of every thread of the process (the loop and the pool's
workers), not of worker processes.

Usage::

    python benchmarks/instructions.py noop submit --loop=asyncio
    PYTHONPATH=/path/to/other/src python benchmarks/instructions.py noop map

Comparing two versions of the library: run it with each ``PYTHONPATH`` and
compare the figures (a few tenths of a percent apart between repeated runs).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).resolve().parent / "cases.py"


def instructions(argv: list[str], calls: int) -> int:
    """Run ``cases.py`` under callgrind with *calls*; return the total count."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(CASES),
            *argv,
            f"--calls={calls}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload")
    parser.add_argument("case")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--bound", type=int, default=20)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=5000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    argv = [
        args.workload,
        args.case,
        f"--loop={args.loop}",
        f"--workers={args.workers}",
        f"--bound={args.bound}",
    ]
    small = instructions(argv, args.small)
    large = instructions(argv, args.large)
    per_call = (large - small) / (args.large - args.small)
    print(f"{args.workload} {args.case} {args.loop}: {per_call:,.0f} instructions/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
