"""Chat Completions adapter: POST /v1/chat/completions and /api/v1/chat/completions.

Two jobs only: a ChatRequest becomes a generation plan, and the core's events become OpenRouter's
chunks or one body."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import APIRouter, Request

from server.engine.base import StructuredOutput, TokenLogprob
from server.errors import bad_request
from server.hermes.constraints import plan_tools, response_format_constraint
from server.hermes.reasoning import plan_reasoning
from server.jsonio import JSONResponse
from server.protocol.openrouter import chat_logprobs, chunk_stream, reasoning_details, usage_block
from server.protocol.requests import ChatRequest
from server.routes.common import plan_chat, request_info, response_base
from server.serving.core import Collected, ServingCore
from server.serving.events import Piece, ReasoningText, ToolCall
from server.serving.plan import GenerationPlan
from server.serving.sse import sse_response
from server.state import AppState, app_state

PATHS = ("/v1/chat/completions", "/api/v1/chat/completions")
router = APIRouter()

# Streamed tool-call arguments are sent in pieces of this many characters (clients concatenate).
_ARG_PIECE = 32


@router.post(PATHS[0])
@router.post(PATHS[1])
async def chat_completions(request: Request, req: ChatRequest) -> Any:
    state = app_state(request)
    plan = await chat_plan(state, req, request)
    base = response_base(state, plan)
    headers = {"X-Generation-Id": plan.info.gen_id}
    core = state.core()
    if req.stream:
        return sse_response(chunk_stream(core, plan, base, _ChatChunks(core, plan)), headers)
    return JSONResponse(_body(core, plan, base, await core.collect(plan), bool(req.logprobs)), headers=headers)


async def chat_plan(state: AppState, req: ChatRequest, request: Request) -> GenerationPlan:
    settings = state.settings
    info = request_info(request, req.model, "chat", req.stream, user=(req.model_extra or {}).get("user"))
    reasoning = plan_reasoning(req, settings.reasoning.default_enabled)
    tools = plan_tools(req)
    whole = _structured(req)  # the extension constrains the whole output, reasoning included
    structured = whole or tools.structured or response_format_constraint(req.response_format)
    messages = [m.model_dump(exclude_none=True, by_alias=True) for m in req.messages]
    return await plan_chat(
        state,
        info,
        messages,
        req,
        max_tokens=req.max_completion_tokens or req.max_tokens,
        reasoning=reasoning,
        tools=tools,
        structured=structured,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        grammar_covers_reasoning=whole is not None,
    )


def _structured(req: ChatRequest) -> StructuredOutput | None:
    """vLLM-compatible extension ``structured_outputs: {regex | choice | grammar}``: the engine's
    grammar constrains the whole output from the first token."""
    extra = (req.model_extra or {}).get("structured_outputs")
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise bad_request("structured_outputs must be an object")
    if isinstance(extra.get("regex"), str):
        return StructuredOutput(regex=extra["regex"])
    if isinstance(extra.get("choice"), list) and all(isinstance(c, str) for c in extra["choice"]):
        return StructuredOutput(regex="|".join(_regex_escape(c) for c in extra["choice"]))
    if isinstance(extra.get("grammar"), str):
        return StructuredOutput(grammar=extra["grammar"])
    raise bad_request("structured_outputs needs one of regex (string), choice (list of strings), grammar (string)")


def _regex_escape(text: str) -> str:
    return "".join("\\" + ch if ch in r".^$*+?{}[]\|()" else ch for ch in text)


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
