"""The FastAPI application: ``create_app(settings, engine=None)``.

The engine starts in the background inside the lifespan so that ``/health`` answers while the
weights load; ``/ready`` turns 200 once the engine has generated a token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from server.batches.runner import BatchRunner
from server.engine.base import EngineClient
from server.errors import ErrorShapes, install_error_handlers
from server.gateway.admission import SharedSlots
from server.gateway.db import Database
from server.hermes.prompt import PromptRenderer
from server.jsonio import JSONResponse
from server.middleware import BodySizeLimit, GatewayMiddleware
from server.routes import account, batches, chat, completions, files, health, keys, messages, models, responses
from server.routes.adapter import Adapter, route_labels
from server.settings import Settings
from server.state import AppState, install_state
from server.tracing import Tracing

log = logging.getLogger("hermes.app")
# How often the engine's health is looked at once it serves.
_ENGINE_WATCH_S = 0.5

# The API surfaces: each module declares itself once (routes/adapter.py); all else derives from it.
ADAPTERS: tuple[Adapter, ...] = (chat.ADAPTER, completions.ADAPTER, responses.ADAPTER, messages.ADAPTER)


def create_app(
    settings: Settings,
    engine: EngineClient | None = None,
    renderer: PromptRenderer | None = None,
    db: Database | None = None,
    shared_slots: SharedSlots | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    database = db if db is not None else Database(settings.database_url)
    state = AppState(
        settings,
        database,
        engine=engine,
        renderer=renderer,
        shared_slots=shared_slots,
        tracing=tracing if tracing is not None else Tracing.from_env(),
    )
    state.api_types = {a.name: a.api_type for a in ADAPTERS}
    errors = ErrorShapes((prefix, a.error_shape) for a in ADAPTERS if a.error_shape is not None for prefix in a.error_prefixes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.engine is None:
            from server.engine.vllm_engine import VLLMEngine

            state.engine = VLLMEngine(settings)
        engine = state.engine
        state.metrics.bind_engine(engine.num_unfinished_requests, engine.kv_cache_usage, engine.queue_counts)
        state.usage.start()
        task = asyncio.create_task(_start(engine))
        watch = asyncio.create_task(_watch(engine))
        runner = None
        if settings.batches.enabled:
            # Every API process runs a runner: together they fill the share.
            share = max(1, int(settings.batches.share * state.admission.max_in_flight / settings.api_processes))
            runner = BatchRunner(app, state, concurrency=share)
            runner.start()
            state.wake_batches = runner.wake
        try:
            yield
        finally:
            state.admission.draining = True
            if runner is not None:  # its unfinished requests go back to the queue, for the next start
                await runner.stop()
            task.cancel()
            watch.cancel()
            await asyncio.gather(task, watch, return_exceptions=True)
            await state.usage.flush()
            await engine.shutdown()
            await asyncio.to_thread(state.tracing.shutdown)  # the spans still queued for export

    async def _start(engine: EngineClient) -> None:
        try:
            if state.renderer is None:
                tok = settings.model.tokenizer or settings.model.resolved_path()
                state.renderer = await asyncio.to_thread(PromptRenderer.from_path, tok, settings.model.revision)
            await engine.start()
            log.info("engine ready: %s (max_model_len=%d)", settings.model.served_name, engine.max_model_len)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.engine_error = f"engine failed to start: {type(exc).__name__}: {exc}"
            log.exception("engine failed to start")
            if state.on_engine_failure is not None:
                state.on_engine_failure()

    async def _watch(engine: EngineClient) -> None:
        """An engine that was serving and is not any more has died (its core process killed,
        out of memory, a GPU fault): vLLM has already ended every request on it with an error.
        Nothing here can bring it back, so the process says so and exits non-zero, for systemd,
        Kubernetes or the supervisor to restart it, rather than answer 503 for good."""
        served = False
        while True:
            await asyncio.sleep(_ENGINE_WATCH_S)
            if engine.ready:
                served = True
            elif served and not state.admission.draining:
                state.engine_error = "the engine stopped (its process died): restarting the server"
                state.engine_dead = True
                log.error("engine died: exiting so the service manager restarts the server")
                if state.on_engine_failure is not None:
                    state.on_engine_failure()
                return

    app = FastAPI(title="hermes-server", version="0.1.0", lifespan=lifespan, default_response_class=JSONResponse)
    install_state(app, state)
    install_error_handlers(app, errors)
    for r in (
        health.router,
        *(a.router for a in ADAPTERS),
        models.router,
        account.router,
        keys.router,
        files.router,
        batches.router,
    ):
        app.include_router(r)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics(_: Request) -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    # Outermost first: the body limit, then keys, limits and admission.
    generation_paths = frozenset(p for a in ADAPTERS for p in a.paths)
    app.add_middleware(
        GatewayMiddleware, state=state, errors=errors, generation_paths=generation_paths, labels=route_labels(ADAPTERS)
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, errors=errors)
    return app
