"""The application's state, typed: settings, engine, renderer, gateway parts and figures, with
the one readiness check and the one model-name check every route uses."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request

from server.engine.base import EngineClient
from server.errors import APIError, bad_request
from server.gateway.admission import Admission, SharedSlots
from server.gateway.db import Database
from server.gateway.keys import KeyStore
from server.gateway.limits import Limits
from server.gateway.metrics import Metrics
from server.gateway.stats import RecentStats
from server.gateway.usage import UsageLog
from server.hermes.prompt import PromptRenderer
from server.protocol.routing_fields import split_variant
from server.protocol.sealed import Sealer, new_key
from server.serving.affinity import ReplicaRouter
from server.serving.core import ServingCore
from server.serving.plan import GenerationPlan
from server.serving.planning import PlanDefaults
from server.serving.record import Stoppable, UsageRecord
from server.settings import Pricing, Settings
from server.tracing import Tracing


def fingerprint(settings: Settings) -> str:
    """Identifies the deployment (served model, precision, parallelism), like OpenAI's field."""
    e = settings.engine
    key = f"{settings.model.resolved_path()}|{settings.model.revision}|{e.dtype}|{e.quantization}|{e.tensor_parallel_size}|{e.pipeline_parallel_size}"
    return "fp_hermes_" + hashlib.sha256(key.encode()).hexdigest()[:10]


@dataclass
class AppState:
    settings: Settings
    db: Database
    engine: EngineClient | None = None
    renderer: PromptRenderer | None = None
    metrics: Metrics = field(default_factory=Metrics)
    tracing: Tracing = field(default_factory=lambda: Tracing(None))  # the app's: from the OTEL_* variables
    stats: RecentStats = field(default_factory=RecentStats)
    engine_error: str | None = None
    engine_dead: bool = False  # it served, then died: the process exits for a restart
    shared_slots: SharedSlots | None = None  # several API processes: the engine's slot counts, shared
    on_engine_failure: Callable[[], None] | None = None
    wake_batches: Callable[[], None] = lambda: None  # the batch runner's wake (set by the app)
    api_types: dict[str, str] = field(default_factory=dict)  # adapter name → OpenRouter's api_type (set by the app)
    keys: KeyStore = field(init=False)
    limits: Limits = field(init=False)
    admission: Admission = field(init=False)
    usage: UsageLog = field(init=False)
    fingerprint: str = field(init=False)
    _core: ServingCore | None = field(default=None, init=False)
    _sealer: Sealer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        g = self.settings.gateway
        slots = g.max_in_flight or default_in_flight(self.settings)
        queue = g.max_queue if g.max_queue is not None else 2 * slots
        self.keys = KeyStore(self.db)
        self.limits = Limits(self.db)
        self.admission = Admission(slots, queue, g.max_queue_wait_seconds, slots=self.shared_slots)
        self.usage = UsageLog(self.metrics, self.db, self.limits.settle)
        self.fingerprint = fingerprint(self.settings)
        self.metrics.bind_gateway(
            lambda: self.admission.in_flight,
            lambda: self.admission.waiting,
            ready=lambda: self.not_ready() is None,
            draining=lambda: self.admission.draining,
        )

    # ---- readiness -----------------------------------------------------------------------------
    def not_ready(self) -> str | None:
        """Why the server cannot take generations now (None: it can)."""
        if self.admission.draining:
            return "Server is shutting down"
        if self.engine is None or self.renderer is None or not self.engine.ready:
            return self.engine_error or "The model is not ready to serve requests yet"
        return None

    def core(self) -> ServingCore:
        """The serving core, or a 503 while the engine starts, has failed or the server drains."""
        problem = self.not_ready()
        if problem is not None:  # starting (a minute or more) or died (a restart): come back later
            raise APIError(503, problem, headers={"Retry-After": "10"})
        if self._core is None:
            assert self.engine is not None and self.renderer is not None
            s = self.settings
            self._core = ServingCore(
                self.engine,
                self.renderer,
                pricing=s.pricing,
                keepalive_seconds=s.stream_keepalive_seconds,
                timeout_seconds=s.gateway.request_timeout_seconds,
                observer=self,
                defaults=PlanDefaults(
                    s.sampling,
                    s.reasoning.default_enabled,
                    s.reasoning.keep_cots,
                    priority_scheduling=s.engine.scheduling_policy == "priority",
                ),
                router=self._replica_router(self.engine),
                batch_pricing=batch_pricing(s),
            )
        return self._core

    def _replica_router(self, engine: EngineClient) -> ReplicaRouter | None:
        """Affinity routing when the engine has several replicas and the profile wants it."""
        r = self.settings.routing
        if engine.replicas < 2 or not r.affinity:
            return None
        return ReplicaRouter(
            engine.replicas,
            load_factor=r.load_factor,
            spill_floor=r.spill_floor,
            prefix_blocks=r.prefix_blocks,
            min_prefix_blocks=r.min_prefix_blocks,
            ttl_seconds=r.session_ttl_seconds,
            processes=self.settings.api_processes,
            engine_loads=engine.replica_loads,
        )

    async def reasoning_sealer(self) -> Sealer:
        """Seals reasoning for stateless Responses clients, with the key every server on this
        database shares (made on first use)."""
        if self._sealer is None:
            key = await asyncio.to_thread(self.db.server_secret, "responses_reasoning", new_key)
            self._sealer = Sealer(key)
        return self._sealer

    def context_length(self) -> int:
        return self.engine.max_model_len if self.engine is not None else self.settings.engine.max_model_len

    # ---- model names -----------------------------------------------------------------------------
    def is_served(self, model_id: str) -> bool:
        return model_id.lower() in {n.lower() for n in self.settings.model_names}

    def resolve_model(self, model: str | None, fallbacks: list[str] | None = None) -> tuple[str, str | None]:
        """The id echoed back and the routing variant asked for: omitted → the served id; a
        routing variant (``:nitro`` …) of a served id → that id; else the first of ``fallbacks``
        (OpenRouter's ``models``) that is served; none → 400 like OpenRouter."""
        candidates = [m for m in [model, *(fallbacks or [])] if m]
        if not candidates:
            return self.settings.model.served_name, None
        for candidate in candidates:
            base, variant = split_variant(candidate)
            if self.is_served(base):
                return self.settings.model.served_name, variant
        raise bad_request(f"{candidates[0]} is not a valid model ID")

    # ---- the serving core's observer: credit, drain bookkeeping, usage, limits, figures -----------
    async def reserve(self, plan: GenerationPlan) -> None:
        """Hold the plan's largest possible cost against its key's credit limit (402 if it does
        not fit) as its generation opens; the usage record settles it."""
        info = plan.info
        if info.key_id is not None and info.credit_limit is not None:
            p, g = self.core().pricing_of(plan), self.settings.gateway
            await self.limits.hold_credit(
                info.key_id,
                info.credit_limit,
                info.gen_id,
                prompt_tokens=len(plan.prompt_ids),
                max_tokens=plan.options.max_tokens,
                prices=(p.prompt, p.completion),
                timeout_s=g.request_timeout_seconds,
            )

    def started(self, run: Stoppable) -> None:
        self.admission.started(run)

    def finished(self, run: Stoppable, record: UsageRecord) -> None:
        self.admission.finished(run)
        self.usage.add(record)  # its write settles the key's spend, credit hold and tokens
        if not record.cancelled and not record.client_mistake:
            ttft = record.ttft_ms / 1000 if record.ttft_ms is not None else None
            decode = (record.latency_ms - (record.ttft_ms or record.latency_ms)) / 1000
            self.stats.record(record.error is None, ttft, record.completion_tokens, decode)


def batch_pricing(settings: Settings) -> Pricing:
    """The profile's prices at the batch discount."""
    p, share = settings.pricing, settings.batches.discount
    cache_read = p.input_cache_read * share if p.input_cache_read is not None else None
    return Pricing(prompt=p.prompt * share, completion=p.completion * share, input_cache_read=cache_read)


def default_in_flight(settings: Settings) -> int:
    """Generations admitted at once when the profile sets no number: what the engine batches
    (every replica's slots). Under priority scheduling twice that, so the engine holds a queue it
    can order by tier (the gateway's own queue is first come, first served)."""
    e = settings.engine
    slots = e.max_num_seqs * e.data_parallel_size
    return 2 * slots if e.scheduling_policy == "priority" else slots


def install_state(app: FastAPI, state: AppState) -> None:
    app.state.hermes = state


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.hermes
    return state
