"""The Anthropic Messages API through the real engine (tiny model), with the official anthropic SDK.
Texts the random model cannot be trusted to write are forced: an assistant prefill opens <think>,
grammars bound JSON and tool input."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import pytest

from tests.e2e.conftest import RunningServer
from tests.shared import CITY, THINKING

MODEL = "nousresearch/hermes-4-70b"
GREEDY = {"temperature": 0, "top_p": 1}
HI = [{"role": "user", "content": "Hi"}]
TOOLS = [
    {"name": "get_weather", "description": "Forecast", "input_schema": CITY},
    {
        "name": "get_time",
        "input_schema": {"type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["tz"]},
    },
]


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused-on-the-tiny-profile", max_retries=0, timeout=120)


def test_create_plain_and_stream_agree(sdk: anthropic.Anthropic) -> None:
    whole = sdk.messages.create(model=MODEL, max_tokens=12, messages=HI, extra_body=GREEDY)
    assert whole.type == "message" and whole.stop_reason in ("end_turn", "max_tokens")
    with sdk.messages.stream(model=MODEL, max_tokens=12, messages=HI, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert (
        text
        == "".join(b.text for b in whole.content if b.type == "text")
        == "".join(b.text for b in final.content if b.type == "text")
    )
    assert final.usage.output_tokens == whole.usage.output_tokens and final.stop_reason == whole.stop_reason


# One call each (parallel calls would run on until max_tokens with a random model).
@pytest.mark.parametrize("choice", [{"type": "any", "disable_parallel_tool_use": True}, {"type": "tool", "name": "get_time"}])
def test_forced_tool_use_is_schema_valid(sdk: anthropic.Anthropic, choice: dict) -> None:
    msg = sdk.messages.create(model=MODEL, max_tokens=60, messages=HI, tools=TOOLS, tool_choice=choice, extra_body=GREEDY)
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert uses and msg.stop_reason == "tool_use"
    schemas = {t["name"]: t["input_schema"] for t in TOOLS}
    for use in uses:
        jsonschema.validate(use.input, schemas[use.name])
    if choice["type"] == "tool":
        assert [u.name for u in uses] == ["get_time"]


def test_tool_result_round_trip(sdk: anthropic.Anthropic) -> None:
    first = sdk.messages.create(
        model=MODEL, max_tokens=60, messages=HI, tools=TOOLS, tool_choice={"type": "any"}, extra_body=GREEDY
    )
    use = next(b for b in first.content if b.type == "tool_use")
    history = [
        *HI,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    second = sdk.messages.create(model=MODEL, max_tokens=8, messages=history, tools=TOOLS, extra_body=GREEDY)
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    total = second.usage.input_tokens + second.usage.cache_read_input_tokens
    assert total > first.usage.input_tokens + first.usage.cache_read_input_tokens  # the call and its result are in the prompt


def test_thinking_budget_caps_reasoning(sdk: anthropic.Anthropic) -> None:
    msg = sdk.messages.create(
        model=MODEL, max_tokens=40, messages=THINKING, thinking={"type": "enabled", "budget_tokens": 6}, extra_body=GREEDY
    )
    assert msg.content[0].type == "thinking" and msg.content[0].thinking and msg.content[0].signature
    counted = sdk.messages.count_tokens(model=MODEL, messages=THINKING, thinking={"type": "enabled", "budget_tokens": 6})
    assert counted.input_tokens == msg.usage.input_tokens + msg.usage.cache_read_input_tokens
    # Reasoning (the prefill's newline counts, the forced </think> is one token) then the answer.
    texts = [b for b in msg.content if b.type == "text"]
    assert msg.usage.output_tokens <= 40 and (texts or msg.stop_reason == "max_tokens")


def test_output_format_after_thinking(sdk: anthropic.Anthropic) -> None:
    fmt = {"format": {"type": "json_schema", "schema": CITY}}
    msg = sdk.messages.create(
        model=MODEL,
        max_tokens=80,
        messages=THINKING,
        thinking={"type": "enabled", "budget_tokens": 6},
        extra_body={"output_config": fmt, **GREEDY},
    )
    assert [b.type for b in msg.content] == ["thinking", "text"]
    jsonschema.validate(json.loads(msg.content[1].text), CITY)


def test_stop_sequences(sdk: anthropic.Anthropic) -> None:
    free = sdk.messages.create(model=MODEL, max_tokens=30, messages=HI, extra_body=GREEDY)
    text = "".join(b.text for b in free.content if b.type == "text")
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), f"pick a visible stop string from {text!r}"
    cut = sdk.messages.create(model=MODEL, max_tokens=30, messages=HI, stop_sequences=[stop], extra_body=GREEDY)
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert "".join(b.text for b in cut.content if b.type == "text") == text[: text.index(stop)]


def test_count_tokens_matches_create(sdk: anthropic.Anthropic) -> None:
    counted = sdk.messages.count_tokens(model=MODEL, messages=HI, tools=TOOLS).input_tokens
    made = sdk.messages.create(model=MODEL, max_tokens=4, messages=HI, tools=TOOLS, extra_body=GREEDY).usage
    assert counted == made.input_tokens + made.cache_read_input_tokens
