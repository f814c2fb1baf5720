"""The caller's own key and generations: GET /api/v1/key (/api/v1/auth/key) and /api/v1/generation."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from fastapi import APIRouter, Request

from server.errors import APIError, bad_request
from server.gateway.key_admin import KeyAdmin
from server.gateway.keys import KeyInfo
from server.serving.record import UsageRecord
from server.state import AppState, app_state

router = APIRouter()


@router.get("/api/v1/key")
@router.get("/api/v1/auth/key")
async def key_info(request: Request) -> dict[str, Any]:
    """The caller's key in OpenRouter's shape (every field its SDK requires; what has no meaning
    on a self-hosted server gets its neutral value: 0, null, [], false)."""
    return {"data": await _key_report(app_state(request), getattr(request.state, "api_key", None))}


async def _key_report(state: AppState, key: KeyInfo | None) -> dict[str, Any]:
    spent = {"usage": 0.0, "usage_daily": 0.0, "usage_weekly": 0.0, "usage_monthly": 0.0}
    if key is not None:  # auth off (loopback dev profile): nothing is counted per key
        pending = sum(r.cost for r in state.usage.pending_for(key.id))  # not yet written
        spent = await asyncio.to_thread(KeyAdmin(state.db).spend, key.id, pending)
    counted = KeyAdmin.counted(spent, key.limit_reset if key is not None else None)
    return {
        "label": key.label if key is not None else "auth disabled",
        "limit_reset": key.limit_reset if key is not None else None,
        "include_byok_in_limit": False,
        **spent,
        "byok_usage": 0.0,
        "byok_usage_daily": 0.0,
        "byok_usage_weekly": 0.0,
        "byok_usage_monthly": 0.0,
        "is_free_tier": False,
        "is_management_key": bool(key and key.management),
        "is_provisioning_key": bool(key and key.management),
        "creator_user_id": None,
        "organization_id": None,
        "workspace_id": None,
        "allowed_data_regions": [],
        "budgets": [],
        "effective_budget": None,
        "free_model_daily_requests": {"limit": 0, "remaining": 0, "used": 0},
        "expires_at": None,
        # limit, limit_remaining (since the last reset, when the limit resets), rate_limit
        **state.limits.report(key.limits if key is not None else None, counted),
    }


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC).isoformat()
    return str(value)


# Records from before the API was recorded: OpenRouter's type for chat and legacy completions.
_API_TYPE_BEFORE_RECORDED = "completions"


@router.get("/api/v1/generation")
async def generation(request: Request, id: str | None = None) -> dict[str, Any]:
    if not id:
        raise bad_request("query parameter id is required")
    state = app_state(request)
    key = getattr(request.state, "api_key", None)
    rec: UsageRecord | None = state.usage.pending(id)
    if rec is None:
        row = await asyncio.to_thread(state.db.record, id)
        rec = UsageRecord(**{c: getattr(row, c) for c in UsageRecord.stored_fields()}) if row is not None else None
    owner = key.id if key is not None else None
    if rec is None or rec.key_id != owner:
        raise APIError(404, f"Generation {id} not found")
    latency, ttft = rec.latency_ms, rec.ttft_ms
    return {
        "data": {
            "id": rec.id,
            "created_at": _iso(rec.created_at),
            "model": rec.model,
            "total_cost": rec.cost,
            "usage": rec.cost,
            "is_byok": False,
            "upstream_inference_cost": None,
            "provider_name": state.settings.provider_name,
            "streamed": rec.streamed,
            "cancelled": rec.cancelled,
            "latency": round(ttft) if ttft is not None else None,
            "generation_time": round(latency - (ttft or 0)) if latency is not None else None,
            "finish_reason": rec.finish_reason,
            "native_finish_reason": rec.native_finish_reason,
            "tokens_prompt": rec.prompt_tokens,
            "tokens_completion": rec.completion_tokens,
            "native_tokens_prompt": rec.prompt_tokens,
            "native_tokens_completion": rec.completion_tokens,
            "native_tokens_reasoning": rec.reasoning_tokens,
            "native_tokens_cached": rec.cached_tokens,
            "native_tokens_completion_images": 0,
            "num_media_prompt": 0,
            "num_media_completion": 0,
            "num_input_audio_prompt": 0,
            "num_search_results": 0,
            "num_fetches": 0,
            "web_search_engine": None,
            "origin": rec.referer or "",
            "http_referer": rec.referer,
            "user_agent": rec.user_agent,
            "external_user": rec.external_user,
            "app_id": None,
            "app_name": rec.title,
            "api_type": state.api_types.get(rec.api or "", _API_TYPE_BEFORE_RECORDED),
            "upstream_id": None,
            "cache_discount": rec.cache_discount,
            "moderation_latency": None,
            "service_tier": rec.service_tier,
            "router": None,
            "provider_responses": None,
            "preset_id": None,
            "data_region": "global",
            "workspace_id": None,
            "request_id": None,
            "session_id": rec.session_id,
            "error": rec.error,
        }
    }
