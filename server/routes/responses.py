"""Responses API adapter: POST /v1/responses and /api/v1/responses; GET and DELETE
/v1/responses/{id} for stored responses.

A request becomes a task (``ResponsesRequest.task``); the core's events become output items and
numbered stream events (``_Turn``, with protocol/responses_wire.py).
Stateless by default, like OpenRouter; with ``responses.store`` on, ``store: true`` keeps the
response and its conversation in the database for ``previous_response_id``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from server.engine.base import TokenLogprob
from server.errors import APIError, bad_request
from server.gateway.tables import StoredResponse
from server.jsonio import JSONResponse
from server.protocol.openrouter import KEEPALIVE
from server.protocol.responses_api import ResponsesRequest, input_messages, items_messages
from server.protocol.responses_tools import ToolNames
from server.protocol.responses_wire import (
    Event,
    OutputItems,
    error_object,
    error_type,
    finished_status,
    item_id,
    openai_error_body,
    usage_object,
)
from server.protocol.sealed import INCLUDE as INCLUDE_SEALED
from server.protocol.sealed import Sealer
from server.routes.adapter import Adapter
from server.routes.common import client_gone, dropped_tools_header, openrouter_info
from server.serving.events import Finish, Piece, Usage
from server.serving.plan import GenerationPlan
from server.serving.sse import sse
from server.state import AppState, app_state
from server.timeutil import utcnow

PATHS = ("/v1/responses", "/api/v1/responses")
router = APIRouter()


class _Turn:
    """One request's answer being built (an ``Encoder[Event]``, see ``serving/encode.py``): its
    output items, its response object, and what to store. A non-streamed answer replays the same
    events and reads :attr:`final`."""

    def __init__(
        self,
        state: AppState,
        req: ResponsesRequest,
        plan: GenerationPlan,
        history: list[dict[str, Any]],
        names: ToolNames,
        sealer: Sealer | None,
    ) -> None:
        self.state, self.req, self.plan, self.history = state, req, plan, history
        self.id = item_id("resp_")
        self.created_at = int(plan.info.created)
        self.items = OutputItems(names, sealer if INCLUDE_SEALED in (req.include or []) else None)
        self._finish: Finish | None = None
        self.final: dict[str, Any] | None = None  # the finished response

    def response(self, status: str, usage: Usage | None = None, **extra: Any) -> dict[str, Any]:
        req, options = self.req, self.plan.options
        reasoning = req.reasoning.model_dump(exclude_none=True) if req.reasoning is not None else None
        fmt = req.text.format.model_dump(by_alias=True, exclude_none=True) if req.text and req.text.format else {"type": "text"}
        tool_choice = req.tool_choice or "auto"
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
            "service_tier": self.plan.service_tier,
            "prompt_cache_key": req.prompt_cache_key,
            "usage": usage_object(usage) if usage is not None else None,
            **extra,
        }

    # ---- the encoder ---------------------------------------------------------------------------
    def piece(self, piece: Piece, logprobs: list[TokenLogprob] | None) -> list[Event]:
        return self.items.feed(piece)

    def lone_logprobs(self, logprobs: list[TokenLogprob]) -> list[Event]:
        return []

    def keep_alive(self) -> list[Event]:
        return []  # the SSE writer sends OpenRouter's keep-alive comment, unnumbered

    def finish(self, finish: Finish) -> list[Event]:
        """Finish the open output item with the response's own status (incomplete when cut)."""
        self._finish = finish
        return self.items.close(finished_status(finish)[0])

    def usage(self, usage: Usage) -> list[Event]:
        assert self._finish is not None
        status, incomplete = finished_status(self._finish)
        self.final = self.response(status, usage, incomplete_details=incomplete, completed_at=int(utcnow().timestamp()))
        return [("response." + status, {"response": self.final})]

    def failure(self, error: APIError) -> list[Event]:
        failed = self.response("failed", error=error_object(error), error_type=error_type(error))
        return [*self.items.close("incomplete"), ("response.failed", {"response": failed})]

    async def keep(self) -> None:
        """Store the finished response and the conversation through it, when asked and allowed."""
        settings = self.state.settings.responses
        if self.final is None or not (self.req.store and settings.store):
            return
        turn = items_messages(self.items.items, self.items.names)  # the output, as the next turn's history
        row = StoredResponse(
            id=self.id,
            key_id=self.plan.info.key_id,
            expires_at=utcnow() + dt.timedelta(hours=settings.ttl_hours),
            response=json.dumps(self.final),
            history=json.dumps([*self.history, *turn]),
        )
        await asyncio.to_thread(self.state.db.store_response, row)


@router.post(PATHS[0])
@router.post(PATHS[1])
async def create_response(request: Request, req: ResponsesRequest) -> Any:
    state = app_state(request)
    core = state.core()
    history = await _previous_history(state, request, req.previous_response_id)
    names = req.tool_names()
    sealer = await state.reasoning_sealer()
    conversation = [*history, *input_messages(req.model_copy(update={"instructions": None}), names, sealer)]
    info = openrouter_info(request, req, ADAPTER.name, session_header="session-id")  # Codex: session-id header
    task = req.task(info, conversation, names)
    plan = await core.plan(task)
    generation = await core.open(plan)
    turn = _Turn(state, req, plan, conversation, names, sealer)
    headers = {"X-Generation-Id": plan.info.gen_id, **dropped_tools_header(task)}
    if req.stream:
        return generation.sse(_frames(turn, generation.stream(turn)), headers, KEEPALIVE, first=False)
    await generation.replay(turn, client_gone(request))
    await turn.keep()
    return JSONResponse(turn.final, headers=headers)


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


async def _frames(turn: _Turn, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    """The response's events, numbered, as SSE; the response is stored once it is sent whole."""
    seq = 0

    def frame(kind: str, fields: dict[str, Any]) -> bytes:
        nonlocal seq
        seq += 1
        return sse({"type": kind, "sequence_number": seq - 1, **fields}, event=kind)

    yield frame("response.created", {"response": turn.response("in_progress")})
    yield frame("response.in_progress", {"response": turn.response("in_progress")})
    async for kind, fields in events:
        yield frame(kind, fields)
    await turn.keep()


ADAPTER = Adapter(
    name="responses",
    api_type="responses",
    paths=PATHS,
    router=router,
    error_shape=openai_error_body,
    error_prefixes=("/v1/responses",),  # OpenRouter's shape stays on /api/v1
)
