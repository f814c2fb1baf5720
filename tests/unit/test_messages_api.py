"""The Anthropic Messages adapter over the fake engine, read back with the official anthropic SDK."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import anthropic
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.engine.fake import FakeEngine
from server.gateway.db import Database
from server.hermes.prompt import PromptRenderer
from server.settings import load_settings

MODEL = "nousresearch/hermes-4-70b"
HI = [{"role": "user", "content": "Hi"}]
TOOL = {
    "name": "get_weather",
    "description": "Forecast",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture()
def fake(tokenizer) -> FakeEngine:
    return FakeEngine(tokenizer, reply="<think>\nhmm\n</think>\nHello there.", max_model_len=4096)


@pytest.fixture()
def client(tokenizer, fake: FakeEngine) -> Iterator[TestClient]:
    settings = load_settings("configs/tiny-cpu.yaml", stream_keepalive_seconds=0.05, messages={"model_patterns": ["claude-*"]})
    with TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer))) as c:
        yield c


def _sdk(c: TestClient, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url="http://testserver", api_key=key, http_client=c, max_retries=0)


def test_create_with_thinking_blocks_and_exact_budget(client: TestClient, fake: FakeEngine) -> None:
    msg = _sdk(client).messages.create(
        model=MODEL, max_tokens=100, messages=HI, thinking={"type": "enabled", "budget_tokens": 37}
    )
    assert msg.id.startswith("msg_") and [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "hmm" and msg.content[0].signature and msg.content[1].text == "Hello there."
    assert msg.stop_reason == "end_turn" and msg.usage.input_tokens == len(fake.last_prompt or [])
    assert fake.last_options is not None and fake.last_options.thinking_token_budget == 37


@pytest.mark.parametrize(("thinking", "on"), [({"type": "disabled"}, False), ({"type": "adaptive"}, True), (None, False)])
def test_thinking_modes(client: TestClient, fake: FakeEngine, tokenizer, thinking: dict | None, on: bool) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": HI} | ({"thinking": thinking} if thinking else {})
    assert client.post("/v1/messages", json=body).status_code == 200
    assert ("deep thinking AI" in tokenizer.decode(fake.last_prompt)) is on


def test_stream_with_the_sdk_helper_and_pings(client: TestClient, fake: FakeEngine) -> None:
    fake.first_token_delay = 0.2
    with _sdk(client).messages.stream(
        model=MODEL, max_tokens=100, messages=HI, thinking={"type": "enabled", "budget_tokens": 50}
    ) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[1].text == "Hello there."
    assert final.content[0].signature and final.usage.output_tokens > 0
    raw = client.post("/v1/messages", json={"model": MODEL, "max_tokens": 50, "messages": HI, "stream": True}).text
    assert "event: ping" in raw and raw.index("event: message_start") < raw.index("event: ping")
    assert kinds[0] == "message_start" and "message_stop" in kinds


def test_tool_use_forced_and_streamed_input(client: TestClient, fake: FakeEngine) -> None:
    fake.reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    sdk = _sdk(client)
    msg = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=HI, tools=[TOOL], tool_choice={"type": "tool", "name": "get_weather"}
    )
    (use,) = msg.content
    assert (
        use.type == "tool_use"
        and use.id.startswith("toolu_")
        and use.input == {"city": "Paris"}
        and msg.stop_reason == "tool_use"
    )
    assert fake.last_options is not None and fake.last_options.structured is not None
    with sdk.messages.stream(model=MODEL, max_tokens=100, messages=HI, tools=[TOOL], tool_choice={"type": "any"}) as s:
        partial = "".join(
            e.delta.partial_json for e in s if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        )
        final = s.get_final_message()
    assert json.loads(partial) == final.content[0].input == {"city": "Paris"}


def test_tool_result_round_trip_reaches_the_template(client: TestClient, fake: FakeEngine, tokenizer) -> None:
    history = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "x", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "rain"}],
                    "is_error": False,
                }
            ],
        },
    ]
    msg = _sdk(client).messages.create(
        model=MODEL,
        max_tokens=50,
        messages=history,
        tools=[TOOL],
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    )
    assert msg.content[-1].text == "Hello there."
    prompt = tokenizer.decode(fake.last_prompt)
    assert "<tool_response>\nrain\n</tool_response>" in prompt and '"city": "Oslo"' in prompt and "Be brief." in prompt


def test_stop_sequence_and_output_format(client: TestClient, fake: FakeEngine) -> None:
    sdk = _sdk(client)
    msg = sdk.messages.create(model=MODEL, max_tokens=50, messages=HI, stop_sequences=["there"])
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "there"
    fake.reply = '{"ok": true}'
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": HI,
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    out = client.post("/v1/messages", json=body).json()
    assert json.loads(out["content"][0]["text"]) == {"ok": True}
    assert fake.last_options is not None and fake.last_options.structured is not None


def test_count_tokens_equals_what_create_reports(client: TestClient) -> None:
    sdk = _sdk(client)
    for extra in ({}, {"tools": [TOOL]}, {"thinking": {"type": "enabled", "budget_tokens": 10}}):
        counted = sdk.messages.count_tokens(model=MODEL, messages=HI, **extra).input_tokens
        made = sdk.messages.create(model=MODEL, max_tokens=20, messages=HI, **extra).usage
        assert counted == made.input_tokens + made.cache_read_input_tokens


def test_a_tool_search_result_names_the_loaded_tool(client: TestClient, fake: FakeEngine, tokenizer) -> None:
    """Claude Code's ToolSearch tool answers with ``tool_reference`` blocks, which load a
    ``defer_loading`` tool; every tool is in the prompt already, so the reference becomes a line
    naming it (before, the next turn was a 400 and the session stopped)."""
    fetch = {**TOOL, "name": "WebFetch", "defer_loading": True}
    search = {**TOOL, "name": "ToolSearch"}
    refs = [{"type": "tool_reference", "tool_name": n} for n in ("WebFetch", "Grep")]
    result = [{"type": "text", "text": "Found"}, {"type": "text", "text": ":"}, *refs, {"type": "text", "text": "Done."}]
    history = [
        {"role": "user", "content": "Fetch a page"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ToolSearch", "input": {"city": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}]},
    ]
    msg = _sdk(client).messages.create(model=MODEL, max_tokens=20, messages=history, tools=[search, fetch])
    assert msg.content[-1].text == "Hello there."
    prompt = tokenizer.decode(fake.last_prompt)
    assert "<tool_response>\nFound:\nTool loaded: WebFetch\nTool loaded: Grep\nDone.\n</tool_response>" in prompt
    body = {"model": MODEL, "max_tokens": 5, "messages": HI, "system": [{"type": "tool_reference", "tool_name": "WebFetch"}]}
    r = client.post("/v1/messages", json=body)  # only a tool result loads tools
    assert (
        r.status_code == 400
        and r.json()["error"]["message"] == "system.0: block type 'tool_reference' is not supported here (text only)"
    )


def test_model_patterns_map_other_names(client: TestClient) -> None:
    msg = _sdk(client).messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HI)
    assert msg.model == MODEL


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": HI}, "max_tokens"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "messages.0.content.0"),
        (
            {
                "max_tokens": 5,
                "messages": HI,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
                "tool_choice": {"type": "tool", "name": "web_search"},
            },
            "server tool 'web_search'",
        ),
        ({"max_tokens": 5, "messages": HI, "thinking": {"type": "enabled"}}, "budget_tokens"),
        ({"max_tokens": 5, "messages": HI, "tool_choice": {"type": "tool", "name": "nope"}, "tools": [TOOL]}, "nope"),
    ],
)
def test_mistakes_in_anthropic_shape(client: TestClient, body: dict, needle: str) -> None:
    for path in ("/v1/messages", "/api/v1/messages"):
        r = client.post(path, json={"model": MODEL, **body})
        assert r.status_code == 400, r.text
        err = r.json()
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error" and needle in err["error"]["message"]


def test_a_prompt_over_the_context_is_refused_in_anthropics_words(client: TestClient) -> None:
    """Claude Code reads the two counts out of Anthropic's wording to size its compaction (the
    largest prompt that fits leaves one token of the 4,096 for the answer)."""
    long = [{"role": "user", "content": "sea " * 5000}]
    for path in ("/v1/messages", "/api/v1/messages"):
        r = client.post(path, json={"model": MODEL, "max_tokens": 128_000, "messages": long})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error"
        assert re.fullmatch(r"prompt is too long: (\d+) tokens > 4095 maximum", err["message"]), err["message"]
        assert int(err["message"].split()[4]) > 5000


def test_what_claude_code_sends_is_accepted(client: TestClient, fake: FakeEngine) -> None:
    """Claude Code's defaults: a server tool (left out, named in a header), a system turn among
    the messages, thinking shown as omitted (an empty thinking block with a signature),
    context_management, a defer_loading tool, and a max_tokens over the context (cut to fit)."""
    fake.reply = "<think>secret plan</think>Done."
    body = {
        "model": MODEL,
        "max_tokens": 10_000_000,
        "messages": [*HI, {"role": "system", "content": [{"type": "text", "text": "Environment: linux"}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}, {**TOOL, "defer_loading": True}],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
    }
    r = client.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["X-Hermes-Dropped-Tools"] == "web_search"
    thinking, text = r.json()["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == "" and thinking["signature"]
    assert text == {"type": "text", "text": "Done."}
    streamed = client.post("/v1/messages", json={**body, "stream": True}).text
    assert "secret" not in streamed and "signature_delta" in streamed
    assert '"text_delta","text":"Done"' in streamed


def test_x_api_key_auth_and_401_shape(tokenizer, fake: FakeEngine) -> None:
    db = Database("sqlite://")
    _, key = db.create_key("claude-code")
    settings = load_settings("configs/tiny-cpu.yaml", auth_required=True)
    with TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer), db=db)) as c:
        ok = _sdk(c, key).messages.create(model=MODEL, max_tokens=10, messages=HI)
        assert ok.content
        with pytest.raises(anthropic.AuthenticationError) as exc:
            _sdk(c, "sk-wrong").messages.create(model=MODEL, max_tokens=10, messages=HI)
        assert exc.value.body["error"]["type"] == "authentication_error"
        headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14", "x-api-key": key}
        assert c.post("/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": HI}, headers=headers).status_code == 200
