"""The public surface: names, __all__, __module__, docstrings, typing."""

from __future__ import annotations

import importlib.resources
import inspect

import aiobound


def test_all_lists_exactly_the_public_names() -> None:
    # Submodules (optional integrations) and the __future__ import aside.
    public = {
        name
        for name, obj in vars(aiobound).items()
        if not name.startswith("_")
        and not inspect.ismodule(obj)
        and name != "annotations"
    }
    assert set(aiobound.__all__) == public


def test_exports_show_the_public_module_and_have_docstrings() -> None:
    for name in aiobound.__all__:
        obj = getattr(aiobound, name)
        assert obj.__module__ == "aiobound", name
        assert inspect.getdoc(obj), name


def test_public_methods_have_docstrings() -> None:
    for name in ("submit", "run", "map", "aclose", "stats"):
        assert inspect.getdoc(getattr(aiobound.BoundedLoopExecutor, name)), name
    assert inspect.getdoc(aiobound.MapIterator.aclose)


def test_package_is_typed() -> None:
    assert importlib.resources.files("aiobound").joinpath("py.typed").is_file()


def test_version() -> None:
    assert isinstance(aiobound.__version__, str)


def test_partition_terms_are_public_and_documented() -> None:
    assert {"Partition", "PartitionStats", "Share"} <= set(aiobound.__all__)
    params = inspect.signature(aiobound.Share).parameters
    assert list(params) == ["share", "max_share", "max_pending", "max_wait"]
    assert [p.kind for p in params.values()][1:] == [inspect.Parameter.KEYWORD_ONLY] * 3
    doc = inspect.getdoc(aiobound.Share)
    assert doc is not None
    for name in params:
        assert f"{name}:" in doc, name
    for name in ("would_admit_now", "can_admit", "submit", "run", "map", "stats"):
        assert inspect.getdoc(getattr(aiobound.Partition, name)), name
