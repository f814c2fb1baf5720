"""Chat Completions adapter: POST /v1/chat/completions and /api/v1/chat/completions.

Two jobs only: a ChatRequest becomes a task (``ChatRequest.task``), and the core's events become
OpenRouter's chunks or one body."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import APIRouter, Request

from server.engine.base import TokenLogprob
from server.jsonio import JSONResponse
from server.protocol.openrouter import KEEPALIVE, ChunkEncoder, chat_logprobs, reasoning_details, usage_block
from server.protocol.requests import ChatRequest
from server.routes.adapter import Adapter
from server.routes.common import client_gone, openrouter_info, response_base
from server.serving.core import ServingCore
from server.serving.encode import Collected
from server.serving.events import Piece, ReasoningText, ToolCall
from server.serving.plan import GenerationPlan
from server.state import app_state

PATHS = ("/v1/chat/completions", "/api/v1/chat/completions")
router = APIRouter()

# Streamed tool-call arguments are sent in pieces of this many characters (clients concatenate).
_ARG_PIECE = 32


@router.post(PATHS[0])
@router.post(PATHS[1])
async def chat_completions(request: Request, req: ChatRequest) -> Any:
    state = app_state(request)
    core = state.core()
    plan = await core.plan(req.task(openrouter_info(request, req, ADAPTER.name)))
    generation = await core.open(plan)
    base = response_base(state, plan)
    headers = {"X-Generation-Id": plan.info.gen_id}
    if req.stream:
        enc = ChunkEncoder(base, _ChatChunks(core, plan))
        return generation.sse(generation.stream(enc), headers, KEEPALIVE)
    return JSONResponse(
        _body(core, plan, base, await generation.collect(client_gone(request)), bool(req.logprobs)), headers=headers
    )


def _body(core: ServingCore, plan: GenerationPlan, base: dict[str, Any], out: Collected, want_logprobs: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": out.text if out.text or not out.tool_calls else None,
        "refusal": None,
        "reasoning": out.reasoning or None,
    }
    if out.reasoning:
        message["reasoning_details"] = reasoning_details(out.reasoning)
    if out.tool_calls:
        message["tool_calls"] = [c.openai() for c in out.tool_calls]
    logprobs = chat_logprobs(out.logprobs, plan.top_logprobs, core.renderer.token_bytes) if want_logprobs else None
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": out.finish.reason,
        "native_finish_reason": out.finish.native,
        "logprobs": logprobs,
    }
    return {**base, "object": "chat.completion", "choices": [choice], "usage": usage_block(out.usage)}


class _ChatChunks:
    """Chat chunks: the answer in ``delta``."""

    obj = "chat.completion.chunk"
    empty: ClassVar[dict[str, Any]] = {"delta": {"role": "assistant", "content": ""}}
    error_fields: ClassVar[dict[str, Any]] = {"delta": {"content": ""}}

    def __init__(self, core: ServingCore, plan: GenerationPlan) -> None:
        self.top_n, self.token_bytes = plan.top_logprobs, core.renderer.token_bytes

    def logprobs(self, items: list[TokenLogprob]) -> Any:
        return chat_logprobs(items, self.top_n, self.token_bytes)

    def pieces(self, piece: Piece) -> list[dict[str, Any]]:
        if isinstance(piece, ToolCall):
            c = piece.call
            head = {"index": c.index, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}
            out: list[dict[str, Any]] = [{"delta": {"role": "assistant", "content": None, "tool_calls": [head]}}]
            for i in range(0, len(c.arguments), _ARG_PIECE):
                args = {"index": c.index, "function": {"arguments": c.arguments[i : i + _ARG_PIECE]}}
                out.append({"delta": {"role": "assistant", "tool_calls": [args]}})
            return out
        if isinstance(piece, ReasoningText):
            text = piece.text
            return [
                {"delta": {"role": "assistant", "content": "", "reasoning": text, "reasoning_details": reasoning_details(text)}}
            ]
        return [{"delta": {"role": "assistant", "content": piece.text}}]


ADAPTER = Adapter(name="chat", api_type="completions", paths=PATHS, router=router)
