"""Live progress bars and the final table, drawn with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ._runner import run_in_child

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._runner import Options
    from ._runner import Progress as CaseProgress

__all__ = ("console", "format_bytes", "render_table", "run_with_progress")


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
    columns = (
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>12}"),
        TextColumn("RSS {task.fields[rss]:>21}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out) as progress:
        for case in cases:
            task = progress.add_task(case, total=options.calls, rate="", rss="")

            def update(report: CaseProgress, task: Any = task) -> None:
                rate = report.done / report.t if report.t > 0 else 0.0
                progress.update(
                    task,
                    completed=report.done,
                    rate=f"{rate:,.0f} calls/s",
                    rss=(
                        f"{format_bytes(report.rss)} "
                        f"({'-' if report.rss_growth < 0 else '+'}"
                        f"{format_bytes(abs(report.rss_growth))})"
                    ),
                )

            result = run_in_child(case, options, update)
            progress.update(
                task,
                completed=result["completed"],
                rate=f"{result['completed'] / result['wall_s']:,.0f} calls/s",
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
        title=(
            f"{options.calls:,} calls of {options.duration * 1000:g} ms, "
            f"{options.workers} workers, {options.loop} loop"
        ),
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
