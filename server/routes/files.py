"""The Batch API's files, in OpenAI's shape (``/v1/files``, also under ``/api/v1``): JSONL
uploaded for a batch, read back, deleted; and what every Batch API route checks first (batches
are on, the key may run them)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse

from server.batches.store import BatchStore
from server.errors import APIError, bad_request
from server.gateway.keys import KeyInfo
from server.gateway.tables import StoredFile
from server.state import AppState, app_state

router = APIRouter()


def key_id_of(request: Request) -> int | None:
    key: KeyInfo | None = getattr(request.state, "api_key", None)
    if key is not None and key.management:
        raise APIError(403, "A management key cannot run batches")
    return key.id if key is not None else None


def batches_state(request: Request) -> AppState:
    state = app_state(request)
    if not state.settings.batches.enabled:
        raise APIError(404, "Batches are turned off on this server (batches.enabled)")
    return state


def unix_time(value: dt.datetime | None) -> int | None:
    """Unix seconds of a stored (naive UTC) time."""
    return int(value.replace(tzinfo=dt.UTC).timestamp()) if value is not None else None


def _file_object(row: StoredFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": len(row.content.encode()),
        "created_at": unix_time(row.created_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


@router.post("/v1/files")
@router.post("/api/v1/files")
async def upload_file(request: Request, file: UploadFile, purpose: str = Form(...)) -> dict[str, Any]:
    state, key_id = batches_state(request), key_id_of(request)
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
    state, key_id = batches_state(request), key_id_of(request)
    rows = await asyncio.to_thread(BatchStore(state.db).files, key_id, purpose)
    return {"object": "list", "data": [_file_object(r) for r in rows], "has_more": False}


async def _file(request: Request, file_id: str) -> StoredFile:
    state, key_id = batches_state(request), key_id_of(request)
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
    state, key_id = batches_state(request), key_id_of(request)
    if not await asyncio.to_thread(BatchStore(state.db).delete_file, file_id, key_id):
        raise APIError(404, f"No file with id {file_id}")
    return {"id": file_id, "object": "file", "deleted": True}
