"""``<think>`` spelled as plain text (several ordinary tokens), through the real engine: the split,
exact reasoning tokens, the server-side thinking budget, legacy completions, keep-alives."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from tests.e2e.conftest import RunningServer, start_server, stop_server

MODEL = "nousresearch/hermes-4-70b"
FORCE = {"regex": "<think>[a-z]{1,8}( [a-z]{1,8}){1,30}</think>[a-z ]{3,20}"}
PREFILL = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\n"}]
# "\n</think>\n\n" is 4 tokens in Llama 3's vocabulary; all of them are in the reasoning span.
FORCED_TOKENS = 4


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"HERMES_MODEL__PATH": "models/tiny-hermes-plain", "HERMES_STREAM_KEEPALIVE_SECONDS": "0.1"}
    s = start_server(tmp_path_factory.mktemp("plain"), "plain", env=env)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def pclient(plain: RunningServer) -> OpenAI:
    return OpenAI(base_url=plain.v1, api_key="unused", max_retries=0, timeout=120)


def _forced(pclient: OpenAI, stream: bool = False):
    return pclient.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        temperature=0,
        max_tokens=600,
        logprobs=True,
        stream=stream,
        extra_body={"structured_outputs": FORCE, "reasoning": {"enabled": True, "max_tokens": 600}},
    )


def test_plain_tags_split_with_exact_reasoning_tokens(pclient: OpenAI) -> None:
    r = _forced(pclient)
    msg = r.choices[0].message
    reasoning = (msg.model_extra or {})["reasoning"]
    assert reasoning and "<" not in reasoning and msg.content and "<" not in msg.content
    token_bytes = [bytes(t.bytes) for t in r.choices[0].logprobs.content]
    assert len(token_bytes) == r.usage.completion_tokens
    data = b"".join(token_bytes)
    assert data.startswith(b"<think>")
    end = data.index(b"</think>") + len(b"</think>")
    n, seen = 0, 0
    for b in token_bytes:
        n += seen < end
        seen += len(b)
    assert r.usage.completion_tokens_details.reasoning_tokens == n
    # the same request streamed
    reasoning_s, content_s = "", ""
    for ch in _forced(pclient, stream=True):
        for c in ch.choices:
            reasoning_s += (c.delta.model_extra or {}).get("reasoning") or ""
            content_s += c.delta.content or ""
    assert (reasoning_s, content_s) == (reasoning, msg.content)


@pytest.mark.parametrize("stream", [False, True])
def test_plain_budget_is_a_hard_cap(pclient: OpenAI, stream: bool) -> None:
    """The model never closes <think> by itself here; the server closes it after 10 tokens."""
    body = {"reasoning": {"max_tokens": 10}}
    if not stream:
        r = pclient.chat.completions.create(model=MODEL, messages=PREFILL, temperature=0, max_tokens=40, extra_body=body)
        reasoning, content, usage = r.choices[0].message.model_extra["reasoning"], r.choices[0].message.content, r.usage
        assert r.choices[0].finish_reason == "length"
    else:
        reasoning, content, usage = "", "", None
        for ch in pclient.chat.completions.create(
            model=MODEL, messages=PREFILL, temperature=0, max_tokens=40, stream=True, extra_body=body
        ):
            for c in ch.choices:
                reasoning += (c.delta.model_extra or {}).get("reasoning") or ""
                content += c.delta.content or ""
            usage = ch.usage or usage
    assert reasoning and content
    assert usage.completion_tokens == 40
    assert usage.completion_tokens_details.reasoning_tokens == 10 + FORCED_TOKENS


def test_plain_budget_in_legacy_completions(pclient: OpenAI) -> None:
    free = pclient.completions.create(model=MODEL, prompt="Q: hi\n<think>\n", max_tokens=30, temperature=0)
    # the prompt leaves <think> open: the output is reasoning, unbounded without a reasoning field
    assert free.choices[0].text == "" and free.usage.completion_tokens_details.reasoning_tokens == 30
    r = pclient.completions.create(
        model=MODEL, prompt="Q: hi\n<think>\n", max_tokens=30, temperature=0, extra_body={"reasoning": {"max_tokens": 6}}
    )
    choice = r.choices[0]
    assert choice.model_extra["reasoning"] and choice.text
    assert r.usage.completion_tokens_details.reasoning_tokens == 6 + FORCED_TOKENS
    assert free.choices[0].model_extra["reasoning"].startswith(choice.model_extra["reasoning"])  # greedy: same first tokens


def test_keepalive_comments_while_prefill_runs(plain: RunningServer) -> None:
    """A long prompt keeps the first token pending; keep-alives arrive on the configured 0.1 s."""
    prompt = "word " * 30_000
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 2, "stream": True}
    with httpx.stream("POST", plain.v1 + "/chat/completions", json=body, timeout=300) as r:
        lines = [line for line in r.iter_lines() if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data >= 3 and all(line == ": OPENROUTER PROCESSING" for line in lines[:first_data])
    assert lines[-1] == "data: [DONE]"
