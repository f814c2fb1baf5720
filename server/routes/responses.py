"""Responses API adapter: POST /v1/responses and /api/v1/responses; GET and DELETE
/v1/responses/{id} for stored responses.

A request becomes a plan like chat's (same renderer, reasoning, tools, grammars, budget); the
core's events become output items and numbered stream events (protocol/responses_wire.py).
Stateless by default, like OpenRouter; with ``responses.store`` on, ``store: true`` keeps the
response and its conversation in the database for ``previous_response_id``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from server.errors import APIError, bad_request, register_error_shape
from server.gateway.db import StoredResponse
from server.hermes.constraints import plan_tools, response_format_constraint
from server.hermes.reasoning import plan_reasoning
from server.jsonio import JSONResponse
from server.protocol.openrouter import KEEPALIVE
from server.protocol.responses_api import FunctionChoice, ResponsesRequest, input_messages
from server.protocol.responses_wire import (
    Event,
    OutputItems,
    error_object,
    finished_status,
    item_id,
    openai_error_body,
    usage_object,
)
from server.routes.common import plan_chat, request_info
from server.serving.events import PIECES, Failure, Finish, KeepAlive, Usage
from server.serving.plan import GenerationPlan
from server.serving.sse import sse, sse_response
from server.state import AppState, app_state
from server.timeutil import utcnow

PATHS = ("/v1/responses", "/api/v1/responses")
router = APIRouter()
register_error_shape("/v1/responses", openai_error_body)  # OpenRouter's shape stays on /api/v1


class _Turn:
    """One request's answer being built: its response object and what to store."""

    def __init__(self, state: AppState, req: ResponsesRequest, plan: GenerationPlan, history: list[dict[str, Any]]) -> None:
        self.state, self.req, self.plan, self.history = state, req, plan, history
        self.id = item_id("resp_")
        self.created_at = int(plan.info.created)
        self.items = OutputItems()

    def response(self, status: str, usage: Usage | None = None, **extra: Any) -> dict[str, Any]:
        req, options = self.req, self.plan.options
        reasoning = req.reasoning.model_dump(exclude_none=True) if req.reasoning is not None else None
        fmt = req.text.format.model_dump(by_alias=True, exclude_none=True) if req.text and req.text.format else {"type": "text"}
        choice = req.tool_choice
        tool_choice: Any = choice.model_dump() if isinstance(choice, FunctionChoice) else (choice or "auto")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.plan.info.model,
            "output": self.items.items,
            "error": None,
            "incomplete_details": None,
            "instructions": req.instructions,
            "metadata": req.metadata or {},
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "top_k": options.top_k,
            "frequency_penalty": options.frequency_penalty,
            "presence_penalty": options.presence_penalty,
            "tool_choice": tool_choice,
            "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
            "max_output_tokens": req.max_output_tokens,
            "previous_response_id": req.previous_response_id,
            "reasoning": reasoning,
            "text": {"format": fmt},
            "truncation": "disabled",
            "store": bool(req.store and self.state.settings.responses.store),
            "user": req.user,
            "usage": usage_object(usage) if usage is not None else None,
            **extra,
        }

    def close_items(self, finish: Finish) -> list[Event]:
        """Finish the open output item with the response's own status (incomplete when cut)."""
        return self.items.close(finished_status(finish)[0])

    def finished(self, finish: Finish, usage: Usage) -> dict[str, Any]:
        status, incomplete = finished_status(finish)
        return self.response(status, usage, incomplete_details=incomplete, completed_at=int(utcnow().timestamp()))

    async def keep(self, body: dict[str, Any]) -> None:
        """Store the response and the conversation through it, when asked and allowed."""
        settings = self.state.settings.responses
        if not (self.req.store and settings.store):
            return
        turn = _assistant_turn(self.items.items)
        row = StoredResponse(
            id=self.id,
            key_id=self.plan.info.key_id,
            expires_at=utcnow() + dt.timedelta(hours=settings.ttl_hours),
            response=json.dumps(body),
            history=json.dumps([*self.history, *([turn] if turn else [])]),
        )
        await asyncio.to_thread(self.state.db.store_response, row)


@router.post(PATHS[0])
@router.post(PATHS[1])
async def create_response(request: Request, req: ResponsesRequest) -> Any:
    state = app_state(request)
    history = await _previous_history(state, request, req.previous_response_id)
    conversation = [*history, *input_messages(req.model_copy(update={"instructions": None}))]
    turn = await _plan(state, req, request, conversation)
    headers = {"X-Generation-Id": turn.plan.info.gen_id}
    core = state.core()
    if req.stream:
        return sse_response(_events(turn), headers)
    out = await core.collect(turn.plan)
    for piece in out.pieces:
        turn.items.feed(piece)
    turn.close_items(out.finish)
    body = turn.finished(out.finish, out.usage)
    await turn.keep(body)
    return JSONResponse(body, headers=headers)


async def _plan(state: AppState, req: ResponsesRequest, request: Request, conversation: list[dict[str, Any]]) -> _Turn:
    settings = state.settings
    info = request_info(request, req.model, "responses", req.stream, user=req.user)
    reasoning = plan_reasoning(req, settings.reasoning.default_enabled)
    tools = plan_tools(req.chat_tools())
    structured = tools.structured or response_format_constraint(req.response_format())
    messages = ([{"role": "system", "content": req.instructions}] if req.instructions else []) + conversation
    plan = await plan_chat(
        state, info, messages, req, max_tokens=req.max_output_tokens, reasoning=reasoning, tools=tools, structured=structured
    )
    return _Turn(state, req, plan, conversation)


async def _previous_history(state: AppState, request: Request, previous: str | None) -> list[dict[str, Any]]:
    if previous is None:
        return []
    if not state.settings.responses.store:
        raise bad_request("previous_response_id needs stored responses, which this server does not keep (responses.store)")
    row = await _owned(state, request, previous)
    history: list[dict[str, Any]] = json.loads(row.history)
    return history


async def _owned(state: AppState, request: Request, response_id: str) -> StoredResponse:
    """A stored response of the caller's own key; anything else is 404 (never 403: ids of other
    keys' responses are not confirmed to exist)."""
    row = await asyncio.to_thread(state.db.stored_response, response_id) if state.settings.responses.store else None
    key = getattr(request.state, "api_key", None)
    if row is None or row.key_id != (key.id if key is not None else None):
        raise APIError(404, f"Response with id '{response_id}' not found.")
    return row


@router.get("/v1/responses/{response_id}")
@router.get("/api/v1/responses/{response_id}")
async def get_response(request: Request, response_id: str) -> Any:
    row = await _owned(app_state(request), request, response_id)
    return JSONResponse(json.loads(row.response))


@router.delete("/v1/responses/{response_id}")
@router.delete("/api/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> Any:
    state = app_state(request)
    await _owned(state, request, response_id)
    await asyncio.to_thread(state.db.delete_response, response_id)
    return {"id": response_id, "object": "response", "deleted": True}


def _assistant_turn(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The response's output as a chat-shaped assistant message (the history a continuation renders)."""
    text = "".join(p["text"] for it in items if it["type"] == "message" for p in it["content"])
    reasoning = "".join(p["text"] for it in items if it["type"] == "reasoning" for p in it["content"])
    calls = [
        {"id": it["call_id"], "type": "function", "function": {"name": it["name"], "arguments": it["arguments"]}}
        for it in items
        if it["type"] == "function_call"
    ]
    if not (text or reasoning or calls):
        return None
    turn: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning:
        turn["reasoning"] = reasoning
    if calls:
        turn["tool_calls"] = calls
    return turn


async def _events(turn: _Turn) -> AsyncIterator[bytes]:
    seq = 0

    def event(kind: str, fields: dict[str, Any]) -> bytes:
        nonlocal seq
        seq += 1
        return sse({"type": kind, "sequence_number": seq - 1, **fields}, event=kind)

    yield event("response.created", {"response": turn.response("in_progress")})
    yield event("response.in_progress", {"response": turn.response("in_progress")})
    finish: Finish | None = None
    async for batch in turn.state.core().stream(turn.plan):
        for ev in batch:
            if isinstance(ev, PIECES):
                for kind, fields in turn.items.feed(ev):
                    yield event(kind, fields)
            elif isinstance(ev, KeepAlive):
                yield KEEPALIVE
            elif isinstance(ev, Finish):
                finish = ev
                for kind, fields in turn.close_items(ev):
                    yield event(kind, fields)
            elif isinstance(ev, Usage):
                assert finish is not None
                body = turn.finished(finish, ev)
                yield event("response." + body["status"], {"response": body})
                await turn.keep(body)
            elif isinstance(ev, Failure):
                for kind, fields in turn.items.close("incomplete"):
                    yield event(kind, fields)
                yield event("response.failed", {"response": turn.response("failed", error=error_object(ev.error))})
