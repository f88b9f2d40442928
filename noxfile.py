"""Sessions: tests (3.10-3.13), lint, typecheck, examples; bench on demand.

Run ``nox`` for the default sessions, ``nox -s bench`` for benchmarks.
Interpreters installed with pyenv are found without activating them.
"""

from __future__ import annotations

import glob
import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck", "examples"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
PYPROJECT = nox.project.load_toml("pyproject.toml")

# Make every pyenv-installed interpreter visible as pythonX.Y.
_pyenv_bins = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin")))
if _pyenv_bins:
    os.environ["PATH"] = os.pathsep.join([*_pyenv_bins, os.environ.get("PATH", "")])


def _install(session: nox.Session, *groups: str, extras: str = "") -> None:
    spec = f".[{extras}]" if extras else "."
    deps = [d for g in groups for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-e", spec, *deps)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite on every supported Python."""
    _install(session, "test", extras="uvloop")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check; import contracts (import-linter)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # lint-imports analyses the package as importable: src on the path.
    session.run("lint-imports", env={"PYTHONPATH": "src"})


@nox.session(python=["3.10", "3.13"])
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests and examples."""
    _install(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Smoke-run the examples that need nothing but the library."""
    _install(session)
    session.run("python", "examples/quickstart.py")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """aiobound against the alternatives (slow; ``-- --quick`` for a smoke run)."""
    _install(session, "bench", extras="uvloop")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(default=False)
def overload(session: nox.Session) -> None:
    """The example services at 5x capacity: usual pattern against aiobound."""
    _install(session, extras="fastapi,aiohttp,prometheus,uvloop")
    session.install("uvicorn>=0.30")
    session.run("python", "benchmarks/overload.py", *session.posargs)


@nox.session(default=False)
def stress(session: nox.Session) -> None:
    """The generated schedules (tests/test_stateful.py) with many examples."""
    _install(session, "test", extras="uvloop")
    session.env["AIOBOUND_HYPOTHESIS_PROFILE"] = "stress"
    session.run("pytest", "tests/test_stateful.py", "--timeout=0", *session.posargs)


@nox.session(default=False)
def soak(session: nox.Session) -> None:
    """A million calls with cancellations and errors; checks counts and RSS."""
    _install(session)
    session.install("psutil>=5.9")
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session(default=False)
def bench_process(session: nox.Session) -> None:
    """Chunked map on a process pool against per-item calls and the stdlib."""
    _install(session)
    session.run("python", "benchmarks/process_pool.py", *session.posargs)
