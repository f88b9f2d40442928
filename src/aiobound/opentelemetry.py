"""OpenTelemetry: metrics and traces of an executor's calls.

Install with ``pip install 'aiobound[opentelemetry]'`` (only
``opentelemetry-api``; the SDK and exporters are the application's choice).
``import aiobound`` never imports this module. One call instruments an
executor::

    from aiobound.opentelemetry import instrument

    instrument(executor, name="db")  # the global meter and tracer providers

Metrics (prefix ``aiobound.executor``, attribute ``aiobound.executor.name``
when a name is given), in the shape of the proposed JVM executor
conventions:

* ``aiobound.executor.call.in_flight``, ``aiobound.executor.call.limit``
  (the bound), ``aiobound.executor.queue.size`` (callers waiting for a slot)
  and ``aiobound.executor.queue.capacity`` (``max_pending``; absent when
  unbounded): observable up-down counters, ``{call}``, read from ``stats()``
  at each collection;
* ``aiobound.executor.call.completed``: counter of calls that ended in the
  pool, with ``error.type`` (the exception's class) on those that raised;
* ``aiobound.executor.call.rejected``: counter of calls refused, with
  ``aiobound.executor.rejection.reason`` = ``max_pending``, ``max_wait`` or
  ``closed``, and of requests the web integrations' edge check refused
  before they became calls (:meth:`~aiobound.BoundedLoopExecutor.shed_at_edge`),
  with the reason ``edge``: its sum over the reasons is every refusal
  (``max_per_second`` delays calls, it never refuses one);
* ``aiobound.executor.call.deadline_exceeded``: counter of calls whose
  deadline (``call_timeout=``, ``with_timeout()``) passed, with
  ``aiobound.executor.deadline.stage`` = ``waiting`` (never handed over),
  ``queued`` (cancelled in the pool), ``running`` (left to run on: the
  abandoned calls) or ``stopped`` (stopped by a pool that can); a missed
  deadline is not a refusal for load, so it is not in ``call.rejected``;
* ``aiobound.executor.call.wait.duration`` (from ``submit`` to the hand-off
  to the pool: the wait for a slot and for a ``max_per_second`` turn) and
  ``aiobound.executor.call.duration`` (from the hand-off until the end is
  seen on the loop): histograms in seconds.

A request shed at the edge never became a call: it is counted, with no
span. On an executor made with ``partitions=``, the per-call metrics (the two
counters and the two histograms) and the spans also carry the attribute
``aiobound.executor.partition``: the call's partition (``default`` for calls
made on the executor itself). The observable counters stay the executor's
totals.

Traces: a span ``aiobound.call`` per call, a child of the caller's current
span, from ``submit`` until the call ends, with an event ``handed over`` at
the hand-off (attribute ``aiobound.wait``, seconds). A call that raised or
was refused records the exception and gets the status ``ERROR``; so does a
call that missed its deadline (an event ``deadline exceeded`` and the
attribute ``aiobound.executor.deadline.stage``; the span of a call left
running ends when the call does). Inside the
worker the span is current, so spans made by ``fn`` are its children and
join the request's trace: on a thread pool the span's context goes with the
call in memory (the worker already runs in a copy of the caller's
contextvars context); to a process pool or a Dask worker it is carried as a
W3C ``traceparent`` (and ``tracestate``) and made current there, which needs
``opentelemetry-api`` and aiobound importable in the workers, and a tracer
provider configured there for ``fn``'s own spans to be exported.

An item of ``map`` (or a chunk of items) gets a span from its hand-off on.
The cost is paid by instrumented executors only (see
:meth:`~aiobound.BoundedLoopExecutor.add_observer`).
"""

from __future__ import annotations

import concurrent.futures
import time
import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)

from aiobound import BoundedLoopExecutor, CallObserver, LatencyHistogram, __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider

__all__ = ("instrument", "run_in_carried_context", "run_in_context")

PREFIX = "aiobound.executor"
NAME_ATTRIBUTE = "aiobound.executor.name"
PARTITION_ATTRIBUTE = "aiobound.executor.partition"
REASON_ATTRIBUTE = "aiobound.executor.rejection.reason"
EDGE = "edge"  # the reason of a request refused by the edge check
STAGE_ATTRIBUTE = "aiobound.executor.deadline.stage"
SPAN_NAME = "aiobound.call"

_PROPAGATOR = TraceContextTextMapPropagator()


def run_in_carried_context(
    carrier: dict[str, str], fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    """In a worker process: run ``fn(*args, **kwargs)`` in the carried trace.

    *carrier* holds the W3C trace-context headers injected on the caller's
    side; their span is made current while ``fn`` runs.
    """
    token = otel_context.attach(_PROPAGATOR.extract(carrier))
    try:
        return fn(*args, **kwargs)
    finally:
        otel_context.detach(token)


def run_in_context(
    ctx: otel_context.Context, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    """In a worker thread: run ``fn(*args, **kwargs)`` with *ctx* current."""
    token = otel_context.attach(ctx)
    try:
        return fn(*args, **kwargs)
    finally:
        otel_context.detach(token)


class _Call:
    """What the observer keeps of one call: its span, instants and attributes."""

    __slots__ = ("arrived", "attributes", "handed_over", "span")

    def __init__(self, span: Span, arrived: float, attributes: dict[str, str]) -> None:
        self.span = span
        self.arrived = arrived
        self.handed_over = arrived
        self.attributes = attributes


class _Observer(CallObserver):
    """Spans and per-call metrics of one executor."""

    def __init__(
        self,
        executor: BoundedLoopExecutor,
        attributes: dict[str, str],
        meter: metrics.Meter,
        tracer: trace.Tracer,
    ) -> None:
        self._attributes = attributes
        self._tracer = tracer
        self._in_process = isinstance(
            executor.executor, concurrent.futures.ThreadPoolExecutor
        )
        bounds = LatencyHistogram.empty().bounds
        self._completed = meter.create_counter(
            f"{PREFIX}.call.completed", "{call}", "Calls that ended in the pool."
        )
        self._rejected = meter.create_counter(
            f"{PREFIX}.call.rejected", "{call}", "Calls refused without running."
        )
        self._missed = meter.create_counter(
            f"{PREFIX}.call.deadline_exceeded",
            "{call}",
            "Calls whose deadline passed, by where they were.",
        )
        self._wait = _histogram(
            meter,
            f"{PREFIX}.call.wait.duration",
            "From submit to the hand-off to the pool (slot and turn).",
            bounds,
        )
        self._run = _histogram(
            meter,
            f"{PREFIX}.call.duration",
            "From the hand-off to the pool until the call's end.",
            bounds,
        )

    def arrived(self) -> object:
        return self._start(self._attributes)

    def arrived_in(self, partition: str) -> object:
        return self._start({**self._attributes, PARTITION_ATTRIBUTE: partition})

    def _start(self, attributes: dict[str, str]) -> _Call:
        span = self._tracer.start_span(
            SPAN_NAME, kind=SpanKind.INTERNAL, attributes=attributes
        )
        return _Call(span, time.monotonic(), attributes)

    def refused(self, token: object, reason: str, error: BaseException) -> None:
        assert isinstance(token, _Call)
        span = token.span
        if reason == "deadline":  # a 504, not a refusal for load
            self._missed.add(1, {**token.attributes, STAGE_ATTRIBUTE: "waiting"})
            span.set_attribute(STAGE_ATTRIBUTE, "waiting")
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, "deadline exceeded: waiting"))
        elif reason != "cancelled":
            self._rejected.add(1, {**token.attributes, REASON_ATTRIBUTE: reason})
            span.set_attribute(REASON_ATTRIBUTE, reason)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"refused: {reason}"))
        else:
            span.add_event("cancelled while waiting")
        span.end()

    def deadline_exceeded(self, token: object, stage: str) -> None:
        assert isinstance(token, _Call)
        self._missed.add(1, {**token.attributes, STAGE_ATTRIBUTE: stage})
        span = token.span
        span.set_attribute(STAGE_ATTRIBUTE, stage)
        span.add_event("deadline exceeded", {STAGE_ATTRIBUTE: stage})
        span.set_status(Status(StatusCode.ERROR, f"deadline exceeded: {stage}"))

    def refused_at_edge(self, partition: str | None) -> None:
        attributes = self._attributes
        if partition is not None:
            attributes = {**attributes, PARTITION_ATTRIBUTE: partition}
        self._rejected.add(1, {**attributes, REASON_ATTRIBUTE: EDGE})

    def handing_over(
        self,
        token: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        assert isinstance(token, _Call)
        now = time.monotonic()
        token.handed_over = now
        waited = now - token.arrived
        self._wait.record(waited, token.attributes)
        span = token.span
        span.set_attribute("code.function.name", _qualname(fn))
        span.add_event("handed over", {"aiobound.wait": waited})
        ctx = trace.set_span_in_context(span)
        if self._in_process:
            return run_in_context, (ctx, fn, *args), kwargs
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=ctx)
        return run_in_carried_context, (carrier, fn, *args), kwargs

    def ended(self, token: object, outcome: str, error: BaseException | None) -> None:
        assert isinstance(token, _Call)
        span = token.span
        if outcome == "cancelled":
            span.add_event("cancelled before it started")
            span.end()
            return
        attributes = token.attributes
        self._run.record(time.monotonic() - token.handed_over, attributes)
        if error is None:
            self._completed.add(1, attributes)
        else:
            error_type = _qualname(type(error))
            self._completed.add(1, {**attributes, "error.type": error_type})
            span.set_attribute("error.type", error_type)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {error}"))
        span.end()


def instrument(
    executor: BoundedLoopExecutor,
    *,
    name: str | None = None,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Record metrics and traces of *executor*'s calls.

    Args:
        executor: The executor to instrument (once; it keeps the
            instrumentation until it is garbage).
        name: The value of the ``aiobound.executor.name`` attribute of every
            metric and span (``None``: no such attribute). Give each
            executor instrumented on one meter provider its own name.
        meter_provider: Default: the global one.
        tracer_provider: Default: the global one.

    Raises:
        TypeError: *executor* is not a :class:`~aiobound.BoundedLoopExecutor`.
        RuntimeError: *executor* already has an observer (it was
            instrumented already).
    """
    if not isinstance(executor, BoundedLoopExecutor):
        raise TypeError(
            f"executor must be a BoundedLoopExecutor, got {type(executor).__name__}"
        )
    attributes = {} if name is None else {NAME_ATTRIBUTE: name}
    meter = metrics.get_meter("aiobound", __version__, meter_provider)
    tracer = trace.get_tracer("aiobound", __version__, tracer_provider)
    executor.add_observer(_Observer(executor, attributes, meter, tracer))
    # The callbacks outlive no executor: they hold it weakly and report
    # nothing once it is gone.
    ref = weakref.ref(executor)

    def read(field: str) -> Iterable[Observation]:
        alive = ref()
        if alive is not None:
            value = getattr(alive.stats(), field)
            if value is not None:
                yield metrics.Observation(value, attributes)

    def in_flight(options: CallbackOptions) -> Iterable[Observation]:
        return read("in_flight")

    def limit(options: CallbackOptions) -> Iterable[Observation]:
        return read("bound")

    def waiting(options: CallbackOptions) -> Iterable[Observation]:
        return read("waiting")

    def capacity(options: CallbackOptions) -> Iterable[Observation]:
        return read("max_pending")  # nothing when unbounded

    for suffix, callback, description in (
        ("call.in_flight", in_flight, "Calls handed to the pool, not ended."),
        ("call.limit", limit, "Most calls in flight at once (the bound)."),
        ("queue.size", waiting, "Callers waiting for a slot."),
        ("queue.capacity", capacity, "Most callers allowed to wait (max_pending)."),
    ):
        meter.create_observable_up_down_counter(
            f"{PREFIX}.{suffix}", [callback], "{call}", description
        )


def _histogram(
    meter: metrics.Meter, name: str, description: str, bounds: tuple[float, ...]
) -> metrics.Histogram:
    """A histogram in seconds, with aiobound's buckets where the API allows."""
    try:
        return meter.create_histogram(
            name, "s", description, explicit_bucket_boundaries_advisory=bounds
        )
    except TypeError:  # opentelemetry-api < 1.23: the SDK's default buckets
        return meter.create_histogram(name, "s", description)


def _qualname(obj: object) -> str:
    """The module-qualified name of a function or class, for attributes."""
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    if module in (None, "builtins"):
        return str(name)
    return f"{module}.{name}"
