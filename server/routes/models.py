"""Model listings: OpenRouter's records under /api/v1, OpenAI's list shape under /v1."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.errors import APIError
from server.protocol.models import endpoints_record, model_record, openai_model
from server.routes.common import settings_of

router = APIRouter()


def _context(request: Request) -> int:
    engine = request.app.state.engine
    return int(engine.max_model_len) if engine is not None else settings_of(request).engine.max_model_len


def _known(request: Request, model_id: str) -> bool:
    return model_id.lower() in {n.lower() for n in settings_of(request).model_names}


@router.get("/api/v1/models")
async def openrouter_models(request: Request) -> dict[str, Any]:
    return {"data": [model_record(settings_of(request), _context(request))], "links": {"next": None}, "total_count": 1}


@router.get("/api/v1/models/{author}/{slug}/endpoints")
async def model_endpoints(request: Request, author: str, slug: str) -> dict[str, Any]:
    if not _known(request, f"{author}/{slug}"):
        raise APIError(404, f"{author}/{slug} is not a valid model ID")
    engine = request.app.state.engine
    ready = bool(engine is not None and engine.ready and not request.app.state.draining)
    perf = request.app.state.stats.snapshot()
    return {"data": endpoints_record(settings_of(request), _context(request), ready, perf)}


@router.get("/v1/models")
async def openai_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [openai_model(settings_of(request), _context(request))]}


@router.get("/v1/models/{model_id:path}")
@router.get("/api/v1/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> dict[str, Any]:
    """OpenAI's ``models.retrieve``; ids contain a slash, hence the path converter."""
    if not _known(request, model_id):
        raise APIError(404, f"{model_id} is not a valid model ID")
    return openai_model(settings_of(request), _context(request))
