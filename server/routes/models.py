"""Model listings: OpenRouter's records under /api/v1, OpenAI's list shape under /v1."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.errors import APIError
from server.protocol.models import endpoints_record, model_record, openai_model
from server.protocol.routing_fields import split_variant
from server.state import app_state

router = APIRouter()


@router.get("/api/v1/models")
async def openrouter_models(request: Request) -> dict[str, Any]:
    state = app_state(request)
    return {"data": [model_record(state.settings, state.context_length())], "links": {"next": None}, "total_count": 1}


@router.get("/api/v1/models/count")
async def model_count(request: Request) -> dict[str, Any]:
    """OpenRouter's count of the models a key can use: this server's one."""
    return {"data": {"count": 1}}


@router.get("/api/v1/models/user")
async def user_models(request: Request) -> dict[str, Any]:
    """OpenRouter's models filtered by the account's provider preferences: the same one model."""
    return await openrouter_models(request)


@router.get("/api/v1/models/{author}/{slug}/endpoints")
async def model_endpoints(request: Request, author: str, slug: str) -> dict[str, Any]:
    state = app_state(request)
    if not state.is_served(f"{author}/{slug}"):
        raise APIError(404, f"{author}/{slug} is not a valid model ID")
    ready = state.not_ready() is None
    return {"data": endpoints_record(state.settings, state.context_length(), ready, state.stats.snapshot())}


@router.get("/v1/models")
async def openai_models(request: Request) -> dict[str, Any]:
    state = app_state(request)
    return {"object": "list", "data": [openai_model(state.settings, state.context_length())]}


@router.get("/v1/models/{model_id:path}")
@router.get("/api/v1/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> dict[str, Any]:
    """OpenAI's ``models.retrieve``; ids contain a slash, hence the path converter (the fixed
    paths above are matched first). A routing variant (``:nitro`` …) names the same model."""
    state = app_state(request)
    if not state.is_served(split_variant(model_id)[0]):
        raise APIError(404, f"{model_id} is not a valid model ID")
    return openai_model(state.settings, state.context_length())
