"""Live progress bars and the final table, drawn with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table

from ._runner import run_in_child, title

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._runner import Options
    from ._runner import Progress as CaseProgress

__all__ = (
    "console",
    "format_bytes",
    "progress_columns",
    "render_table",
    "run_with_progress",
)

# The widest case name ("bound=workers") and the text around the figures.
_NAME_WIDTH = 13
_RATE_WIDTH = len("9,999,999/s")
_RSS_WIDTH = len("RSS 999.9 MiB +999.9 MiB")
_TIME_WIDTH = len("0:00:00")
_MIN_BAR, _MAX_BAR = 3, 30  # 3 still fits 10,000,000 calls in 80


def console() -> Console:
    """Return the console everything is drawn on (stdout)."""
    return Console()


def format_bytes(size: float) -> str:
    """Format a byte count for people: ``"16.1 MiB"``, ``"356 KiB"``."""
    for unit in ("B", "KiB", "MiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit != "MiB" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def format_growth(size: float) -> str:
    """Format a signed change in bytes: ``"+6.5 MiB"``, ``"-12 KiB"``."""
    return ("-" if size < 0 else "+") + format_bytes(abs(size))


def progress_columns(calls: int, width: int) -> tuple[ProgressColumn, ...]:
    """The columns of one progress line, sized to fit *width* characters.

    The counts (``4321/5000``) are never cut: the bar takes what is left
    once the name, counts, rate, memory and time have their room.

    Args:
        calls: The total number of calls, which sets the counts' width.
        width: The console's width in characters.
    """
    counts = 2 * len(str(calls)) + 1
    fixed = _NAME_WIDTH + counts + _RATE_WIDTH + _RSS_WIDTH + _TIME_WIDTH
    gaps = 5  # one space between each two of the six columns
    bar = max(_MIN_BAR, min(_MAX_BAR, width - fixed - gaps))
    return (
        TextColumn(
            "{task.description}",
            table_column=Column(width=_NAME_WIDTH, no_wrap=True),
        ),
        BarColumn(bar_width=bar),
        MofNCompleteColumn(
            table_column=Column(min_width=counts, no_wrap=True, justify="right")
        ),
        TextColumn(
            "{task.fields[rate]}",
            justify="right",
            table_column=Column(width=_RATE_WIDTH, no_wrap=True),
        ),
        TextColumn(
            "{task.fields[rss]}",
            table_column=Column(width=_RSS_WIDTH, no_wrap=True),
        ),
        TimeElapsedColumn(),
    )


def run_with_progress(
    cases: Sequence[str], options: Options, out: Console
) -> list[dict[str, Any]]:
    """Run each case in its own process, one after the other, with a bar each.

    Args:
        cases: Case names, in the order to run them.
        options: The size of the run and the loop.
        out: Where to draw.

    Returns:
        The result event of each case, in order.
    """
    results: list[dict[str, Any]] = []
    out.print(f"[bold]aiobound demo[/]: {title(options)}", highlight=False)
    columns = progress_columns(options.calls, out.width)
    with Progress(*columns, console=out) as progress:
        for case in cases:
            task = progress.add_task(case, total=options.calls, rate="", rss="")

            def update(report: CaseProgress, task: Any = task) -> None:
                rate = report.done / report.t if report.t > 0 else 0.0
                progress.update(
                    task,
                    completed=report.done,
                    rate=f"{rate:,.0f}/s",
                    rss=(
                        f"RSS {format_bytes(report.rss)} "
                        f"{format_growth(report.rss_growth)}"
                    ),
                )

            result = run_in_child(case, options, update)
            progress.update(
                task,
                completed=result["completed"],
                rate=f"{result['completed'] / result['wall_s']:,.0f}/s",
                rss=f"RSS peak {format_growth(result['peak_rss_growth'])}",
            )
            results.append(result)
    return results


def render_table(
    results: Sequence[dict[str, Any]], options: Options, out: Console
) -> None:
    """Print the comparison table and a line on how to read it.

    Args:
        results: Result events, one per case.
        options: The size of the run and the loop.
        out: Where to print.
    """
    table = Table(
        box=box.SIMPLE_HEAD,
        title=title(options),
    )
    for header in (
        "case",
        "bound",
        "wall",
        "ideal",
        "worker\nutil.",
        "peak RSS\ngrowth",
        "max\nahead",
        "producer\ndone at",
    ):
        table.add_column(
            header,
            justify="left" if header == "case" else "right",
            no_wrap=True,
            min_width=max(len(line) for line in header.splitlines()),
        )
    for r in results:
        table.add_row(
            r["case"],
            "-" if r["bound"] is None else str(r["bound"]),
            f"{r['wall_s']:.2f} s",
            f"{r['ideal_s']:.2f} s",
            f"{r['utilization']:.1%}",
            format_bytes(r["peak_rss_growth"]),
            f"{r['max_ahead']:,}",
            f"{r['producer_done_s']:.2f} s",
        )
    out.print(table)
    out.print(
        "ideal = calls x duration / workers. Worker util. = time spent in "
        "the calls / (workers x wall).\n"
        "max ahead = most calls submitted and not yet finished (the pool's "
        "queue plus running calls).\n"
        "Unbounded, the producer is done at once and every pending call waits "
        "in memory; bounded, it keeps pace with the workers and memory stays "
        "flat. With bound = workers a worker can idle between one call's end "
        "and the next submission; 2x keeps them busy."
    )
