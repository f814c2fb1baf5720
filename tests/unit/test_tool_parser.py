"""Tool-call parser (chunk-invariant, both key orders, hostile strings), grammars and tool plans."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.errors import APIError
from server.hermes.constraints import check_output_format, plan_tools
from server.hermes.parser import ThinkWatch
from server.hermes.tools import ParsedCall, Text, ToolCallParser, forced_calls_tag, parse_call, strict_calls_tag
from server.protocol.fields import ResponseFormat, output_format, tool_request
from server.protocol.requests import ChatRequest


def _run(chunks: list[str]) -> tuple[str, list[tuple[str, dict]]]:
    p = ToolCallParser()
    items = [it for c in chunks for it in p.feed(c)] + p.finish()
    text = "".join(it.text for it in items if isinstance(it, Text))
    calls = [(it.name, json.loads(it.arguments)) for it in items if isinstance(it, ParsedCall)]
    return text, calls


def _call(name: str, args: dict, args_first: bool = False) -> str:
    body = {"arguments": args, "name": name} if args_first else {"name": name, "arguments": args}
    return "<tool_call>\n" + json.dumps(body) + "\n</tool_call>"


STRICT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


HOSTILE = {"code": 'print("</tool_call>")', "braces": "{[}]", "quote": 'a "b" \\ c', "nested": {"x": [1, {"y": "<tool_call>"}]}}


def test_both_key_orders_several_calls_and_text() -> None:
    out = "Let me check.\n" + _call("get_weather", {"city": "Paris"}) + "\n" + _call("get_time", {"tz": "CET"}, args_first=True)
    text, calls = _run([out])
    assert text == "Let me check."
    assert calls == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]


def test_hostile_strings_inside_arguments() -> None:
    text, calls = _run([_call("run", HOSTILE, args_first=True)])
    assert text == "" and calls == [("run", HOSTILE)]


@pytest.mark.parametrize(
    "raw",
    [
        "<tool_call>\n{not json}\n</tool_call>",
        '<tool_call>\n{"arguments": {}}\n</tool_call>',  # no name
        '<tool_call>\n["name", "x"]\n</tool_call>',
    ],
)
def test_malformed_output_stays_content(raw: str) -> None:
    text, calls = _run([raw])
    assert calls == [] and text == raw


def test_a_call_cut_short_is_dropped_not_sent_as_markup() -> None:
    """A second (parallel) call cut by max_tokens, or a lone one: never raw markup in the answer."""
    first = _call("get_weather", {"city": "Paris"})
    text, calls = _run(["Checking.", first, '\n<tool_call>\n{"name": "get_weather", "arguments": {'])
    assert text == "Checking." and calls == [("get_weather", {"city": "Paris"})]
    assert _run(['<tool_call>\n{"name": "f", "arguments": {"a": 1}']) == ("", [])


def test_call_grammar_takes_either_key_order_for_strict_and_plain_tools(tokenizer) -> None:
    """Arguments-first calls all begin alike: one grammar tag chooses the tool by its arguments and
    name together, so a non-strict tool's arguments written first are kept (not forced into a
    strict tool's shape or to {}), while a strict tool's arguments still follow its schema."""
    import xgrammar as xgr

    strict = STRICT_WEATHER
    loose = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}},
    }
    tag = json.loads(strict_calls_tag([strict, loose], parallel=True))
    begins = [t["begin"] for t in tag["format"]["tags"]]
    assert len(begins) == len(set(begins))  # no two tags the grammar could confuse
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=128256)
    grammar = xgr.GrammarCompiler(info).compile_structural_tag(json.dumps(tag))

    def accepted(text: str) -> bool:
        return bool(xgr.GrammarMatcher(grammar).accept_string(text))

    assert accepted("Sure. " + _call("lookup", {"q": 1}, args_first=True))
    assert accepted(_call("lookup", {"q": 1})) and accepted(_call("get_weather", {"city": "Oslo"}, args_first=True))
    assert not accepted(_call("get_weather", {"town": "Oslo"}, args_first=True))


def test_arguments_as_json_string_and_missing() -> None:
    assert parse_call('{"name": "f", "arguments": "{\\"a\\": 1}"}').arguments == '{"a": 1}'  # type: ignore[union-attr]
    assert parse_call('{"name": "f"}').arguments == "{}"  # type: ignore[union-attr]


@settings(max_examples=150, deadline=None)
@given(
    order=st.lists(st.booleans(), min_size=1, max_size=3),
    lead=st.sampled_from(["", "Sure. ", "a < b and c <tool", "  \n"]),
    cuts=st.lists(st.integers(min_value=1, max_value=12), max_size=80),
)
def test_any_chunking_gives_the_same_result(order: list[bool], lead: str, cuts: list[int]) -> None:
    whole = lead + "\n".join(_call(f"f{i}", {**HOSTILE, "i": i}, first) for i, first in enumerate(order)) + " done"
    chunks, pos = [], 0
    for n in cuts:
        chunks.append(whole[pos : pos + n])
        pos += n
    chunks.append(whole[pos:])
    assert _run(chunks) == _run([whole])
    text, calls = _run([whole])
    assert [c[0] for c in calls] == [f"f{i}" for i in range(len(order))]
    assert text == lead.strip() + "done"  # whitespace next to a call belongs to neither side


def test_think_watch_reports_the_end_of_reasoning(tokenizer) -> None:
    from server.hermes.prompt import PromptRenderer

    r = PromptRenderer(tokenizer)
    ids = tokenizer.encode("plan it</think>\n\n{}", add_special_tokens=False)
    hit = ThinkWatch(None, r.token_bytes, start_in_reasoning=True, stop_at_close=True).feed(ids)
    assert hit is not None and hit[0] == "closed"
    assert tokenizer.decode(ids[: hit[1]]).endswith("</think>")


def _req(**kw):
    """The tools a chat request asks for, as its task carries them."""
    req = ChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **kw})
    return tool_request(req.tools, req.tool_choice, req.parallel_tool_calls)


TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def test_tool_plans() -> None:
    assert plan_tools(_req()).offered is None
    none = plan_tools(_req(tools=[TOOL], tool_choice="none"))
    assert none.offered is None and not none.parse
    auto = plan_tools(_req(tools=[TOOL]))
    assert auto.parse and auto.structured is None and auto.offered == [TOOL]
    required = plan_tools(_req(tools=[TOOL], tool_choice="required", parallel_tool_calls=False))
    tag = json.loads(required.structured.structural_tag)  # type: ignore[union-attr,arg-type]
    assert tag["format"]["at_least_one"] and tag["format"]["stop_after_first"]
    named = plan_tools(_req(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    assert named.structured is not None and not named.parallel
    strict = plan_tools(_req(tools=[{**TOOL, "function": {**TOOL["function"], "strict": True}}]))
    assert json.loads(strict.structured.structural_tag)["format"]["type"] == "triggered_tags"  # type: ignore[union-attr,arg-type]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "'nope', which is not in tools"),
        ({"tool_choice": "required"}, "needs at least one tool"),
        ({"tools": [TOOL, TOOL]}, "unique"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]},
            "tools.0.function.parameters",
        ),
    ],
)
def test_tool_plan_errors(kw: dict, needle: str) -> None:
    with pytest.raises(APIError) as err:
        plan_tools(_req(**kw))
    assert err.value.status == 400 and needle in err.value.message


def response_format_constraint(rf: ResponseFormat | None):
    """The answer's constraint as the task carries it, checked as planning checks it."""
    fmt = output_format(rf)
    check_output_format(fmt)
    return fmt


def test_response_format() -> None:
    assert response_format_constraint(None) is None
    assert response_format_constraint(ResponseFormat(type="json_object")).json_object  # type: ignore[union-attr]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    rf = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}})
    assert response_format_constraint(rf).json_schema == schema  # type: ignore[union-attr]
    bad = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}})
    with pytest.raises(APIError) as err:
        response_format_constraint(bad)
    assert err.value.status == 400 and "response_format.json_schema.schema is not a valid JSON schema" in err.value.message


def test_forced_tag_names_each_tool() -> None:
    tag = json.loads(forced_calls_tag([TOOL], parallel=True))
    name_first, args_first = tag["format"]["tags"]
    assert name_first["begin"].startswith('<tool_call>\n{"name": "get_weather"') and name_first["end"] == "}\n</tool_call>"
    assert args_first["begin"] == '<tool_call>\n{"arguments": ' and args_first["end"] == "}\n</tool_call>"
    (only,) = args_first["content"]["elements"]  # per tool: its arguments, then its name
    assert only["elements"][1] == {"type": "const_string", "value": ', "name": "get_weather"'}


# ---- through the routes (fake engine) --------------------------------------------------------

from fastapi.testclient import TestClient  # noqa: E402

from server.app import create_app  # noqa: E402
from server.engine.fake import FakeEngine  # noqa: E402
from server.hermes.prompt import PromptRenderer  # noqa: E402
from server.serving.engine_source import FORCED_CLOSE  # noqa: E402
from server.settings import load_settings  # noqa: E402

CHAT = "/v1/chat/completions"
TWO_CALLS = "Checking.\n" + _call("get_weather", {"city": "Paris"}) + "\n" + _call("get_weather", HOSTILE, args_first=True)


@pytest.fixture()
def fake_client(tokenizer):
    engine = FakeEngine(tokenizer, reply=TWO_CALLS)
    with TestClient(create_app(load_settings("configs/tiny-cpu.yaml"), engine=engine, renderer=PromptRenderer(tokenizer))) as c:
        yield c, engine


def _stream_calls(text: str) -> tuple[str, dict[int, dict], str | None]:
    content, calls, finish = "", {}, None
    for line in text.split("\n"):
        if not line.startswith("data: {"):
            continue
        chunk = json.loads(line[6:])
        for c in chunk["choices"]:
            content += c["delta"].get("content") or ""
            for tc in c["delta"].get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
                if "id" in tc:
                    assert slot["id"] is None  # id and name come once
                    slot["id"], slot["name"] = tc["id"], tc["function"]["name"]
                slot["arguments"] += tc["function"]["arguments"]
            finish = c["finish_reason"] or finish
    return content, calls, finish


def test_tool_calls_out_stream_and_not(fake_client) -> None:
    client, engine = fake_client
    body = {"messages": [{"role": "user", "content": "weather?"}], "tools": [TOOL]}
    r = client.post(CHAT, json=body).json()
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["native_finish_reason"] == "stop"
    msg = choice["message"]
    assert msg["content"] == "Checking."
    assert [json.loads(c["function"]["arguments"]) for c in msg["tool_calls"]] == [{"city": "Paris"}, HOSTILE]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in msg["tool_calls"])
    content, calls, finish = _stream_calls(client.post(CHAT, json={**body, "stream": True}).text)
    assert content == "Checking." and finish == "tool_calls"
    assert [calls[i]["arguments"] for i in sorted(calls)] == [c["function"]["arguments"] for c in msg["tool_calls"]]
    assert "get_weather" in engine.tokenizer.decode(engine.last_prompt)  # the template listed the tool


def test_parallel_false_keeps_one_call_and_none_offers_nothing(fake_client) -> None:
    client, engine = fake_client
    base = {"messages": [{"role": "user", "content": "weather?"}], "tools": [TOOL]}
    r = client.post(CHAT, json={**base, "parallel_tool_calls": False}).json()
    assert len(r["choices"][0]["message"]["tool_calls"]) == 1
    _, calls, _ = _stream_calls(client.post(CHAT, json={**base, "parallel_tool_calls": False, "stream": True}).text)
    assert list(calls) == [0]
    r = client.post(CHAT, json={**base, "tool_choice": "none"}).json()
    assert "tool_calls" not in r["choices"][0]["message"] and "<tool_call>" in r["choices"][0]["message"]["content"]
    assert "get_weather" not in engine.tokenizer.decode(engine.last_prompt)


def test_grammar_waits_for_reasoning(fake_client, tokenizer) -> None:
    """Reasoning on + a schema: first request free (prefilled <think>), second constrained."""
    client, engine = fake_client
    engine.script = ["weigh options</think>\n\n", '{"a": 1}']
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    r = client.post(
        CHAT, json={"messages": [{"role": "user", "content": "x"}], "reasoning": {"enabled": True}, "response_format": rf}
    )
    msg = r.json()["choices"][0]["message"]
    assert msg["reasoning"] == "weigh options" and msg["content"] == '{"a": 1}'
    first, second = engine.prompts
    assert tokenizer.decode(first).endswith("<think>\n")
    assert engine.last_options is not None and engine.last_options.structured is not None and engine.last_options.reasoning_ended
    assert second[: len(first)] == first
    # reasoning off: one request, constrained from the first token
    engine.prompts.clear()
    client.post(CHAT, json={"messages": [{"role": "user", "content": "x"}], "response_format": rf})
    assert len(engine.prompts) == 1 and engine.last_options.reasoning_ended is True


@pytest.mark.parametrize("end", ["", "<|eot_id|>"])
def test_a_turn_ended_inside_reasoning_still_gets_its_structured_answer(fake_client, tokenizer, end: str) -> None:
    """The model ends its turn (the EOS, or an end-of-turn token vLLM reports among the output ids)
    before ``</think>``: reasoning is closed as a spent budget closes it, and the constrained answer
    follows. Before, the response was reasoning alone, with no answer (Codex's ``--output-schema``
    printed nothing)."""
    client, engine = fake_client
    engine.script = ["weigh options" + end, '{"a": 1}']
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    body = {"messages": [{"role": "user", "content": "x"}], "reasoning": {"enabled": True}, "response_format": rf}
    msg = client.post(CHAT, json=body).json()["choices"][0]["message"]
    assert msg["reasoning"] == "weigh options" and msg["content"] == '{"a": 1}'
    first, second = engine.prompts
    assert tokenizer.decode(second[len(first) :]) == "weigh options" + FORCED_CLOSE  # no end-of-turn token
    assert engine.last_options is not None and engine.last_options.structured is not None and engine.last_options.reasoning_ended
    # A client's stop string inside reasoning ends the output where the client asked.
    engine.prompts.clear()
    engine.script = ["weigh options STOP more", '{"a": 1}']
    r = client.post(CHAT, json={**body, "stop": ["STOP"]}).json()
    assert len(engine.prompts) == 1 and r["choices"][0]["finish_reason"] == "stop"


def test_calls_after_and_between_reasoning(fake_client) -> None:
    client, engine = fake_client
    engine.reply = (
        "<think>\nfirst\n</think>\n"
        + _call("get_weather", {"city": "Oslo"})
        + "<think>again</think>"
        + _call("get_weather", {"city": "Rome"})
    )
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [TOOL]}
    msg = client.post(CHAT, json=body).json()["choices"][0]["message"]
    assert msg["reasoning"] == "firstagain" and msg["content"] is None
    assert [json.loads(c["function"]["arguments"])["city"] for c in msg["tool_calls"]] == ["Oslo", "Rome"]
    _, calls, finish = _stream_calls(client.post(CHAT, json={**body, "stream": True}).text)
    assert [calls[i]["arguments"] for i in sorted(calls)] == [c["function"]["arguments"] for c in msg["tool_calls"]]
    assert finish == "tool_calls"


def test_call_grammars_accept_either_key_order() -> None:
    """Forced and strict call grammars let a call put ``arguments`` before ``name`` (older
    Hermes-format prompts teach that layout) and still hold every call to its tool's schema."""
    import xgrammar as xgr
    from xgrammar.testing import _is_grammar_accept_string

    from server.hermes.tools import strict_calls_tag

    weather = STRICT_WEATHER
    loose = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    cases = {
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>': True,
        '<tool_call>\n{"arguments": {"city": "Paris"}, "name": "get_weather"}\n</tool_call>': True,
        '<tool_call>\n{"arguments": {"tz": "UTC"}, "name": "get_time"}\n</tool_call>': True,  # non-strict keeps its name
        '<tool_call>\n{"arguments": {"x": 1}, "name": "get_weather"}\n</tool_call>': False,  # strict schema still holds
        '<tool_call>\n{"arguments": {"city": "Paris"}, "name": "nope"}\n</tool_call>': False,
    }
    for tag in (forced_calls_tag([weather, loose], True), strict_calls_tag([weather, loose], True)):
        grammar = xgr.Grammar.from_structural_tag(tag)
        for text, ok in cases.items():
            assert _is_grammar_accept_string(grammar, text) is ok, text
    for text in list(cases)[:3]:
        (call,) = [x for x in ToolCallParser().feed(text) if isinstance(x, ParsedCall)]
        assert call.name in ("get_weather", "get_time")
