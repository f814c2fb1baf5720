"""Anthropic Messages adapter: POST /v1/messages and /api/v1/messages, and count_tokens.

A request becomes a plan like chat's (same renderer, reasoning with ``thinking.budget_tokens`` as
the exact budget, tools, grammars); the core's events become content blocks and Anthropic's
stream events (protocol/anthropic_wire.py). Errors are in Anthropic's shape on these routes."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from server.constants import random_id
from server.errors import register_error_shape
from server.hermes.constraints import plan_tools, response_format_constraint
from server.jsonio import JSONResponse
from server.protocol.anthropic_api import MessagesRequest, chat_messages
from server.protocol.anthropic_wire import ContentBlocks, anthropic_error_body, stop_reason, usage_object
from server.routes.common import plan_chat, request_info
from server.serving.events import PIECES, Failure, Finish, KeepAlive, Usage
from server.serving.plan import GenerationPlan
from server.serving.sse import sse, sse_response
from server.state import AppState, app_state

PATHS = ("/v1/messages", "/api/v1/messages")
router = APIRouter()
for _prefix in PATHS:
    register_error_shape(_prefix, anthropic_error_body)


class CountTokensRequest(MessagesRequest):
    max_tokens: int = 1  # count_tokens bodies carry no max_tokens


@router.post(PATHS[0])
@router.post(PATHS[1])
async def create_message(request: Request, req: MessagesRequest) -> Any:
    state = app_state(request)
    plan = await _plan(state, req, request)
    message_id = random_id("msg_", 24)
    headers = {"X-Generation-Id": plan.info.gen_id, "request-id": plan.info.gen_id}
    core = state.core()
    if req.stream:
        return sse_response(_events(state, plan, message_id), headers)
    out = await core.collect(plan)
    blocks = ContentBlocks()
    for piece in out.pieces:
        blocks.feed(piece)
    blocks.close()
    body = _message(message_id, plan, blocks.blocks, out.finish, usage_object(out.usage))
    return JSONResponse(body, headers=headers)


@router.post("/v1/messages/count_tokens")
@router.post("/api/v1/messages/count_tokens")
async def count_tokens(request: Request, req: CountTokensRequest) -> Any:
    """The prompt tokens exactly as a create with the same body would render them."""
    plan = await _plan(app_state(request), req, request)
    return {"input_tokens": len(plan.prompt_ids)}


async def _plan(state: AppState, req: MessagesRequest, request: Request) -> GenerationPlan:
    settings = state.settings
    model = None if any(fnmatch.fnmatchcase(req.model, p) for p in settings.messages.model_patterns) else req.model
    info = request_info(request, model, "messages", req.stream, user=(req.metadata or {}).get("user_id"))
    reasoning = req.reasoning(settings.reasoning.default_enabled)
    tools = plan_tools(req.tool_fields())
    structured = tools.structured or response_format_constraint(req.response_format())
    return await plan_chat(
        state,
        info,
        chat_messages(req),
        req.sampling(),
        max_tokens=req.max_tokens,
        reasoning=reasoning,
        tools=tools,
        structured=structured,
    )


def _message(
    message_id: str, plan: GenerationPlan, content: list[dict[str, Any]], finish: Finish | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": plan.info.model,
        "content": content,
        "stop_reason": stop_reason(finish) if finish is not None else None,
        "stop_sequence": finish.stop_sequence if finish is not None else None,
        "usage": usage,
    }


async def _events(state: AppState, plan: GenerationPlan, message_id: str) -> AsyncIterator[bytes]:
    def event(name: str, fields: dict[str, Any]) -> bytes:
        return sse({"type": name, **fields}, event=name)

    start_usage = {
        "input_tokens": len(plan.prompt_ids),
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    yield event("message_start", {"message": _message(message_id, plan, [], None, start_usage)})
    blocks = ContentBlocks()
    finish: Finish | None = None
    async for batch in state.core().stream(plan):
        for ev in batch:
            if isinstance(ev, PIECES):
                for name, fields in blocks.feed(ev):
                    yield event(name, fields)
            elif isinstance(ev, KeepAlive):
                yield event("ping", {})
            elif isinstance(ev, Finish):
                finish = ev
                for name, fields in blocks.close():
                    yield event(name, fields)
            elif isinstance(ev, Usage):
                assert finish is not None
                delta = {"stop_reason": stop_reason(finish), "stop_sequence": finish.stop_sequence}
                yield event("message_delta", {"delta": delta, "usage": usage_object(ev)})
                yield event("message_stop", {})
            elif isinstance(ev, Failure):
                yield event("error", {"error": anthropic_error_body(ev.error)["error"]})
