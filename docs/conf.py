"""Sphinx configuration for the aiobound documentation.

Build with ``nox -s docs`` (warnings are errors, references are checked).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import aiobound  # noqa: E402

project = "aiobound"
author = "The aiobound developers"
copyright = "the aiobound developers"
release = version = aiobound.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The docstrings are Google style.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Cancellation", "notes_style")]
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}

# No network: the standard library and the frameworks are not linked (no
# intersphinx), so their names are not checked; every name of aiobound is.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(asyncio|concurrent|collections|contextlib|contextvars|typing|"
        r"typing_extensions|multiprocessing|types|os|threading|time|distributed|"
        r"starlette|fastapi|aiohttp|web|prometheus_client|opentelemetry|otel_context|"
        r"_typeshed)(\..*)?",
    ),
    # Names the signatures import from those, and type variables.
    (
        r"py:.*",
        r"(BaseContext|ProcessPoolExecutor|Executor|Starlette|HTTPConnection|"
        r"APIRoute|Router|"
        r"Middleware|Metric|MeterProvider|TracerProvider|"
        r"AbstractAsyncContextManager|Client|IOLoop|Self|NoneType|Ellipsis)",
    ),
    (r"py:.*", r"(aiobound\._\w+\.)?(P|T|A|R|T_co)(\.args|\.kwargs)?"),
    (r"py:class", r"(BaseException|Exception|RuntimeError|object|callable)"),
    # The builtin ``dict[str, PartitionStats]`` of ExecutorStats' signature,
    # which the signature parser splits at its comma.
    (r"py:class", r"dict\[str"),
]

html_theme = "furo"
html_title = f"aiobound {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
html_copy_source = False
pygments_style = "friendly"


def _resolve_in_aiobound(app, env, node, contnode):
    """Resolve a short name in a docstring against aiobound's public names.

    The integration modules' docstrings say ``:class:`BoundedLoopExecutor```
    as their readers would; Sphinx looks that up in the module documented
    (``aiobound.starlette``), so look in ``aiobound`` and then for a unique
    member of that module's classes (``track`` in ``aiobound.prometheus``).
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    domain = env.get_domain("py")
    objects = domain.objects
    module = node.get("py:module") or ""
    candidates = [f"aiobound.{target}"]
    candidates += sorted(
        name
        for name in objects
        if module and name.startswith(module + ".") and name.endswith("." + target)
    )
    for name in candidates:
        if name in objects:
            return domain.resolve_xref(
                env,
                node.get("refdoc", ""),
                app.builder,
                node["reftype"],
                name,
                node,
                contnode,
            )
    return None


# Classes that users get from aiobound and never construct: their
# constructors take private objects, so the page shows no signature.
_NOT_CONSTRUCTED = {"aiobound.MapIterator", "aiobound.Partition"}


def _hide_private_constructor(app, what, name, obj, options, signature, annotation):
    """Drop the signature of a class in ``_NOT_CONSTRUCTED``."""
    if what == "class" and name in _NOT_CONSTRUCTED:
        return "", annotation
    return None


def setup(app):
    """Register the resolver for short names and the signature filter."""
    app.connect("missing-reference", _resolve_in_aiobound)
    app.connect("autodoc-process-signature", _hide_private_constructor)
