"""OpenAI Responses API request models (as OpenRouter serves them: stateless by default, each
request carries its history) and their conversion to the API-neutral
:class:`~server.task.Task` (``ResponsesRequest.task``)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, model_validator

from server.engine.base import StructuredOutput
from server.errors import bad_request
from server.hermes.prompt import omitted_media
from server.protocol.fields import (
    JSONSchemaSpec,
    Lenient,
    ResponseFormat,
    SamplingFields,
    output_format,
    reasoning_request,
    sampling,
)
from server.protocol.responses_tools import CUSTOM_INPUT, ToolNames, flatten, forced_hosted
from server.protocol.sealed import Sealer
from server.task import RequestInfo, Task, ToolChoice, ToolRequest


class FunctionTool(Lenient):
    """A tool as the client sends it: ``function``, ``custom``, ``namespace`` (with ``tools``) or a
    hosted type (see ``responses_tools.py`` for what each becomes)."""

    type: str
    name: str | None = Field(None, min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


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
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    include: list[str] | None = None  # "reasoning.encrypted_content": reasoning sealed for the next turn

    @model_validator(mode="after")
    def _refuse(self) -> ResponsesRequest:
        extra = self.model_extra or {}
        for name, why in _REFUSED.items():
            if extra.get(name):
                raise ValueError(f"{name}: {why}")
        if self.max_tokens is not None:
            raise ValueError("max_tokens: the Responses API calls it max_output_tokens")
        return self

    def tool_names(self) -> ToolNames:
        """The tools as the model will know them (namespaces flattened, hosted tools left out)."""
        return flatten([t.model_dump(exclude_none=True) for t in self.tools or []])

    def task(self, info: RequestInfo, conversation: list[dict[str, Any]], names: ToolNames) -> Task:
        """The task of this request over ``conversation`` (the stored history, if any, then this
        request's ``input``), with ``instructions`` as the system message."""
        messages = ([{"role": "system", "content": self.instructions}] if self.instructions else []) + conversation
        return Task(
            info=info,
            messages=messages,
            sampling=sampling(self),
            reasoning=reasoning_request(self),
            tools=ToolRequest(tuple(names.specs), self._choice(names), self.parallel_tool_calls is not False),
            max_tokens=self.max_output_tokens,
            output_format=self.output_format(),
            dropped_tools=tuple(names.dropped),
            compress_middle=self.middle_out,
        )

    def _choice(self, names: ToolNames) -> ToolChoice:
        choice = self.tool_choice
        if not isinstance(choice, dict):
            return ToolChoice(choice or "auto")
        hosted = forced_hosted(choice)
        if hosted is not None:
            raise bad_request(f"tool_choice forces the hosted tool {hosted!r}, which this server cannot run")
        if choice.get("type") == "allowed_tools":
            return ToolChoice("required" if choice.get("mode") == "required" else "auto")
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("tool_choice.name is required")
        namespace = choice.get("namespace")
        return ToolChoice("function", names.model_name(name, namespace if isinstance(namespace, str) else None))

    def output_format(self) -> StructuredOutput | None:
        fmt = self.text.format if self.text is not None else None
        if fmt is None:
            return None
        spec = JSONSchemaSpec(name=fmt.name, description=fmt.description, schema=fmt.schema_, strict=fmt.strict)
        return output_format(ResponseFormat(type=fmt.type, json_schema=spec if fmt.type == "json_schema" else None))


_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")


def _text(content: Any, where: str, tool_output: bool = False) -> str:
    """Content (a string or parts) as text; media in a tool's output becomes a note
    (``omitted_media``), anywhere else a 400."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content parts")
    out = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        note = omitted_media(kind) if tool_output else None
        if note is not None:
            out.append(note)
            continue
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.{i}: content part type {kind!r} is not supported by this text-only model")
        out.append(part["text"])
    return "".join(out)


def input_messages(req: ResponsesRequest, names: ToolNames | None = None, sealer: Sealer | None = None) -> list[dict[str, Any]]:
    """``input`` (and ``instructions``) → chat-shaped messages: a function or custom tool call
    joins the assistant turn it belongs to (under the name the model knows it by, ``names``), its
    output becomes a ``tool`` message, a reasoning item becomes the ``reasoning`` of the assistant
    turn that follows it (kept or dropped by the keep-CoT rule)."""
    items = [{"type": "message", "role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    messages = system + items_messages(items, names if names is not None else ToolNames(), sealer)
    if not any(m["role"] != "system" for m in messages):
        raise bad_request("input: at least one message is required")
    return messages


def items_messages(items: list[Any], names: ToolNames, sealer: Sealer | None = None) -> list[dict[str, Any]]:
    """Items (a request's input, or a response's output) → chat-shaped messages. A reasoning item's
    ``encrypted_content`` is opened with ``sealer`` (its reasoning, sealed by this server)."""
    messages: list[dict[str, Any]] = []
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
        elif kind in ("function_call", "custom_tool_call"):
            name, call_id = item.get("name"), item.get("call_id")
            if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where}: a {kind} needs name and call_id")
            namespace = item.get("namespace")
            if kind == "custom_tool_call":
                args: Any = json.dumps({CUSTOM_INPUT: _text(item.get("input"), f"{where}.input")})
            else:
                args = item.get("arguments", "{}")
                if not isinstance(args, str):
                    args = json.dumps(args)
            model_name = names.model_name(name, namespace if isinstance(namespace, str) else None)
            call = {"id": call_id, "type": "function", "function": {"name": model_name, "arguments": args}}
            assistant_turn().setdefault("tool_calls", []).append(call)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where}.call_id is required")
            output = _text(item.get("output"), f"{where}.output", tool_output=True)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            sealed = item.get("encrypted_content")
            if isinstance(sealed, str) and sealed:
                opened = sealer.open(sealed) if sealer is not None else None
                if opened is None:
                    raise bad_request(f"{where}.encrypted_content was not sealed by this server (or was altered)")
                reasoning.append(opened)
                continue
            parts = item.get("content") or item.get("summary") or []
            reasoning.append(_text(parts, f"{where}.content"))
        else:
            raise bad_request(f"{where}.type: input item type {kind!r} is not supported")
    if reasoning:  # reasoning with no turn after it: nothing to attach it to
        assistant_turn()
    return messages
