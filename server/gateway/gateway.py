"""The operator gateway: who gets in (API keys), how much each may use (rate, token and credit
limits), how much the server takes at once (in-flight bound plus a bounded queue), and the
usage record of every generation. One pure ASGI middleware in front of the routes (pure ASGI,
not BaseHTTPMiddleware, so streaming and disconnect detection are untouched)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from server.errors import error_body
from server.gateway.db import ApiKey, Database, utcnow
from server.gateway.metrics import Metrics
from server.settings import Settings

log = logging.getLogger("hermes.gateway")

GENERATION_PATHS = {"/v1/chat/completions", "/api/v1/chat/completions", "/v1/completions", "/api/v1/completions"}
_KEY_TTL_S = 5.0  # a revoked key stops working within this many seconds
# Usage-record fields on each generation's log line (never keys or text).
_LOGGED = (
    "id",
    "key_id",
    "route",
    "streamed",
    "cancelled",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "latency_ms",
)


@dataclass
class KeyInfo:
    id: int
    label: str
    hint: str
    credit_limit: float | None
    rpm: int | None
    tpm: int | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(row.id, row.label, row.hint, row.credit_limit, row.rpm, row.tpm)


@dataclass
class _KeyState:
    requests: deque[float] = field(default_factory=deque)  # admission times, last minute
    tokens: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens), last minute
    spend: float | None = None  # USD, loaded from the database on first use


class Rejected(Exception):
    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


class Gateway:
    def __init__(self, settings: Settings, metrics: Metrics, db: Database | None = None) -> None:
        g = settings.gateway
        self.settings = settings
        self.metrics = metrics
        self.db = db
        self.max_in_flight = g.max_in_flight or settings.engine.max_num_seqs
        self.max_queue = g.max_queue if g.max_queue is not None else 2 * self.max_in_flight
        self.in_flight = 0
        self.waiting = 0
        self._slot_freed = asyncio.Condition()
        self._keys: dict[str, tuple[float, KeyInfo | None]] = {}
        self._state: dict[int, _KeyState] = {}
        self._pending: dict[str, dict[str, Any]] = {}  # records not yet written
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.active: set[Any] = set()  # Generation objects, for drain
        metrics.bind_gateway(lambda: self.in_flight, lambda: self.waiting)

    # ---- keys --------------------------------------------------------------------------------
    async def authenticate(self, token: str) -> KeyInfo | None:
        now = time.monotonic()
        hit = self._keys.get(token)
        if hit is not None and now - hit[0] < _KEY_TTL_S:
            return hit[1]
        assert self.db is not None
        row = await asyncio.to_thread(self.db.find_key, token)
        info = KeyInfo.of(row) if row is not None else None
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[token] = (now, info)
        return info

    def _key_state(self, key: KeyInfo) -> _KeyState:
        return self._state.setdefault(key.id, _KeyState())

    async def spend(self, key: KeyInfo) -> float:
        st = self._key_state(key)
        if st.spend is None:
            assert self.db is not None
            st.spend = await asyncio.to_thread(self.db.spend, key.id)
        return st.spend

    # ---- limits ------------------------------------------------------------------------------
    async def check_limits(self, key: KeyInfo) -> dict[str, str]:
        """Raise Rejected for 402/429; return the rate-limit headers for the response."""
        now = time.time()
        st = self._key_state(key)
        if key.credit_limit is not None and await self.spend(key) >= key.credit_limit:
            raise Rejected(402, f"Credit limit of ${key.credit_limit:g} reached for this key", "credit")
        while st.requests and st.requests[0] <= now - 60:
            st.requests.popleft()
        while st.tokens and st.tokens[0][0] <= now - 60:
            st.tokens.popleft()
        headers: dict[str, str] = {}
        if key.rpm is not None:
            reset = (st.requests[0] + 60) if st.requests else now + 60
            remaining = key.rpm - len(st.requests)
            headers = {
                "X-RateLimit-Limit": str(key.rpm),
                "X-RateLimit-Remaining": str(max(0, remaining - 1)),
                "X-RateLimit-Reset": str(int(reset * 1000)),
            }
            if remaining <= 0:
                retry = max(1, math.ceil(st.requests[0] + 60 - now))
                headers["X-RateLimit-Remaining"] = "0"
                raise Rejected(
                    429,
                    f"Rate limit exceeded: {key.rpm} requests per minute",
                    "rate_requests",
                    {**headers, "Retry-After": str(retry)},
                )
        if key.tpm is not None:
            used = sum(n for _, n in st.tokens)
            if used >= key.tpm:
                retry = max(1, math.ceil(st.tokens[0][0] + 60 - now))
                h = {
                    "X-RateLimit-Limit": str(key.tpm),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int((st.tokens[0][0] + 60) * 1000)),
                }
                raise Rejected(
                    429, f"Rate limit exceeded: {key.tpm} tokens per minute", "rate_tokens", {**h, "Retry-After": str(retry)}
                )
        st.requests.append(now)
        return headers

    # ---- admission ---------------------------------------------------------------------------
    async def admit(self) -> None:
        if self.in_flight < self.max_in_flight and self.waiting == 0:
            self.in_flight += 1
            return
        if self.waiting >= self.max_queue:
            raise Rejected(
                429,
                f"Server at capacity ({self.in_flight} in flight, {self.waiting} waiting): retry shortly",
                "capacity",
                {"Retry-After": "1"},
            )
        self.waiting += 1
        try:
            async with self._slot_freed:
                await self._slot_freed.wait_for(lambda: self.in_flight < self.max_in_flight)
                self.in_flight += 1
        finally:
            self.waiting -= 1

    async def release(self) -> None:
        async with self._slot_freed:
            self.in_flight -= 1
            self._slot_freed.notify()

    # ---- usage records -----------------------------------------------------------------------
    def record(self, rec: dict[str, Any]) -> None:
        """Called from a generation's ``finally`` (also on cancellation): never awaits."""
        self._pending[rec["id"]] = rec
        self._queue.put_nowait(rec)
        key_id = rec.get("key_id")
        if key_id is not None:
            st = self._state.setdefault(key_id, _KeyState())
            st.tokens.append((time.time(), rec["prompt_tokens"] + rec["completion_tokens"]))
            if st.spend is not None:
                st.spend += rec["cost"]
        self.metrics.observe_generation(rec)
        log.info("generation %s", rec["finish_reason"], extra={"gen_" + k: rec[k] for k in _LOGGED} | {"error": rec["error"]})

    def pending(self, gen_id: str) -> dict[str, Any] | None:
        return self._pending.get(gen_id)

    def start(self) -> None:
        if self.db is not None and self._writer is None:
            self._writer = asyncio.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        assert self.db is not None
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 500:
                batch.append(self._queue.get_nowait())
            try:
                await asyncio.to_thread(self.db.add_records, batch)
            except Exception:  # keep serving; the records stay pending and are retried
                log.exception("could not write %d usage records; retrying", len(batch))
                for r in batch:
                    self._queue.put_nowait(r)
                await asyncio.sleep(1)
                continue
            for r in batch:
                self._pending.pop(r["id"], None)

    async def flush(self) -> None:
        """Write what is queued (at shutdown)."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        rest: list[dict[str, Any]] = []
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        if rest and self.db is not None:
            await asyncio.to_thread(self.db.add_records, rest)
        self._pending.clear()

    # ---- drain -------------------------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Let in-flight requests finish for up to ``timeout`` s, then end the rest (they send the
        mid-stream error chunk and are recorded), and wait for them to wind down."""
        deadline = time.monotonic() + timeout
        while (self.in_flight or self.waiting) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.in_flight or self.waiting:
            log.warning("drain timeout: ending %d generations", len(self.active))
            for gen in list(self.active):
                gen.stop("shutdown")
            end = time.monotonic() + 10
            while (self.in_flight or self.waiting) and time.monotonic() < end:
                await asyncio.sleep(0.05)

    # ---- /api/v1/key ---------------------------------------------------------------------------
    async def key_report(self, key: KeyInfo) -> dict[str, Any]:
        assert self.db is not None
        db = self.db
        now = utcnow()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        week = day - dt.timedelta(days=day.weekday())
        month = day.replace(day=1)

        def sums() -> tuple[float, float, float, float]:
            return db.spend(key.id), db.spend(key.id, day), db.spend(key.id, week), db.spend(key.id, month)

        total, daily, weekly, monthly = await asyncio.to_thread(sums)
        pending = [r for r in self._pending.values() if r.get("key_id") == key.id]
        extra = sum(r["cost"] for r in pending)
        total, daily, weekly, monthly = (v + extra for v in (total, daily, weekly, monthly))
        return {
            "label": key.label,
            "limit": key.credit_limit,
            "limit_remaining": None if key.credit_limit is None else max(0.0, key.credit_limit - total),
            "limit_reset": None,
            "include_byok_in_limit": False,
            "usage": total,
            "usage_daily": daily,
            "usage_weekly": weekly,
            "usage_monthly": monthly,
            "byok_usage": 0,
            "is_free_tier": False,
            "is_provisioning_key": False,
            "rate_limit": {"requests": key.rpm if key.rpm is not None else -1, "interval": "1m", "tokens_per_minute": key.tpm},
        }


class GatewayMiddleware:
    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state  # the FastAPI app.state: settings, gateway, draining

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = self.state.settings
        gateway: Gateway = self.state.gateway
        path: str = scope["path"]
        metrics = gateway.metrics
        status_box = [0]

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            exempt = path in ("/health", "/ready") or (path == "/metrics" and not settings.gateway.metrics_require_auth)
            if exempt:
                await self.app(scope, receive, send)
                return
            key: KeyInfo | None = None
            if settings.auth_required:
                token = _bearer(scope)
                if not token:
                    raise Rejected(401, "No auth credentials found", "auth")
                key = await gateway.authenticate(token)
                if key is None:
                    raise Rejected(401, "User not found.", "auth")
            scope.setdefault("state", {})["api_key"] = key
            if self.state.draining:
                raise Rejected(503, "Server is shutting down", "draining")
            if not (scope["method"] == "POST" and path in GENERATION_PATHS):
                await self.app(scope, receive, counting_send)
                return
            headers = await gateway.check_limits(key) if key is not None else {}
            await gateway.admit()
            try:
                await self.app(scope, receive, _with_headers(counting_send, headers))
            finally:
                await gateway.release()
        except Rejected as r:
            metrics.rejected.labels(reason=r.reason).inc()
            await _reject(send, r)
            status_box[0] = r.status
        finally:
            if status_box[0]:
                metrics.requests.labels(route=_route_label(path), status=str(status_box[0])).inc()


def _route_label(path: str) -> str:
    # Bounded label values: model ids and generation ids must not become label values.
    if "/models" in path:
        return "models"
    for known in ("chat/completions", "completions", "generation", "key"):
        if path.endswith("/" + known):
            return known
    return "other"


def _bearer(scope: Any) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text.lower().startswith("bearer "):
                return text[7:].strip() or None
    return None


def _with_headers(send: Any, headers: dict[str, str]) -> Any:
    if not headers:
        return send

    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message.get("headers", []), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
            }
        await send(message)

    return wrapped


async def _reject(send: Any, r: Rejected) -> None:
    body = json.dumps(error_body(r.status, r.message)).encode()
    headers = [(b"content-type", b"application/json"), *((k.lower().encode(), v.encode()) for k, v in r.headers.items())]
    await send({"type": "http.response.start", "status": r.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
