"""Hermes tool calls: ``<tool_call>{"name": …, "arguments": …}</tool_call>`` blocks in the model's
answer → OpenAI ``tool_calls``; and the grammars that force calls through vLLM's structured outputs.

The parser is hand-written because vLLM's ``hermes`` tool parser re-parses the whole text at each
step and mis-streams arguments-first calls (docs/VLLM.md). This one is incremental
and chunk-invariant: text outside calls passes through at once, a call is held until its closing
tag (found only outside JSON strings, so arguments may contain ``</tool_call>``), then parsed as a
whole. Either key order is accepted, so a call's name is only certain once its JSON closes; that
is why streamed calls are emitted when complete, not token by token.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.constants import random_id
from server.hermes.parser import TagSpacing, split_at_tag

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


def call_id() -> str:
    return random_id("call_", 24)


@dataclass
class ParsedCall:
    name: str
    arguments: str  # a JSON text, exactly what streaming concatenates to
    id: str = ""
    index: int = 0  # position among the calls returned to the client

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Text:
    text: str


def parse_call(body: str) -> ParsedCall | None:
    """One call's JSON, either key order; ``None`` when it is not a well-formed call."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False), id=call_id())


class ToolCallParser:
    def __init__(self) -> None:
        self._buf = ""  # outside a call: text that may be the start of <tool_call>
        self._spacing = TagSpacing()
        self._call: str | None = None  # inside a call: its text so far
        self._scan = 0  # how far the call's text has been scanned for strings/close tag
        self._in_str = False
        self._esc = False

    def feed(self, text: str) -> list[Text | ParsedCall]:
        out: list[Text | ParsedCall] = []
        self._buf += text
        while self._buf:
            if self._call is None:
                before, self._buf, found = split_at_tag(self._buf, OPEN)
                self._text(before, out)
                if not found:
                    return out
                self._spacing.ws = ""  # whitespace before a tag belongs to neither side
                self._call, self._scan, self._in_str, self._esc = "", 0, False, False
            else:
                self._call += self._buf
                self._buf = ""
                end = self._find_close()
                if end is None:
                    return out
                body, rest = self._call[:end], self._call[end + len(CLOSE) :]
                self._call = None
                parsed = parse_call(body.strip())
                if parsed is None:
                    self._text(OPEN + body + CLOSE, out)
                else:
                    out.append(parsed)
                    self._spacing.tag()
                self._buf = rest
        return out

    def _find_close(self) -> int | None:
        """Index of the closing tag outside JSON strings, scanning only what is new."""
        assert self._call is not None
        s = self._call
        i = self._scan
        while i < len(s):
            ch = s[i]
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif ch == "\\":
                    self._esc = True
                elif ch == '"':
                    self._in_str = False
            elif ch == '"':
                self._in_str = True
            elif ch == "<":
                if s.startswith(CLOSE, i):
                    return i
                if CLOSE.startswith(s[i:]):  # a partial tag at the end: wait for more
                    self._scan = i
                    return None
            i += 1
        self._scan = i
        return None

    def finish(self) -> list[Text | ParsedCall]:
        out: list[Text | ParsedCall] = []
        # An unclosed call (cut by max_tokens, or the model stopped inside it) is dropped: it is
        # not a call the client could run, and as text it would hand the client raw markup.
        self._call = None
        self._text(self._buf, out)
        self._buf = ""
        ws = self._spacing.flush()
        if ws:
            out.append(Text(ws))
        return out

    def _text(self, text: str, out: list[Text | ParsedCall]) -> None:
        ready = self._spacing.text(text)
        if ready:
            out.append(Text(ready))


# ---- forcing calls through the engine's grammar (xgrammar structural tags) --------------------


def _call_tags(tools: list[dict[str, Any]], constrained: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The grammar of a call to any of ``tools``, in both key orders: ``name`` first (Hermes 4's
    own layout; one tag per tool) or ``arguments`` first (what older Hermes-format prompts teach).
    Forcing one order would push a model that writes the other into whatever name the grammar
    allows. Arguments-first calls all begin alike, so they are one tag whose content is a choice,
    per tool, of its arguments followed by its name: separate tags with the same beginning would
    leave the grammar to pick one tool's schema before the name says which tool it is (a
    non-strict tool's arguments were then forced to a strict tool's shape, or to ``{}``)."""
    name_first, arguments_first = [], []
    for tool in tools:
        fn = tool["function"]
        name = json.dumps(fn["name"])
        arguments = _arguments_format(fn, constrained(tool))
        name_first.append(
            {"type": "tag", "begin": f'{OPEN}\n{{"name": {name}, "arguments": ', "content": arguments, "end": f"}}\n{CLOSE}"}
        )
        named = {"type": "const_string", "value": f', "name": {name}'}
        arguments_first.append({"type": "sequence", "elements": [arguments, named]})
    either = {"type": "or", "elements": arguments_first}
    return [*name_first, {"type": "tag", "begin": f'{OPEN}\n{{"arguments": ', "content": either, "end": f"}}\n{CLOSE}"}]


def _arguments_format(fn: dict[str, Any], constrained: bool) -> dict[str, Any]:
    schema = fn.get("parameters") or {"type": "object", "properties": {}}
    # Like the engine-wide disable_any_whitespace for plain JSON schemas, which structural tags
    # do not inherit: unbounded whitespace would let a hesitant model never finish.
    return {"type": "json_schema", "json_schema": schema if constrained else {"type": "object"}, "max_whitespace_cnt": 1}


def forced_calls_tag(tools: list[dict[str, Any]], parallel: bool) -> str:
    """Only tool calls (at least one; one if not parallel), each with schema-valid arguments."""
    fmt = {
        "type": "tags_with_separator",
        "tags": _call_tags(tools, lambda _: True),
        "separator": "\n",
        "at_least_one": True,
        "stop_after_first": not parallel,
    }
    return json.dumps({"type": "structural_tag", "format": fmt})


def strict_calls_tag(tools: list[dict[str, Any]], parallel: bool) -> str:
    """Free text, but any call the model opens follows its tool's schema (``strict: true``)."""
    fmt = {
        "type": "triggered_tags",
        "triggers": [OPEN],
        "tags": _call_tags(tools, lambda t: bool(t["function"].get("strict"))),
        "at_least_one": False,
        "stop_after_first": not parallel,
    }
    return json.dumps({"type": "structural_tag", "format": fmt})
