"""Pieces every generation route shares: body parsing, model resolution, readiness."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from server.engine.base import EngineClient
from server.errors import APIError, bad_request, describe_validation_error
from server.hermes.prompt import PromptRenderer
from server.protocol.responses import generation_id
from server.settings import Settings

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(describe_validation_error(exc)) from exc


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def check_model(request: Request, model: str | None) -> str:
    """The id echoed back; omitted → the served id; unknown → 400 like OpenRouter."""
    settings = settings_of(request)
    if model is None or model == "":
        return settings.model.served_name
    names = {n.lower() for n in settings.model_names}
    if model.lower() not in names:
        raise bad_request(f"{model} is not a valid model ID")
    return settings.model.served_name


def engine_of(request: Request) -> tuple[EngineClient, PromptRenderer]:
    state: Any = request.app.state
    engine: EngineClient | None = state.engine
    renderer: PromptRenderer | None = state.renderer
    if engine is None or renderer is None or not engine.ready or state.draining:
        raise APIError(503, "The model is not ready to serve requests yet" if not state.draining else "Server is shutting down")
    return engine, renderer


def response_base(request: Request, model: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """A new generation id, the fields every response and chunk repeats, and the id header."""
    gen_id = generation_id()
    base = {
        "id": gen_id,
        "created": int(time.time()),
        "model": model,
        "provider": settings_of(request).provider_name,
        "system_fingerprint": request.app.state.fingerprint,
    }
    return gen_id, base, {"X-Generation-Id": gen_id}


def sse_response(events: AsyncIterator[str], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def gateway_context(request: Request, streamed: bool) -> dict[str, Any]:
    """What a Generation needs for limits, drain, endpoint figures and its usage record."""
    key = getattr(request.state, "api_key", None)
    h = request.headers
    return {
        "gateway": request.app.state.gateway,
        "stats": request.app.state.stats,
        "timeout": settings_of(request).gateway.request_timeout_seconds,
        "meta": {
            "key_id": key.id if key is not None else None,
            "route": request.url.path,
            "streamed": streamed,
            "referer": h.get("http-referer") or h.get("referer"),
            "title": h.get("x-title") or h.get("x-openrouter-title"),
        },
    }
