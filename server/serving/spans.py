"""The ``generate`` span's end: what the generation's usage record says, and the engine's
phases under it (see server/tracing.py for the whole tree)."""

from __future__ import annotations

from opentelemetry.trace import Span

from server.engine.base import EngineTiming
from server.serving.record import UsageRecord
from server.tracing import RequestTrace, add_engine_phases, mark_failed, wall_ns


def end_generation(
    rt: RequestTrace, span: Span, record: UsageRecord, timing: EngineTiming | None, first_token_at: float | None
) -> None:
    """End the ``generate`` span with what its usage record says, and add the engine's phases."""
    if not rt.recording:
        span.end()
        return
    span.set_attributes(
        {
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "hermes.usage.cached_tokens": record.cached_tokens,
            "hermes.usage.reasoning_tokens": record.reasoning_tokens,
            "gen_ai.response.finish_reasons": [record.finish_reason or ""],
            "hermes.cancelled": record.cancelled,
        }
    )
    if record.ttft_ms is not None:
        span.set_attribute("hermes.ttft_ms", record.ttft_ms)
    if record.replica is not None:
        span.set_attributes({"hermes.replica": record.replica, "hermes.replica.route": record.route_reason or ""})
    if record.error:
        mark_failed(span, record.error)
    if first_token_at is not None:
        first_ns = wall_ns(first_token_at)
        span.add_event("first_token", timestamp=first_ns)
        if timing is not None:
            add_engine_phases(rt, span, timing, first_ns)
    span.end()
