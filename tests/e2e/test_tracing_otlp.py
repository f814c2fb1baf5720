"""Tracing through the real server and engine, exported over OTLP/HTTP to a real receiver
(tests/otlp_collector.py): the span tree of a streamed request joined to the caller's trace,
with the engine's queue, prefill and decode from vLLM's own timestamps."""

from __future__ import annotations

import secrets

import httpx

from tests.e2e.conftest import RunningServer
from tests.otlp_collector import Collector

TREE = {"gateway.auth", "gateway.limits", "gateway.queue", "plan", "generate", "respond"}
PHASES = ("engine.queue", "engine.prefill", "engine.decode")


def test_a_streamed_request_is_one_trace_from_the_gateway_to_the_engine(server: RunningServer, otlp: Collector) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    body = {
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 24,
        "stream": True,
        "top_p": 1,
        "trace": {"trace_name": "e2e", "span_name": "story", "run": "ci"},
    }
    headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
    with (
        server.explained(),
        httpx.stream("POST", server.v1 + "/chat/completions", json=body, headers=headers, timeout=120) as r,
    ):
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert "[DONE]" in text
    spans = otlp.trace(trace_id, {"POST /v1/chat/completions", *TREE, *PHASES})
    root = spans["POST /v1/chat/completions"]
    assert root.parent_span_id == parent and root.service == "hermes-e2e"
    assert root.attributes["http.response.status_code"] == 200 and root.attributes["hermes.api"] == "chat"
    assert root.attributes["openrouter.trace.span_name"] == "story" and root.attributes["openrouter.trace.metadata.run"] == "ci"
    # The auth span exists on the keyless tiny profile too (it finds no key to look up).
    assert {name for name, s in spans.items() if s.parent_span_id == root.span_id} == TREE
    generate = spans["generate"]
    assert all(spans[p].parent_span_id == generate.span_id for p in PHASES)
    assert generate.attributes["gen_ai.usage.output_tokens"] == 24
    assert generate.attributes["gen_ai.response.finish_reasons"] == ["length"]
    queue, prefill, decode = (spans[p] for p in PHASES)
    assert queue.end_ns == prefill.start_ns and prefill.end_ns == decode.start_ns
    assert decode.end_ns > decode.start_ns and prefill.end_ns > prefill.start_ns  # vLLM's timestamps, not zeros
    first = dict(generate.events)["first_token"]
    assert first == prefill.end_ns
    assert root.start_ns <= spans["gateway.auth"].start_ns <= spans["plan"].start_ns <= generate.start_ns
    assert generate.start_ns <= queue.start_ns + 50_000_000  # the engine's queue starts as generate does (± clocks)
    assert spans["respond"].end_ns <= root.end_ns and decode.end_ns <= root.end_ns + 50_000_000
    print(
        "\nspans (ms): "
        + ", ".join(f"{n} {(spans[n].end_ns - spans[n].start_ns) / 1e6:.1f}" for n in ("plan", "generate", *PHASES, "respond"))
    )
