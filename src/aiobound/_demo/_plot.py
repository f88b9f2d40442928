"""Draw RSS growth and the producer's lead over time, one line per case."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._runner import title

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.figure import Figure

    from ._runner import Options

__all__ = ("figure", "plot")

# One look per case, so that no case hides another where their lines meet
# (the two bounded cases stay near zero memory growth together): the first
# is solid, the others dashed with the same period but shifted by half of
# it, so where they coincide the line alternates between their colours.
_STYLES = (
    {"color": "tab:red", "linestyle": "-", "linewidth": 2.5},
    {"color": "tab:blue", "linestyle": (0, (6, 6)), "linewidth": 2.5},
    {"color": "tab:green", "linestyle": (6, (6, 6)), "linewidth": 2.5},
)
_LINEAR_BELOW = 10  # calls: the lower panel is linear up to here, log above


def figure(results: Sequence[dict[str, Any]], options: Options) -> Figure:
    """Return the two-panel figure of a run.

    Top: resident memory above the starting point, in MiB. Bottom: calls
    submitted and not yet finished (how far the producer ran ahead of the
    workers), on a scale linear up to 10 calls and logarithmic above, so
    that a bound of 10 and a lead of 5,000 both read clearly. Each case has
    its own colour, dash and width, and its peak in the legend.

    Args:
        results: Result events, one per case, with their ``samples``.
        options: The size of the run, for the title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), layout="constrained")
    rss_ax, ahead_ax = fig.subplots(2, 1, sharex=True)
    for index, result in enumerate(results):
        style = _STYLES[index % len(_STYLES)]
        samples = result["samples"]
        times = [s[0] for s in samples]
        rss = [s[1] / 2**20 for s in samples]
        ahead = [s[2] for s in samples]
        name = result["case"]
        rss_ax.plot(
            times, rss, label=f"{name}: peak +{max(rss, default=0):.1f} MiB", **style
        )
        ahead_ax.plot(
            times, ahead, label=f"{name}: at most {max(ahead, default=0):,}", **style
        )
    rss_ax.set_ylabel("RSS growth (MiB)")
    ahead_ax.set_ylabel(
        f"calls submitted, not finished\n(linear to {_LINEAR_BELOW}, log above)"
    )
    ahead_ax.set_yscale("symlog", linthresh=_LINEAR_BELOW)
    ahead_ax.set_ylim(bottom=0)
    ahead_ax.set_xlabel("seconds since the case started")
    rss_ax.set_title(title(options))
    for ax in (rss_ax, ahead_ax):
        ax.legend(loc="best", fontsize="small", handlelength=4)
        ax.grid(visible=True, alpha=0.3)
    return fig


def plot(results: Sequence[dict[str, Any]], options: Options, path: str) -> None:
    """Save the figure of :func:`figure` to *path* (PNG or any matplotlib format).

    Args:
        results: Result events, one per case, with their ``samples``.
        options: The size of the run, for the title.
        path: Where to save the figure.

    Raises:
        OSError: the file could not be written.
        ValueError: matplotlib does not know the format of *path*.
    """
    figure(results, options).savefig(path, dpi=100)
