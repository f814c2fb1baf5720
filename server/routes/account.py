"""The caller's own key and generations: GET /api/v1/key (/api/v1/auth/key) and /api/v1/generation."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from fastapi import APIRouter, Request

from server.errors import APIError, bad_request
from server.routes.common import settings_of

router = APIRouter()


@router.get("/api/v1/key")
@router.get("/api/v1/auth/key")
async def key_info(request: Request) -> dict[str, Any]:
    key = getattr(request.state, "api_key", None)
    if key is None:  # auth is off (loopback dev profile): nothing to limit or report per key
        return {
            "data": {
                "label": "auth disabled",
                "limit": None,
                "limit_remaining": None,
                "usage": 0,
                "is_free_tier": False,
                "rate_limit": None,
            }
        }
    return {"data": await request.app.state.gateway.key_report(key)}


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC).isoformat()
    return str(value)


@router.get("/api/v1/generation")
async def generation(request: Request, id: str | None = None) -> dict[str, Any]:
    if not id:
        raise bad_request("query parameter id is required")
    key = getattr(request.state, "api_key", None)
    gateway = request.app.state.gateway
    rec: dict[str, Any] | None = gateway.pending(id)
    if rec is None:
        row = await asyncio.to_thread(request.app.state.db.record, id)
        rec = {c: getattr(row, c) for c in row.__table__.columns.keys()} if row is not None else None  # noqa: SIM118
    owner = key.id if key is not None else None
    if rec is None or rec["key_id"] != owner:
        raise APIError(404, f"Generation {id} not found")
    latency = rec["latency_ms"]
    ttft = rec["ttft_ms"]
    return {
        "data": {
            "id": rec["id"],
            "created_at": _iso(rec["created_at"]),
            "model": rec["model"],
            "total_cost": rec["cost"],
            "usage": rec["cost"],
            "is_byok": False,
            "upstream_inference_cost": None,
            "provider_name": settings_of(request).provider_name,
            "streamed": rec["streamed"],
            "cancelled": rec["cancelled"],
            "latency": round(ttft) if ttft is not None else None,
            "generation_time": round(latency - (ttft or 0)) if latency is not None else None,
            "finish_reason": rec["finish_reason"],
            "native_finish_reason": rec["native_finish_reason"],
            "tokens_prompt": rec["prompt_tokens"],
            "tokens_completion": rec["completion_tokens"],
            "native_tokens_prompt": rec["prompt_tokens"],
            "native_tokens_completion": rec["completion_tokens"],
            "native_tokens_reasoning": rec["reasoning_tokens"],
            "native_tokens_cached": rec["cached_tokens"],
            "num_media_prompt": None,
            "num_search_results": None,
            "origin": rec["referer"] or "",
            "app_id": None,
            "app_name": rec["title"],
            "api_type": "completions" if rec["route"].endswith("/completions") and "chat" not in rec["route"] else "chat",
            "error": rec["error"],
        }
    }
