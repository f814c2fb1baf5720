"""OpenTelemetry tracing: one span tree per request, exported over OTLP when the standard
``OTEL_*`` variables ask for it, and nothing at all otherwise.

The tree of a generation::

    POST /v1/chat/completions      the HTTP request (joined to an incoming W3C ``traceparent``)
    ├── gateway.auth               the key looked up
    ├── gateway.limits             the key's rate and credit limits checked
    ├── gateway.queue              waiting for an engine slot
    ├── plan                       the chat template rendered and tokenized, options built
    ├── generate                   submitted to the engine until its last token
    │   ├── engine.queue           in the engine's scheduler queue   } from vLLM's own
    │   ├── engine.prefill         the prompt's prefill              } per-request
    │   └── engine.decode          first token to last               } timestamps
    └── respond                    the response written, ending with the stream's end

The engine phases are placed from vLLM's per-request timestamps (its engine core's clock, not
this process's), anchored at the moment this process saw the first token.

Configuration is the SDK's: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(or ``OTEL_TRACES_EXPORTER=otlp|console``) turns it on; ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``
picks ``http/protobuf`` (the default) or ``grpc``; ``OTEL_SERVICE_NAME`` (default
``hermes-server``), ``OTEL_RESOURCE_ATTRIBUTES``, the exporters' headers and timeouts and the
batch processor's ``OTEL_BSP_*`` are read by the SDK itself. ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` keeps it off.

Spans are passed explicitly (a request's :class:`RequestTrace` rides on its ``RequestInfo``), not
through the ambient context: a streamed answer runs in generators and tasks the context does not
follow reliably."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.engine.base import EngineTiming

log = logging.getLogger("hermes.tracing")

_SERVICE = "hermes-server"
_PROPAGATOR = TraceContextTextMapPropagator()
ATTRIBUTE_MAX_CHARS = 256  # a span attribute's text, and a failed span's message, at most


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def exporter_from_env() -> SpanExporter | None:
    """The span exporter the ``OTEL_*`` variables ask for, or None (tracing off)."""
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return None
    kind = _env("OTEL_TRACES_EXPORTER").lower()
    endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    if kind == "none" or (not kind and not endpoint):
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind not in ("", "otlp"):
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r} is not supported here (otlp, console or none)")
    protocol = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"OTLP protocol {protocol!r} is not supported here (http/protobuf or grpc)")


class Tracing:
    """The process's tracer: OTLP-exporting when configured, a no-op otherwise."""

    def __init__(self, exporter: SpanExporter | None) -> None:
        self._provider: TracerProvider | None = None
        self.tracer: Tracer = NoOpTracer()
        if exporter is not None:
            resource = Resource.create({"service.name": _env("OTEL_SERVICE_NAME") or _SERVICE})
            self._provider = TracerProvider(resource=resource)
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
            self.tracer = self._provider.get_tracer("hermes-server")
            log.info("tracing on: spans exported by %s", type(exporter).__name__)

    @classmethod
    def from_env(cls) -> Tracing:
        return cls(exporter_from_env())

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def start(self, name: str, headers: Mapping[str, str], attributes: dict[str, Any]) -> RequestTrace:
        """A request's root span, a child of the caller's ``traceparent`` when it sent one."""
        if not self.enabled:
            return NO_TRACE
        parent = _PROPAGATOR.extract(headers)
        root = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        return RequestTrace(self.tracer, root)

    def shutdown(self) -> None:
        """Export what is left (the batch processor's queue) and stop."""
        if self._provider is not None:
            self._provider.shutdown()


class RequestTrace:
    """One request's spans: the root, and its children made through :meth:`span` and
    :meth:`start_child`. The no-op instance (:data:`NO_TRACE`) makes every call free of effect."""

    def __init__(self, tracer: Tracer, root: Span) -> None:
        self.tracer, self.root = tracer, root
        self._context = trace.set_span_in_context(root)
        self.recording = root.is_recording()

    def start_child(self, name: str, attributes: dict[str, Any] | None = None) -> Span:
        """A child of the root, ended by the caller."""
        return self.tracer.start_span(name, context=self._context, attributes=attributes)

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
        """A child of the root around a block; an exception marks it failed."""
        span = self.start_child(name, attributes)
        try:
            yield span
        except BaseException as exc:
            if self.recording:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()


NO_TRACE = RequestTrace(NoOpTracer(), INVALID_SPAN)


def add_engine_phases(rt: RequestTrace, parent: Span, timing: EngineTiming, first_ns: int) -> None:
    """The engine's queue, prefill and decode as children of ``parent``, placed so that the
    prefill ends when this process saw the first token (``first_ns``)."""
    prefill_start = first_ns - _ns(timing.prefill)
    phases = (
        ("engine.queue", prefill_start - _ns(timing.queued), prefill_start),
        ("engine.prefill", prefill_start, first_ns),
        ("engine.decode", first_ns, first_ns + _ns(timing.decode)),
    )
    context = trace.set_span_in_context(parent)
    for name, start, end in phases:
        span = rt.tracer.start_span(name, context=context, start_time=start)
        if name == "engine.queue" and timing.preemptions:
            span.set_attribute("vllm.preemptions", timing.preemptions)
        span.end(end_time=max(start, end))


def wall_ns(monotonic: float) -> int:
    """A ``time.monotonic()`` reading as wall-clock nanoseconds (what span times are)."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def mark_failed(span: Span, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message[:ATTRIBUTE_MAX_CHARS]))


def end_request(rt: RequestTrace, status: int) -> None:
    """End the root span with the response's status (5xx marks it failed, as OpenTelemetry's
    HTTP conventions say for a server)."""
    if not rt.recording:
        return
    if status:
        rt.root.set_attribute("http.response.status_code", status)
    if status >= 500:
        mark_failed(rt.root, f"HTTP {status}")
    rt.root.end()
