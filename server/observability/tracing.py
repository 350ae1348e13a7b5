"""Traces: the OpenTelemetry SDK, configured by the standard ``OTEL_*`` variables,
and off unless an exporter is configured.

On when ``OTEL_TRACES_EXPORTER`` names one (``otlp`` or ``console``), or when
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set;
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keeps it off. OTLP
goes over HTTP/protobuf (Phoenix, Jaeger, Tempo and the collector all take it).
The SDK reads the rest itself: ``OTEL_SERVICE_NAME`` (default ``agentapi``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, the
exporter's headers and timeouts.

Off, every helper here returns at its first line (a module-level bool), so a
turn pays one attribute read per span that would have been: no tracer, no
context, no attribute dictionaries. The provider is kept here rather than set
as the global one, so tests can turn tracing on for one stack and off again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

_on = False
_provider: Any = None  # opentelemetry.sdk.trace.TracerProvider when on
_tracer: trace.Tracer = trace.NoOpTracer()
_capture_content = False
_trace_sql = False


def wanted(env: MutableMapping[str, str] | None = None) -> bool:
    """Whether the environment configures a trace exporter (see the module doc)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(trace_sql: bool = False) -> bool:
    """Turns tracing on when the environment asks for it (:func:`wanted`);
    returns whether it is on. ``trace_sql`` adds a span per SQL statement
    (``AGENTAPI_TRACE_SQL``). Call once per process (each worker calls it)."""
    if not wanted():
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "agentapi"}
    provider = TracerProvider(resource=Resource.create(attributes))
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    for name in names:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
                protocol = os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"]
                log.warning("OTLP over %s is not built in: exporting over http/protobuf", protocol)
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored (otlp, console or none)", name)
    configure(provider, trace_sql=trace_sql)
    return True


def configure(provider: Any, trace_sql: bool = False) -> None:
    """Traces to ``provider`` (an SDK TracerProvider) from now on; ``None`` turns tracing off."""
    global _on, _provider, _tracer, _capture_content, _trace_sql
    _provider = provider
    _on = provider is not None
    _tracer = provider.get_tracer("agentapi") if provider is not None else trace.NoOpTracer()
    flag = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    _capture_content = _on and flag.strip().lower() == "true"
    _trace_sql = _on and trace_sql


def shutdown() -> None:
    """Flushes and stops the exporter (at process exit); tracing is off afterwards."""
    provider = _provider
    configure(None)
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    """Whether spans are recorded."""
    return _on


def capture_content() -> bool:
    """Whether message content goes on spans (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``)."""
    return _capture_content


def tracer() -> trace.Tracer:
    """agentapi's tracer (a no-op tracer when off)."""
    return _tracer


def provider() -> Any:
    """The SDK TracerProvider, or None when off."""
    return _provider


def trace_sql() -> bool:
    """Whether SQL statements get spans (``AGENTAPI_TRACE_SQL=1`` with tracing on)."""
    return _trace_sql


def grpc_server_interceptors() -> list[Any]:
    """The maintained grpc instrumentation's aio server interceptor, or nothing when off."""
    if not _on:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider, filter_=_traced_method)]


def _traced_method(details: Any) -> bool:
    """Health checks and reflection get no span: noise in a trace, and health's
    Watch (a stream written through its context) is no generator the
    instrumentation could wrap."""
    return not str(details.method).startswith(("/grpc.health.v1.Health/", "/grpc.reflection."))


def asgi_middleware() -> list[Any]:
    """``(class, kwargs)`` of the maintained ASGI instrumentation for the bridge,
    or nothing when off. Its per-message ``send``/``receive`` spans are left
    out: an SSE stream would make one per delta."""
    if not _on:
        return []
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return [(OpenTelemetryMiddleware, {"tracer_provider": _provider, "exclude_spans": ["receive", "send"]})]


def start(name: str, kind: SpanKind = SpanKind.INTERNAL, parent: Span | None = None) -> Span:
    """A started span (not made current), child of ``parent`` or of the current
    span; the no-op span when off. End it with :func:`end`."""
    if not _on:
        return trace.INVALID_SPAN
    context = trace.set_span_in_context(parent) if parent is not None else None
    return _tracer.start_span(name, context=context, kind=kind)


def end(span: Span, error_type: str = "", description: str = "") -> None:
    """Ends ``span``, with ``error.type`` and an ERROR status when ``error_type`` is given."""
    if not span.is_recording():
        return
    if error_type:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, description or error_type))
    span.end()


@contextlib.contextmanager
def current(span: Span) -> Iterator[None]:
    """Makes ``span`` the current span inside the block (for propagation and
    child spans); nothing when off. Keep the block free of ``yield``s to a
    consumer: the context is attached and detached in the same frame."""
    if not _on or not span.is_recording():
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Adds ``traceparent`` (and ``tracestate``) of the current span to
    ``headers``; returns it. Unchanged when off."""
    if _on:
        propagate.inject(headers)
    return headers


def inject_metadata(metadata: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """gRPC ``metadata`` plus ``traceparent`` of the current span (when on)."""
    if not _on:
        return tuple(metadata)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return (*metadata, *carrier.items())


def trace_id() -> str:
    """The current trace id as 32 hex digits, or '' (off, or no span)."""
    if not _on:
        return ""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def mark_error(error_type: str, description: str = "") -> None:
    """Sets ``error.type`` and an ERROR status on the current span (the RPC's)."""
    if not _on:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, description or error_type))
