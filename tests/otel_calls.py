"""Module-level functions for the OpenTelemetry tests, importable by workers.

A worker process has no tracer provider of the test's: :func:`worker_span`
makes one of its own (in memory) the first time, starts a span there as fn
code would, and returns the ids that show which trace and parent it joined.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

_tracer: Any = None


def worker_span(x: int) -> tuple[int, int, int | None, int]:
    """``(trace_id, span_id, parent span_id, x * x)`` of a span made here."""
    global _tracer
    if _tracer is None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        _tracer = provider.get_tracer("worker")
    with _tracer.start_as_current_span("work") as span:
        context = span.get_span_context()
        parent = span.parent
        return (
            context.trace_id,
            context.span_id,
            None if parent is None else parent.span_id,
            x * x,
        )


def current_span_ids(_: object = None) -> tuple[int, int]:
    """``(trace_id, span_id)`` of the span current where this runs."""
    context = trace.get_current_span().get_span_context()
    return context.trace_id, context.span_id


def fail(x: int) -> int:
    raise ValueError(f"bad {x}")
