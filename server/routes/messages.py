"""Anthropic Messages adapter: POST /v1/messages and /api/v1/messages, and count_tokens.

A request becomes a task (``MessagesRequest.task``: reasoning with ``thinking.budget_tokens`` as
the exact budget, tools, output format); the core's events become content blocks and Anthropic's
stream events (``MessageEvents`` in protocol/anthropic_wire.py). Errors are in Anthropic's shape
on these routes."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from server.constants import random_id
from server.jsonio import JSONResponse
from server.protocol.anthropic_api import MessagesRequest
from server.protocol.anthropic_wire import Event, MessageEvents, anthropic_error_body
from server.routes.adapter import Adapter
from server.routes.common import client_gone, dropped_tools_header, request_info
from server.serving.sse import sse
from server.state import AppState, app_state
from server.task import Task

PATHS = ("/v1/messages", "/api/v1/messages")
router = APIRouter()


class CountTokensRequest(MessagesRequest):
    max_tokens: int = 1  # count_tokens bodies carry no max_tokens


@router.post(PATHS[0])
@router.post(PATHS[1])
async def create_message(request: Request, req: MessagesRequest) -> Any:
    state = app_state(request)
    core = state.core()
    task = _task(state, req, request)
    plan = await core.plan(task)
    generation = await core.open(plan)
    enc = MessageEvents(random_id("msg_", 24), plan.info.model, len(plan.prompt_ids), req.omit_thinking, plan.service_tier)
    headers = {"X-Generation-Id": plan.info.gen_id, "request-id": plan.info.gen_id, **dropped_tools_header(task)}
    if req.stream:
        return generation.sse(_frames(enc, generation.stream(enc)), headers, _frame(*enc.keep_alive()[0]), first=False)
    await generation.replay(enc, client_gone(request))
    return JSONResponse(enc.message(), headers=headers)


@router.post("/v1/messages/count_tokens")
@router.post("/api/v1/messages/count_tokens")
async def count_tokens(request: Request, req: CountTokensRequest) -> Any:
    """The prompt tokens exactly as a create with the same body would render them. Planned, never
    opened: nothing is generated, so nothing is held against the key's credit."""
    state = app_state(request)
    plan = await state.core().plan(_task(state, req, request))
    return {"input_tokens": len(plan.prompt_ids)}


def _task(state: AppState, req: MessagesRequest, request: Request) -> Task:
    patterns = state.settings.messages.model_patterns
    model = None if any(fnmatch.fnmatchcase(req.model, p) for p in patterns) else req.model
    tier = "default" if req.service_tier == "standard_only" else req.service_tier
    info = request_info(
        request, model, ADAPTER.name, req.stream, req.user_id, session_hint=req.session, service_tier=tier, trace=req.trace
    )
    return req.task(info)


def _frame(name: str, fields: dict[str, Any]) -> bytes:
    return sse({"type": name, **fields}, event=name)


async def _frames(enc: MessageEvents, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    yield _frame(*enc.start())
    async for name, fields in events:
        yield _frame(name, fields)


ADAPTER = Adapter(
    name="messages",
    api_type="messages",
    paths=PATHS,
    router=router,
    error_shape=anthropic_error_body,
    error_prefixes=PATHS,
    sublabels=(("/v1/messages/count_tokens", "count_tokens"), ("/api/v1/messages/count_tokens", "count_tokens")),
)
