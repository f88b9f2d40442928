"""The ``aiobound`` command (also ``python -m aiobound``).

``aiobound demo`` runs, on an asyncio loop, the experiment behind aiobound:
thousands of short blocking calls pushed into a
thread pool with plain ``run_in_executor`` (unbounded) and through
:class:`~aiobound.BoundedLoopExecutor` with ``bound`` = workers and
2 x workers. Each case runs in a process of its own; the command shows live
progress, then a table (or JSON with ``--json``) and optionally a plot.

The command needs the ``cli`` extra (rich and psutil), ``--plot`` the
``plot`` extra (matplotlib). :mod:`aiobound` itself never imports this
module, so the library stays standard-library only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._demo._runner import Options

__all__ = ("main",)

# The extra that provides each optional module the command may need.
_EXTRA_FOR = {
    "rich": "cli",
    "psutil": "cli",
    "matplotlib": "plot",
    "uvloop": "uvloop",
}


# The largest sizes the demo accepts: beyond them a run would take hours or
# exhaust the machine rather than show anything more.
MAX_CALLS = 10_000_000
MAX_WORKERS = 1_024
MAX_DURATION = 60.0


def _int_between(minimum: int, maximum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(
                f"must be <= {maximum:_}, got {value:_}".replace("_", ",")
            )
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    if value > MAX_DURATION:
        raise argparse.ArgumentTypeError(
            f"must be <= {MAX_DURATION:g} seconds, got {text}"
        )
    return value


def _plot_argument(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "expected a file name such as demo.png, got an empty one"
        )
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiobound",
        description="Backpressure for run_in_executor: see it with `aiobound demo`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run_in_executor unbounded vs aiobound, side by side",
        description=(
            "Push CALLS blocking calls of DURATION seconds into a pool of "
            "WORKERS threads three ways (unbounded run_in_executor, aiobound "
            "with bound = workers, aiobound with bound = 2 x workers), each in "
            "its own process, and compare time, utilization and memory."
        ),
    )
    # Each subcommand's parser, to answer in its name after parsing.
    demo.set_defaults(command_parser=demo)
    demo.add_argument(
        "--calls",
        type=_int_between(1, MAX_CALLS),
        default=5000,
        help=f"blocking calls per case, 1 to {MAX_CALLS:,} (default: 5000)",
    )
    demo.add_argument(
        "--workers",
        type=_int_between(1, MAX_WORKERS),
        default=10,
        help=f"threads in the pool, 1 to {MAX_WORKERS:,} (default: 10)",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        default=0.01,
        help=f"seconds each call blocks, 0 to {MAX_DURATION:g} (default: 0.01)",
    )
    demo.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop (default: asyncio)",
    )
    demo.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON instead of a table",
    )
    demo.add_argument(
        "--plot",
        type=_plot_argument,
        metavar="FILE.png",
        help=(
            "also draw RSS and submitted-minus-finished over time into FILE.png "
            "(needs the plot extra: pip install 'aiobound[plot]')"
        ),
    )
    return parser


def _plot_path_problem(path: str) -> str | None:
    """Say why the plot could not be saved to *path*, or None if it can.

    Checked before any case runs, so that a bad path costs seconds, not the
    whole run: the format must be one matplotlib writes and the folder must
    exist and be writable.
    """
    from matplotlib.figure import Figure

    if os.path.isdir(path):
        return f"{path!r} is a directory"
    formats = Figure().canvas.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in formats:
        known = ", ".join(f".{name}" for name in sorted(formats))
        return f"cannot tell the format of {path!r} from its extension ({known})"
    folder = os.path.dirname(path) or os.curdir
    if not os.path.isdir(folder):
        # Name the part of the path, as typed, that is not a folder.
        missing = folder
        while True:
            parent = os.path.dirname(missing)
            if not parent or parent == missing or os.path.exists(parent):
                break
            missing = parent
        for part in (missing, parent):
            if part and os.path.exists(part) and not os.path.isdir(part):
                return f"cannot save {path!r}: {part!r} is a file, not a folder"
        return (
            f"cannot save {path!r}: the folder {missing!r} does not exist "
            "(create it first)"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder!r} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path!r} is not writable"
    return None


def _missing(modules: Sequence[str]) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    needed = ["psutil"]
    if not args.json:
        needed.append("rich")
    if args.plot is not None:
        needed.append("matplotlib")
    if args.loop == "uvloop":
        needed.append("uvloop")
    missing = _missing(needed)
    if missing:
        names = " and ".join(missing)
        extras = ",".join(sorted({_EXTRA_FOR[name] for name in missing}))
        verb = "is" if len(missing) == 1 else "are"
        sys.stderr.write(
            f"aiobound demo needs {names}, which {verb} not installed.\n"
            f"Install with: pip install 'aiobound[{extras}]'\n"
        )
        return 2

    if args.plot is not None:
        problem = _plot_path_problem(args.plot)
        if problem is not None:
            # argparse's own form, with the demo's usage, but returned rather
            # than raised as SystemExit: main() returns its exit status.
            parser.print_usage(sys.stderr)
            sys.stderr.write(f"{parser.prog}: error: argument --plot: {problem}\n")
            return 2

    from ._demo._case import CASES
    from ._demo._runner import Options, run_in_child

    options = Options(
        calls=args.calls,
        workers=args.workers,
        duration=args.duration,
        loop=args.loop,
    )
    results: list[dict[str, Any]]
    if args.json:
        results = [run_in_child(case, options, lambda _: None) for case in CASES]
        _write_json(results, options)
    else:
        from ._demo._report import console, render_table, run_with_progress

        out = console()
        results = run_with_progress(CASES, options, out)
        render_table(results, options, out)
    if args.plot is not None:
        from ._demo._plot import plot

        try:
            plot(results, options, args.plot)
        except (OSError, ValueError) as exc:
            sys.stderr.write(
                f"aiobound demo: the results are above, but the plot could not "
                f"be saved to {args.plot!r}: {exc}\n"
            )
            return 1
        if not args.json:
            sys.stdout.write(f"Plot saved to {args.plot}\n")
    return 0


def _write_json(results: Sequence[dict[str, Any]], options: Options) -> None:
    report = {
        "options": {
            "calls": options.calls,
            "workers": options.workers,
            "duration": options.duration,
            "loop": options.loop,
        },
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cases": [
            {k: v for k, v in r.items() if k not in ("event", "samples")}
            for r in results
        ],
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aiobound`` command line; return the exit status.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    command: argparse.ArgumentParser = args.command_parser
    if unknown:
        # argparse reports arguments a subcommand does not know with the
        # top-level usage; answer with the subcommand's own when they come
        # after it.
        words = list(sys.argv[1:] if argv is None else argv)
        after = words[words.index(args.command) + 1 :]
        target = command if all(word in after for word in unknown) else parser
        target.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "demo":
        return _demo(args, command)
    raise AssertionError(f"unknown command {args.command!r}")  # argparse refuses
