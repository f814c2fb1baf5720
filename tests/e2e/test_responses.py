"""The Responses API through the real engine (tiny model), with the official openai SDK, the
openrouter SDK and an openai-agents Agent. Texts the random model cannot be trusted to write are
forced: an assistant prefill opens <think>, grammars bound JSON and tool calls."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
from openai import OpenAI
from pydantic import BaseModel

from tests.e2e.conftest import RunningServer
from tests.shared import CITY, THINKING

MODEL = "nousresearch/hermes-4-70b"
GREEDY = {"temperature": 0, "top_p": 1}
TOOL = {"type": "function", "name": "get_weather", "description": "Forecast", "parameters": CITY, "strict": True}


def test_create_plain(client: OpenAI) -> None:
    resp = client.responses.create(model=MODEL, input="Say hi", max_output_tokens=8, **GREEDY)
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.status in ("completed", "incomplete")
    assert resp.usage.output_tokens <= 8 and resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    if resp.status == "incomplete":
        assert resp.usage.output_tokens == 8 and resp.incomplete_details.reason == "max_output_tokens"
    assert isinstance(resp.output_text, str)


def test_stream_equals_create(client: OpenAI) -> None:
    whole = client.responses.create(model=MODEL, input="Count", max_output_tokens=12, **GREEDY)
    with client.responses.stream(model=MODEL, input="Count", max_output_tokens=12, **GREEDY) as stream:
        events = list(stream)
    # The SDK's get_final_response() wants response.completed; a cut answer ends with response.incomplete.
    final = events[-1].response
    assert events[0].type == "response.created" and events[-1].type == f"response.{whole.status}"
    assert final.output_text == whole.output_text and final.usage.output_tokens == whole.usage.output_tokens
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text


class Weather(BaseModel):
    city: Literal["Paris", "Oslo"]
    sunny: bool


def test_parse_with_a_pydantic_model(client: OpenAI) -> None:
    parsed = client.responses.parse(model=MODEL, input="Weather?", text_format=Weather, max_output_tokens=40, **GREEDY)
    assert isinstance(parsed.output_parsed, Weather)


def test_required_tool_then_function_call_output(client: OpenAI) -> None:
    first = client.responses.create(
        model=MODEL, input="Weather in Paris?", tools=[TOOL], tool_choice="required", max_output_tokens=60, **GREEDY
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].call_id
    jsonschema.validate(json.loads(calls[0].arguments), CITY)
    history = [{"role": "user", "content": "Weather in Paris?"}, *[o.model_dump(exclude_none=True) for o in first.output]]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"})
    second = client.responses.create(model=MODEL, input=history, tools=[TOOL], max_output_tokens=10, **GREEDY)
    assert second.status in ("completed", "incomplete")
    assert second.usage.input_tokens > first.usage.input_tokens  # the call and its output are in the prompt


def test_reasoning_capped_by_the_budget(client: OpenAI) -> None:
    resp = client.responses.create(model=MODEL, input=THINKING, reasoning={"max_tokens": 6}, max_output_tokens=30, **GREEDY)
    kinds = [o.type for o in resp.output]
    assert kinds[0] == "reasoning" and resp.output[0].content[0].text
    # the prefill's newline counts against the budget; the forced </think> is one token
    assert 5 <= resp.usage.output_tokens_details.reasoning_tokens <= 7


def test_json_schema_after_reasoning(client: OpenAI) -> None:
    fmt = {"type": "json_schema", "name": "weather", "schema": CITY, "strict": True}
    resp = client.responses.create(
        model=MODEL, input=THINKING, reasoning={"max_tokens": 6}, text={"format": fmt}, max_output_tokens=60, **GREEDY
    )
    assert [o.type for o in resp.output] == ["reasoning", "message"]
    jsonschema.validate(json.loads(resp.output_text), CITY)


def test_openrouter_sdk_send(server: RunningServer) -> None:
    from openrouter import OpenRouter

    orc = OpenRouter(api_key="unused-on-the-tiny-profile", server_url=server.api_v1, timeout_ms=120_000)
    result = orc.beta.responses.send(model=MODEL, input="Hi", max_output_tokens=8, temperature=0)
    assert result.id.startswith("resp_") and result.status in ("completed", "incomplete")
    assert result.usage is not None and result.usage.output_tokens <= 8


def test_openai_agents_runs_a_tool_to_completion(server: RunningServer) -> None:
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    # The SDK's default model class, on this server (a bare "org/model" name would be read as a
    # provider prefix by the SDK's multi-provider lookup).
    model = OpenAIResponsesModel(model=MODEL, openai_client=AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0))
    seen: list[str] = []

    @function_tool
    def get_weather(city: Literal["Paris", "Oslo"]) -> str:
        """Forecast for a city."""
        seen.append(city)
        return f"sunny in {city}"

    agent = Agent(
        name="forecaster",
        instructions="Answer with the forecast.",
        model=model,
        tools=[get_weather],
        model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False, max_tokens=100, temperature=0, top_p=1),
        tool_use_behavior="stop_on_first_tool",
    )
    result = Runner.run_sync(agent, "Weather in Oslo?")
    assert seen and result.final_output == f"sunny in {seen[0]}"
