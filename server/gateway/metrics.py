"""Prometheus metrics (prometheus-client). The gateway's own series live in one registry per app
(so tests can run several apps); vLLM's engine series (``vllm:*``, e.g. KV-cache usage) are
registered by vLLM in the process-wide default registry and are exported alongside.

With several API processes (``api_processes``), prometheus-client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR``, set by the parent before the processes start): every process
writes its series to files there and ``/metrics`` on any process aggregates all of them.
Counters and histograms add up; the gauges say how each aggregates (``multiprocess_mode``) and are
set from their sources when scraped (a process's own share of a sum also when a generation ends),
rather than computed on read, because a computed gauge is invisible to the other processes."""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from server.serving.record import UsageRecord

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        r = self.registry = CollectorRegistry()
        # Each process's own requests add up; the slot counts and the KV cache are the engine's,
        # already global, so the latest value any process set is the answer.
        self.engine_unfinished = Gauge(
            "hermes_engine_unfinished_requests",
            "Requests the engine holds (running or waiting)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.kv_cache_usage = Gauge(
            "hermes_engine_kv_cache_usage",
            "Fraction of the engine's KV cache in use (0-1)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        # The pod's whole queue, every replica's, under names an external endpoint picker (the
        # Gateway API Inference Extension's) can be pointed at: vLLM's own gauges are per engine
        # (one series per replica) and read 0 in a process that does not log its stats.
        self.engine_running = Gauge(
            "hermes_engine_requests_running",
            "Requests the engine is running, all replicas",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.engine_waiting = Gauge(
            "hermes_engine_requests_waiting",
            "Requests waiting in the engine's queue, all replicas",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.in_flight = Gauge(
            "hermes_requests_in_flight", "Generation requests admitted and running", registry=r, multiprocess_mode="mostrecent"
        )
        self.queue_depth = Gauge(
            "hermes_queue_depth", "Generation requests waiting for a slot", registry=r, multiprocess_mode="mostrecent"
        )
        # Whether the server takes generations (0 while the engine starts, has died or it drains)
        # and whether it drains: the alert rules' "not ready" and "drain stuck". Set by the scraped
        # process, whose view is the latest (a scraper keeps its connection, so the other
        # processes' values could be as old as their start: min/max over them would be wrong).
        self.ready = Gauge("hermes_ready", "1 while the server takes generations", registry=r, multiprocess_mode="mostrecent")
        self.draining = Gauge("hermes_draining", "1 while the server drains", registry=r, multiprocess_mode="mostrecent")
        self._sources: list[tuple[Gauge, Callable[[], float]]] = []  # set when scraped
        self._own_sources: list[tuple[Gauge, Callable[[], float]]] = []  # also when a generation ends
        self._queue: Callable[[], tuple[int, int] | None] | None = None
        # key: the key's label ("" without one), for per-key 429/5xx rates; operators with very many
        # keys turn it off (gateway.metrics_per_key) and get "" throughout.
        self.requests = Counter(
            "hermes_http_requests", "HTTP requests by route, status and key", ["route", "status", "key"], registry=r
        )
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
        # Affinity routing over data-parallel replicas: where requests went and why (session,
        # prefix: their home; new: placed; spill: home over the load bound), and how much of each
        # replica's prompt tokens its prefix cache served.
        self.replica_requests = Counter(
            "hermes_replica_requests", "Generations routed to each replica, by why", ["replica", "route"], registry=r
        )
        self.replica_tokens = Counter(
            "hermes_replica_prompt_tokens", "Prompt tokens per replica: all, and cached", ["replica", "kind"], registry=r
        )
        self.e2e = Histogram(
            "hermes_request_latency_seconds", "End-to-end generation latency", buckets=_LATENCY_BUCKETS, registry=r
        )

    def bind_engine(
        self,
        unfinished: Callable[[], int],
        kv_usage: Callable[[], float | None],
        queue: Callable[[], tuple[int, int] | None],
    ) -> None:
        self._own_sources.append((self.engine_unfinished, lambda: float(unfinished())))
        self._sources.append((self.kv_cache_usage, lambda: float(kv_usage() or 0.0)))
        self._queue = queue  # both queue gauges from one reading (it walks vLLM's registry)

    def bind_gateway(
        self, in_flight: Callable[[], int], waiting: Callable[[], int], ready: Callable[[], bool], draining: Callable[[], bool]
    ) -> None:
        self._sources += [(self.in_flight, lambda: float(in_flight())), (self.queue_depth, lambda: float(waiting()))]
        self._sources += [(self.ready, lambda: float(ready())), (self.draining, lambda: float(draining()))]

    def refresh(self, own_only: bool = False) -> None:
        """Set the gauges from their sources. ``own_only``: just this process's share of a sum
        (the engine-wide figures are as fresh as the scraped process makes them)."""
        for gauge, source in self._own_sources if own_only else [*self._own_sources, *self._sources]:
            gauge.set(source())
        if not own_only and self._queue is not None:
            running, waiting = self._queue() or (0, 0)
            self.engine_running.set(running)
            self.engine_waiting.set(waiting)

    def observe_generation(self, rec: UsageRecord) -> None:
        if self.multiprocess:  # the other processes' scrapes add up this one's share as of now
            self.refresh(own_only=True)
        outcome = "cancelled" if rec.cancelled else ("error" if rec.error else "ok")
        self.generations.labels(outcome=outcome).inc()
        self.tokens.labels(kind="prompt").inc(rec.prompt_tokens)
        self.tokens.labels(kind="completion").inc(rec.completion_tokens)
        self.tokens.labels(kind="reasoning").inc(rec.reasoning_tokens)
        self.tokens.labels(kind="cached").inc(rec.cached_tokens)
        self.e2e.observe(rec.latency_ms / 1000)
        if rec.replica is not None:
            replica = str(rec.replica)
            self.replica_requests.labels(replica=replica, route=rec.route_reason or "").inc()
            self.replica_tokens.labels(replica=replica, kind="prompt").inc(rec.prompt_tokens)
            self.replica_tokens.labels(replica=replica, kind="cached").inc(rec.cached_tokens)
        if rec.ttft_ms is not None:
            self.ttft.observe(rec.ttft_ms / 1000)
            if rec.completion_tokens > 1:
                self.itl.observe((rec.latency_ms - rec.ttft_ms) / 1000 / (rec.completion_tokens - 1))

    def render(self) -> bytes:
        self.refresh()
        if self.multiprocess:  # every process's series, ours and vLLM's, from the shared directory
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(merged))
        return bytes(generate_latest(self.registry)) + bytes(generate_latest(REGISTRY))
