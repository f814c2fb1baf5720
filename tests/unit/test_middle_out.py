"""OpenRouter's middle-out transform: the cut itself (a character count stands in for tokens),
then through the app on the fake engine with the real chat template and tokenizer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.engine.fake import FakeEngine
from server.hermes.prompt import PromptRenderer
from server.serving.middle_out import ELISION, fit
from server.settings import load_settings


def chars(messages: list[dict]) -> int:
    return sum(len(str(m.get("content") or "")) for m in messages)


def _turns(n: int, size: int = 100) -> list[dict]:
    msgs = [{"role": "system", "content": "S" * size}]
    for i in range(n):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": str(i % 10) * size})
    return msgs


def test_a_prompt_that_fits_is_untouched() -> None:
    msgs = _turns(4)
    assert fit(msgs, chars, 10_000) is msgs


def test_messages_leave_from_the_middle_keeping_the_first_and_last() -> None:
    msgs = _turns(9)  # system + 9 turns of 100 characters
    out = fit(msgs, chars, 600)
    assert out is not None and chars(out) <= 600
    assert out[0] == msgs[0] and out[-1] == msgs[-1]
    assert len(out) == 6  # the fewest removed: 4 of the 10
    # Turns "0".."8" after the system prompt; "8" is the last. The four nearest the middle of the
    # removable ones ("0".."7") go, and the rest keep their order.
    assert [m["content"][0] for m in out[1:-1]] == ["0", "1", "6", "7"]


def test_a_tool_result_leaves_with_its_call() -> None:
    call = {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}]}
    msgs = [
        {"role": "system", "content": "S" * 50},
        {"role": "user", "content": "U" * 50},
        call,
        {"role": "tool", "tool_call_id": "c1", "content": "R" * 300},
        {"role": "user", "content": "Q" * 50},
    ]
    out = fit(msgs, chars, 200)
    assert out is not None and call not in out and all(m["role"] != "tool" for m in out)


def test_first_and_last_alone_too_long_lose_the_middle_of_the_longest_text() -> None:
    msgs = [{"role": "system", "content": "abc" * 100}, {"role": "user", "content": "start " + "x" * 1000 + " end"}]
    out = fit(msgs, chars, 500)
    assert out is not None and chars(out) <= 500 and out[0] == msgs[0]
    text = out[-1]["content"]
    assert text.startswith("start ") and text.endswith(" end") and ELISION in text
    assert fit(msgs, chars, 100) is None  # the system prompt alone is over: nothing to do


# ---- through the app -------------------------------------------------------------------------
@pytest.fixture()
def client(tokenizer) -> Iterator[tuple[TestClient, FakeEngine]]:
    fake = FakeEngine(tokenizer, reply="Fine.", max_model_len=2048)
    app = create_app(load_settings("configs/tiny-cpu.yaml"), engine=fake, renderer=PromptRenderer(tokenizer))
    with TestClient(app) as c:
        yield c, fake


def _long_chat() -> list[dict]:
    msgs = [{"role": "system", "content": "You are the FIRST-MESSAGE assistant."}]
    for i in range(40):
        role = "user" if i % 2 == 0 else "assistant"
        msgs.append({"role": role, "content": f"Message {i}: " + "lorem ipsum dolor sit amet " * 12})
    msgs.append({"role": "user", "content": "The LAST-MESSAGE question?"})
    return msgs


@pytest.mark.parametrize(
    "fields", [{"transforms": ["middle-out"]}, {"plugins": [{"id": "context-compression"}]}], ids=["transforms", "plugin"]
)
def test_middle_out_fits_an_over_long_conversation(client, tokenizer, fields: dict) -> None:
    c, fake = client
    body = {"messages": _long_chat(), "max_tokens": 100}
    refused = c.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400 and "maximum context length is 2048" in refused.json()["error"]["message"]
    r = c.post("/v1/chat/completions", json={**body, **fields})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] + 100 <= 2048
    prompt = tokenizer.decode(fake.last_prompt)
    assert "FIRST-MESSAGE" in prompt and "LAST-MESSAGE" in prompt
    assert "Message 0:" in prompt and "Message 39:" in prompt and "Message 20:" not in prompt  # the middle went


def test_middle_out_without_max_tokens_leaves_the_answer_room(client) -> None:
    c, _ = client
    r = c.post("/v1/chat/completions", json={"messages": _long_chat() * 2, "transforms": ["middle-out"]})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] <= 2048 - 2048 // 8
    responses = c.post("/v1/responses", json={"input": _long_chat()[1:], "transforms": ["middle-out"], "max_output_tokens": 50})
    assert responses.status_code == 200, responses.text
