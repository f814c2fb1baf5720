"""Tools, forced calls and structured outputs through the real engine (tiny model), with and
without reasoning, streamed and not, read back with the openai and openrouter SDKs."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openrouter import OpenRouter

from tests.e2e.conftest import RunningServer

MODEL = "nousresearch/hermes-4-70b"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["tz"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ANSWER = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 20},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
USER = [{"role": "user", "content": "What's the weather in Paris?"}]


def _ask(client, stream: bool = False, **kw):
    kw.setdefault("max_tokens", 300)
    return client.chat.completions.create(model=MODEL, messages=USER, temperature=0, stream=stream, **kw)


def _streamed(stream) -> tuple[str, str, list[dict], str | None]:
    reasoning, content, calls, finish = "", "", {}, None
    for ch in stream:
        for c in ch.choices:
            reasoning += (c.delta.model_extra or {}).get("reasoning") or ""
            content += c.delta.content or ""
            for tc in c.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    slot["id"], slot["name"] = tc.id, tc.function.name
                slot["arguments"] += tc.function.arguments or ""
            finish = c.finish_reason or finish
    return reasoning, content, [calls[i] for i in sorted(calls)], finish


def _valid_calls(message) -> list[tuple[str, dict]]:
    out = []
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[call.function.name])
        out.append((call.function.name, args))
    return out


@pytest.mark.parametrize("reasoning", [False, True])
def test_required_forces_a_valid_call_stream_agrees(client, reasoning: bool) -> None:
    kw = {"tools": TOOLS, "tool_choice": "required", "extra_body": {"reasoning": {"enabled": reasoning}}}
    r = _ask(client, **kw)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.model_extra["native_finish_reason"] == "stop"
    calls = _valid_calls(choice.message)
    assert calls
    assert bool((choice.message.model_extra or {}).get("reasoning")) == reasoning
    s_reasoning, s_content, s_calls, s_finish = _streamed(_ask(client, stream=True, **kw))
    assert s_finish == "tool_calls" and s_content == (choice.message.content or "")
    assert [(c["name"], c["arguments"]) for c in s_calls] == [
        (c.function.name, c.function.arguments) for c in choice.message.tool_calls
    ]
    assert s_reasoning == ((choice.message.model_extra or {}).get("reasoning") or "")


def test_named_function_and_single_call(client) -> None:
    r = _ask(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [name for name, _ in _valid_calls(r.choices[0].message)] == ["get_time"]
    r = _ask(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    assert len(_valid_calls(r.choices[0].message)) == 1


def test_strict_tool_in_auto_mode(client) -> None:
    """A strict tool's arguments follow its schema whenever the model opens a call (here a bias
    on the <tool_call> token makes the random model open one)."""
    strict = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER, "strict": True}}]
    r = _ask(client, tools=strict, logit_bias={"128013": 100})
    assert _valid_calls(r.choices[0].message)


@pytest.mark.parametrize("reasoning", [False, True])
def test_json_schema_content_is_valid(client, reasoning: bool) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER, "strict": True}}
    kw = {"response_format": rf, "extra_body": {"reasoning": {"enabled": reasoning}}}
    r = _ask(client, **kw)
    msg = r.choices[0].message
    jsonschema.validate(json.loads(msg.content), ANSWER)
    assert bool((msg.model_extra or {}).get("reasoning")) == reasoning
    assert r.choices[0].finish_reason == "stop"
    s_reasoning, s_content, _, _ = _streamed(_ask(client, stream=True, **kw))
    assert (s_reasoning, s_content) == (((msg.model_extra or {}).get("reasoning") or ""), msg.content)


def test_json_object_mode(client) -> None:
    # Any JSON object is allowed, so a random model's strings need not end: a bias on `"` and `"}`
    # lets it close them (the grammar still decides what is legal at each step).
    r = _ask(client, response_format={"type": "json_object"}, logit_bias={"1": 20, "9388": 20})
    assert isinstance(json.loads(r.choices[0].message.content), dict) and r.choices[0].finish_reason == "stop"


def test_malformed_calls_come_back_as_content_and_cut_calls_are_dropped(client) -> None:
    bad = {"regex": '<tool_call>\\n\\{"name": "get_weather", oops\\}\\n</tool_call>'}
    r = _ask(client, tools=TOOLS, extra_body={"structured_outputs": bad})
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content.startswith("<tool_call>")
    unclosed = {"regex": '<tool_call>\\n\\{"name": "get_weather", "arguments": \\{"city": "[a-z]{60}"\\}\\}\\n</tool_call>'}
    r = _ask(client, tools=TOOLS, max_tokens=8, extra_body={"structured_outputs": unclosed})
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == ""  # a call cut by max_tokens never reaches the client as markup


def test_bad_schema_and_unknown_tool_are_400(client) -> None:
    import openai

    with pytest.raises(openai.BadRequestError, match="not a valid JSON schema"):
        _ask(client, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}})
    with pytest.raises(openai.BadRequestError, match="not in tools"):
        _ask(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "launch"}})


def test_tool_history_round_trips(client) -> None:
    """Assistant tool_calls and tool results go back through the template."""
    first = _ask(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=False).choices[0].message
    call = first.tool_calls[0]
    history = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})},
    ]
    r = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, temperature=0, max_tokens=5)
    assert r.usage.prompt_tokens > _ask(client, tools=TOOLS, max_tokens=1).usage.prompt_tokens + 10


def test_openrouter_sdk_tool_calls(server: RunningServer) -> None:
    orc = OpenRouter(api_key="unused", server_url=server.api_v1, timeout_ms=120_000)
    r = orc.chat.send(model=MODEL, messages=USER, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=300)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and calls
    for c in calls:
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
