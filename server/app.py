"""The FastAPI application: ``create_app(settings, engine=None)``.

The engine starts in the background inside the lifespan so that ``/health`` answers while the
weights load; ``/ready`` turns 200 once the engine has generated a token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from server.engine.base import EngineClient
from server.errors import error_body, install_error_handlers
from server.gateway.db import Database
from server.gateway.gateway import Gateway, GatewayMiddleware
from server.gateway.metrics import Metrics
from server.gateway.stats import RecentStats
from server.hermes.prompt import PromptRenderer
from server.routes import account, chat, completions, health, models
from server.settings import Settings

log = logging.getLogger("hermes.app")


class BodySizeLimit:
    """Pure ASGI (no BaseHTTPMiddleware, which would break client-disconnect detection in
    streaming responses): refuse bodies over the limit with 413 before reading them whole."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        too_big = False

        async def limited_receive() -> Any:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_big = True
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Any) -> None:
        import json

        body = json.dumps(error_body(413, f"Request body larger than {self.max_bytes} bytes")).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def fingerprint(settings: Settings) -> str:
    import hashlib

    e = settings.engine
    key = f"{settings.model.resolved_path()}|{settings.model.revision}|{e.dtype}|{e.quantization}|{e.tensor_parallel_size}|{e.pipeline_parallel_size}"
    return "fp_hermes_" + hashlib.sha256(key.encode()).hexdigest()[:10]


def create_app(
    settings: Settings, engine: EngineClient | None = None, renderer: PromptRenderer | None = None, db: Database | None = None
) -> FastAPI:
    metrics = Metrics()
    database = db if db is not None else Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        if state.engine is None:
            from server.engine.vllm_engine import VLLMEngine

            state.engine = VLLMEngine(settings)
        metrics.bind_engine(state.engine.num_unfinished_requests, state.engine.kv_cache_usage)
        state.gateway = Gateway(settings, metrics, database)
        state.gateway.start()
        task = asyncio.create_task(_start(app))
        try:
            yield
        finally:
            state.draining = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await state.gateway.flush()
            await state.engine.shutdown()

    async def _start(app: FastAPI) -> None:
        state = app.state
        try:
            if state.renderer is None:
                tok = settings.model.tokenizer or settings.model.resolved_path()
                state.renderer = await asyncio.to_thread(PromptRenderer.from_path, tok, settings.model.revision)
            await state.engine.start()
            log.info("engine ready: %s (max_model_len=%d)", settings.model.served_name, state.engine.max_model_len)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.engine_error = f"engine failed to start: {type(exc).__name__}: {exc}"
            log.exception("engine failed to start")
            if state.on_engine_failure is not None:
                state.on_engine_failure()

    app = FastAPI(title="hermes-server", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.renderer = renderer
    app.state.metrics = metrics
    app.state.draining = False
    app.state.engine_error = None
    app.state.on_engine_failure = None
    # Identifies the deployment (server version, served model, parallelism) like OpenAI's field.
    app.state.fingerprint = fingerprint(settings)
    app.state.stats = RecentStats()
    app.state.db = database
    app.state.gateway = None
    install_error_handlers(app)
    for r in (health.router, chat.router, completions.router, models.router, account.router):
        app.include_router(r)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics(_: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    # Outermost first: the body limit, then keys, limits and admission.
    app.add_middleware(GatewayMiddleware, state=app.state)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app
