"""The Anthropic Messages API's output: content blocks built from the serving core's pieces, the
stream events that build them, the message object and Anthropic's error body. One builder serves
streamed and collected answers."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from server.constants import random_id
from server.engine.base import TokenLogprob
from server.errors import APIError, prompt_overflow
from server.serving.events import Finish, Piece, ReasoningText, ToolCall, Usage

Event = tuple[str, dict[str, Any]]  # (event name, data without its "type")
# Streamed tool input is sent in pieces of this many characters (clients concatenate).
_JSON_PIECE = 32


def signature(thinking: str) -> str:
    """An opaque token for a thinking block: clients send it back unchanged; this server ignores it
    (the model's reasoning is not encrypted), so any stable value will do."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


class ContentBlocks:
    """Pieces → content blocks in the order the model produced them: ``thinking``, ``text``,
    ``tool_use`` (one per call). ``omit_thinking`` (``thinking.display: "omitted"``): a thinking
    block keeps an empty ``thinking`` and streams no thinking text, only its signature."""

    def __init__(self, omit_thinking: bool = False) -> None:
        self.blocks: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._omit = omit_thinking
        self._thought: list[str] = []  # the open thinking block's text (signed even when omitted)

    def feed(self, piece: Piece) -> list[Event]:
        index = len(self.blocks)
        if isinstance(piece, ToolCall):
            c = piece.call
            block = {"type": "tool_use", "id": random_id("toolu_", 24), "name": c.name, "input": {}}
            out = [*self.close(), ("content_block_start", {"index": index, "content_block": dict(block)})]
            for i in range(0, len(c.arguments), _JSON_PIECE):
                delta = {"type": "input_json_delta", "partial_json": c.arguments[i : i + _JSON_PIECE]}
                out.append(("content_block_delta", {"index": index, "delta": delta}))
            block["input"] = json.loads(c.arguments)
            self.blocks.append(block)
            return [*out, ("content_block_stop", {"index": index})]
        kind = "thinking" if isinstance(piece, ReasoningText) else "text"
        out = []
        if self._open is None or self._open["type"] != kind:
            out = self.close()
            index = len(self.blocks)
            self._open = (
                {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {"type": "text", "text": ""}
            )
            self.blocks.append(self._open)
            out.append(("content_block_start", {"index": index, "content_block": dict(self._open)}))
        index = len(self.blocks) - 1
        if kind == "thinking":
            self._thought.append(piece.text)
            if self._omit:
                return out
            delta = {"type": "thinking_delta", "thinking": piece.text}
        else:
            delta = {"type": "text_delta", "text": piece.text}
        self._open[kind] += piece.text
        return [*out, ("content_block_delta", {"index": index, "delta": delta})]

    def close(self) -> list[Event]:
        block, self._open = self._open, None
        if block is None:
            return []
        index = len(self.blocks) - 1
        out: list[Event] = []
        if block["type"] == "thinking":
            block["signature"] = signature("".join(self._thought))
            self._thought = []
            out.append(
                ("content_block_delta", {"index": index, "delta": {"type": "signature_delta", "signature": block["signature"]}})
            )
        return [*out, ("content_block_stop", {"index": index})]


class MessageEvents:
    """The core's events as Anthropic's stream events (an ``Encoder[Event]``, see
    ``serving/encode.py``): content blocks, ``ping`` for a keep-alive, ``message_delta`` with the
    stop reason and usage, ``message_stop``; or an ``error`` event. A non-streamed answer replays
    the same events and reads :meth:`message`."""

    def __init__(
        self, message_id: str, model: str, prompt_tokens: int, omit_thinking: bool = False, service_tier: str = "default"
    ) -> None:
        self.id, self.model, self.prompt_tokens = message_id, model, prompt_tokens
        self.service_tier = anthropic_tier(service_tier)
        self.blocks = ContentBlocks(omit_thinking)
        self._finish: Finish | None = None
        self._usage: dict[str, Any] | None = None

    def start(self) -> Event:
        usage = {
            "input_tokens": self.prompt_tokens,
            "output_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "service_tier": self.service_tier,
        }
        return ("message_start", {"message": self.message(usage)})

    def message(self, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        """The message object: as started (empty, with ``usage``), or as finished."""
        finish = self._finish
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks.blocks if usage is None else [],
            "stop_reason": stop_reason(finish) if finish is not None else None,
            "stop_sequence": finish.stop_sequence if finish is not None else None,
            "usage": usage if usage is not None else self._usage,
        }

    def piece(self, piece: Piece, logprobs: list[TokenLogprob] | None) -> list[Event]:
        return self.blocks.feed(piece)

    def lone_logprobs(self, logprobs: list[TokenLogprob]) -> list[Event]:
        return []

    def keep_alive(self) -> list[Event]:
        return [("ping", {})]

    def finish(self, finish: Finish) -> list[Event]:
        self._finish = finish
        return self.blocks.close()

    def usage(self, usage: Usage) -> list[Event]:
        assert self._finish is not None
        self._usage = {**usage_object(usage), "service_tier": self.service_tier}
        delta = {"stop_reason": stop_reason(self._finish), "stop_sequence": self._finish.stop_sequence}
        return [("message_delta", {"delta": delta, "usage": self._usage}), ("message_stop", {})]

    def failure(self, error: APIError) -> list[Event]:
        return [("error", {"error": anthropic_error_body(error)["error"]})]


def stop_reason(finish: Finish) -> str:
    if finish.native == "length":
        return "max_tokens"
    if finish.reason == "tool_calls":
        return "tool_use"
    return "stop_sequence" if finish.stop_sequence is not None else "end_turn"


def anthropic_tier(tier: str) -> str:
    """Anthropic's words for the tier served: priority, or standard."""
    return "priority" if tier == "priority" else "standard"


def usage_object(u: Usage) -> dict[str, Any]:
    """Anthropic counts cache reads apart: input_tokens + cache_read_input_tokens is the prompt."""
    return {
        "input_tokens": u.prompt_tokens - u.cached_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_body(exc: APIError) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(exc.status, "invalid_request_error" if exc.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": anthropic_message(exc)}}


def anthropic_message(exc: APIError) -> str:
    """An over-long prompt in Anthropic's words, which Claude Code parses: from the two counts it
    sizes the compaction it runs before trying again. The largest prompt that fits leaves one
    token for the answer (``max_tokens`` is cut to what is left, never refused)."""
    overflow = prompt_overflow(exc)
    if overflow is None:
        return exc.message
    prompt_tokens, context_length = overflow
    return f"prompt is too long: {prompt_tokens} tokens > {context_length - 1} maximum"
