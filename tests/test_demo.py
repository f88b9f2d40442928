"""Smoke test of ``python -m aiobound demo --json`` at a tiny size.

It checks the figures that do not depend on timing: every call completed in
every case, and the bounded cases never ran further ahead of the workers than
their bound (a slot is freed only after the call has returned).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("psutil")

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
