"""The documentation cannot rot: names, links, tests and sizes it cites exist.

The examples themselves run as tests through Sybil (the root conftest.py);
the site is built with warnings as errors by ``nox -s docs``. These tests
cover what neither sees: README.md's links (it is not part of the site), the
tests the guarantees cite, and the lists written by hand (metrics, options).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"


def documents() -> list[Path]:
    """README.md and every Markdown page of the site."""
    pages = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
    return [ROOT / "README.md", *pages]


# -- the tests the docs cite ---------------------------------------------------

TEST_REFERENCE = re.compile(r"(?<![\w/])(?:tests/)?(test_\w+\.py)(?:::(\w+))?")


def missing_tests(text: str, tests: Path = TESTS) -> list[str]:
    """Return each ``tests/test_x.py[::test_name]`` in *text* that does not exist."""
    missing = []
    for match in TEST_REFERENCE.finditer(text):
        filename, name = match.groups()
        path = tests / filename
        if not path.is_file():
            missing.append(match.group(0))
            continue
        if name is None:
            continue
        defined = re.search(
            rf"^\s*(?:async\s+)?def {re.escape(name)}\(", path.read_text(), re.M
        )
        if defined is None:
            missing.append(match.group(0))
    return missing


def test_a_wrong_test_reference_is_reported() -> None:
    text = (
        "proved by `tests/test_submit.py::test_no_such_test`, "
        "`test_nowhere.py` and `tests/test_close.py` "
        "and `tests/test_docs.py::test_a_wrong_test_reference_is_reported`"
    )
    assert missing_tests(text) == [
        "tests/test_submit.py::test_no_such_test",
        "test_nowhere.py",
    ]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_the_docs_cite_exists(path: Path) -> None:
    assert missing_tests(path.read_text()) == []


def test_the_guarantees_cite_tests() -> None:
    text = (DOCS / "explanation" / "guarantees.md").read_text()
    assert len(TEST_REFERENCE.findall(text)) >= 20


# -- internal links and anchors ------------------------------------------------

MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
DOC_ROLE = re.compile(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`")
REF_ROLE = re.compile(r"\{ref\}`(?:[^`<]*<)?([^`>]+)>?`")
LABEL = re.compile(r"^\(([\w-]+)\)=\s*$", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def slug(heading: str) -> str:
    """The anchor GitHub and MyST give a heading."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(h) for h in HEADING.findall(text)} | set(LABEL.findall(text))


def broken_links(path: Path) -> list[str]:
    """Return every internal link, image, {doc} or {ref} of *path* that misses."""
    text = FENCE.sub("", path.read_text())
    broken = []
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ... no network here
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or (anchor and anchor not in anchors(linked)):
            broken.append(target)
    for target in DOC_ROLE.findall(text):
        base = DOCS if target.startswith("/") else path.parent
        if not (base / (target.lstrip("/") + ".md")).resolve().is_file():
            broken.append(f"{{doc}}`{target}`")
    labels = set().union(*(LABEL.findall(p.read_text()) for p in documents()))
    broken += [f"{{ref}}`{t}`" for t in REF_ROLE.findall(text) if t not in labels]
    return broken


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[fine](other.md#a-section) [gone](missing.md) "
        "[bad anchor](other.md#no-such-section) {doc}`other` {doc}`nowhere` "
        "[web](https://example.invalid/)\n"
    )
    assert broken_links(page) == [
        "missing.md",
        "other.md#no-such-section",
        "{doc}`nowhere`",
    ]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_internal_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


# -- README as a landing page --------------------------------------------------


def prose_words(markdown: str) -> int:
    text = FENCE.sub("", markdown)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)  # an image's alt text
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    return len(re.findall(r"[\w'`.,()/-]*\w[\w'`.,()/-]*", text))


def test_readme_is_a_landing_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert prose_words(readme) <= 700
    for marker in ("demo-command", "test-command"):
        block = readme.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
        assert block.strip().startswith("```sh\n")
        assert block.strip().count("\n") == 2  # one command, on one line
    assert "docs/_static/demo.png" in readme


def test_the_quickstart_example_is_the_readmes() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    quickstart = readme.split("## Quickstart")[1].split("```python\n")[1]
    body = quickstart.split("```")[0].split("asyncio.run(main())")[0]
    for line in body.splitlines():
        if line.strip() and not line.startswith(("        print(f", "              f")):
            assert line.strip() in example, line


# -- lists written by hand -----------------------------------------------------


async def test_the_metrics_page_lists_every_metric() -> None:
    pytest.importorskip("prometheus_client")
    from aiobound import BoundedLoopExecutor, Gradient
    from aiobound.prometheus import ExecutorCollector

    async with (
        BoundedLoopExecutor(
            max_workers=1, max_pending=1, max_wait=1.0, max_per_second=10.0
        ) as executor,
        BoundedLoopExecutor(
            max_workers=1, bound=Gradient(initial=1, min_samples=1)
        ) as adaptive,
        BoundedLoopExecutor(
            max_workers=1, max_pending=1, max_wait=1.0, partitions={"p": 0.5}
        ) as partitioned,
    ):
        for _ in range(300):  # a window, then a probe of 20 to 100 calls
            await adaptive.run(abs, -1)
            if adaptive.stats().latency_no_load is not None:
                break
        collector = ExecutorCollector({"e": executor, "a": adaptive, "p": partitioned})
        exported = {
            sample.name
            for family in collector.collect()
            for sample in family.samples
            if not sample.name.endswith("_created")
        }
    page = (DOCS / "reference" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(aiobound_\w+)` \|", page, re.M))
    assert documented == exported


def test_the_command_page_lists_every_option() -> None:
    from aiobound import cli

    parser = cli._parser()
    commands = next(
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    demo = commands.choices["demo"]
    options = {
        option
        for action in demo._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    page = (DOCS / "reference" / "cli.md").read_text()
    assert options
    for option in options:
        assert f"`{option}" in page, option


def test_every_public_name_has_a_reference_entry() -> None:
    import aiobound

    reference = "\n".join(p.read_text() for p in (DOCS / "reference").glob("*.md"))
    for name in aiobound.__all__:
        assert re.search(
            rf"\.\. auto(class|exception|function):: {name}(\(\))?\n", reference
        ), name
    for module in (
        "starlette",
        "aiohttp",
        "prometheus",
        "opentelemetry",
        "dask",
        "ray",
    ):
        assert f".. automodule:: aiobound.{module}\n" in reference, module


# -- figures -------------------------------------------------------------------

DIRECTIVE = re.compile(r"^(`{3,}|:{3,})\{(figure|image)\}[^\n]*\n(.*?)^\1", re.M | re.S)


def alt_options(text: str) -> list[int]:
    """How many ``:alt:`` options each figure or image directive of *text* has."""
    return [
        len(re.findall(r"^:alt:", m.group(3), re.M)) for m in DIRECTIVE.finditer(text)
    ]


def test_repeated_alt_lines_are_reported() -> None:
    # docutils keeps only the last of repeated options: the alt text would be
    # its last line.
    text = "```{figure} a.png\n:alt: one\n:alt: two\n\ncaption\n```\n"
    assert alt_options(text) == [2]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_figure_has_one_alt_text(path: Path) -> None:
    text = path.read_text()
    # One :alt: line, or an alt: key in the directive's YAML block.
    for count, match in zip(alt_options(text), DIRECTIVE.finditer(text), strict=True):
        assert count == 1 or (count == 0 and "\nalt:" in match.group(3)), match[0]
