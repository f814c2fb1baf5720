"""Liveness and readiness, split as NIM does: /health never depends on the model."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.errors import APIError
from server.jsonio import JSONResponse
from server.state import app_state

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 while the process can serve or is getting there; 503 once its engine has died (the
    process is about to exit for its restart)."""
    state = app_state(request)
    if state.engine_dead:
        raise APIError(503, state.engine_error or "the engine died")
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    problem = app_state(request).not_ready()
    if problem is not None:
        raise APIError(503, problem)
    return JSONResponse({"status": "ready"})
