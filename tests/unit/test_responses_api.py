"""The Responses API adapter over the fake engine, read back with the official openai SDK."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from pydantic import BaseModel

from server.app import create_app
from server.engine.fake import FakeEngine
from server.errors import APIError, context_error
from server.gateway.db import Database
from server.hermes.prompt import PromptRenderer
from server.protocol.responses_api import items_messages
from server.protocol.responses_tools import ToolNames
from server.protocol.responses_wire import error_object, error_type
from server.protocol.sealed import Sealer, new_key
from server.settings import load_settings

MODEL = "nousresearch/hermes-4-70b"


@pytest.fixture()
def fake(tokenizer) -> FakeEngine:
    return FakeEngine(tokenizer, reply="<think>\nhmm\n</think>\nHello there.", max_model_len=4096)


@pytest.fixture()
def client(tokenizer, fake: FakeEngine) -> Iterator[TestClient]:
    settings = load_settings("configs/tiny-cpu.yaml", stream_keepalive_seconds=0.05)
    with TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer))) as c:
        yield c


def _sdk(c: TestClient, key: str = "unused") -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=c, max_retries=0)


def _events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: ")]


def test_create_with_reasoning_items_in_order(client: TestClient, fake: FakeEngine) -> None:
    resp = _sdk(client).responses.create(model=MODEL, input="Hi", reasoning={"effort": "low"})
    assert resp.id.startswith("resp_") and resp.status == "completed"
    assert [o.type for o in resp.output] == ["reasoning", "message"]
    assert resp.output[0].content[0].text == "hmm" and resp.output_text == "Hello there."
    assert resp.usage.output_tokens == len(fake.tokenizer.encode(fake.reply, add_special_tokens=False))
    assert resp.usage.output_tokens_details.reasoning_tokens > 0
    assert resp.usage.input_tokens == len(fake.last_prompt or [])


def test_stream_with_the_sdk_helper(client: TestClient) -> None:
    with _sdk(client).responses.stream(model=MODEL, input="Hi", reasoning={"enabled": True}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert final.output_text == "Hello there." and [o.type for o in final.output] == ["reasoning", "message"]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for needed in ("response.reasoning_text.delta", "response.output_text.done", "response.content_part.done"):
        assert needed in kinds


def test_stream_numbers_every_event_and_keeps_alive(client: TestClient, fake: FakeEngine) -> None:
    fake.first_token_delay = 0.2
    text = client.post("/v1/responses", json={"input": "Hi", "stream": True}).text
    assert ": OPENROUTER PROCESSING" in text
    events = _events(text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert all(f"event: {e['type']}\n" in text for e in events)


def test_max_output_tokens_makes_it_incomplete(client: TestClient) -> None:
    resp = _sdk(client).responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"


def test_engine_failure_mid_stream_ends_with_response_failed(client: TestClient, fake: FakeEngine) -> None:
    fake.fail_after = 3
    events = _events(client.post("/v1/responses", json={"input": "Hi", "stream": True}).text)
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and "engine core died" in failed["error"]["message"]
    assert failed["error"]["code"] == "server_error" and failed["error_type"] == "server"


@pytest.mark.parametrize(
    ("error", "code", "kind"),
    [
        (APIError(408, "deadline"), "server_error", "timeout"),
        (APIError(429, "busy"), "rate_limit_exceeded", "rate_limit_exceeded"),
        (APIError(400, "bad tool call"), "invalid_prompt", "invalid_request"),
        (context_error(100, 120, None), "invalid_prompt", "context_length_exceeded"),
        (APIError(503, "draining"), "server_error", "provider_unavailable"),
        (APIError(502, "engine failure"), "server_error", "server"),
    ],
)
def test_a_failed_responses_error_uses_the_codes_both_sdks_type(error: APIError, code: str, kind: str) -> None:
    """OpenAI's and OpenRouter's SDKs type a failed response's error code (a timeout has no code
    of its own); OpenRouter's canonical error_type beside it says what the code cannot."""
    from openai.types.responses.response_error import ResponseError
    from openrouter.components.apierrortype import APIErrorType
    from openrouter.components.openresponseserrorfield import CodeEnum

    def literals(union: object) -> set[str]:
        return {v for arg in typing.get_args(union) for v in typing.get_args(arg)}

    obj = error_object(error)
    assert obj["code"] == code and code in literals(CodeEnum)
    assert code in typing.get_args(ResponseError.model_fields["code"].annotation)
    assert error_type(error) == kind and kind in literals(APIErrorType)


def test_function_call_round_trip_reaches_the_template(client: TestClient, fake: FakeEngine, tokenizer) -> None:
    fake.reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    sdk = _sdk(client)
    first = sdk.responses.create(model=MODEL, input="Weather in Paris?", tools=[tool], tool_choice="required")
    (call,) = [o for o in first.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"} and call.call_id
    assert fake.last_options is not None and fake.last_options.structured is not None  # forced by the grammar
    fake.reply = "It is sunny."
    history = [{"role": "user", "content": "Weather in Paris?"}, *[o.model_dump(exclude_none=True) for o in first.output]]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"})
    second = sdk.responses.create(model=MODEL, input=history, tools=[tool])
    assert second.output_text == "It is sunny."
    prompt = tokenizer.decode(fake.last_prompt)
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in prompt and '"name": "get_weather"' in prompt


class Answer(BaseModel):
    city: str


def test_parse_with_a_pydantic_format(client: TestClient, fake: FakeEngine) -> None:
    fake.reply = '{"city": "Oslo"}'
    parsed = _sdk(client).responses.parse(model=MODEL, input="City?", text_format=Answer)
    assert parsed.output_parsed == Answer(city="Oslo")
    assert fake.last_options is not None and fake.last_options.structured is not None
    assert fake.last_options.structured.json_schema is not None


def test_what_codex_sends_is_accepted(client: TestClient, fake: FakeEngine) -> None:
    """Codex's defaults: a namespace of function tools (flattened for the model, the call comes
    back under the tool's own name and namespace), a hosted web_search tool (left out, named in a
    header), developer messages, store false, include, prompt_cache_key, client_metadata; a
    custom tool's call comes back as a custom_tool_call with its input."""
    fn = {"type": "function", "name": "close_agent", "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}
    tools = [
        {"type": "function", "name": "exec_command", "strict": False, "parameters": {"type": "object", "properties": {}}},
        {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [fn]},
        {
            "type": "custom",
            "name": "apply_patch",
            "description": "Patch files.",
            "format": {"type": "grammar", "definition": "x"},
        },
        {"type": "web_search", "external_web_access": False},
    ]
    body = {
        "model": MODEL,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go"}]},
        ],
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"turn": "1"},
    }
    fake.reply = '<tool_call>\n{"name": "multi_agent_v1.close_agent", "arguments": {"id": "a1"}}\n</tool_call>'
    r = client.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["X-Hermes-Dropped-Tools"] == "web_search"
    (call,) = [it for it in r.json()["output"] if it["type"] == "function_call"]
    assert (call["name"], call["namespace"], json.loads(call["arguments"])) == ("close_agent", "multi_agent_v1", {"id": "a1"})
    fake.reply = '<tool_call>\n{"name": "apply_patch", "arguments": {"input": "*** Begin Patch"}}\n</tool_call>'
    (custom,) = [it for it in client.post("/v1/responses", json=body).json()["output"] if it["type"] == "custom_tool_call"]
    assert (custom["name"], custom["input"]) == ("apply_patch", "*** Begin Patch")
    # The next turn sends both calls back with their outputs: rendered under the model's names.
    fake.reply = "Both done."
    history = [
        {**call, "type": "function_call"},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "closed"},
        custom,
        {"type": "custom_tool_call_output", "call_id": custom["call_id"], "output": "patched"},
    ]
    r = client.post("/v1/responses", json={**body, "input": body["input"] + history})
    assert r.status_code == 200, r.text
    assert r.json()["output"][-1]["content"][0]["text"] == "Both done."
    assert fake.last_prompt is not None
    prompt = fake.tokenizer.decode(fake.last_prompt)
    assert '"name": "multi_agent_v1.close_agent"' in prompt and "patched" in prompt and "*** Begin Patch" in prompt


def test_reasoning_sealed_for_a_stateless_client_comes_back(client: TestClient, fake: FakeEngine) -> None:
    """store false + include reasoning.encrypted_content: the reasoning item carries its text
    sealed; sent back in the next turn's input it is restored into the prompt; altered, it is a
    400 naming the item."""
    fake.reply = "<think>the secret plan</think>Answer."
    body = {"model": MODEL, "input": "Go", "store": False, "include": ["reasoning.encrypted_content"], "reasoning": {}}
    first = client.post("/v1/responses", json=body).json()
    (item,) = [it for it in first["output"] if it["type"] == "reasoning"]
    sealed = item["encrypted_content"]
    assert "secret" not in sealed
    returned = {"type": "reasoning", "id": item["id"], "summary": [], "encrypted_content": sealed}
    follow = [
        {"role": "user", "content": "Go"},
        returned,
        {"role": "assistant", "content": "Answer."},
        {"role": "user", "content": "More"},
    ]
    fake.reply = "Fine."
    assert client.post("/v1/responses", json={**body, "input": follow}).status_code == 200
    plain = client.post("/v1/responses", json={**body, "include": []}).json()
    assert all("encrypted_content" not in it for it in plain["output"])
    forged = {**returned, "encrypted_content": sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")}
    bad = client.post("/v1/responses", json={**body, "input": [forged, {"role": "user", "content": "More"}]})
    assert bad.status_code == 400 and "input.0.encrypted_content" in bad.json()["error"]["message"]
    # Opened, it is the reasoning of the assistant turn it came with (rendered when keep_cots is on).
    sealer = Sealer(new_key())
    items = [{"type": "reasoning", "encrypted_content": sealer.seal("the plan")}, {"role": "assistant", "content": "A"}]
    assert items_messages(items, ToolNames(), sealer) == [{"role": "assistant", "content": "A", "reasoning": "the plan"}]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"input": "Hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}, "hosted tool 'web_search'"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input.0.content.0"),
        ({"input": "Hi", "max_tokens": 5}, "max_output_tokens"),
        ({"input": "Hi", "background": True}, "background"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0.type"),
        ({"input": "Hi", "previous_response_id": "resp_x"}, "previous_response_id"),
    ],
)
def test_mistakes_name_the_field_in_each_shape(client: TestClient, body: dict, needle: str) -> None:
    openai_shape = client.post("/v1/responses", json=body)
    assert openai_shape.status_code == 400, openai_shape.text
    err = openai_shape.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"
    openrouter_shape = client.post("/api/v1/responses", json=body).json()["error"]
    assert openrouter_shape["code"] == 400 and needle in openrouter_shape["message"]


def test_a_prompt_over_the_context_has_openais_code(client: TestClient) -> None:
    """OpenAI's code for the refusal on /v1 (Codex CLI reads it as "context window full");
    OpenRouter's error_type on /api/v1."""
    body = {"input": "sea " * 5000}
    openai_shape = client.post("/v1/responses", json=body)
    assert openai_shape.status_code == 400
    err = openai_shape.json()["error"]
    assert err["code"] == "context_length_exceeded" and "maximum context length is 4096" in err["message"]
    other = client.post("/v1/responses", json={"input": "Hi", "background": True}).json()["error"]
    assert other["code"] == "400"
    openrouter_shape = client.post("/api/v1/responses", json=body).json()["error"]
    assert openrouter_shape["code"] == 400 and openrouter_shape["metadata"]["error_type"] == "context_length_exceeded"


def test_store_previous_response_get_delete_per_key(tokenizer, fake: FakeEngine) -> None:
    db = Database("sqlite://")
    _, alice = db.create_key("alice")
    _, bob = db.create_key("bob")
    settings = load_settings("configs/tiny-cpu.yaml", auth_required=True, responses={"store": True})
    with TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer), db=db)) as c:
        sdk = _sdk(c, alice)
        fake.reply = "Noted: 42."
        first = sdk.responses.create(model=MODEL, input="Remember 42.", store=True)
        fake.reply = "It was 42."
        second = sdk.responses.create(model=MODEL, input="What number?", previous_response_id=first.id, store=True)
        assert second.previous_response_id == first.id
        prompt = tokenizer.decode(fake.last_prompt)
        assert "Remember 42." in prompt and "Noted: 42." in prompt and prompt.index("Remember 42.") < prompt.index("What number?")
        assert sdk.responses.retrieve(first.id).output_text == "Noted: 42."
        other = c.get(f"/v1/responses/{first.id}", headers={"Authorization": f"Bearer {bob}"})
        assert other.status_code == 404 and other.json()["error"]["type"] == "not_found_error"
        cont = c.post(
            "/v1/responses", json={"input": "x", "previous_response_id": first.id}, headers={"Authorization": f"Bearer {bob}"}
        )
        assert cont.status_code == 404
        sdk.responses.delete(first.id)
        assert c.get(f"/v1/responses/{first.id}", headers={"Authorization": f"Bearer {alice}"}).status_code == 404
        unstored = sdk.responses.create(model=MODEL, input="Hi")
        assert c.get(f"/v1/responses/{unstored.id}", headers={"Authorization": f"Bearer {alice}"}).status_code == 404


def test_openrouter_sdk_models_accept_the_bodies(client: TestClient, fake: FakeEngine) -> None:
    from openrouter import components

    body = client.post("/api/v1/responses", json={"input": "Hi", "reasoning": {"enabled": True}}).json()
    parsed = components.OpenResponsesResult.model_validate(body)
    assert [type(o).__name__ for o in parsed.output] == ["OutputReasoningItem", "OutputMessageItem"]
    fake.reply = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    body = client.post("/api/v1/responses", json={"input": "Hi", "tools": [{"type": "function", "name": "f"}]}).json()
    parsed = components.OpenResponsesResult.model_validate(body)
    assert parsed.output[0].type == "function_call" and parsed.usage.output_tokens > 0
