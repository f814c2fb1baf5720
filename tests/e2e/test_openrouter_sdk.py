"""The official ``openrouter`` SDK, unchanged but for the server URL, against the real engine."""

from __future__ import annotations

import re

import pytest
from openrouter import OpenRouter, errors

from tests.e2e.conftest import RunningServer

MODEL = "nousresearch/hermes-4-70b"
# An assistant prefill that opens <think>: the tiny model's output starts as reasoning, and
# vLLM's budget (single-token tags) closes it, then the answer follows. This SDK's typed
# ``reasoning`` carries only ``effort`` (and ``summary``): "low" is 20% of max_tokens = 6 tokens.
MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\n"}]
REASONING = {"effort": "low"}
BUDGET = 6


@pytest.fixture(scope="module")
def orc(server: RunningServer) -> OpenRouter:
    return OpenRouter(api_key="unused-on-the-tiny-profile", server_url=server.api_v1, timeout_ms=120_000)


def test_chat_non_stream(orc: OpenRouter) -> None:
    r = orc.chat.send(model=MODEL, messages=MESSAGES, reasoning=REASONING, max_tokens=30, temperature=0)
    assert re.fullmatch(r"gen-\d+-[A-Za-z0-9]{20}", r.id)
    choice = r.choices[0]
    assert choice.message.reasoning and choice.message.content
    assert choice.message.reasoning_details[0].text == choice.message.reasoning
    assert "<think>" not in choice.message.content and "</think>" not in choice.message.content
    assert choice.finish_reason in ("length", "stop")
    u = r.usage
    assert u.completion_tokens == 30 or choice.finish_reason == "stop"
    # the prefill's "\n" counts against the budget; the forced </think> is one token
    assert BUDGET - 1 <= u.completion_tokens_details.reasoning_tokens <= BUDGET + 1
    assert u.cost == pytest.approx(u.prompt_tokens * 1.3e-7 + u.completion_tokens * 4e-7)


def test_chat_stream_agrees(orc: OpenRouter) -> None:
    whole = orc.chat.send(model=MODEL, messages=MESSAGES, reasoning=REASONING, max_tokens=30, temperature=0)
    reasoning, content, usage = "", "", None
    for event in orc.chat.send(model=MODEL, messages=MESSAGES, reasoning=REASONING, max_tokens=30, temperature=0, stream=True):
        for c in event.choices:
            reasoning += c.delta.reasoning or ""
            content += c.delta.content or ""
        usage = event.usage or usage
    assert (reasoning, content) == (whole.choices[0].message.reasoning, whole.choices[0].message.content)
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_effort_none_turns_thinking_off(orc: OpenRouter) -> None:
    on = orc.chat.send(model=MODEL, messages=[MESSAGES[0]], reasoning={"effort": "high"}, max_tokens=5, temperature=0)
    off = orc.chat.send(model=MODEL, messages=[MESSAGES[0]], reasoning={"effort": "none"}, max_tokens=5, temperature=0)
    assert on.usage.prompt_tokens > off.usage.prompt_tokens + 40  # the thinking system prompt only when on
    assert not off.choices[0].message.reasoning and off.usage.completion_tokens_details.reasoning_tokens == 0


def test_models_and_endpoints(orc: OpenRouter) -> None:
    (model,) = orc.models.list().result.data
    assert model.id == MODEL and model.context_length == 131072 and model.pricing.prompt == "0.00000013"
    data = orc.endpoints.list(author="nousresearch", slug="hermes-4-70b").data
    assert data.endpoints[0].context_length == 131072 and data.endpoints[0].status == 0


def test_errors_are_typed(orc: OpenRouter) -> None:
    with pytest.raises(errors.OpenRouterError) as info:
        orc.chat.send(model="openai/gpt-4o", messages=[MESSAGES[0]])
    assert info.value.status_code == 400 and "openai/gpt-4o is not a valid model ID" in str(info.value.body)


def test_cached_tokens_from_the_prefix_cache(orc: OpenRouter) -> None:
    """A repeated long prompt is served from vLLM's prefix cache, and usage says how much."""
    long = [{"role": "user", "content": "lorem ipsum dolor sit amet " * 200}]
    first = orc.chat.send(model=MODEL, messages=long, max_tokens=1, temperature=0)
    again = orc.chat.send(model=MODEL, messages=long, max_tokens=1, temperature=0)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens == again.usage.prompt_tokens > 1000
    assert again.usage.prompt_tokens - 32 <= cached < again.usage.prompt_tokens  # whole blocks of the prompt
