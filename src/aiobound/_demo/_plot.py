"""Draw RSS growth and the producer's lead over time, one line per case."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._runner import Options

__all__ = ("plot",)


def plot(results: Sequence[dict[str, Any]], options: Options, path: str) -> None:
    """Save a two-panel figure to *path* (PNG, or any format matplotlib knows).

    Top: resident memory above the starting point. Bottom: calls submitted
    and not yet finished (how far the producer ran ahead of the workers).

    Args:
        results: Result events, one per case, with their ``samples``.
        options: The size of the run, for the title.
        path: Where to save the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss_ax, ahead_ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for result in results:
        samples = result["samples"]
        times = [s[0] for s in samples]
        rss_ax.plot(times, [s[1] / 2**20 for s in samples], label=result["case"])
        ahead_ax.plot(times, [s[2] for s in samples], label=result["case"])
    rss_ax.set_ylabel("RSS growth (MiB)")
    ahead_ax.set_ylabel("submitted - finished")
    ahead_ax.set_yscale("symlog", linthresh=10)
    ahead_ax.set_xlabel("seconds")
    rss_ax.legend()
    rss_ax.set_title(
        f"{options.calls:,} calls of {options.duration * 1000:g} ms, "
        f"{options.workers} workers, {options.loop} loop"
    )
    for ax in (rss_ax, ahead_ax):
        ax.grid(visible=True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
