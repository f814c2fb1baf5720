"""Inputs that once broke the server, through the real engine: logprobs under a grammar (masked
tokens are -inf), top_p 0, legacy completions with logprobs 0, streamed finish chunks."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import RunningServer
from tests.shared import finite, strict_json

MODEL = "nousresearch/hermes-4-70b"
MSG = [{"role": "user", "content": "Give me JSON"}]


@pytest.mark.parametrize(
    "constraint",
    [
        {"response_format": {"type": "json_object"}},
        {
            "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        },
    ],
)
def test_logprobs_under_a_grammar_arefinite(server: RunningServer, constraint: dict) -> None:
    body = {
        "model": MODEL,
        "messages": MSG,
        "logprobs": True,
        "top_logprobs": 5,
        "temperature": 0,
        "max_tokens": 12,
        **constraint,
    }
    with httpx.Client(timeout=120) as client:
        r = client.post(server.v1 + "/chat/completions", json=body)
        assert r.status_code == 200, r.text
        data = strict_json(r.text)
        assert finite(data)
        tops = [t["logprob"] for c in data["choices"][0]["logprobs"]["content"] for t in c["top_logprobs"]]
        assert -9999.0 in tops  # the grammar masked some alternatives: clamped, not -inf
        # The same connection keeps working (no half-sent 500).
        streamed = client.post(server.v1 + "/chat/completions", json={**body, "stream": True})
        for line in streamed.text.splitlines():
            if line.startswith("data: {"):
                assert finite(strict_json(line[6:]))


def test_top_p_zero_is_greedy(server: RunningServer) -> None:
    base = {"model": MODEL, "messages": MSG, "max_tokens": 8}
    zero = httpx.post(server.v1 + "/chat/completions", json={**base, "top_p": 0, "temperature": 1.2}, timeout=120)
    greedy = httpx.post(server.v1 + "/chat/completions", json={**base, "temperature": 0}, timeout=120)
    assert zero.status_code == 200 and zero.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]


def test_completion_logprobs_zero_and_streamed_finish(server: RunningServer) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0, "logprobs": 0}
    r = httpx.post(server.v1 + "/completions", json=body, timeout=120).json()
    assert r["choices"][0]["logprobs"]["top_logprobs"] == [{}] * 4
    text = httpx.post(server.v1 + "/completions", json={**body, "stream": True}, timeout=120).text
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    finish = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and isinstance(finish[0]["native_finish_reason"], str)


def test_arguments_first_calls_are_accepted(server: RunningServer, tokenizer) -> None:
    """A model driven to write ``{"arguments": …`` first (logit bias on the token after ``{"``)
    still makes a valid call to the tool it names, strict or not."""
    args_tok = tokenizer.encode("arguments", add_special_tokens=False)
    name_toks = [*tokenizer.encode("name", add_special_tokens=False), *tokenizer.encode('"name', add_special_tokens=False)]
    bias = {str(t): 100 for t in args_tok} | {str(t): -100 for t in name_toks}
    tz = {
        "type": "object",
        "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}},
        "required": ["tz"],
        "additionalProperties": False,
    }
    tools = [
        {"type": "function", "function": {"name": "get_time", "parameters": tz, "strict": True}},
        {"type": "function", "function": {"name": "get_date", "parameters": tz}},
    ]
    for choice in ("required", {"type": "function", "function": {"name": "get_date"}}):
        body = {"model": MODEL, "messages": MSG, "tools": tools, "tool_choice": choice, "parallel_tool_calls": False}
        r = httpx.post(
            server.v1 + "/chat/completions", json={**body, "logit_bias": bias, "temperature": 0, "max_tokens": 60}, timeout=120
        )
        assert r.status_code == 200, r.text
        calls = r.json()["choices"][0]["message"]["tool_calls"]
        assert len(calls) == 1 and json.loads(calls[0]["function"]["arguments"])["tz"] in ("UTC", "CET")
        if isinstance(choice, dict):
            assert calls[0]["function"]["name"] == "get_date"


def test_a_non_streamed_request_is_aborted_when_its_client_gives_up(server: RunningServer) -> None:
    """A legacy completion with a large max_tokens whose client times out: the engine request is
    aborted within moments (vLLM's own count of unfinished requests drops to 0), not run on."""
    import time

    body = {"prompt": "Once upon a time", "max_tokens": 20000, "min_tokens": 20000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.api_v1 + "/completions", json=body, timeout=httpx.Timeout(60, read=2.0))
    deadline = time.monotonic() + 10
    while server.unfinished() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.unfinished() == 0  # 20,000 tokens would take the tiny model minutes
