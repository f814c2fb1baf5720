"""OpenRouter's account API: the key API (``/api/v1/keys``, management keys only), credits and
activity. The key operations are ``gateway/key_admin.py``'s, shared with ``hermes-server keys``."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from server.errors import APIError, bad_request
from server.gateway.key_admin import UNSET, KeyAdmin, KeyChange
from server.gateway.key_limits import KeyLimits
from server.gateway.keys import KeyInfo
from server.gateway.tables import ApiKey, GenerationRow
from server.jsonio import JSONResponse
from server.protocol.models import quantization
from server.state import AppState, app_state
from server.timeutil import LIMIT_RESETS, utcnow

router = APIRouter()


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenRouter's other fields (workspace, BYOK) are accepted


class CreateKey(_Body):
    name: str = Field(min_length=1, max_length=200)
    limit: float | None = Field(None, ge=0)
    limit_reset: str | None = None
    expires_at: dt.datetime | None = None


class UpdateKey(_Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    limit: float | None = Field(None, ge=0)
    limit_reset: str | None = None
    disabled: bool | None = None


def _manager(request: Request) -> KeyInfo:
    key: KeyInfo | None = getattr(request.state, "api_key", None)
    if key is None or not key.management:
        raise APIError(401, "This operation needs a management key (hermes-server keys create --management)", reason="auth")
    return key


def _reset(value: str | None) -> str | None:
    if value is not None and value not in LIMIT_RESETS:
        raise bad_request(f"limit_reset: must be one of {', '.join(LIMIT_RESETS)} or null")
    return value


def _expiry(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    naive = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    if naive <= utcnow():
        raise bad_request("expires_at: must be in the future")
    return naive


async def _record(state: AppState, row: ApiKey) -> dict[str, Any]:
    pending = sum(r.cost for r in state.usage.pending_for(row.id))
    return await asyncio.to_thread(KeyAdmin(state.db).record, row, pending)


async def _found(state: AppState, key_hash: str) -> ApiKey:
    row = await asyncio.to_thread(KeyAdmin(state.db).get, key_hash)
    if row is None:
        raise APIError(404, f"No key with hash {key_hash}")
    return row


@router.get("/api/v1/keys")
async def list_keys(request: Request, include_disabled: bool = False, offset: int = 0) -> dict[str, Any]:
    _manager(request)
    state = app_state(request)
    rows = await asyncio.to_thread(KeyAdmin(state.db).list, include_disabled, max(0, offset))
    return {"data": [await _record(state, row) for row in rows]}


@router.post("/api/v1/keys", status_code=201)
async def create_key(request: Request, body: CreateKey) -> Any:
    _manager(request)
    state = app_state(request)
    admin = KeyAdmin(state.db)
    row, key = await asyncio.to_thread(
        lambda: admin.create(
            body.name,
            KeyLimits(credit_limit=body.limit),
            limit_reset=_reset(body.limit_reset),
            expires_at=_expiry(body.expires_at),
        )
    )
    return JSONResponse({"data": await _record(state, row), "key": key}, status_code=201)


@router.get("/api/v1/keys/{key_hash}")
async def get_key(request: Request, key_hash: str) -> dict[str, Any]:
    _manager(request)
    state = app_state(request)
    return {"data": await _record(state, await _found(state, key_hash))}


@router.patch("/api/v1/keys/{key_hash}")
async def update_key(request: Request, key_hash: str, body: UpdateKey) -> dict[str, Any]:
    _manager(request)
    state = app_state(request)
    sent = body.model_fields_set
    change = KeyChange(
        name=body.name if "name" in sent and body.name is not None else UNSET,
        credit_limit=body.limit if "limit" in sent else UNSET,
        limit_reset=_reset(body.limit_reset) if "limit_reset" in sent else UNSET,
        disabled=body.disabled if "disabled" in sent and body.disabled is not None else UNSET,
    )
    row = await asyncio.to_thread(KeyAdmin(state.db).update, key_hash, change)
    if row is None:
        raise APIError(404, f"No key with hash {key_hash}")
    return {"data": await _record(state, row)}


@router.delete("/api/v1/keys/{key_hash}")
async def delete_key(request: Request, key_hash: str) -> dict[str, Any]:
    _manager(request)
    if not await asyncio.to_thread(KeyAdmin(app_state(request).db).delete, key_hash):
        raise APIError(404, f"No key with hash {key_hash}")
    return {"deleted": True}


# ---- credits and activity -------------------------------------------------------------------------
@router.get("/api/v1/credits")
async def credits(request: Request) -> dict[str, Any]:
    """The calling key's credits: its credit limit (a key without one has none to count: its
    usage), and what it has spent (since the last reset, when its limit resets)."""
    key: KeyInfo | None = getattr(request.state, "api_key", None)
    state = app_state(request)
    if key is None:
        return {"data": {"total_credits": 0.0, "total_usage": 0.0}}
    pending = sum(r.cost for r in state.usage.pending_for(key.id))
    spent = await asyncio.to_thread(KeyAdmin(state.db).spend, key.id, pending)
    used = KeyAdmin.counted(spent, key.limit_reset)
    limit = key.limits.credit_limit
    return {"data": {"total_credits": limit if limit is not None else used, "total_usage": used}}


@router.get("/api/v1/activity")
async def activity(request: Request, date: str | None = None, api_key_hash: str | None = None) -> dict[str, Any]:
    """Requests, tokens and cost per UTC day (the last 30), model and endpoint, as OpenRouter's
    activity API returns them: a management key sees every key (or one, by ``api_key_hash``),
    any other key its own."""
    key: KeyInfo | None = getattr(request.state, "api_key", None)
    state = app_state(request)
    day = _day(date)
    key_id: int | None = None
    if key is not None and not key.management:
        key_id = key.id
    elif api_key_hash is not None:
        key_id = (await _found(state, api_key_hash)).id
    rows = await asyncio.to_thread(_activity, state, day, key_id)
    return {"data": rows}


def _day(date: str | None) -> dt.date | None:
    if date is None:
        return None
    try:
        day = dt.date.fromisoformat(date)
    except ValueError as exc:
        raise bad_request("date: a UTC day as YYYY-MM-DD") from exc
    if not utcnow().date() - dt.timedelta(days=30) <= day <= utcnow().date():
        raise bad_request("date: must be within the last 30 days")
    return day


def _activity(state: AppState, day: dt.date | None, key_id: int | None) -> list[dict[str, Any]]:
    g = GenerationRow
    when = func.date(g.created_at)
    since = day if day is not None else utcnow().date() - dt.timedelta(days=30)
    q = (
        select(
            when.label("day"),
            g.model,
            func.count().label("requests"),
            func.sum(g.cost).label("usage"),
            func.sum(g.prompt_tokens).label("prompt"),
            func.sum(g.completion_tokens).label("completion"),
            func.sum(g.reasoning_tokens).label("reasoning"),
            func.sum(g.cached_tokens).label("cached"),
        )
        .where(g.created_at >= dt.datetime.combine(since, dt.time()))
        .group_by(when, g.model)
        .order_by(when.desc(), g.model)
    )
    if day is not None:
        q = q.where(g.created_at < dt.datetime.combine(day + dt.timedelta(days=1), dt.time()))
    if key_id is not None:
        q = q.where(g.key_id == key_id)
    s = state.settings
    endpoint = f"{s.provider_name}/{quantization(s)}"
    with state.db.session() as session:
        return [
            {
                "date": str(r.day),
                "model": r.model,
                "model_permaslug": r.model,
                "endpoint_id": endpoint,
                "provider_name": s.provider_name,
                "usage": float(r.usage or 0.0),
                "byok_usage_inference": 0.0,
                "requests": int(r.requests),
                "prompt_tokens": int(r.prompt or 0),
                "completion_tokens": int(r.completion or 0),
                "reasoning_tokens": int(r.reasoning or 0),
                "cached_tokens": int(r.cached or 0),
            }
            for r in session.execute(q)
        ]
