"""Engine layouts a profile can choose, on the CPU build: n-gram speculative decoding must give the
same greedy output as the plain single-replica server (the session's ``server``), with the
gateway's rules intact. Two data-parallel replicas are in test_sessions.py."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server
from tests.shared import CITY, THINKING

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0, "top_p": 1}
PROMPTS = ["Tell me about ducks", "Hello there, how are you?", "Once upon a time"]


def _chat(url: str, content: str, **kw: object) -> dict[str, object]:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 24, **GREEDY, **kw}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _text(answer: dict[str, object]) -> str:
    return str(answer["choices"][0]["message"]["content"])  # type: ignore[index]


def test_ngram_speculation_keeps_outputs_budgets_and_usage_exact(tmp_path, server: RunningServer) -> None:
    spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1}
    sd = start_server(tmp_path, "ngram", env={"HERMES_ENGINE__SPECULATIVE_CONFIG": json.dumps(spec)})
    try:
        for prompt in PROMPTS:  # lossless for greedy decoding
            assert _text(_chat(sd.url, prompt)) == _text(_chat(server.url, prompt))
        exact = _chat(sd.url, PROMPTS[0], max_tokens=40, min_tokens=40)
        assert exact["usage"]["completion_tokens"] == 40  # type: ignore[index]
        capped = {"messages": THINKING, "max_tokens": 60, "reasoning": {"enabled": True, "max_tokens": 10}}
        budget, plain = _chat(sd.url, "", **capped), _chat(server.url, "", **capped)
        assert budget["usage"]["completion_tokens_details"]["reasoning_tokens"] <= 10 + 2  # type: ignore[index]
        assert _text(budget) and _text(budget) == _text(plain)  # the budget closed thinking where it does without
        assert budget["usage"] == plain["usage"]
        stopped = _chat(sd.url, PROMPTS[1], max_tokens=40, stop=["e", "a"])
        assert not set(_text(stopped)) & {"e", "a"} and stopped["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
        schema = {"type": "json_schema", "json_schema": {"name": "c", "strict": True, "schema": CITY}}
        assert json.loads(_text(_chat(sd.url, PROMPTS[2], max_tokens=60, response_format=schema)))["city"] in ("Paris", "Oslo")
        refused = httpx.post(
            sd.v1 + "/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "logit_bias": {"100": 5}},
            timeout=60,
        )
        assert refused.status_code == 400 and "speculative decoding" in refused.json()["error"]["message"]
        drafts = sd.metric("vllm:spec_decode_num_drafts_total")
        assert drafts is not None, "the engine runs without speculative decoding"
        print(f"\nn-gram drafts proposed on the tiny model: {drafts:.0f}")
    finally:
        stop_server(sd)
