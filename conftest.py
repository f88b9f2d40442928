"""Run every Python example in README.md and docs/ as a test (Sybil).

Each ```` ```python ```` block runs in order, in one namespace per file, so a
block can use what the blocks above it defined. A block that cannot run here
is preceded by ``<!-- skip: next "reason" -->``. The namespace's
``__name__`` is ``"__main__"``, so an example guarded by ``if __name__ ==
"__main__":`` runs as it would as a script.
"""

from __future__ import annotations

from typing import Any

from sybil import Sybil
from sybil.parsers import markdown, myst


def _as_main(namespace: dict[str, Any]) -> None:
    namespace["__name__"] = "__main__"


_readme = Sybil(
    parsers=[markdown.PythonCodeBlockParser(), markdown.SkipParser()],
    patterns=["README.md"],
    setup=_as_main,
    name="readme",
)
_docs = Sybil(
    parsers=[myst.PythonCodeBlockParser(), myst.SkipParser()],
    path="docs",
    patterns=["*.md"],
    excludes=["_build/*"],
    setup=_as_main,
    name="docs",
)

pytest_collect_file = (_readme + _docs).pytest()
