"""Pieces of OpenRouter's (OpenAI-compatible) chat and completion bodies: plain dicts, straight
to JSON. Shared by the chat and legacy-completions adapters."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

from server.constants import random_id
from server.engine.base import TokenLogprob
from server.errors import APIError
from server.serving.events import Finish, Piece, Usage
from server.serving.sse import SSE_DONE, sse, sse_comment

# OpenRouter's own keep-alive comment: clients and proxies know to skip it.
KEEPALIVE = sse_comment("OPENROUTER PROCESSING")


def generation_id(now: float | None = None) -> str:
    """``gen-<unix>-<20 alphanumerics>``, OpenRouter's id format."""
    return random_id(f"gen-{int(now if now is not None else time.time())}-", 20)


def chat_logprobs(items: list[TokenLogprob], top_n: int, token_bytes: Callable[[int], bytes]) -> dict[str, Any]:
    def entry(token_id: int, token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token_bytes(token_id))}

    content = []
    for it in items:
        e = entry(it.token_id, it.token, it.logprob)
        e["top_logprobs"] = [entry(tid, tok, lp) for tid, tok, lp in it.top[:top_n]]
        content.append(e)
    return {"content": content, "refusal": None}


def completion_logprobs(items: list[TokenLogprob], top_n: int, offset: int) -> dict[str, Any]:
    tokens, token_logprobs, tops, offsets = [], [], [], []
    pos = offset
    for it in items:
        tokens.append(it.token)
        token_logprobs.append(it.logprob)
        tops.append({tok: lp for _, tok, lp in it.top[:top_n]})  # logprobs: 0 → {} per token, never null
        offsets.append(pos)
        pos += len(it.token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def usage_block(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "cost": u.cost,
        "is_byok": False,
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": u.prompt_cost,
            "upstream_inference_completions_cost": u.completion_cost,
        },
    }


def reasoning_details(text: str) -> list[dict[str, Any]]:
    return [{"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}]


def midstream_error(error: APIError, base: dict[str, Any], obj: str, empty_choice: dict[str, Any]) -> dict[str, Any]:
    """OpenRouter's in-band error once a stream's headers are sent: an ``error`` object and a
    choice finishing with ``error`` (HTTP status stays 200)."""
    payload = {**base, "object": obj, **error.body()}
    payload["choices"] = [{"index": 0, **empty_choice, "finish_reason": "error", "native_finish_reason": "error"}]
    return payload


class ChoiceEncoder(Protocol):
    """How one OpenRouter object (chat chunk, completion chunk) carries the answer in its choice."""

    obj: str  # the chunks' "object"
    empty: ClassVar[dict[str, Any]]  # choice fields of a chunk that carries no text (finish, lone logprobs)
    error_fields: ClassVar[dict[str, Any]]  # choice fields of the in-band error chunk

    def pieces(self, piece: Piece) -> list[dict[str, Any]]:
        """Choice fields of the chunks that carry one piece of the answer."""
        ...

    def logprobs(self, items: list[TokenLogprob]) -> Any:
        """The choice's logprobs for these tokens (None: not asked for)."""
        ...


class ChunkEncoder:
    """The serving core's events as OpenRouter SSE chunks (an ``Encoder[bytes]``, see
    ``serving/encode.py``): keep-alive comments, one chunk per piece (a step's logprobs ride on its
    first), a finish chunk, the usage chunk with empty choices and ``[DONE]``; or the in-band error
    chunk and ``[DONE]``. ``choice`` says how the object carries the answer."""

    def __init__(self, base: dict[str, Any], choice: ChoiceEncoder) -> None:
        self.base, self.choice = base, choice

    def _chunk(self, fields: dict[str, Any], logprobs: Any = None, finish: Finish | None = None) -> bytes:
        choice = {
            "index": 0,
            **fields,
            "finish_reason": finish.reason if finish else None,
            "native_finish_reason": finish.native if finish else None,
            "logprobs": logprobs,
        }
        return sse({**self.base, "object": self.choice.obj, "choices": [choice]})

    def piece(self, piece: Piece, logprobs: list[TokenLogprob] | None) -> Iterator[bytes]:
        lp = self.choice.logprobs(logprobs) if logprobs is not None else None
        for fields in self.choice.pieces(piece):
            yield self._chunk(fields, lp)
            lp = None

    def lone_logprobs(self, logprobs: list[TokenLogprob]) -> Iterator[bytes]:
        yield self._chunk(self.choice.empty, self.choice.logprobs(logprobs))

    def keep_alive(self) -> Iterator[bytes]:
        yield KEEPALIVE

    def finish(self, finish: Finish) -> Iterator[bytes]:
        yield self._chunk(self.choice.empty, finish=finish)

    def usage(self, usage: Usage) -> Iterator[bytes]:
        yield sse({**self.base, "object": self.choice.obj, "choices": [], "usage": usage_block(usage)})
        yield SSE_DONE

    def failure(self, error: APIError) -> Iterator[bytes]:
        yield sse(midstream_error(error, self.base, self.choice.obj, self.choice.error_fields))
        yield SSE_DONE
