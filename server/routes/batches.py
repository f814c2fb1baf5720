"""Batch API, in OpenAI's shape (``/v1/files`` + ``/v1/batches``, JSONL in and out, what the
``openai`` SDK's ``files`` and ``batches`` use) and OpenRouter's (``/api/beta/batches`` and, as
its SDK calls it, ``/api/v1/batches``: requests inline, results inline when done). One store and
one runner behind both (``server/batches/``): a batch answers in the shape it was made in.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select

from server.batches.files import result_entry
from server.batches.store import BatchStore
from server.errors import APIError, bad_request, describe_validation_error
from server.gateway.tables import BatchRow, GenerationRow
from server.jsonio import JSONResponse
from server.routes.files import batches_state, key_id_of, unix_time
from server.state import AppState

router = APIRouter()

OPENAI_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
OPENROUTER_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/messages")
_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)h$")
# How a batch's status reads in OpenAI's and OpenRouter's words (expiring: past its window while
# its last requests run).
_STATUS = {"expiring": "in_progress"}


def _window(state: AppState, text: str) -> float:
    m = _WINDOW.match(text)
    hours = float(m.group(1)) if m else 0.0
    if not 0 < hours <= state.settings.batches.max_window_hours:
        raise bad_request(f"completion_window: hours as '24h', at most {state.settings.batches.max_window_hours:g}h")
    return hours


# ---- both shapes: creating ------------------------------------------------------------------------
class OpenAIBatch(BaseModel):
    model_config = ConfigDict(extra="allow")
    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


class OpenRouterRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    custom_id: str = Field(min_length=1, max_length=200)
    body: dict[str, Any]


class OpenRouterBatch(BaseModel):
    model_config = ConfigDict(extra="allow")
    endpoint: str
    model: str = Field(min_length=1)
    requests: list[OpenRouterRequest] = Field(min_length=1)
    completion_window: str = "24h"


def _requests_from_jsonl(text: str, endpoint: str, limit: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise bad_request(f"input file line {n}: not JSON") from exc
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str) or not isinstance(item.get("body"), dict):
            raise bad_request(f"input file line {n}: needs custom_id (a string) and body (an object)")
        if item.get("method", "POST") != "POST" or item.get("url") != endpoint:
            raise bad_request(f"input file line {n}: method must be POST and url {endpoint} (the batch's endpoint)")
        out.append((item["custom_id"], item["body"]))
    return _checked(out, limit)


def _checked(requests: list[tuple[str, dict[str, Any]]], limit: int) -> list[tuple[str, dict[str, Any]]]:
    if not requests:
        raise bad_request("a batch needs at least one request")
    if len(requests) > limit:
        raise bad_request(f"a batch holds at most {limit} requests (batches.max_requests)")
    seen: set[str] = set()
    for custom_id, _ in requests:
        if custom_id in seen:
            raise bad_request(f"custom_id {custom_id!r} appears twice: each request needs its own")
        seen.add(custom_id)
    return requests


@router.post("/v1/batches")
async def create_openai_batch(request: Request, body: OpenAIBatch) -> dict[str, Any]:
    return await _create_openai(request, body)


async def _create_openai(request: Request, body: OpenAIBatch) -> dict[str, Any]:
    state, key_id = batches_state(request), key_id_of(request)
    if body.endpoint not in OPENAI_ENDPOINTS:
        raise bad_request(f"endpoint: one of {', '.join(OPENAI_ENDPOINTS)}")
    hours = _window(state, body.completion_window)
    store = BatchStore(state.db)
    source = await asyncio.to_thread(store.file, body.input_file_id, key_id)
    if source is None:
        raise bad_request(f"input_file_id: no file {body.input_file_id}")
    requests = _requests_from_jsonl(source.content, body.endpoint, state.settings.batches.max_requests)
    row = await asyncio.to_thread(
        lambda: store.create(
            key_id=key_id,
            shape="openai",
            endpoint=body.endpoint,
            model=None,
            window_hours=hours,
            requests=requests,
            input_file_id=source.id,
            metadata=body.metadata,
        )
    )
    state.wake_batches()
    return await _openai_object(state, row)


@router.post("/api/beta/batches")
@router.post("/api/v1/batches")
async def create_openrouter_batch(request: Request) -> JSONResponse:
    """OpenRouter's shape (``requests`` inline); on /api/v1 a body with ``input_file_id`` is OpenAI's."""
    try:
        raw = await request.json()
    except ValueError as exc:
        raise bad_request("the body is not JSON") from exc
    openai = isinstance(raw, dict) and "input_file_id" in raw and request.url.path.startswith("/api/v1")
    try:
        parsed = OpenAIBatch.model_validate(raw) if openai else OpenRouterBatch.model_validate(raw)
    except ValidationError as exc:  # the body is read by hand (two shapes on one path): a 400, as FastAPI's would be
        raise bad_request(describe_validation_error(exc)) from exc
    if isinstance(parsed, OpenAIBatch):
        return JSONResponse(await _create_openai(request, parsed))
    body = parsed
    state, key_id = batches_state(request), key_id_of(request)
    if body.endpoint not in OPENROUTER_ENDPOINTS:
        raise bad_request(f"endpoint: one of {', '.join(OPENROUTER_ENDPOINTS)}")
    hours = _window(state, body.completion_window)
    state.resolve_model(body.model)  # 400 for a model this server does not serve
    requests = _checked([(r.custom_id, r.body) for r in body.requests], state.settings.batches.max_requests)
    store = BatchStore(state.db)
    row = await asyncio.to_thread(
        lambda: store.create(
            key_id=key_id, shape="openrouter", endpoint=body.endpoint, model=body.model, window_hours=hours, requests=requests
        )
    )
    state.wake_batches()
    return JSONResponse(await _openrouter_object(state, row), status_code=202)


# ---- both shapes: reading, listing, cancelling ---------------------------------------------------------
async def _batch(request: Request, batch_id: str) -> tuple[AppState, BatchRow]:
    state, key_id = batches_state(request), key_id_of(request)
    row = await asyncio.to_thread(BatchStore(state.db).get, batch_id, key_id)
    if row is None:
        raise APIError(404, f"No batch with id {batch_id}")
    return state, row


async def _object(state: AppState, row: BatchRow) -> dict[str, Any]:
    return await (_openai_object(state, row) if row.shape == "openai" else _openrouter_object(state, row))


@router.get("/v1/batches/{batch_id}")
@router.get("/api/v1/batches/{batch_id}")
@router.get("/api/beta/batches/{batch_id}")
async def get_batch(request: Request, batch_id: str) -> dict[str, Any]:
    state, row = await _batch(request, batch_id)
    return await _object(state, row)


@router.post("/v1/batches/{batch_id}/cancel")
@router.post("/api/v1/batches/{batch_id}/cancel")
@router.post("/api/beta/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> dict[str, Any]:
    state, row = await _batch(request, batch_id)
    cancelled = await asyncio.to_thread(BatchStore(state.db).cancel, row.id, row.key_id)
    assert cancelled is not None
    state.wake_batches()  # a batch with nothing running ends at the runner's next settle
    return await _object(state, cancelled)


@router.delete("/api/v1/batches/{batch_id}")
@router.delete("/api/beta/batches/{batch_id}")
async def delete_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """OpenRouter's delete: the batch stops (requests not started are not run); its record stays
    for the accounts."""
    state, row = await _batch(request, batch_id)
    await asyncio.to_thread(BatchStore(state.db).cancel, row.id, row.key_id)
    state.wake_batches()
    return {"id": row.id, "object": "batch", "deletion": {"openrouter": "deleted"}}


@router.get("/v1/batches")
@router.get("/api/v1/batches")
@router.get("/api/beta/batches")
async def list_batches(request: Request, limit: int = 20, after: str | None = None) -> dict[str, Any]:
    state, key_id = batches_state(request), key_id_of(request)
    shape = "openai" if request.url.path.startswith("/v1/") else "openrouter"
    limit = max(1, min(limit, 100))
    store = BatchStore(state.db)
    rows = await asyncio.to_thread(store.list_batches, key_id, shape, limit + 1, after)
    data = [await _object(state, r) for r in rows[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(rows) > limit,
    }


# ---- the objects ----------------------------------------------------------------------------------
async def _openai_object(state: AppState, row: BatchRow) -> dict[str, Any]:
    counts = await asyncio.to_thread(BatchStore(state.db).counts, row.id)
    status = _STATUS.get(row.status, row.status)
    finished = unix_time(row.finished_at)
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "model": state.settings.model.served_name,
        "errors": None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": unix_time(row.created_at),
        "in_progress_at": unix_time(row.in_progress_at),
        "expires_at": unix_time(row.expires_at),
        "finalizing_at": finished,
        "completed_at": finished if status == "completed" else None,
        "failed_at": None,
        "expired_at": finished if status == "expired" else None,
        "cancelling_at": unix_time(row.cancelling_at),
        "cancelled_at": finished if status == "cancelled" else None,
        "request_counts": {"total": counts.total, "completed": counts.completed, "failed": counts.failed},
        "metadata": json.loads(row.meta) if row.meta else None,
    }


async def _openrouter_object(state: AppState, row: BatchRow) -> dict[str, Any]:
    store = BatchStore(state.db)
    counts = await asyncio.to_thread(store.counts, row.id)
    done = row.finished_at is not None
    results = [result_entry(i) for i in await asyncio.to_thread(store.items, row.id)] if done else None
    if results is not None:
        for r in results:  # OpenRouter's error carries a type and a param
            if r["error"] is not None:
                r["error"] = {"message": r["error"]["message"], "type": r["error"]["code"], "param": None}
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "model": row.model or state.settings.model.served_name,
        "provider": state.settings.provider_name,
        "status": _STATUS.get(row.status, row.status),
        "completion_window": row.completion_window,
        "created_at": unix_time(row.created_at),
        "expires_at": unix_time(row.expires_at),
        "finalized_at": unix_time(row.finished_at),
        "request_counts": {"total": counts.total, "completed": counts.completed, "failed": counts.failed},
        "results": results,
        "usage": await asyncio.to_thread(_usage, state, row.id),
        "error": None,
    }


def _usage(state: AppState, batch_id: str) -> dict[str, Any] | None:
    """The batch's usage so far, from its generations' records."""
    g = GenerationRow
    with state.db.session() as s:
        prompt, completion, cost = s.execute(
            select(func.sum(g.prompt_tokens), func.sum(g.completion_tokens), func.sum(g.cost)).where(g.batch_id == batch_id)
        ).one()
    if prompt is None:
        return None
    return {
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion or 0),
        "total_tokens": int(prompt) + int(completion or 0),
        "cost": float(cost or 0.0),
    }
