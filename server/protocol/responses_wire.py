"""The Responses API's output: items built from the serving core's pieces, the stream events that
build them (each numbered), and the response object. One builder serves streamed and collected
answers: a collected answer is the same items, with the events dropped."""

from __future__ import annotations

import json
from typing import Any

from server.constants import random_id
from server.errors import CONTEXT_LENGTH_EXCEEDED, APIError, exceeds_context
from server.protocol.responses_tools import CUSTOM_INPUT, ClientTool, ToolNames
from server.protocol.sealed import Sealer
from server.serving.events import Finish, Piece, ReasoningText, ToolCall, Usage

Event = tuple[str, dict[str, Any]]  # (type, fields other than type and sequence_number)


def item_id(prefix: str) -> str:
    return random_id(prefix, 32)


class OutputItems:
    """Pieces → output items in the order the model produced them: consecutive reasoning makes one
    ``reasoning`` item, consecutive text one ``message``, each tool call a ``function_call``."""

    def __init__(self, names: ToolNames | None = None, sealer: Sealer | None = None) -> None:
        """``sealer``: reasoning items also carry their text sealed, as ``encrypted_content``."""
        self.names = names if names is not None else ToolNames()
        self._sealer = sealer
        self.items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._text: list[str] = []

    def feed(self, piece: Piece) -> list[Event]:
        if isinstance(piece, ToolCall):
            return [*self.close(), *self._call(piece)]
        kind = "reasoning" if isinstance(piece, ReasoningText) else "message"
        out = [] if self._open is not None and self._open["type"] == kind else [*self.close(), *self._start(kind)]
        self._text.append(piece.text)
        assert self._open is not None
        at = self._at(self._open)
        if kind == "reasoning":
            out.append(("response.reasoning_text.delta", {**at, "delta": piece.text}))
        else:
            out.append(("response.output_text.delta", {**at, "delta": piece.text, "logprobs": []}))
        return out

    def close(self, status: str = "completed") -> list[Event]:
        """Finish the open item (``incomplete`` when the answer was cut by max_output_tokens)."""
        item, self._open = self._open, None
        if item is None:
            return []
        at = self._at(item)
        text = "".join(self._text)
        self._text = []
        if item["type"] == "reasoning":
            part: dict[str, Any] = {"type": "reasoning_text", "text": text}
            done: Event = ("response.reasoning_text.done", {**at, "text": text})
            if self._sealer is not None:
                item["encrypted_content"] = self._sealer.seal(text)
        else:
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            done = ("response.output_text.done", {**at, "text": text, "logprobs": []})
        item["content"] = [part]
        item["status"] = status
        return [
            done,
            ("response.content_part.done", {**at, "part": part}),
            ("response.output_item.done", {"output_index": at["output_index"], "item": dict(item)}),
        ]

    def _at(self, item: dict[str, Any]) -> dict[str, Any]:
        """Where a content event belongs: the item (always the newest) and its one part."""
        return {"item_id": item["id"], "output_index": len(self.items) - 1, "content_index": 0}

    def _start(self, kind: str) -> list[Event]:
        if kind == "reasoning":
            item: dict[str, Any] = {
                "id": item_id("rs_"),
                "type": "reasoning",
                "summary": [],
                "content": [],
                "status": "in_progress",
            }
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = {"id": item_id("msg_"), "type": "message", "role": "assistant", "status": "in_progress", "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self.items.append(item)
        self._open = item
        at = self._at(item)
        return [
            ("response.output_item.added", {"output_index": at["output_index"], "item": {**item, "content": []}}),
            ("response.content_part.added", {**at, "part": part}),
        ]

    def _call(self, piece: ToolCall) -> list[Event]:
        """A call, named as the client knows the tool: a ``function_call`` (with its ``namespace``
        when the tool was in one) or, for a custom tool, a ``custom_tool_call`` with its input."""
        c = piece.call
        tool = self.names.client.get(c.name, ClientTool(c.name))
        item: dict[str, Any] = {"id": item_id("fc_" if not tool.custom else "ctc_"), "call_id": c.id, "name": tool.name}
        if tool.namespace is not None:
            item["namespace"] = tool.namespace
        if tool.custom:
            item.update(type="custom_tool_call", input="", status="in_progress")
            field, value, kind = "input", _custom_input(c.arguments), "custom_tool_call_input"
        else:
            item.update(type="function_call", arguments="", status="in_progress")
            field, value, kind = "arguments", c.arguments, "function_call_arguments"
        self.items.append(item)
        index = len(self.items) - 1
        at = {"item_id": item["id"], "output_index": index}
        added: Event = ("response.output_item.added", {"output_index": index, "item": dict(item)})
        item.update({field: value, "status": "completed"})
        done = {**at, field: value} if tool.custom else {**at, "name": tool.name, "arguments": value}
        return [
            added,
            (f"response.{kind}.delta", {**at, "delta": value}),
            (f"response.{kind}.done", done),
            ("response.output_item.done", {"output_index": index, "item": dict(item)}),
        ]


def _custom_input(arguments: str) -> str:
    """A custom tool's input from the call's arguments (``{"input": "..."}``; anything else whole)."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get(CUSTOM_INPUT), str):
        return str(parsed[CUSTOM_INPUT])
    return arguments


def usage_object(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
        "cost": u.cost,
        "is_byok": False,
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_input_cost": u.prompt_cost,
            "upstream_inference_output_cost": u.completion_cost,
        },
    }


def finished_status(finish: Finish) -> tuple[str, dict[str, Any] | None]:
    """(status, incomplete_details) of a response that ran to its end."""
    if finish.native == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def error_object(error: APIError) -> dict[str, Any]:
    """A failed response's ``error``, with one of the codes both OpenAI's and OpenRouter's
    Responses APIs define (their SDKs type it): a timeout is a ``server_error`` there, as is an
    engine failure; any other refusal an ``invalid_prompt``."""
    if error.status == 429:
        code = "rate_limit_exceeded"
    elif error.status >= 500 or error.status == 408:
        code = "server_error"
    else:
        code = "invalid_prompt"
    return {"code": code, "message": error.message}


# OpenRouter's canonical error types (its SDK's ``APIErrorType``) by status, for what the lossy
# ``code`` above cannot tell apart.
_ERROR_TYPES = {
    400: "invalid_request",
    401: "authentication",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    413: "payload_too_large",
    429: "rate_limit_exceeded",
    503: "provider_unavailable",
}


def error_type(error: APIError) -> str:
    """The ``error_type`` OpenRouter puts beside ``error`` on a failed response."""
    if exceeds_context(error):
        return CONTEXT_LENGTH_EXCEEDED
    return _ERROR_TYPES.get(error.status, "server" if error.status >= 500 else "invalid_request")


def openai_error_body(exc: APIError) -> dict[str, Any]:
    """OpenAI's error shape (the Responses routes under /v1)."""
    kinds = {
        401: "authentication_error",
        402: "insufficient_quota",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }
    kind = "server_error" if exc.status >= 500 else kinds.get(exc.status, "invalid_request_error")
    # OpenAI's code for a prompt that does not fit (Codex CLI reads it: "ran out of room in the
    # model's context window", and its context counts as full); the status otherwise.
    code = CONTEXT_LENGTH_EXCEEDED if exceeds_context(exc) else str(exc.status)
    return {"error": {"message": exc.message, "type": kind, "param": None, "code": code}}
