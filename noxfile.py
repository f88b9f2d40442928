"""Sessions: tests (3.10-3.13), lint, typecheck, examples, snippets, docs; more too.

Run ``nox`` for the default sessions, ``nox -s release`` to build and test
the wheel, ``nox -s bench`` for benchmarks. Interpreters installed with pyenv
are found without activating them.
"""

from __future__ import annotations

import glob
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck", "examples", "snippets", "docs"]

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


@nox.session
def snippets(session: nox.Session) -> None:
    """Every Python block of README.md and docs/ from the ``examples`` extra.

    Only what runs the blocks is added (pytest and its plugins, Sybil), none
    of the test group's packages: a block that imports something the extra
    lacks fails here.
    """
    session.install(
        "-e", ".[examples]", "pytest", "pytest-asyncio", "pytest-timeout", "sybil"
    )
    session.run("pytest", "README.md", "docs", "-p", "no:cacheprovider")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """aiobound against the alternatives (slow; ``-- --quick`` for a smoke run)."""
    _install(session, "bench", extras="uvloop")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(default=False)
def bench_sizing(session: nox.Session) -> None:
    """How busy the workers stay for each bound above max_workers (a minute)."""
    _install(session, extras="uvloop")
    session.run("python", "benchmarks/sizing.py", *session.posargs)


@nox.session(default=False)
def bench_max_wait(session: nox.Session) -> None:
    """max_wait under a burst on asyncio and uvloop: waits and late refusals."""
    _install(session, extras="uvloop")
    session.run("python", "benchmarks/max_wait.py", *session.posargs)


@nox.session(default=False)
def overload(session: nox.Session) -> None:
    """The example services at 5x capacity: usual pattern against aiobound."""
    _install(session, extras="examples")
    session.run("python", "benchmarks/overload.py", *session.posargs)


def _ensure_wrk(session: nox.Session) -> None:
    """Install wrk from Debian's packages if it is missing; else stop, saying how."""
    if shutil.which("wrk") is not None:
        return
    if shutil.which("apt-get") is not None and os.geteuid() == 0:
        session.log("wrk is missing: apt-get install -y wrk")
        try:
            session.run("apt-get", "install", "-y", "wrk", external=True)
        except nox.command.CommandFailed:
            session.run("apt-get", "update", external=True)
            session.run("apt-get", "install", "-y", "wrk", external=True)
    if shutil.which("wrk") is None:
        session.error(
            "the flood benchmark needs wrk, which is not installed and could not "
            "be installed here: run `apt-get install -y wrk` as root (Debian, "
            "Ubuntu), `brew install wrk` (macOS), or build it from "
            "https://github.com/wg/wrk, then run `nox -s flood` again"
        )


@nox.session(default=False)
def flood(session: nox.Session) -> None:
    """The example services under a wrk flood, with and without the edge check."""
    _ensure_wrk(session)
    _install(session, extras="examples")
    session.run("python", "benchmarks/flood.py", *session.posargs)


@nox.session(default=False)
def stress(session: nox.Session) -> None:
    """The generated schedules and the storms, with many examples.

    tests/test_stateful*.py (hypothesis's stress profile), the completion and
    shared-bound storms (more callers and rounds), on asyncio and uvloop;
    about 10 minutes on two cores.
    """
    _install(session, "test", extras="uvloop")
    session.env["AIOBOUND_HYPOTHESIS_PROFILE"] = "stress"
    session.run(
        "pytest",
        "tests/test_stateful.py",
        "tests/test_shared_bound_storm.py",
        "tests/test_stateful_adaptive.py",
        "tests/test_completion_storm.py",
        "tests/test_stateful_partitions.py",
        "--timeout=0",
        *session.posargs,
    )


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


@nox.session(default=False)
def bench_sync(session: nox.Session) -> None:
    """BoundedExecutor and SharedBound against the article's recipe and the stdlib."""
    _install(session, extras="uvloop")
    session.run("python", "benchmarks/sync_bench.py", *session.posargs)


@nox.session(default=False)
def bench_sync_endpoints(session: nox.Session) -> None:
    """A sync FastAPI app at 5x capacity: anyio's limiter, tuned, or one line (#28)."""
    _install(session, extras="fastapi,uvloop")
    session.install("uvicorn>=0.30", "aiohttp>=3.9")
    session.run("python", "benchmarks/sync_endpoints.py", *session.posargs)


@nox.session(default=False)
def bench_deadlines(session: nox.Session) -> None:
    """A downstream that sometimes hangs: goodput and p99, with deadlines or not."""
    _install(session, extras="pebble")
    session.run("python", "benchmarks/deadlines.py", *session.posargs)


MUTANTS_SURVIVORS = Path("tests/mutants-survivors.md")
MUTANTS_TARGET = 0.90


@nox.session(default=False)
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the core against the fast tests; slow.

    The modules, the tests and the per-test timeout are in pyproject.toml's
    ``[tool.mutmut]``. ``-- 'aiobound._slots*'`` runs one module's mutants.
    Prints the score per module and tests/mutants-survivors.md; fails when a
    module kills fewer than 90% of its mutants or a surviving mutant is not
    listed in that file (with the reason it survives). A full run takes
    about an hour on two cores, with four children: a mutant's tests mostly
    wait (a hung test on its gate, 2 s under the mutants profile).
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "mutants"))
    # No install of aiobound itself: mutmut puts its mutated copy of src/
    # first on sys.path, and nothing else may shadow it.
    shutil.rmtree("mutants", ignore_errors=True)
    env = {"AIOBOUND_HYPOTHESIS_PROFILE": "mutants"}
    session.run("mutmut", "run", "--max-children", "4", *session.posargs, env=env)
    out = session.run("mutmut", "results", "--all", "true", silent=True, env=env)
    _mutants_report(session, str(out))


def _mutants_report(session: nox.Session, results: str) -> None:
    """Score per module from ``mutmut results --all true``; check survivors."""
    counts: dict[str, dict[str, int]] = {}
    survivors: list[str] = []
    for line in results.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or not name.startswith("aiobound."):
            continue
        if status == "not checked":
            continue  # outside the mutant names given in posargs
        module = ".".join(name.split(".")[:2])
        tally = counts.setdefault(module, {"killed": 0, "total": 0})
        tally["total"] += 1
        if status in ("killed", "timeout", "segfault"):
            tally["killed"] += 1
        else:
            survivors.append(f"{name} ({status})")
    listed = MUTANTS_SURVIVORS.read_text(encoding="utf-8")
    session.log(f"{MUTANTS_SURVIVORS}:\n{listed}")
    failed = False
    for module, tally in sorted(counts.items()):
        score = tally["killed"] / tally["total"]
        failed |= score < MUTANTS_TARGET
        session.log(
            f"{module}: {tally['killed']} / {tally['total']} killed ({score:.1%})"
        )
    unlisted = [s for s in survivors if f"`{s.split(' ', 1)[0]}`" not in listed]
    for survivor in unlisted:
        session.warn(f"survivor not in {MUTANTS_SURVIVORS}: {survivor}")
    if failed or unlisted:
        session.error(f"below {MUTANTS_TARGET:.0%} in a module, or unlisted survivors")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site into docs/_build/html; any warning fails the build.

    ``-n`` checks every cross-reference (an unknown page, label or aiobound
    name is an error); links to other sites are not followed (no network).
    tests/test_docs.py checks README.md's links, which are not in the site.
    """
    _install(session, "docs")
    shutil.rmtree("docs/_build", ignore_errors=True)
    session.run(
        "python",
        "-m",
        "sphinx",
        "-W",
        "-n",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


def _check_wheel(wheel: Path) -> None:
    """The wheel holds the package, its ``py.typed`` and its metadata only."""
    names = zipfile.ZipFile(wheel).namelist()
    stray = [
        name
        for name in names
        if not name.startswith("aiobound/") and ".dist-info/" not in name
    ]
    if stray:
        raise RuntimeError(f"{wheel.name} holds files outside the package: {stray}")
    if "aiobound/py.typed" not in names:
        raise RuntimeError(f"{wheel.name} has no aiobound/py.typed")
    if any("__pycache__" in name or name.endswith(".pyc") for name in names):
        raise RuntimeError(f"{wheel.name} holds compiled files")


def _check_sdist(sdist: Path) -> None:
    """The sdist holds what the tests and the docs need, and no build output."""
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    for needed in ("src/aiobound/py.typed", "tests/conftest.py", "conftest.py"):
        if needed not in names:
            raise RuntimeError(f"{sdist.name} lacks {needed}")
    stray = [n for n in names if "_build/" in n or "__pycache__" in n]
    if stray:
        raise RuntimeError(f"{sdist.name} holds build output: {stray[:5]}")


@nox.session(default=False)
def release(session: nox.Session) -> None:
    """Build the sdist and wheel, check them, and test the installed wheel.

    The wheel (not the source tree, not an editable install) is installed
    into this session's fresh virtualenv with the test dependencies, and the
    whole test suite runs against it. The files stay in dist/.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "release"))
    dist = Path("dist")
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    wheels = sorted(dist.glob("aiobound-*.whl"))
    sdists = sorted(dist.glob("aiobound-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist, got {wheels + sdists}")
    session.run("twine", "check", "--strict", str(wheels[0]), str(sdists[0]))
    _check_wheel(wheels[0])
    _check_sdist(sdists[0])

    tests = nox.project.dependency_groups(PYPROJECT, "test")
    session.install(f"aiobound[uvloop] @ {wheels[0].resolve().as_uri()}", *tests)
    session.run(
        "python",
        "-c",
        "import aiobound, sys; f = aiobound.__file__; "
        "sys.exit(0 if 'site-packages' in f else f'imported from {f}, not the wheel')",
    )
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(default=False)
def adaptive(session: nox.Session) -> None:
    """Adaptive bounds against fixed ones over a noisy downstream that changes."""
    _install(session, extras="plot")
    session.run("python", "benchmarks/adaptive.py", *session.posargs)


@nox.session(default=False)
def adaptive_sim(session: nox.Session) -> None:
    """The adaptive benchmark's case on a simulated clock, over many seeds."""
    _install(session)
    session.run("python", "benchmarks/adaptive_sim.py", *session.posargs)


@nox.session(default=False)
def postgres_lock(session: nox.Session) -> None:
    """The PostgreSQL example under a held table lock (needs the server binaries)."""
    _install(session, extras="fastapi,postgres")
    session.install("uvicorn>=0.30", "httpx>=0.27")
    session.run("python", "benchmarks/postgres_lock.py", *session.posargs)


@nox.session(default=False)
def partitions(session: nox.Session) -> None:
    """Interactive calls' wait next to a saturating batch, with, without partitions."""
    _install(session)
    session.run("python", "benchmarks/partitions.py", *session.posargs)


@nox.session(default=False)
def bench_ray(session: nox.Session) -> None:
    """A bounded map through a local Ray against ray.wait and submit-all (#27)."""
    _install(session, extras="ray")
    session.install("psutil>=5.9")
    session.run("python", "benchmarks/ray_bench.py", *session.posargs)
