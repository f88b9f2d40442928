"""A script that starts a process pool from its top level, outside
``if __name__ == "__main__":``, gets one clear error (run as real scripts)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

HEADER = """\
import asyncio
import concurrent.futures
import multiprocessing

from aiobound import BoundedLoopExecutor


def square(x):
    return x * x

"""

OWNED = """\
async def main():
    async with BoundedLoopExecutor.process(max_workers=1) as executor:
        print(await executor.run(square, 7))
"""

WRAPPED = """\
async def main():
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        executor = BoundedLoopExecutor(executor=pool)
        print(await executor.run(square, 7))
"""

# Made at the top level, used under the guard: fine (workers only start at
# the first call).
AT_TOP_LEVEL = """\
executor = BoundedLoopExecutor.process(max_workers=1)


async def main():
    async with executor:
        print(await executor.run(square, 7))
"""


def run_script(
    tmp_path: Path, body: str, guarded: bool
) -> subprocess.CompletedProcess[str]:
    last = "asyncio.run(main())\n"
    if guarded:
        last = 'if __name__ == "__main__":\n' + textwrap.indent(last, "    ")
    script = tmp_path / "script.py"
    script.write_text(HEADER + body + "\n\n" + last)
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # a guard against a hang, not a timing assumption
        check=False,
    )


@pytest.mark.parametrize("body", [OWNED, WRAPPED], ids=["process", "wrapped-spawn"])
def test_an_unguarded_script_gets_one_clear_error(tmp_path: Path, body: str) -> None:
    done = run_script(tmp_path, body, guarded=False)
    assert done.returncode == 1
    assert done.stdout == ""
    err = done.stderr
    assert err.count("Traceback") == 1, err
    assert (
        "RuntimeError: the worker processes of this pool would run your script" in err
    )
    assert 'if __name__ == "__main__":\n        asyncio.run(main())' in err
    line = (HEADER + body).count("\n") + 3
    assert f"script.py, line {line}, is not under" in err
    assert "BrokenProcessPool" not in err
    assert len(err.splitlines()) < 60  # it was 113 lines


@pytest.mark.parametrize(
    "body",
    [OWNED, WRAPPED, AT_TOP_LEVEL],
    ids=["process", "wrapped-spawn", "at-top-level"],
)
def test_a_guarded_script_runs(tmp_path: Path, body: str) -> None:
    done = run_script(tmp_path, body, guarded=True)
    assert (done.returncode, done.stdout) == (0, "49\n")
    # (An executor made at the top level is made again in each worker, which
    # then exits without releasing its pool's semaphores: the resource
    # tracker warns about them at exit, with or without this check.)
    assert "Traceback" not in done.stderr


def test_a_package_run_with_dash_m_needs_no_guard(tmp_path: Path) -> None:
    # Workers do not import a package's __main__ again: no guard is needed.
    package = tmp_path / "demo_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        HEADER + OWNED.replace("square, 7", "abs, -49") + "\n\nasyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(tmp_path)])}
    done = subprocess.run(
        [sys.executable, "-m", "demo_package"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # a guard against a hang, not a timing assumption
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "49\n"), done.stderr
