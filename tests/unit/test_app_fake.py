"""Routes, shapes and errors over the fake engine (fast; the real engine is in tests/e2e)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.engine.fake import FakeEngine
from server.hermes.prompt import PromptRenderer
from server.settings import load_settings


@pytest.fixture()
def fake(tokenizer) -> FakeEngine:
    return FakeEngine(tokenizer, reply="Hello there, general Kenobi.", max_model_len=2048)


@pytest.fixture()
def client(tokenizer, fake: FakeEngine) -> Iterator[TestClient]:
    settings = load_settings("configs/tiny-cpu.yaml", max_request_bytes=64 * 1024)
    app = create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer))
    with TestClient(app) as c:
        yield c


CHAT = "/api/v1/chat/completions"
MSG = [{"role": "user", "content": "Hi"}]


def _events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200


def test_ready_is_503_before_start(tokenizer) -> None:
    engine = FakeEngine(tokenizer)
    app = create_app(load_settings("configs/tiny-cpu.yaml"), engine=engine, renderer=PromptRenderer(tokenizer))
    engine.start = lambda: __import__("asyncio").sleep(3600)  # type: ignore[method-assign]
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["error"]["code"] == 503
        r = c.post(CHAT, json={"messages": MSG})
        assert r.status_code == 503


def test_chat_shape_and_exact_usage(client: TestClient, fake: FakeEngine, tokenizer) -> None:
    r = client.post(CHAT, json={"model": "nousresearch/hermes-4-70b", "messages": MSG, "temperature": 0})
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("gen-") and r.headers["X-Generation-Id"] == body["id"]
    choice = body["choices"][0]
    assert choice["message"]["content"] == "Hello there, general Kenobi."
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == len(fake.last_prompt or [])
    assert body["usage"]["completion_tokens"] == len(tokenizer.encode("Hello there, general Kenobi.", add_special_tokens=False))
    assert fake.last_options is not None and fake.last_options.temperature == 0.0


def test_stream_shape(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"messages": MSG, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello there, general Kenobi."
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in chunks}) == 1


def test_max_tokens_length(client: TestClient) -> None:
    body = client.post(CHAT, json={"messages": MSG, "max_tokens": 2}).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2


def test_model_aliases(client: TestClient) -> None:
    for name in ("nousresearch/hermes-4-70b", "NousResearch/Hermes-4-70B", "tiny-hermes"):
        assert client.post(CHAT, json={"model": name, "messages": MSG}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "openai/gpt-4o", "messages": MSG}, 400, "openai/gpt-4o is not a valid model ID"),
        ({"messages": []}, 400, "messages"),
        ({"messages": "hi"}, 400, "messages"),
        ({"messages": MSG, "temperature": "hot"}, 400, "temperature"),
        ({"messages": MSG, "temperature": 5}, 400, "temperature"),
        ({"messages": MSG, "max_tokens": 4096}, 400, "maximum context length"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ],
)
def test_client_errors(client: TestClient, fake: FakeEngine, body, status: int, needle: str) -> None:
    r = client.post(CHAT, json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == status and needle in err["message"]
    assert fake.last_prompt is None  # nothing reached the engine


def test_context_overflow_metadata(client: TestClient) -> None:
    err = client.post(CHAT, json={"messages": MSG, "max_tokens": 4096}).json()["error"]
    assert err["metadata"]["error_type"] == "context_length_exceeded"


def test_malformed_json_unknown_route_method_body_size(client: TestClient) -> None:
    r = client.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 400
    assert client.get("/v1/nothing").json() == {"error": {"code": 404, "message": "Not found"}}
    r = client.get(CHAT)
    assert r.status_code == 405 and r.json()["error"]["code"] == 405
    r = client.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 70_000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == 413


def test_routing_fields_accepted(client: TestClient) -> None:
    body = {
        "messages": MSG,
        "provider": {"order": ["x"]},
        "models": ["a", "nousresearch/hermes-4-70b"],
        "transforms": [],
        "plugins": [],
        "user": "u",
        "usage": {"include": True},
    }
    assert client.post(CHAT, json=body).status_code == 200


def test_completions(client: TestClient, fake: FakeEngine) -> None:
    body = client.post("/api/v1/completions", json={"prompt": "Once upon", "max_tokens": 3}).json()
    assert body["object"] == "text_completion" and body["choices"][0]["finish_reason"] == "length"
    assert body["system_fingerprint"] == client.post(CHAT, json={"messages": MSG}).json()["system_fingerprint"]
    assert body["system_fingerprint"].startswith("fp_hermes_")
    assert fake.last_prompt is not None and fake.last_prompt[0] == 128000 and fake.last_prompt.count(128000) == 1
    events = _events(client.post("/v1/completions", json={"prompt": "Once", "stream": True}).text)
    assert events[-1] == "[DONE]"


def test_models(client: TestClient) -> None:
    for path in ("/v1/models", "/api/v1/models"):
        data = client.get(path).json()["data"]
        assert data[0]["id"] == "nousresearch/hermes-4-70b" and data[0]["context_length"] == 2048


def test_engine_failure_mid_stream_sends_error_chunk(client: TestClient, fake: FakeEngine) -> None:
    fake.fail_after = 2
    r = client.post(CHAT, json={"messages": MSG, "stream": True})
    assert r.status_code == 200  # headers were already sent
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["error"]["code"] == 502 and "engine core died" in last["error"]["message"]
    assert last["choices"][0]["finish_reason"] == "error"
    assert "Traceback" not in r.text
    r = client.post(CHAT, json={"messages": MSG})
    assert r.status_code == 502 and r.json()["error"]["code"] == 502


def test_completions_reasoning(client: TestClient, fake: FakeEngine) -> None:
    fake.reply = "<think>\nponder\n</think>\n\nDone."
    raw = client.post("/v1/completions", json={"prompt": "Q:"}).json()["choices"][0]
    assert raw["text"] == fake.reply and raw["reasoning"] is None  # no reasoning field: raw text
    split = client.post("/v1/completions", json={"prompt": "Q:", "reasoning": {"enabled": True}}).json()["choices"][0]
    assert split["text"] == "Done." and split["reasoning"] == "ponder"
    hidden = client.post("/v1/completions", json={"prompt": "Q:", "reasoning": {"exclude": True}}).json()["choices"][0]
    assert hidden["text"] == "Done." and hidden["reasoning"] is None
    fake.reply = "still thinking\n</think>\nYes."
    inside = client.post("/v1/completions", json={"prompt": "Q: <think>\n"}).json()
    assert inside["choices"][0]["reasoning"] == "still thinking" and inside["choices"][0]["text"] == "Yes."
    assert inside["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    events = _events(client.post("/v1/completions", json={"prompt": "Q: <think>", "stream": True}).text)
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0].get("reasoning") or "" for c in chunks if c["choices"]) == "still thinking"
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Yes."


@pytest.mark.parametrize(("path", "body"), [(CHAT, {"messages": MSG}), ("/v1/completions", {"prompt": "Q:"})])
def test_every_stream_sends_keepalives_while_waiting(tokenizer, fake: FakeEngine, path: str, body: dict) -> None:
    """Keep-alives come from the serving core, so chat and legacy completions both send them."""
    settings = load_settings("configs/tiny-cpu.yaml", stream_keepalive_seconds=0.05)
    fake.first_token_delay = 0.4
    with TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer))) as c:
        text = c.post(path, json={**body, "stream": True}).text
    lines = [line for line in text.split("\n") if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data >= 3, lines[:5]  # one at once, then one per 50 ms of silence
    assert all(line == ": OPENROUTER PROCESSING" for line in lines[:first_data])
    assert lines[-1] == "data: [DONE]"


@pytest.mark.parametrize(("body", "needle"), [({"echo": True}, "echo"), ({"suffix": "x"}, "suffix"), ({"top_a": 0.5}, "top_a")])
def test_unsupported_completion_fields_are_refused(client: TestClient, body: dict, needle: str) -> None:
    r = client.post("/v1/completions", json={"prompt": "Q:", **body})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]
    assert client.post("/v1/completions", json={"prompt": "Q:", "echo": False, "suffix": None, "top_a": 0}).status_code == 200


def test_top_p_zero_is_greedy(client: TestClient, fake: FakeEngine) -> None:
    r = client.post(CHAT, json={"messages": MSG, "top_p": 0, "temperature": 0.9})
    assert r.status_code == 200
    assert fake.last_options is not None and (fake.last_options.temperature, fake.last_options.top_p) == (0.0, 1.0)


def test_model_listings_without_a_key_unless_the_profile_requires_one(tokenizer, fake: FakeEngine) -> None:
    for required, status in ((False, 200), (True, 401)):
        settings = load_settings("configs/tiny-cpu.yaml", auth_required=True, gateway={"models_require_auth": required})
        with TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer))) as c:
            for path in ("/api/v1/models", "/v1/models", "/v1/models/nousresearch/hermes-4-70b"):
                assert c.get(path).status_code == status, path
            assert c.post(CHAT, json={"messages": MSG}).status_code == 401  # generation always needs one


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": MSG}),
        ("/v1/completions", {"prompt": "Once"}),
        ("/v1/responses", {"input": "Hi"}),
        ("/v1/messages", {"model": "nousresearch/hermes-4-70b", "max_tokens": 50, "messages": MSG}),
    ],
)
def test_a_non_streamed_request_stops_when_its_client_leaves(client: TestClient, fake: FakeEngine, path: str, body: dict) -> None:
    """A client that gives up on a non-streamed answer frees the engine at once, and the
    generation is recorded as cancelled."""
    import asyncio
    import time

    fake.first_token_delay = 30.0  # a long prefill or queue: nothing comes for a while
    raw = json.dumps(body).encode()

    async def leave_after_a_moment() -> tuple[float, int]:
        messages = [{"type": "http.request", "body": raw, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await asyncio.sleep(0.3)  # the client waits a little, then disconnects
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "client": ("t", 1),
            "server": ("testserver", 80), "headers": [(b"content-type", b"application/json")],
        }  # fmt: skip
        start = time.monotonic()
        await client.app(scope, receive, send)  # type: ignore[arg-type]
        return time.monotonic() - start, statuses[0]

    took, status = client.portal.call(leave_after_a_moment)
    assert took < 5 and status == 499 and not fake.running  # the engine request was aborted
    state = client.app.state.hermes  # type: ignore[attr-defined]
    client.portal.call(state.usage.flush)
    assert state.metrics.generations.labels(outcome="cancelled")._value.get() >= 1


def test_an_engine_that_dies_fails_health_and_asks_for_a_restart(tokenizer, fake: FakeEngine) -> None:
    import time

    app = create_app(load_settings("configs/tiny-cpu.yaml"), engine=fake, renderer=PromptRenderer(tokenizer))
    restarts: list[bool] = []
    app.state.hermes.on_engine_failure = lambda: restarts.append(True)  # what serve_app wires: exit 1
    with TestClient(app) as c:
        assert c.post(CHAT, json={"messages": MSG}).status_code == 200
        time.sleep(0.7)  # the watcher has seen it serving
        fake._ready = False  # the engine core process is gone
        deadline = time.monotonic() + 5
        while not restarts and time.monotonic() < deadline:
            time.sleep(0.1)
        assert restarts == [True]
        assert c.get("/health").status_code == 503 and c.get("/ready").status_code == 503
        r = c.post(CHAT, json={"messages": MSG})
        assert r.status_code == 503 and r.headers["Retry-After"] == "10" and "restarting" in r.json()["error"]["message"]


MODEL = "nousresearch/hermes-4-70b"
PNG = "data:image/png;base64,iVBORw0KGgo="
# Each API's path, its image part, and its text part.
MEDIA_APIS = {
    "chat": (CHAT, {"type": "image_url", "image_url": {"url": PNG}}, {"type": "text", "text": "shot:"}),
    "responses": ("/v1/responses", {"type": "input_image", "image_url": PNG}, {"type": "input_text", "text": "shot:"}),
    "messages": (
        "/v1/messages",
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",")[1]}},
        {"type": "text", "text": "shot:"},
    ),
}


def _tool_output_body(api: str, parts: list[dict]) -> dict:
    """A conversation whose last turn is a tool's output made of ``parts``, in ``api``'s shape."""
    if api == "chat":
        call = {"id": "c1", "type": "function", "function": {"name": "view", "arguments": "{}"}}
        return {
            "messages": [
                {"role": "user", "content": "Look"},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": parts},
            ]
        }
    if api == "responses":
        return {
            "input": [
                {"role": "user", "content": "Look"},
                {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": parts},
            ]
        }
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": parts}
    return {
        "max_tokens": 20,
        "messages": [
            {"role": "user", "content": "Look"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [result]},
        ],
    }


@pytest.mark.parametrize("api", list(MEDIA_APIS))
def test_an_image_a_tool_returns_becomes_a_note_for_the_text_only_model(
    client: TestClient, fake: FakeEngine, tokenizer, api: str
) -> None:
    """An agent's tool that returns an image (Claude Code reading a screenshot, Codex's view_image)
    would make every later turn of the session a 400; the model is told the image was left out.
    The same image from the user is still a 400 the client can act on."""
    path, image, text = MEDIA_APIS[api]
    r = client.post(path, json={"model": MODEL, **_tool_output_body(api, [text, image])})
    assert r.status_code == 200, r.text
    prompt = tokenizer.decode(fake.last_prompt)
    note = prompt.index("[image omitted: this model reads text only]")
    assert prompt.rindex("shot:", 0, note) > prompt.rindex("<tool_response>", 0, note)  # in the tool's output
    assert PNG.split(",")[1] not in prompt
    field = "input" if api == "responses" else "messages"
    r = client.post(path, json={"model": MODEL, **_tool_output_body(api, []), field: [{"role": "user", "content": [image]}]})
    assert r.status_code == 400 and "not supported" in r.text
