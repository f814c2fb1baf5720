"""Batch API, in OpenAI's shape (``/v1/files`` + ``/v1/batches``, JSONL in and out, what the
``openai`` SDK's ``files`` and ``batches`` use) and OpenRouter's (``/api/beta/batches`` and, as
its SDK calls it, ``/api/v1/batches``: requests inline, results inline when done). One store and
one runner behind both (``server/batches/``): a batch answers in the shape it was made in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select

from server.batches.files import result_entry
from server.batches.store import BatchStore
from server.errors import APIError, bad_request, describe_validation_error
from server.gateway.keys import KeyInfo
from server.gateway.tables import BatchRow, GenerationRow, StoredFile
from server.jsonio import JSONResponse
from server.state import AppState, app_state

router = APIRouter()

OPENAI_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
OPENROUTER_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/messages")
_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)h$")
# How a batch's status reads in OpenAI's and OpenRouter's words (expiring: past its window while
# its last requests run).
_STATUS = {"expiring": "in_progress"}


def _key_id(request: Request) -> int | None:
    key: KeyInfo | None = getattr(request.state, "api_key", None)
    if key is not None and key.management:
        raise APIError(403, "A management key cannot run batches")
    return key.id if key is not None else None


def _state(request: Request) -> AppState:
    state = app_state(request)
    if not state.settings.batches.enabled:
        raise APIError(404, "Batches are turned off on this server (batches.enabled)")
    return state


def _window(state: AppState, text: str) -> float:
    m = _WINDOW.match(text)
    hours = float(m.group(1)) if m else 0.0
    if not 0 < hours <= state.settings.batches.max_window_hours:
        raise bad_request(f"completion_window: hours as '24h', at most {state.settings.batches.max_window_hours:g}h")
    return hours


def _ts(value: dt.datetime | None) -> int | None:
    """Unix seconds of a stored (naive UTC) time."""
    return int(value.replace(tzinfo=dt.UTC).timestamp()) if value is not None else None


# ---- OpenAI: files --------------------------------------------------------------------------------
def _file_object(row: StoredFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": len(row.content.encode()),
        "created_at": _ts(row.created_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


@router.post("/v1/files")
@router.post("/api/v1/files")
async def upload_file(request: Request, file: UploadFile, purpose: str = Form(...)) -> dict[str, Any]:
    state, key_id = _state(request), _key_id(request)
    if purpose != "batch":
        raise bad_request("purpose: only 'batch' files are kept by this server")
    data = await file.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request("file: must be UTF-8 JSONL") from exc
    row = await asyncio.to_thread(BatchStore(state.db).add_file, key_id, file.filename or "upload.jsonl", purpose, text)
    return _file_object(row)


@router.get("/v1/files")
@router.get("/api/v1/files")
async def list_files(request: Request, purpose: str | None = None) -> dict[str, Any]:
    state, key_id = _state(request), _key_id(request)
    rows = await asyncio.to_thread(BatchStore(state.db).files, key_id, purpose)
    return {"object": "list", "data": [_file_object(r) for r in rows], "has_more": False}


async def _file(request: Request, file_id: str) -> StoredFile:
    state, key_id = _state(request), _key_id(request)
    row = await asyncio.to_thread(BatchStore(state.db).file, file_id, key_id)
    if row is None:
        raise APIError(404, f"No file with id {file_id}")
    return row


@router.get("/v1/files/{file_id}")
@router.get("/api/v1/files/{file_id}")
async def get_file(request: Request, file_id: str) -> dict[str, Any]:
    return _file_object(await _file(request, file_id))


@router.get("/v1/files/{file_id}/content")
@router.get("/api/v1/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> PlainTextResponse:
    return PlainTextResponse((await _file(request, file_id)).content, media_type="application/jsonl")


@router.delete("/v1/files/{file_id}")
@router.delete("/api/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    state, key_id = _state(request), _key_id(request)
    if not await asyncio.to_thread(BatchStore(state.db).delete_file, file_id, key_id):
        raise APIError(404, f"No file with id {file_id}")
    return {"id": file_id, "object": "file", "deleted": True}


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
    state, key_id = _state(request), _key_id(request)
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
    state, key_id = _state(request), _key_id(request)
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
    return JSONResponse(await _openrouter_object(state, row), status_code=202)


# ---- both shapes: reading, listing, cancelling ---------------------------------------------------------
async def _batch(request: Request, batch_id: str) -> tuple[AppState, BatchRow]:
    state, key_id = _state(request), _key_id(request)
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
    return await _object(state, cancelled)


@router.delete("/api/v1/batches/{batch_id}")
@router.delete("/api/beta/batches/{batch_id}")
async def delete_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """OpenRouter's delete: the batch stops (requests not started are not run); its record stays
    for the accounts."""
    state, row = await _batch(request, batch_id)
    await asyncio.to_thread(BatchStore(state.db).cancel, row.id, row.key_id)
    return {"id": row.id, "object": "batch", "deletion": {"openrouter": "deleted"}}


@router.get("/v1/batches")
@router.get("/api/v1/batches")
@router.get("/api/beta/batches")
async def list_batches(request: Request, limit: int = 20, after: str | None = None) -> dict[str, Any]:
    state, key_id = _state(request), _key_id(request)
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
    finished = _ts(row.finished_at)
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
        "created_at": _ts(row.created_at),
        "in_progress_at": _ts(row.in_progress_at),
        "expires_at": _ts(row.expires_at),
        "finalizing_at": finished,
        "completed_at": finished if status == "completed" else None,
        "failed_at": None,
        "expired_at": finished if status == "expired" else None,
        "cancelling_at": _ts(row.cancelling_at),
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
        "created_at": _ts(row.created_at),
        "expires_at": _ts(row.expires_at),
        "finalized_at": _ts(row.finished_at),
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
