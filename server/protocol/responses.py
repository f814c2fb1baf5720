"""Response and chunk builders in OpenRouter's shapes (plain dicts: they go straight to JSON)."""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Callable
from typing import Any

from server.engine.base import TokenLogprob

_ALNUM = string.ascii_letters + string.digits

# OpenRouter normalises finish reasons; the engine's own word goes to native_finish_reason.
_FINISH = {"stop": "stop", "length": "length", "abort": "stop", "tool_calls": "tool_calls", "error": "error"}


def generation_id(now: float | None = None) -> str:
    """``gen-<unix>-<20 alphanumerics>``, OpenRouter's id format."""
    ts = int(now if now is not None else time.time())
    return f"gen-{ts}-" + "".join(secrets.choice(_ALNUM) for _ in range(20))


def normalise_finish(native: str | None) -> str | None:
    if native is None:
        return None
    return _FINISH.get(native, native)


def finish_reason(native: str | None, tool_calls: int = 0) -> str | None:
    """OpenRouter's finish reason: ``tool_calls`` when a turn that stopped made calls."""
    return "tool_calls" if tool_calls and native == "stop" else normalise_finish(native)


def sse(payload: dict[str, Any]) -> str:
    return "data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n\n"


SSE_DONE = "data: [DONE]\n\n"


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
        tops.append({tok: lp for _, tok, lp in it.top[:top_n]} if top_n else None)
        offsets.append(pos)
        pos += len(it.token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def usage_block(
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    price_prompt: float = 0.0,
    price_completion: float = 0.0,
) -> dict[str, Any]:
    prompt_cost = prompt_tokens * price_prompt
    completion_cost = completion_tokens * price_completion
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "cost": round(prompt_cost + completion_cost, 12),
        "is_byok": False,
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": round(prompt_cost, 12),
            "upstream_inference_completions_cost": round(completion_cost, 12),
        },
    }


def reasoning_details(text: str) -> list[dict[str, Any]]:
    return [{"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}]


KEEPALIVE = ": OPENROUTER PROCESSING\n\n"
