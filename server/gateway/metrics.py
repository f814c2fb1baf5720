"""Prometheus metrics (prometheus-client). The gateway's own series live in one registry per app
(so tests can run several apps); vLLM's engine series (``vllm:*``, e.g. KV-cache usage) are
registered by vLLM in the process-wide default registry and are exported alongside."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from server.serving.record import UsageRecord

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.engine_unfinished = Gauge(
            "hermes_engine_unfinished_requests", "Requests the engine holds (running or waiting)", registry=r
        )
        self.kv_cache_usage = Gauge("hermes_engine_kv_cache_usage", "Fraction of the engine's KV cache in use (0-1)", registry=r)
        self.in_flight = Gauge("hermes_requests_in_flight", "Generation requests admitted and running", registry=r)
        self.queue_depth = Gauge("hermes_queue_depth", "Generation requests waiting for a slot", registry=r)
        self.requests = Counter("hermes_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.rejected = Counter("hermes_rejected_requests", "Requests refused by the gateway, by reason", ["reason"], registry=r)
        self.generations = Counter("hermes_generations", "Finished generations by outcome", ["outcome"], registry=r)
        self.tokens = Counter("hermes_tokens", "Tokens processed", ["kind"], registry=r)
        self.ttft = Histogram("hermes_time_to_first_token_seconds", "Time to first token", buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram(
            "hermes_inter_token_latency_seconds",
            "Mean time between output tokens, per generation",
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "hermes_request_latency_seconds", "End-to-end generation latency", buckets=_LATENCY_BUCKETS, registry=r
        )

    def bind_engine(self, unfinished: Callable[[], int], kv_usage: Callable[[], float | None]) -> None:
        self.engine_unfinished.set_function(lambda: float(unfinished()))
        self.kv_cache_usage.set_function(lambda: float(kv_usage() or 0.0))

    def bind_gateway(self, in_flight: Callable[[], int], waiting: Callable[[], int]) -> None:
        self.in_flight.set_function(lambda: float(in_flight()))
        self.queue_depth.set_function(lambda: float(waiting()))

    def observe_generation(self, rec: UsageRecord) -> None:
        outcome = "cancelled" if rec.cancelled else ("error" if rec.error else "ok")
        self.generations.labels(outcome=outcome).inc()
        self.tokens.labels(kind="prompt").inc(rec.prompt_tokens)
        self.tokens.labels(kind="completion").inc(rec.completion_tokens)
        self.tokens.labels(kind="reasoning").inc(rec.reasoning_tokens)
        self.tokens.labels(kind="cached").inc(rec.cached_tokens)
        self.e2e.observe(rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            self.ttft.observe(rec.ttft_ms / 1000)
            if rec.completion_tokens > 1:
                self.itl.observe((rec.latency_ms - rec.ttft_ms) / 1000 / (rec.completion_tokens - 1))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry)) + bytes(generate_latest(REGISTRY))
