"""OpenAI Responses API request models (as OpenRouter serves them: stateless by default, each
request carries its history) and their conversion to the API-neutral
:class:`~server.task.Task` (``ResponsesRequest.task``)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, model_validator

from server.engine.base import StructuredOutput
from server.errors import bad_request
from server.protocol.fields import (
    FunctionDef,
    JSONSchemaSpec,
    Lenient,
    NamedToolChoice,
    ResponseFormat,
    SamplingFields,
    Tool,
    output_format,
    reasoning_request,
    sampling,
    tool_request,
)
from server.task import RequestInfo, Task


class FunctionTool(Lenient):
    type: str
    name: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(Lenient):
    type: Literal["function"]
    name: str


class TextFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("a format of type 'json_schema' needs schema")
        return self


class TextConfig(Lenient):
    format: TextFormat | None = None


# Fields OpenAI's Responses API has that change what is generated and that one self-hosted model
# cannot honour: refused by name rather than silently ignored.
_REFUSED = {
    "background": "background responses are not supported (send the request and keep the connection)",
    "conversation": "conversations are not supported: send the history in input, or use previous_response_id",
    "prompt": "stored prompt templates are not supported: send the prompt in input",
}


class ResponsesRequest(SamplingFields):
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _refuse(self) -> ResponsesRequest:
        extra = self.model_extra or {}
        for name, why in _REFUSED.items():
            if extra.get(name):
                raise ValueError(f"{name}: {why}")
        for i, tool in enumerate(self.tools or []):
            if tool.type != "function":
                raise ValueError(f"tools.{i}.type: tool type {tool.type!r} is not supported (only 'function' tools)")
            if not tool.name:
                raise ValueError(f"tools.{i}.name is required")
        if self.max_tokens is not None:
            raise ValueError("max_tokens: the Responses API calls it max_output_tokens")
        return self

    def task(self, info: RequestInfo, conversation: list[dict[str, Any]]) -> Task:
        """The task of this request over ``conversation`` (the stored history, if any, then this
        request's ``input``), with ``instructions`` as the system message."""
        messages = ([{"role": "system", "content": self.instructions}] if self.instructions else []) + conversation
        choice: Any = self.tool_choice
        if isinstance(choice, FunctionChoice):
            choice = NamedToolChoice(function={"name": choice.name})
        tools = [
            Tool(function=FunctionDef(name=t.name or "", description=t.description, parameters=t.parameters, strict=t.strict))
            for t in self.tools or []
        ]
        return Task(
            info=info,
            messages=messages,
            sampling=sampling(self),
            reasoning=reasoning_request(self),
            tools=tool_request(tools, choice, self.parallel_tool_calls),
            max_tokens=self.max_output_tokens,
            output_format=self.output_format(),
        )

    def output_format(self) -> StructuredOutput | None:
        fmt = self.text.format if self.text is not None else None
        if fmt is None:
            return None
        spec = JSONSchemaSpec(name=fmt.name, description=fmt.description, schema=fmt.schema_, strict=fmt.strict)
        return output_format(ResponseFormat(type=fmt.type, json_schema=spec if fmt.type == "json_schema" else None))


_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content parts")
    out = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.{i}: content part type {kind!r} is not supported by this text-only model")
        out.append(part["text"])
    return "".join(out)


def input_messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    """``input`` (and ``instructions``) → chat-shaped messages: a function call joins the assistant
    turn it belongs to, its output becomes a ``tool`` message, a reasoning item becomes the
    ``reasoning`` of the assistant turn that follows it (kept or dropped by the keep-CoT rule)."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    items = [{"type": "message", "role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    reasoning: list[str] = []

    def assistant_turn() -> dict[str, Any]:
        """The assistant message a call or a reasoning text attaches to (a new one if need be)."""
        last = messages[-1] if messages else None
        if last is None or last["role"] != "assistant":
            last = {"role": "assistant", "content": ""}
            messages.append(last)
        if reasoning:
            last["reasoning"] = (last.get("reasoning") or "") + "".join(reasoning)
            reasoning.clear()
        return last

    for i, item in enumerate(items):
        where = f"input.{i}"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise bad_request(f"{where}.role: {role!r} is not one of user, system, developer, assistant")
            text = _text(item.get("content"), f"{where}.content")
            if role == "assistant":
                turn = assistant_turn()
                turn["content"] += text
            else:
                messages.append({"role": role, "content": text})
        elif kind == "function_call":
            name, call_id = item.get("name"), item.get("call_id")
            if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where}: a function_call needs name and call_id")
            args = item.get("arguments", "{}")
            if not isinstance(args, str):
                args = json.dumps(args)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            assistant_turn().setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where}.call_id is required")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _text(item.get("output"), f"{where}.output")})
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            reasoning.append(_text(parts, f"{where}.content"))
        else:
            raise bad_request(f"{where}.type: input item type {kind!r} is not supported")
    if reasoning:  # reasoning with no turn after it: nothing to attach it to
        assistant_turn()
    if not any(m["role"] != "system" for m in messages):
        raise bad_request("input: at least one message is required")
    return messages
