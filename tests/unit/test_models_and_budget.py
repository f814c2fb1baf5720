"""Model records (checked against the openrouter/openai SDK types), endpoint figures, and the
server-side thinking budget for plain-text ``<think>`` (over the fake engine)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai.types
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from openrouter import components, operations

from server.app import create_app
from server.engine.fake import FakeEngine
from server.gateway.stats import RecentStats, percentiles
from server.hermes.parser import ThinkWatch, reasoning_token_count
from server.hermes.prompt import PromptRenderer
from server.protocol.models import SUPPORTED_PARAMETERS, price
from server.serving.engine_source import FORCED_CLOSE
from server.settings import load_settings

CHAT = "/api/v1/chat/completions"
MSG = [{"role": "user", "content": "Hi"}]


def _client(tokenizer, engine: FakeEngine, **overrides) -> TestClient:
    settings = load_settings("configs/tiny-cpu.yaml", **overrides)
    return TestClient(create_app(settings, engine=engine, renderer=PromptRenderer(tokenizer)))


@pytest.fixture()
def client(tokenizer) -> Iterator[TestClient]:
    with _client(tokenizer, FakeEngine(tokenizer, max_model_len=4096)) as c:
        yield c


def test_openrouter_model_record(client: TestClient) -> None:
    body = client.get("/api/v1/models").json()
    (record,) = body["data"]
    components.ModelsListResponse.model_validate(body)  # the SDK's own types accept it
    model = components.Model.model_validate(record)
    assert model.id == "nousresearch/hermes-4-70b" and model.canonical_slug == "nousresearch/hermes-4-70b"
    assert record["context_length"] == 4096 == record["top_provider"]["context_length"]  # served, not nominal
    assert record["pricing"] == {"prompt": "0.00000013", "completion": "0.0000004"}
    assert record["architecture"]["tokenizer"] == "Llama3" and record["hugging_face_id"] == "NousResearch/Hermes-4-70B"
    assert {"temperature", "top_p", "top_k", "reasoning", "include_reasoning", "max_tokens"} <= set(
        record["supported_parameters"]
    )


def test_prices_follow_configuration(tokenizer) -> None:
    with _client(tokenizer, FakeEngine(tokenizer), pricing={"prompt": 2.5e-7, "completion": 1e-6}) as c:
        assert c.get("/api/v1/models").json()["data"][0]["pricing"] == {"prompt": "0.00000025", "completion": "0.000001"}
        usage = c.post(CHAT, json={"messages": MSG}).json()["usage"]
        assert usage["cost"] == pytest.approx(usage["prompt_tokens"] * 2.5e-7 + usage["completion_tokens"] * 1e-6)


def test_price_format() -> None:
    assert price(1.3e-7) == "0.00000013" and price(0) == "0" and price(2) == "2"


SAMPLE_VALUES = {
    "frequency_penalty": 0.5,
    "include_reasoning": True,
    "logit_bias": {"100": 1},
    "logprobs": True,
    "max_tokens": 5,
    "min_p": 0.1,
    "presence_penalty": 0.5,
    "reasoning": {"enabled": True},
    "repetition_penalty": 1.1,
    "seed": 3,
    "stop": ["x"],
    "temperature": 0.3,
    "top_k": 5,
    "top_logprobs": 2,
    "top_p": 0.9,
    "parallel_tool_calls": False,
    "response_format": {"type": "json_object"},
    "structured_outputs": {"regex": "[a-z]+"},
    "tool_choice": "required",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
}
TOOLS = SAMPLE_VALUES["tools"]


@pytest.mark.parametrize("name", SUPPORTED_PARAMETERS)
def test_every_listed_parameter_is_honoured(client: TestClient, name: str) -> None:
    """A parameter the record lists must reach the engine (not be silently ignored)."""
    body = {"messages": MSG, name: SAMPLE_VALUES[name]}
    if name == "top_logprobs":
        body["logprobs"] = True
    if name in ("tool_choice", "parallel_tool_calls"):
        body.update(tools=TOOLS, tool_choice="required")
    r = client.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    options = client.app.state.hermes.engine.last_options  # type: ignore[attr-defined]
    seen = {
        "frequency_penalty": options.frequency_penalty == 0.5,
        "include_reasoning": r.json()["choices"][0]["message"] is not None,
        "logit_bias": options.logit_bias == {100: 1},
        "logprobs": options.logprobs == 0,
        "max_tokens": options.max_tokens == 5,
        "min_p": options.min_p == 0.1,
        "presence_penalty": options.presence_penalty == 0.5,
        "reasoning": options.thinking_token_budget is not None,
        "repetition_penalty": options.repetition_penalty == 1.1,
        "seed": options.seed == 3,
        "stop": options.stop == ["x"],
        "temperature": options.temperature == 0.3,
        "top_k": options.top_k == 5,
        "top_logprobs": options.logprobs == 2,
        "top_p": options.top_p == 0.9,
        "parallel_tool_calls": options.structured is not None
        and '"stop_after_first": true' in str(options.structured.structural_tag),
        "response_format": options.structured is not None and options.structured.json_object,
        "structured_outputs": options.structured is not None and options.structured.regex == "[a-z]+",
        "tool_choice": options.structured is not None and options.structured.structural_tag is not None,
        "tools": "<tools>" in client.app.state.hermes.renderer.tokenizer.decode(client.app.state.hermes.engine.last_prompt),  # type: ignore[attr-defined]
    }
    assert seen[name]


def test_endpoints_record(client: TestClient) -> None:
    r = client.get("/api/v1/models/nousresearch/hermes-4-70b/endpoints")
    assert r.status_code == 200
    data = operations.ListEndpointsResponse.model_validate(r.json()).data
    (ep,) = data.endpoints
    assert ep.context_length == 4096 and ep.status == 0 and ep.provider_name == "hermes-server"
    assert ep.quantization == "fp32" and ep.latency_last_30m is None and ep.uptime_last_30m is None
    for _ in range(3):
        client.post(CHAT, json={"messages": MSG})
    ep = client.get("/api/v1/models/NousResearch/Hermes-4-70B/endpoints").json()["data"]["endpoints"][0]
    assert ep["latency_last_30m"]["p50"] > 0 and ep["throughput_last_30m"]["p50"] > 0 and ep["uptime_last_30m"] == 100.0
    r = client.get("/api/v1/models/openai/gpt-4o/endpoints")
    assert r.status_code == 404 and r.json()["error"]["message"] == "openai/gpt-4o is not a valid model ID"


def test_openai_models_list_and_retrieve(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    model = openai.types.Model.model_validate(body["data"][0])
    assert model.id == "nousresearch/hermes-4-70b" and model.owned_by == "nousresearch"
    assert client.get("/v1/models/NousResearch/Hermes-4-70B").json()["id"] == "nousresearch/hermes-4-70b"
    r = client.get("/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == 404


def test_recent_stats_percentiles_and_uptime() -> None:
    now = [1_000_000.0]
    stats = RecentStats(clock=lambda: now[0])
    assert stats.snapshot()["latency_last_30m"] is None
    for ms in range(1, 101):
        stats.record(True, ttft_s=ms / 1000, tokens=11, decode_s=1.0)
    snap = stats.snapshot()
    assert snap["latency_last_30m"]["p50"] == pytest.approx(50.5) and snap["latency_last_30m"]["p99"] == pytest.approx(99.01)
    assert snap["throughput_last_30m"]["p50"] == pytest.approx(10.0)
    now[0] += 120  # a later minute where most attempts fail
    for ok in (False, False, True):
        stats.record(ok)
    assert stats.uptime(30 * 60) == 50.0 and stats.uptime(60) == 0.0
    now[0] += 31 * 60  # samples age out of the 30-minute window
    assert stats.snapshot()["latency_last_30m"] is None and stats.uptime(86_400) == 50.0
    assert percentiles([7.0]) == {"p50": 7.0, "p75": 7.0, "p90": 7.0, "p99": 7.0}


# ---- server-side thinking budget (plain-text tags) -------------------------------------------


def _cut(watch: ThinkWatch, ids: list[int]) -> int | None:
    hit = watch.feed(ids)
    assert hit is None or hit[0] == "budget"
    return None if hit is None else hit[1]


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.sampled_from(["alpha", "be", "<", "think", ">", "\n", " ", "ta</", "g"]), min_size=0, max_size=40),
    budget=st.integers(min_value=0, max_value=30),
    cuts=st.lists(st.integers(min_value=1, max_value=5), max_size=30),
)
def test_think_budget_any_chunking(plain_tokenizer, words: list[str], budget: int, cuts: list[int]) -> None:
    """The cut point depends on the tokens only, not on how the engine grouped them."""
    renderer = PromptRenderer(plain_tokenizer)
    ids = plain_tokenizer.encode("<think>\n" + "".join(words) + "\n</think>\n\nok", add_special_tokens=False)
    whole = _cut(ThinkWatch(budget, renderer.token_bytes), ids)
    guard, pos, got = ThinkWatch(budget, renderer.token_bytes), 0, None
    for n in [*cuts, len(ids)]:
        chunk = ids[pos : pos + n]
        if not chunk:
            break
        keep = _cut(guard, chunk)
        if keep is not None:
            got = pos + keep
            break
        pos += n
    assert got == whole
    unlimited = ThinkWatch(None, renderer.token_bytes)
    unlimited.feed(ids)
    if whole is None:
        assert unlimited.count < budget
    else:
        assert guard.count == budget <= unlimited.count  # cut exactly where the budget is spent


@pytest.fixture()
def plain(plain_tokenizer) -> Iterator[tuple[TestClient, FakeEngine]]:
    engine = FakeEngine(plain_tokenizer, reply="unused", max_model_len=4096)
    with _client(plain_tokenizer, engine) as c:
        yield c, engine


LONG = "<think>\n" + " ".join(f"step{i}" for i in range(60)) + "\n</think>\n\nfirst answer"


@pytest.mark.parametrize("stream", [False, True])
def test_plain_think_budget_forces_close_and_resumes(plain, plain_tokenizer, stream: bool) -> None:
    client, engine = plain
    engine.script = [LONG, "the answer."]
    body = {"messages": MSG, "reasoning": {"max_tokens": 10}, "max_tokens": 200, "stream": stream}
    r = client.post(CHAT, json=body)
    assert r.status_code == 200
    if stream:
        chunks = [json.loads(e) for e in r.text.split("\n") if e.startswith("data: {") for e in [e[6:]]]
        reasoning = "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in chunks if c["choices"])
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        usage = chunks[-1]["usage"]
    else:
        msg = r.json()["choices"][0]["message"]
        reasoning, content, usage = msg["reasoning"], msg["content"], r.json()["usage"]
    assert content == "the answer."
    assert engine.last_options is not None and engine.last_options.thinking_token_budget is None  # not vLLM's
    first_prompt, second_prompt = engine.prompts
    out = second_prompt[len(first_prompt) :]
    forced = plain_tokenizer.encode(FORCED_CLOSE, add_special_tokens=False)
    assert out[-len(forced) :] == forced
    assert plain_tokenizer.decode(out[: -len(forced)]).startswith("<think>\nstep0")
    assert _cut(ThinkWatch(10, PromptRenderer(plain_tokenizer).token_bytes), out) == len(out) - len(forced)
    assert reasoning.split() == [f"step{i}" for i in range(len(reasoning.split()))] and "step59" not in reasoning
    answer = plain_tokenizer.encode("the answer.", add_special_tokens=False)
    assert usage["completion_tokens"] == len(out) + len(answer)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning_token_count(
        out, PromptRenderer(plain_tokenizer).token_bytes
    )
    assert engine.last_options.max_tokens == 200 - len(out)


def test_plain_think_budget_untouched_when_model_closes_in_time(plain) -> None:
    client, engine = plain
    engine.script = ["<think>\nshort\n</think>\n\nfine"]
    msg = client.post(CHAT, json={"messages": MSG, "reasoning": {"max_tokens": 50}, "max_tokens": 200}).json()
    assert msg["choices"][0]["message"]["content"] == "fine" and len(engine.prompts) == 1


def test_single_token_tags_use_vllms_budget(tokenizer) -> None:
    engine = FakeEngine(tokenizer, reply="<think>\nhm\n</think>\n\nyes")
    with _client(tokenizer, engine) as c:
        c.post(CHAT, json={"messages": MSG, "reasoning": {"max_tokens": 7}, "max_tokens": 100})
    assert engine.last_options is not None and engine.last_options.thinking_token_budget == 7 and len(engine.prompts) == 1
