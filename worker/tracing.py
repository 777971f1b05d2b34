"""Trace context from the caller: the W3C `traceparent` and the hosted
API's `X-Amzn-Trace-Id` that StartBrowserSession, StopBrowserSession and
SaveBrowserSessionProfile take. They are checked, carried on the session's
log lines and its recording's metadata, and the traceparent is the parent
of an OpenTelemetry span for each of those calls. Spans go to the
process's tracer provider: with `otlp_endpoint` set, an OTLP/HTTP exporter
the worker installs at start; otherwise whatever the embedding process set
(none: spans cost nothing)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
MAX_CHARS = 1024
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclasses.dataclass(frozen=True)
class TraceContext:
    trace_id: str = ""  # X-Amzn-Trace-Id, as the caller sent it
    trace_parent: str = ""  # W3C traceparent

    def fields(self) -> dict[str, str]:
        """What log lines and recording metadata carry (only what was sent)."""
        found = {"trace_id": self.trace_id, "trace_parent": self.trace_parent}
        return {k: v for k, v in found.items() if v}


def check(trace_id: str, trace_parent: str) -> TraceContext | str:
    """The context, or why it is refused (field: reason)."""
    for field, value in (("trace_id", trace_id), ("trace_parent", trace_parent)):
        if len(value) > MAX_CHARS or not value.isprintable():
            return f"{field}: must be at most {MAX_CHARS} printable characters"
    match = TRACEPARENT.fullmatch(trace_parent) if trace_parent else None
    if trace_parent and (match is None or set(match.group(1)) == {"0"}):
        return "trace_parent: must be a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>"
    return TraceContext(trace_id, trace_parent)


def install(endpoint: str, service: str) -> Any:
    """Export spans to `endpoint` (OTLP over HTTP) from now on; returns the
    provider, to shut down (flush) at exit."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    url = endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    return provider


@contextlib.contextmanager
def span(name: str, context: TraceContext, **attributes: str) -> Iterator[Any]:
    """A span for one call, child of the caller's traceparent when sent."""
    parent = _PROPAGATOR.extract({"traceparent": context.trace_parent})
    tracer = trace.get_tracer("sandbox-worker")
    with tracer.start_as_current_span(name, context=parent) as current:
        for key, value in attributes.items():
            if value:
                current.set_attribute(key, value)
        if context.trace_id:
            current.set_attribute("aws.xray.trace_id", context.trace_id)
        yield current
