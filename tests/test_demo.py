"""Smoke test of ``python -m aiobound demo --json`` at a tiny size.

It checks the figures that do not depend on timing: every call completed in
every case, and the bounded cases never ran further ahead of the workers than
their bound (a slot is freed only after the call has returned).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytest.importorskip("psutil")

DEMO = (sys.executable, "-m", "aiobound", "demo")
CALLS = 30
WORKERS = 3


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiobound", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_json_reports_every_case_and_the_bound_holds() -> None:
    done = run_demo(
        f"--calls={CALLS}", f"--workers={WORKERS}", "--duration=0.001", "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    assert report["options"] == {
        "calls": CALLS,
        "workers": WORKERS,
        "duration": 0.001,
        "loop": "asyncio",
    }
    cases = {case["case"]: case for case in report["cases"]}
    assert list(cases) == ["unbounded", "bound=workers", "bound=2x"]
    assert [case["bound"] for case in cases.values()] == [None, WORKERS, 2 * WORKERS]
    for case in cases.values():
        assert case["completed"] == case["submitted"] == CALLS
        assert case["ideal_s"] == pytest.approx(CALLS * 0.001 / WORKERS)
        assert case["wall_s"] > 0
        assert case["peak_rss_growth"] >= 0
        assert 1 <= case["max_ahead"] <= (case["bound"] or CALLS)
        assert "samples" not in case


def test_demo_refuses_bad_sizes_naming_the_option() -> None:
    done = run_demo("--calls=0", "--json")
    assert done.returncode == 2
    assert "--calls" in done.stderr
    assert "must be >= 1" in done.stderr


def test_demo_without_the_cli_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from aiobound import cli

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "rich" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert cli.main(["demo"]) == 2
    assert "pip install 'aiobound[cli]'" in capsys.readouterr().err


def test_the_library_does_not_import_the_cli() -> None:
    code = (
        "import sys, aiobound; "
        "assert not {'rich', 'psutil', 'aiobound.cli'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- sizes the parser refuses --------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("--duration=inf", "must be a finite number"),
        ("--duration=-inf", "must be a finite number"),
        ("--duration=nan", "must be a finite number"),
        ("--duration=1e9", "must be <= 60 seconds"),
        ("--duration=-1", "must be >= 0"),
        ("--calls=100000000000", "must be <= 10,000,000"),
        ("--workers=100000", "must be <= 1,024"),
    ],
)
def test_demo_refuses_non_finite_and_absurd_sizes(
    argument: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiobound import cli

    with pytest.raises(SystemExit) as exit_info:
        cli._parser().parse_args(["demo", argument])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert argument.split("=")[0] in err
    assert message in err


# -- the plot's path, and results that survive a failed plot --------------------


def fake_result(case: str, bound: int | None) -> dict[str, object]:
    return {
        "event": "result",
        "case": case,
        "bound": bound,
        "calls": 4,
        "completed": 4,
        "submitted": 4,
        "workers": 2,
        "duration": 0.0,
        "loop": "asyncio",
        "wall_s": 0.01,
        "ideal_s": 0.0,
        "busy_s": 0.0,
        "utilization": 0.0,
        "peak_rss_growth": 0,
        "peak_rss_exact": True,
        "max_ahead": bound or 4,
        "producer_done_s": 0.0,
        "samples": [(0.0, 0, 0), (0.005, 2**20, bound or 4), (0.01, 2**20, 0)],
    }


@pytest.fixture
def fake_cases(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the child processes by canned results; list the cases run."""
    from aiobound._demo import _runner

    ran: list[str] = []
    bounds = {"unbounded": None, "bound=workers": 2, "bound=2x": 4}

    def run_in_child(case: str, options: object, on_progress: object) -> object:
        ran.append(case)
        return fake_result(case, bounds[case])

    monkeypatch.setattr(_runner, "run_in_child", run_in_child)
    return ran


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing/demo.png", "the folder '{tmp}/missing' does not exist"),
        ("missing/deeper/demo.png", "the folder '{tmp}/missing' does not exist"),
        ("a_file/demo.png", "'{tmp}/a_file' is a file, not a folder"),
        ("a_file/deeper/demo.png", "'{tmp}/a_file' is a file, not a folder"),
        (".", "is a directory"),
        ("demo.unknown", "cannot tell the format"),
    ],
)
def test_demo_checks_the_plot_path_before_running_any_case(
    where: str,
    message: str,
    fake_cases: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("matplotlib")
    from aiobound import cli

    (tmp_path / "a_file").write_text("")
    path = str(tmp_path / where)
    assert cli.main(["demo", "--json", "--plot", path]) == 2
    assert fake_cases == []
    err = capsys.readouterr().err
    assert err.startswith("usage: aiobound demo ")
    assert "aiobound demo: error: argument --plot: " in err
    assert message.format(tmp=tmp_path) in err


@pytest.mark.parametrize("where", ["", " "])
def test_demo_refuses_an_empty_plot_path_before_running_any_case(
    where: str, fake_cases: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from aiobound import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--json", "--plot", where])
    assert exit_info.value.code == 2
    assert fake_cases == []
    err = capsys.readouterr().err
    assert err.startswith("usage: aiobound demo ")
    assert "argument --plot: expected a file name" in err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["demo", "--bogus"], "usage: aiobound demo "),
        (["demo", "--json", "--bogus", "x"], "usage: aiobound demo "),
        (["--bogus", "demo"], "usage: aiobound [-h] {demo}"),
    ],
)
def test_unknown_arguments_are_answered_with_their_commands_usage(
    argv: list[str],
    usage: str,
    fake_cases: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aiobound import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert fake_cases == []
    err = capsys.readouterr().err
    assert err.startswith(usage)
    assert "unrecognized arguments: --bogus" in err


def test_demo_prints_its_results_even_when_the_plot_cannot_be_saved(
    fake_cases: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("matplotlib")
    from aiobound import cli
    from aiobound._demo import _plot

    def plot(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_plot, "plot", plot)
    assert cli.main(["demo", "--json", "--plot", str(tmp_path / "demo.png")]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert [case["case"] for case in report["cases"]] == fake_cases
    assert len(fake_cases) == 3
    assert "could not be saved" in err
    assert "No space left on device" in err


def test_demo_plot_names_its_units_and_keeps_every_case_visible() -> None:
    pytest.importorskip("matplotlib")
    from aiobound._demo._plot import figure
    from aiobound._demo._runner import Options

    results = [
        fake_result("unbounded", None),
        fake_result("bound=workers", 2),
        fake_result("bound=2x", 4),
    ]
    fig = figure(results, Options(calls=4, workers=2, duration=0.0, loop="asyncio"))
    rss_ax, ahead_ax = fig.axes
    assert "MiB" in rss_ax.get_ylabel()
    lower = ahead_ax.get_ylabel()
    assert "calls" in lower
    assert "log" in lower
    assert ahead_ax.get_yscale() == "symlog"
    for ax in (rss_ax, ahead_ax):
        looks = {(line.get_color(), str(line.get_linestyle())) for line in ax.lines}
        dashes = {str(line._dash_pattern) for line in ax.lines}  # type: ignore[attr-defined,unused-ignore]
        assert len(looks) == len(dashes) == len(results)
        legend = ax.get_legend()
        assert legend is not None
        texts = [t.get_text() for t in legend.get_texts()]
        assert [t.split(":")[0] for t in texts] == [r["case"] for r in results]
    assert "2 workers" in rss_ax.get_title()


# -- the live display ----------------------------------------------------------


def test_demo_progress_fits_80_columns_with_whole_counts_under_a_title() -> None:
    pytest.importorskip("rich")
    done = subprocess.run(
        [*DEMO, "--calls=1000", "--workers=2", "--duration=0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "80", "TERM": "dumb"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    bars = [i for i, line in enumerate(lines) if "1000/1000" in line]
    assert len(bars) == 3
    titles = [i for i, line in enumerate(lines) if "1,000 calls of 0 ms" in line]
    assert titles
    assert titles[0] < bars[0]
