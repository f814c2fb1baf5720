"""Tracing over the fake engine, spans caught in memory (the OTLP path through the real engine is
tests/e2e/test_tracing_otlp.py): the span tree, the caller's traceparent, OpenRouter's trace field,
failures, and the OTEL_* variables that turn it on and off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from server.app import create_app
from server.engine.fake import FakeEngine
from server.gateway.db import Database
from server.hermes.prompt import PromptRenderer
from server.settings import load_settings
from server.tracing import Tracing, exporter_from_env

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture()
def traced(tokenizer) -> Iterator[tuple[TestClient, InMemorySpanExporter, dict[str, str], FakeEngine]]:
    exporter = InMemorySpanExporter()
    db = Database("sqlite://")
    _, token = db.create_key("alice")
    engine = FakeEngine(tokenizer, reply="Hello there, general Kenobi.")
    engine.first_token_delay = 0.05
    settings = load_settings("configs/tiny-cpu.yaml", auth_required=True)
    app = create_app(settings, engine=engine, renderer=PromptRenderer(tokenizer), db=db, tracing=Tracing(exporter))
    with TestClient(app) as c:
        yield c, exporter, {"Authorization": f"Bearer {token}"}, engine


def _spans(exporter: InMemorySpanExporter, client: TestClient) -> dict[str, ReadableSpan]:
    client.app.state.hermes.tracing._provider.force_flush()  # type: ignore[attr-defined]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    exporter.clear()
    return spans


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_streamed_generation_makes_the_whole_tree_under_the_callers_trace(traced) -> None:
    c, exporter, auth, _ = traced
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "trace": {"trace_name": "nightly-eval", "generation_name": "step-3", "team": "search", "trace_id": "t-1"},
    }
    headers = {**auth, "traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
    with c.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert "[DONE]" in text
    spans = _spans(exporter, c)
    root = spans["POST /v1/chat/completions"]
    assert f"{root.context.trace_id:032x}" == PARENT_TRACE and f"{_parent(root):016x}" == PARENT_SPAN
    assert {s.context.trace_id for s in spans.values()} == {root.context.trace_id}
    children = {"gateway.auth", "gateway.limits", "gateway.queue", "plan", "generate", "respond"}
    assert {name for name, s in spans.items() if _parent(s) == root.context.span_id} == children
    generate = spans["generate"]
    phases = ["engine.queue", "engine.prefill", "engine.decode"]
    assert all(_parent(spans[p]) == generate.context.span_id for p in phases)
    # The phases in order, the prefill ending at the first token, all inside the request.
    starts = [spans[p].start_time for p in phases]
    assert starts == sorted(starts) and spans["engine.prefill"].end_time == spans["engine.decode"].start_time
    assert spans["engine.prefill"].end_time - spans["engine.prefill"].start_time >= 40_000_000  # the fake's 50 ms
    assert root.start_time <= spans["gateway.auth"].start_time and spans["respond"].end_time <= root.end_time
    (first,) = [e for e in generate.events if e.name == "first_token"]
    assert first.timestamp == spans["engine.prefill"].end_time
    a = generate.attributes
    assert (
        a["gen_ai.usage.output_tokens"] > 0
        and a["gen_ai.usage.input_tokens"] == spans["plan"].attributes["gen_ai.usage.input_tokens"]
    )
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    r = root.attributes
    assert r["http.response.status_code"] == 200 and r["hermes.api"] == "chat" and r["hermes.key.label"] == "alice"
    assert r["openrouter.trace.trace_name"] == "nightly-eval" and r["openrouter.trace.generation_name"] == "step-3"
    assert r["openrouter.trace.trace_id"] == "t-1" and r["openrouter.trace.metadata.team"] == "search"
    assert "Hi" not in str({**r, **a})  # no prompt text in spans


def test_every_api_is_traced_and_a_refusal_ends_at_the_gateway(traced) -> None:
    c, exporter, auth, _ = traced
    r = c.post(
        "/v1/messages",
        json={"model": "nousresearch/hermes-4-70b", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]},
        headers=auth,
    )
    assert r.status_code == 200
    spans = _spans(exporter, c)
    assert {"POST /v1/messages", "plan", "generate"} <= set(spans)
    r = c.post("/v1/chat/completions", json={"messages": []}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    spans = _spans(exporter, c)
    assert set(spans) == {"POST /v1/chat/completions", "gateway.auth"}
    assert spans["gateway.auth"].status.status_code == StatusCode.ERROR
    assert spans["POST /v1/chat/completions"].attributes["http.response.status_code"] == 401


def test_a_generation_that_fails_marks_its_span(traced) -> None:
    c, exporter, auth, engine = traced
    engine.fail_after = 2
    with c.stream(
        "POST", "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "stream": True}, headers=auth
    ) as r:
        text = "".join(r.iter_text())
    assert '"error"' in text
    spans = _spans(exporter, c)
    assert spans["generate"].status.status_code == StatusCode.ERROR and "engine core died" in (
        spans["generate"].status.description or ""
    )


def test_a_bad_trace_field_is_a_400_in_the_apis_shape(traced) -> None:
    c, _, auth, _ = traced
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "trace": "x"}, headers=auth)
    assert r.status_code == 400 and "trace" in r.json()["error"]["message"]
    bad = {
        "model": "nousresearch/hermes-4-70b",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hi"}],
        "trace": {"trace_id": 7},
    }
    r = c.post("/v1/messages", json=bad, headers=auth)
    assert r.status_code == 400 and r.json()["type"] == "error" and "trace" in r.json()["error"]["message"]


def test_untraced_by_default_and_on_with_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert exporter_from_env() is None and not Tracing.from_env().enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    assert isinstance(exporter_from_env(), Http)  # http/protobuf, the specification's default
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    assert isinstance(exporter_from_env(), Grpc)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        exporter_from_env()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert exporter_from_env() is None
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert isinstance(exporter_from_env(), ConsoleSpanExporter)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert exporter_from_env() is None
